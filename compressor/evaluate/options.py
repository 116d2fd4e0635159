"""The `evaluate:` block of a pipeline: what is measured after every stage (task metrics on a split, MACs,
latency on named backends). The measure instrument reads it; `compressor.pipeline` re-exports it.

Torch-free, like `compressor.evaluate.latency`, which checks the backend names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from compressor.errors import ConfigError
from compressor.evaluate.backends import ALIASES, describe_backends
from compressor.options import option


@dataclass(frozen=True)
class LatencyOptions:
    enabled: bool = option(True, "measure latency after every stage")
    backends: list[str] = option(
        ["torch-cpu", "onnxruntime-cpu"],
        f"{describe_backends()}; one that cannot run here is recorded as skipped (old names: {', '.join(ALIASES)})")
    batch: int = option(1, "batch size of the latency measurement", min=1, max=10**6)
    threads: int | None = option(None, "intra-op threads (null: the runtime's default)", min=1, max=4096)
    warmup: int = option(5, "untimed warm-up runs", min=0, max=10**6)
    iters: int = option(30, "timed runs", min=1, max=10**7)
    min_seconds: float = option(0.0, "keep timing until this many seconds (at most 10 x iters runs)", min=0)
    cuda_graphs: bool = option(False, "torch-cuda: time a CUDA-graph replay of the forward")
    predict: list[str] = option([], "backends whose latency is also predicted from a per-block latency table (a "
                                    "network whose frontend offers one: hierarchical), measured once per backend, "
                                    "input size and batch and kept in the store (.tables); report rows get "
                                    "latency_pred, sweeps the figure latency_pred_ms@backend")

    def __post_init__(self) -> None:
        object.__setattr__(self, "backends", self._names(self.backends))
        object.__setattr__(self, "predict", self._names(self.predict))

    @staticmethod
    def _names(backends: list[str]) -> list[str]:
        from compressor.evaluate.latency import normalize_backend  # numpy only, no torch

        names: list[str] = []
        for b in backends:
            try:
                name = normalize_backend(b)
            except ConfigError as exc:  # parse_options prefixes ValueErrors with the file and line
                raise ValueError(str(exc)) from None
            if name not in names:
                names.append(name)
        return names


@dataclass(frozen=True)
class EvaluateOptions:
    split: Literal["val", "test"] = option("val", "split the task metrics are measured on")
    batch_size: int = option(64, "evaluation batch size", min=1, max=10**6)
    max_samples: int = option(0, "evaluate on the first N samples only (0 = the whole split)", min=0, max=10**9)
    macs: bool = option(True, "count multiply-accumulates with torch's FLOP counter")
    latency: LatencyOptions = option(LatencyOptions(), "latency measurement")

    def latency_options(self) -> LatencyOptions:
        return self.latency
