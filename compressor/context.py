"""PassContext: what one run shares between its passes (seed, device, data, teacher, run dir)."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from compressor.data.base import DataBundle
    from compressor.ir import ModelIR


@dataclass
class PassContext:
    seed: int = 0
    device: str = "cpu"
    data: "DataBundle | str | None" = None
    teacher: "ModelIR | None" = None
    run_dir: Path | None = None
    progress: bool = True
    stages: dict[str, "ModelIR"] = field(default_factory=dict)
    root_dir: Path | None = None          # the run directory (run_dir is the current stage's folder)
    data_spec: dict[str, Any] | None = None  # the data block as plain data, for cache keys

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            from compressor.data.base import build_data

            self.data = build_data(self.data, None, seed=self.seed)
        if self.run_dir is not None:
            self.run_dir = Path(self.run_dir)

    def require_data(self, who: str) -> "DataBundle":
        from compressor.errors import PassError

        if self.data is None:
            raise PassError(f"{who} needs training data; give the pipeline a data: block "
                            f"(or PassContext(data='insar-synthetic'))")
        return self.data  # type: ignore[return-value]

    def seed_everything(self, offset: int = 0) -> torch.Generator:
        s = self.seed + offset
        random.seed(s)
        np.random.seed(s % (2**32))
        torch.manual_seed(s)
        return torch.Generator().manual_seed(s)

    def scratch_dir(self, name: str) -> Path | None:
        if self.run_dir is None:
            return None
        d = self.run_dir / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def describe(self) -> dict[str, Any]:
        return {"seed": self.seed, "device": self.device}
