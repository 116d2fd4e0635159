"""`compress bench ARTIFACT`: time a deployable artifact on one or more backends.

Benchmarking an .onnx file imports numpy and onnxruntime only, and an .engine file numpy and
tensorrt only, never torch, so that both run on an edge device; torch is imported only for an
IR file (ir.pt written by ModelIR.save).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from compressor.errors import ConfigError
from compressor.evaluate.latency import (
    BACKEND_SUFFIXES,
    BACKENDS,
    LatencyStats,
    format_stats_table,
    latency_engine,
    latency_onnxruntime,
)
from compressor.options import closest

__all__ = ["BACKENDS", "SUFFIXES", "run_bench", "run_bench_many", "format_stats_table"]

# suffix -> the backend "auto" picks
SUFFIXES: dict[str, str] = {".onnx": "onnxruntime-cpu", ".engine": "tensorrt", ".pt": "torch-cpu"}


def _resolve_backend(path: Path, backend: str) -> str:
    suffix = path.suffix.lower()
    if backend == "auto":
        if suffix not in SUFFIXES:
            raise ConfigError(f"cannot benchmark '{path.name}': unknown suffix '{suffix}'; valid: "
                              + ", ".join(f"{s} ({b})" for s, b in SUFFIXES.items()))
        return SUFFIXES[suffix]
    if backend not in BACKEND_SUFFIXES:
        guess = closest(backend, [*BACKENDS, "auto"])
        hint = f"did you mean '{guess}'? " if guess else ""
        raise ConfigError(f"unknown backend '{backend}'; {hint}valid: auto, {', '.join(BACKENDS)}")
    if suffix not in BACKEND_SUFFIXES[backend]:
        takes = ", ".join(BACKEND_SUFFIXES[backend])
        here = [b for b, s in BACKEND_SUFFIXES.items() if suffix in s]
        fits = f"backends for {suffix} files: {', '.join(here)}" if here else "use --backend auto"
        raise ConfigError(f"backend '{backend}' cannot run '{path.name}'; it takes {takes} files; {fits}")
    return backend


def run_bench_many(artifact: str | Path, backends: Sequence[str] = ("auto",), batch: int = 1,
                   threads: int | None = None, warmup: int = 10, iters: int = 100, min_seconds: float = 0.0,
                   precision: str | None = None, cuda_graphs: bool = False) -> list[LatencyStats]:
    """Latency of `artifact` on each of `backends`, in order ("auto": by suffix, .onnx ->
    onnxruntime-cpu, .engine -> tensorrt, .pt (an IR file) -> torch-cpu; repeats dropped).

    Every backend is checked against the file before anything runs. `precision` (fp32 | fp16;
    None: the IR's own) applies to the torch backends only, `cuda_graphs` to torch-cuda only.
    """
    path = Path(artifact)
    if not backends:
        backends = ("auto",)
    resolved: list[str] = []
    for b in backends:  # first, so a bad choice fails before file checks
        r = _resolve_backend(path, b)
        if r not in resolved:
            resolved.append(r)
    if not path.is_file():
        raise ConfigError(f"no artifact at {path}; pass an .onnx file, a TensorRT .engine or a stage's ir.pt "
                          "from a run directory")
    if batch < 1 or iters < 1 or warmup < 0 or min_seconds < 0 or (threads is not None and threads < 1):
        raise ConfigError(f"invalid bench settings batch={batch} threads={threads} warmup={warmup} "
                          f"iters={iters} min_seconds={min_seconds}; need batch >= 1, threads >= 1 (or unset), "
                          "warmup >= 0, iters >= 1, min_seconds >= 0")
    if precision not in (None, "fp32", "fp16"):
        raise ConfigError(f"precision '{precision}' is not valid; choose fp32 or fp16")
    torch_backends = [b for b in resolved if b.startswith("torch-")]
    if precision is not None and not torch_backends:
        raise ConfigError(f"--precision applies to the torch backends (an IR file); the precision of "
                          f"{path.name} was fixed when it was exported")
    if cuda_graphs and "torch-cuda" not in resolved:
        raise ConfigError("--cuda-graphs needs --backend torch-cuda (an IR file)")

    ir = None
    if torch_backends:
        from compressor.ir import ModelIR  # only here: the IR backends need torch

        ir = ModelIR.load(path)
    out: list[LatencyStats] = []
    for b in resolved:
        if b.startswith("onnxruntime-"):
            stats = latency_onnxruntime(path, batch=batch, threads=threads, warmup=warmup, iters=iters,
                                        min_seconds=min_seconds, backend=b)
        elif b == "tensorrt":
            stats = latency_engine(path, batch=batch, warmup=warmup, iters=iters)
        else:
            from compressor.evaluate.latency import latency_ir

            stats = latency_ir(ir, b, batch=batch, threads=threads, warmup=warmup, iters=iters,
                               min_seconds=min_seconds, precision=precision,
                               cuda_graphs=cuda_graphs and b == "torch-cuda")
            stats.extra["artifact"] = str(path)
        out.append(stats)
    return out


def run_bench(artifact: str | Path, backend: str = "auto", batch: int = 1, threads: int | None = None,
              warmup: int = 10, iters: int = 100, min_seconds: float = 0.0, precision: str | None = None,
              cuda_graphs: bool = False) -> LatencyStats:
    """Latency of `artifact` on one `backend` (see run_bench_many)."""
    (stats,) = run_bench_many(artifact, [backend], batch=batch, threads=threads, warmup=warmup, iters=iters,
                              min_seconds=min_seconds, precision=precision, cuda_graphs=cuda_graphs)
    return stats
