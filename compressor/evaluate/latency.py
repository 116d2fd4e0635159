"""Latency measurement: warm-up excluded, many timed calls, median / p90 / p99.

This module runs on edge devices that have only numpy and onnxruntime (and maybe tensorrt): it
must not import torch, nor any compressor module that does, at import time. torch and
onnxruntime are imported inside the functions that use them.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from compressor.errors import ConfigError

__all__ = [
    "LatencyStats", "summarize", "time_callable", "latency_onnxruntime", "latency_torch", "device_name",
]


@dataclass
class LatencyStats:
    """One latency measurement. Times are per call (one batch) in milliseconds."""

    backend: str  # "torch-cpu", "torch-cuda", "onnxruntime-cpu", ...
    device: str  # CPU model name, or GPU name
    batch: int
    threads: int
    warmup: int
    iters: int  # timed calls actually made
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float  # population standard deviation
    min_ms: float
    throughput: float  # items per second = batch / median seconds
    extra: dict = field(default_factory=dict)  # library versions, input shapes, ...

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LatencyStats":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def device_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                # x86 says "model name"; some ARM kernels only say "Hardware" or "Model"
                if key.strip() in ("model name", "Hardware", "Model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def summarize(times_s: list[float], **fields: Any) -> LatencyStats:
    """Statistics of per-call times in seconds (percentiles by numpy's linear interpolation).

    `fields` fill the non-statistical attributes; defaults: backend "unknown", this machine's
    device name, batch 1, threads 0 (unknown), warmup 0, iters len(times_s), extra {}.
    """
    if len(times_s) == 0:
        raise ValueError("summarize needs at least one timing")
    unknown = set(fields) - {"backend", "device", "batch", "threads", "warmup", "iters", "extra"}
    if unknown:
        raise TypeError(f"summarize got unexpected fields {sorted(unknown)}")
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    median = float(np.median(ms))
    batch = int(fields.get("batch", 1))
    return LatencyStats(
        backend=str(fields.get("backend", "unknown")),
        device=str(fields.get("device") or device_name()),
        batch=batch,
        threads=int(fields.get("threads", 0)),
        warmup=int(fields.get("warmup", 0)),
        iters=int(fields.get("iters", len(ms))),
        median_ms=median,
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
        std_ms=float(ms.std()),
        min_ms=float(ms.min()),
        throughput=batch / (median / 1e3) if median > 0 else float("inf"),
        extra=dict(fields.get("extra") or {}),
    )


def time_callable(fn: Callable[[], Any], warmup: int = 5, iters: int = 50,
                  min_seconds: float = 0.0) -> list[float]:
    """Call `fn` `warmup` times untimed, then time each call with perf_counter.

    Keeps calling until both `iters` calls and `min_seconds` of timed calls are reached, but
    never more than 10 * iters calls. Returns the per-call times in seconds.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        fn()
    cap = 10 * iters
    times: list[float] = []
    elapsed = 0.0
    while len(times) < iters or (elapsed < min_seconds and len(times) < cap):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        elapsed += dt
    return times


_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8, "tensor(bool)": np.bool_,
}


def _random_input(name: str, shape: list, type_str: str, batch: int, rng: np.random.Generator) -> np.ndarray:
    dims = []
    for i, d in enumerate(shape):
        if isinstance(d, int) and d > 0:
            dims.append(d)
        elif i == 0:  # dynamic (None) or symbolic ("batch", "N") batch dimension
            dims.append(batch)
        else:
            raise ConfigError(f"input '{name}' has a dynamic non-batch dimension {i} ({d!r}) in shape "
                              f"{shape}; only the batch dimension may be dynamic; export with a fixed size")
    dtype = _ORT_DTYPES.get(type_str)
    if dtype is None:
        raise ConfigError(f"input '{name}' has type {type_str}; supported: {', '.join(_ORT_DTYPES)}")
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(dims).astype(dtype)
    return rng.integers(0, 2, dims).astype(dtype)  # 0/1: valid booleans, and valid indices for gathers


def latency_onnxruntime(path: str | os.PathLike[str], batch: int = 1, threads: int | None = None,
                        warmup: int = 5, iters: int = 50) -> LatencyStats:
    """Latency of an ONNX graph on onnxruntime's CPUExecutionProvider.

    Random inputs of each graph input's shape and dtype (float32 or float16), the batch dimension
    (dynamic or symbolic) set to `batch`. `threads` sets intra_op_num_threads; None leaves
    onnxruntime's default and records os.cpu_count().
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no ONNX file at {path}")
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {i.name: _random_input(i.name, list(i.shape), i.type, batch, rng) for i in sess.get_inputs()}
    times = time_callable(lambda: sess.run(None, feed), warmup=warmup, iters=iters)
    return summarize(
        times, backend="onnxruntime-cpu", device=device_name(), batch=batch,
        threads=threads if threads is not None else (os.cpu_count() or 0),
        warmup=warmup, iters=len(times),
        extra={
            "onnxruntime": ort.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "providers": sess.get_providers(),
            "inputs": {k: [list(v.shape), str(v.dtype)] for k, v in feed.items()},
            "artifact": str(path),
        },
    )


def latency_torch(module: Any, example_inputs: tuple, threads: int | None = None,
                  warmup: int = 5, iters: int = 50) -> LatencyStats:
    """Latency of a torch module in eval mode under inference_mode on `example_inputs`.

    The device follows the inputs ("torch-cpu", or "torch-cuda" with a synchronize per call).
    `threads` sets torch.set_num_threads for the measurement only; the previous value and the
    module's train/eval flags are restored afterwards.
    """
    import torch

    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    first = next((x for x in example_inputs if torch.is_tensor(x)), None)
    dev = first.device if first is not None else torch.device("cpu")
    batch = int(first.shape[0]) if first is not None and first.ndim > 0 else 1
    cuda = dev.type == "cuda"

    def call() -> None:
        module(*example_inputs)
        if cuda:
            torch.cuda.synchronize(dev)

    previous_threads = torch.get_num_threads()
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        used_threads = torch.get_num_threads()
        with torch.inference_mode():
            times = time_callable(call, warmup=warmup, iters=iters)
    finally:
        torch.set_num_threads(previous_threads)
        for m, mode in modes.items():
            m.training = mode
    return summarize(
        times, backend=f"torch-{dev.type}",
        device=torch.cuda.get_device_name(dev) if cuda else device_name(),
        batch=batch, threads=used_threads, warmup=warmup, iters=len(times),
        extra={
            "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "platform": platform.platform(),
            "dtype": str(first.dtype).replace("torch.", "") if first is not None else None,
            "inputs": [list(x.shape) for x in example_inputs if torch.is_tensor(x)],
        },
    )
