"""`compress bench ARTIFACT`: time a deployable artifact on one or more backends.

Benchmarking an .onnx file imports numpy and onnxruntime only, and an .engine file numpy and
tensorrt only, never torch, so that both run on an edge device; torch is imported only for an
IR directory (a stage directory of a run, written by ModelIR.save). Nothing is ever unpickled: a
.pt file is refused in one line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from compressor.errors import ConfigError
from compressor.evaluate.latency import (
    BACKEND_SUFFIXES,
    BACKENDS,
    IR_KIND,
    LatencyStats,
    format_stats_table,
    latency_engine,
    latency_onnxruntime,
)
from compressor.options import closest
from compressor.store import is_pickle

__all__ = ["BACKENDS", "SUFFIXES", "run_bench", "run_bench_many", "format_stats_table"]

# artifact kind -> the backend "auto" picks
SUFFIXES: dict[str, str] = {".onnx": "onnxruntime-cpu", ".engine": "tensorrt", IR_KIND: "torch-cpu"}


def artifact_kind(path: Path) -> str:
    """'.onnx', '.engine', IR_KIND (a directory or its ir.json), or the file's own suffix."""
    if path.is_dir() or path.name == "ir.json":
        return IR_KIND
    return path.suffix.lower()


def _plural(kind: str) -> str:
    return "IR directories" if kind == IR_KIND else f"{kind} files"


def _resolve_backend(path: Path, backend: str) -> str:
    suffix = artifact_kind(path)
    if suffix not in SUFFIXES:
        what = "is a pickle (torch.save) file, and pickled files are never loaded (loading one can run code)" \
            if path.is_file() and is_pickle(path) else f"is of unknown kind '{suffix or path.name}'"
        raise ConfigError(f"cannot benchmark '{path.name}': it {what}; valid: "
                          + ", ".join(f"{s} ({b})" for s, b in SUFFIXES.items())
                          + "; for a model, give its stage directory from a run")
    if backend == "auto":
        return SUFFIXES[suffix]
    if backend not in BACKEND_SUFFIXES:
        guess = closest(backend, [*BACKENDS, "auto"])
        hint = f"did you mean '{guess}'? " if guess else ""
        raise ConfigError(f"unknown backend '{backend}'; {hint}valid: auto, {', '.join(BACKENDS)}")
    if suffix not in BACKEND_SUFFIXES[backend]:
        takes = ", ".join(_plural(k) for k in BACKEND_SUFFIXES[backend])
        here = [b for b, s in BACKEND_SUFFIXES.items() if suffix in s]
        fits = f"backends for {_plural(suffix)}: {', '.join(here)}" if here else "use --backend auto"
        raise ConfigError(f"backend '{backend}' cannot run '{path.name}'; it takes {takes}; {fits}")
    return backend


def run_bench_many(artifact: str | Path, backends: Sequence[str] = ("auto",), batch: int = 1,
                   threads: int | None = None, warmup: int = 10, iters: int = 100, min_seconds: float = 0.0,
                   precision: str | None = None, cuda_graphs: bool = False,
                   trust_factory: bool = False) -> list[LatencyStats]:
    """Latency of `artifact` on each of `backends`, in order ("auto": by kind, .onnx ->
    onnxruntime-cpu, .engine -> tensorrt, an IR directory -> torch-cpu; repeats dropped).
    `trust_factory` allows rebuilding an IR whose recipe calls a user factory (that runs its code).

    Every backend is checked against the file before anything runs. `precision` (fp32 | fp16;
    None: the IR's own) applies to the torch backends only, `cuda_graphs` to torch-cuda only.
    """
    path = Path(artifact)
    if not path.exists():
        raise ConfigError(f"no artifact at {path}; pass an .onnx file, a TensorRT .engine or a stage directory "
                          "of a run")
    if not backends:
        backends = ("auto",)
    resolved: list[str] = []
    for b in backends:  # first, so a bad choice fails before file checks
        r = _resolve_backend(path, b)
        if r not in resolved:
            resolved.append(r)
    if path.is_file() and path.stat().st_size == 0:
        raise ConfigError(f"{path} is empty (0 bytes); an interrupted export or copy? re-export it, or pass "
                          "another .onnx / .engine file or stage directory")
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

        ir = ModelIR.load(path, trust_factory=trust_factory)
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
              cuda_graphs: bool = False, trust_factory: bool = False) -> LatencyStats:
    """Latency of `artifact` on one `backend` (see run_bench_many)."""
    (stats,) = run_bench_many(artifact, [backend], batch=batch, threads=threads, warmup=warmup, iters=iters,
                              min_seconds=min_seconds, precision=precision, cuda_graphs=cuda_graphs,
                              trust_factory=trust_factory)
    return stats
