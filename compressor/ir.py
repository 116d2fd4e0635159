"""The IR: the one object that flows from frontends through passes to exporters."""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.fx

from compressor.errors import FrontendError

TaskKind = Literal["classification", "segmentation"]
Precision = Literal["fp32", "fp16"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class InputSpec:
    """One model input. `shape[0]` is None: the batch dimension is dynamic."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    value_range: tuple[float, float] | None = None

    def example(self, batch: int = 2, seed: int = 0) -> torch.Tensor:
        """A deterministic example tensor inside the declared value range."""
        gen = torch.Generator().manual_seed(seed)
        dims = tuple(batch if d is None else d for d in self.shape)
        x = torch.rand(dims, generator=gen)
        lo, hi = self.value_range if self.value_range else (-1.0, 1.0)
        return (lo + (hi - lo) * x).to(_DTYPES[self.dtype])


@dataclass(frozen=True)
class TaskSpec:
    """What the model predicts.

    classification: logits of shape (N, num_classes).
    segmentation: binary masks, one logit per pixel, shape (N, 1, H, W); the positive class is
    "moving ground" (logit > 0).
    """

    kind: TaskKind
    num_classes: int

    def __post_init__(self) -> None:
        if self.kind not in ("classification", "segmentation"):
            raise ValueError(f"task kind must be classification or segmentation, got {self.kind!r}")


@dataclass
class PassRecord:
    """What one pass did: its name, resolved options, wall time and what changed."""

    name: str
    options: dict[str, Any]
    seconds: float
    changed: bool
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelIR:
    module: torch.fx.GraphModule
    inputs: list[InputSpec]
    task: TaskSpec
    precision: Precision = "fp32"
    meta: dict[str, Any] = field(default_factory=dict)
    history: list[PassRecord] = field(default_factory=list)

    # ---- construction -------------------------------------------------------------------
    def clone(self) -> "ModelIR":
        """A deep copy: passes work on a clone so that their input IR stays intact."""
        return ModelIR(
            module=copy.deepcopy(self.module),
            inputs=list(self.inputs),
            task=self.task,
            precision=self.precision,
            meta=copy.deepcopy(self.meta),
            history=copy.deepcopy(self.history),
        )

    def replace(self, **changes: Any) -> "ModelIR":
        return dataclasses.replace(self, **changes)

    # ---- convenience --------------------------------------------------------------------
    def example_inputs(self, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
        dtype = torch.float16 if self.precision == "fp16" else None
        xs = tuple(spec.example(batch, seed) for spec in self.inputs)
        return tuple(x.to(dtype) for x in xs) if dtype else xs

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def state_bytes(self) -> int:
        """Bytes of the weights and buffers (state_dict tensors) at the IR's precision: the payload a
        deployable artifact must carry, without any container format's overhead."""
        return sum(t.numel() * t.element_size() for t in self.module.state_dict().values())

    # ---- persistence --------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: a temp file beside the target, then rename."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        payload = {
            "format": "compressor.ModelIR/1",
            "module": self.module,
            "inputs": [dataclasses.asdict(s) for s in self.inputs],
            "task": dataclasses.asdict(self.task),
            "precision": self.precision,
            "meta": self.meta,
            "history": [dataclasses.asdict(r) for r in self.history],
        }
        torch.save(payload, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "ModelIR":
        """Load an IR written by `save`. These files pickle a GraphModule: load only your own."""
        path = Path(path)
        if not path.is_file():
            raise FrontendError(f"no IR file at {path}; pass a stage's ir.pt from a run directory")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # corrupt or foreign file
            raise FrontendError(f"{path} is not a readable IR file ({type(exc).__name__}: {exc})") from None
        if not isinstance(payload, dict) or payload.get("format") != "compressor.ModelIR/1":
            raise FrontendError(f"{path} is not an IR file written by compressor (no 'format' marker)")
        return cls(
            module=payload["module"],
            inputs=[InputSpec(**{**s, "shape": tuple(s["shape"]),
                                 "value_range": tuple(s["value_range"]) if s["value_range"] else None})
                    for s in payload["inputs"]],
            task=TaskSpec(**payload["task"]),
            precision=payload["precision"],
            meta=payload["meta"],
            history=[PassRecord(**r) for r in payload["history"]],
        )

    # ---- display ------------------------------------------------------------------------
    def summary(self) -> str:
        """What `compress inspect` prints: graph summary, params/bytes per module, history."""
        from compressor.evaluate.stats import module_table  # local: keeps ir.py import-light

        lines = [
            f"task: {self.task.kind} ({self.task.num_classes} classes)",
            f"precision: {self.precision}",
            "inputs: " + ", ".join(f"{s.name}{list(s.shape)} {s.dtype}" for s in self.inputs),
            f"parameters: {self.parameter_count():,}  weights: {self.state_bytes():,} bytes",
        ]
        if self.meta:
            lines.append("meta: " + ", ".join(f"{k}={v}" for k, v in self.meta.items()))
        ops: dict[str, int] = {}
        for node in self.module.graph.nodes:
            ops[node.op] = ops.get(node.op, 0) + 1
        lines.append("graph: " + ", ".join(f"{n} {k}" for k, n in ops.items()))
        lines.append("")
        lines.append(module_table(self.module))
        lines.append("")
        lines.append("history:")
        if not self.history:
            lines.append("  (none)")
        for i, rec in enumerate(self.history, 1):
            opts = ", ".join(f"{k}={v}" for k, v in rec.options.items())
            stats = ", ".join(f"{k}={v}" for k, v in rec.stats.items() if not isinstance(v, (list, dict)))
            lines.append(f"  {i}. {rec.name}{{{opts}}}  {rec.seconds:.1f}s  changed={rec.changed}  {stats}")
        return "\n".join(lines)
