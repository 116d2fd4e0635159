"""`compress bench ARTIFACT`: time a deployable artifact on one backend.

Benchmarking an .onnx file imports numpy and onnxruntime only, never torch, so that it runs on an
edge device; torch is imported only for an IR file (ir.pt written by ModelIR.save).
"""
from __future__ import annotations

from pathlib import Path

from compressor.errors import ConfigError
from compressor.evaluate.latency import LatencyStats, latency_onnxruntime

__all__ = ["BACKENDS", "SUFFIXES", "run_bench", "format_stats_table"]

# backend name -> artifact suffixes it can run
BACKENDS: dict[str, tuple[str, ...]] = {
    "onnxruntime-cpu": (".onnx",),
    "torch-cpu": (".pt",),
    "torch-cuda": (".pt",),
}
# suffix -> the backend "auto" picks
SUFFIXES: dict[str, str] = {".onnx": "onnxruntime-cpu", ".pt": "torch-cpu"}


def _resolve_backend(path: Path, backend: str) -> str:
    suffix = path.suffix.lower()
    if backend == "auto":
        if suffix not in SUFFIXES:
            raise ConfigError(f"cannot benchmark '{path.name}': unknown suffix '{suffix}'; valid: "
                              + ", ".join(f"{s} ({b})" for s, b in SUFFIXES.items()))
        return SUFFIXES[suffix]
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend '{backend}'; valid: auto, {', '.join(BACKENDS)}")
    if suffix not in BACKENDS[backend]:
        raise ConfigError(f"backend '{backend}' cannot run '{path.name}'; it takes "
                          f"{', '.join(BACKENDS[backend])} files; use --backend auto")
    return backend


def run_bench(artifact: str | Path, backend: str = "auto", batch: int = 1, threads: int | None = None,
              warmup: int = 10, iters: int = 100) -> LatencyStats:
    """Latency of `artifact` on `backend` ("auto": by suffix, .onnx -> onnxruntime-cpu,
    .pt (an IR file) -> torch-cpu)."""
    path = Path(artifact)
    resolved = _resolve_backend(path, backend)  # first, so a bad choice fails before file checks
    if not path.is_file():
        raise ConfigError(f"no artifact at {path}; pass an .onnx file or a stage's ir.pt from a run directory")
    if batch < 1 or iters < 1 or warmup < 0 or (threads is not None and threads < 1):
        raise ConfigError(f"invalid bench settings batch={batch} threads={threads} warmup={warmup} "
                          f"iters={iters}; need batch >= 1, threads >= 1 (or unset), warmup >= 0, iters >= 1")
    if resolved == "onnxruntime-cpu":
        return latency_onnxruntime(path, batch=batch, threads=threads, warmup=warmup, iters=iters)

    import torch  # only here: the IR backends need it

    from compressor.evaluate.latency import latency_torch
    from compressor.ir import ModelIR

    ir = ModelIR.load(path)
    device = "cuda" if resolved == "torch-cuda" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("backend 'torch-cuda' needs a CUDA GPU and none is available; use torch-cpu")
    module = ir.module.to(device)
    inputs = tuple(x.to(device) for x in ir.example_inputs(batch))
    stats = latency_torch(module, inputs, threads=threads, warmup=warmup, iters=iters)
    stats.extra.update({"artifact": str(path), "precision": ir.precision})
    return stats


def format_stats_table(stats: list[LatencyStats]) -> str:
    """An aligned text table, one row per measurement."""
    header = ("backend", "device", "batch", "threads", "p50 ms", "p90 ms", "p99 ms",
              "mean ms", "std ms", "min ms", "items/s")
    rows = [(s.backend, s.device, str(s.batch), str(s.threads), f"{s.median_ms:.3f}", f"{s.p90_ms:.3f}",
             f"{s.p99_ms:.3f}", f"{s.mean_ms:.3f}", f"{s.std_ms:.3f}", f"{s.min_ms:.3f}",
             f"{s.throughput:,.1f}") for s in stats]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    left = {0, 1}  # text columns; numbers align right

    def fmt(r: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    return "\n".join([fmt(header), fmt(tuple("-" * w for w in widths)), *(fmt(r) for r in rows)])
