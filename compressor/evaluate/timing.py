"""What a latency measurement is: `LatencyStats`, `summarize` (percentiles of per-call times), and the
machine it ran on (`device_name`, `host_info`, `gpu_info`). Every backend's timing reports through it:
`compressor.evaluate.latency` (torch, onnxruntime) and `compressor.evaluate.trt_runtime` (TensorRT).

numpy only, like latency.py: it runs on edge devices without torch.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class LatencyStats:
    """One latency measurement. Times are per call (one batch) in milliseconds.

    `median_ms` ... `min_ms` are host latency (perf_counter around the call, including a device
    synchronize); `device_*_ms`, where not None, are device compute time of the same calls.
    """

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
    extra: dict = field(default_factory=dict)  # library versions, precision, clocks, input shapes, ...
    device_median_ms: float | None = None
    device_p90_ms: float | None = None
    device_p99_ms: float | None = None
    device_mean_ms: float | None = None
    device_std_ms: float | None = None
    device_min_ms: float | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LatencyStats":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# ---- machine description (best effort: never fails) --------------------------------------------

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


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip() or None
    except OSError:
        return None


def host_info() -> dict[str, Any]:
    """Python, numpy, platform, CPU count and cpu0's frequency governor and clocks where readable."""
    info: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__,
                            "platform": platform.platform(), "cpu": device_name(), "cpu_count": os.cpu_count()}
    base = "/sys/devices/system/cpu/cpu0/cpufreq/"
    governor = _read(base + "scaling_governor")
    if governor:
        info["cpu_governor"] = governor
    for key, name in (("cpu_cur_mhz", "scaling_cur_freq"), ("cpu_max_mhz", "cpuinfo_max_freq")):
        value = _read(base + name)
        if value and value.isdigit():
            info[key] = int(value) // 1000  # kHz -> MHz
    return info


_GPU_FIELDS = ("name", "driver_version", "clocks.sm", "clocks.mem", "clocks.max.sm", "pstate")


def gpu_info(index: int = 0) -> dict[str, Any]:
    """GPU `index` as nvidia-smi reports it (name, driver, current SM / memory clocks in MHz);
    {} when nvidia-smi is missing or fails. Needs neither torch nor CUDA bindings."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    try:
        proc = subprocess.run([exe, f"--query-gpu={','.join(_GPU_FIELDS)}", "--format=csv,noheader,nounits",
                               f"--id={index}"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {}
    if proc.returncode != 0 or not proc.stdout.strip():
        return {}
    values = [v.strip() for v in proc.stdout.strip().splitlines()[0].split(",")]
    out: dict[str, Any] = {}
    for key, value in zip(_GPU_FIELDS, values):
        key = {"name": "gpu", "clocks.sm": "gpu_sm_mhz", "clocks.mem": "gpu_mem_mhz",
               "clocks.max.sm": "gpu_max_sm_mhz", "pstate": "gpu_pstate"}.get(key, key)
        out[key] = int(value) if value.isdigit() else value
    return out


# ---- statistics --------------------------------------------------------------------------------

def _percentiles(ms: np.ndarray) -> dict[str, float]:
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "std_ms": float(ms.std()),
            "min_ms": float(ms.min())}


def summarize(times_s: list[float], device_times_s: list[float] | None = None, **fields: Any) -> LatencyStats:
    """Statistics of per-call times in seconds (percentiles by numpy's linear interpolation).

    `device_times_s`, if given, are the same calls' device compute times (device_*_ms fields).
    `fields` fill the non-statistical attributes; defaults: backend "unknown", this machine's
    device name, batch 1, threads 0 (unknown), warmup 0, iters len(times_s), extra {}.
    """
    if len(times_s) == 0:
        raise ValueError("summarize needs at least one timing")
    unknown = set(fields) - {"backend", "device", "batch", "threads", "warmup", "iters", "extra"}
    if unknown:
        raise TypeError(f"summarize got unexpected fields {sorted(unknown)}")
    host = _percentiles(np.asarray(times_s, dtype=np.float64) * 1e3)
    dev: dict[str, float] = {}
    if device_times_s is not None and len(device_times_s) > 0:
        dev = {f"device_{k}": v for k, v in _percentiles(np.asarray(device_times_s, dtype=np.float64) * 1e3).items()}
    batch = int(fields.get("batch", 1))
    median = host["median_ms"]
    return LatencyStats(
        backend=str(fields.get("backend", "unknown")),
        device=str(fields.get("device") or device_name()),
        batch=batch,
        threads=int(fields.get("threads", 0)),
        warmup=int(fields.get("warmup", 0)),
        iters=int(fields.get("iters", len(times_s))),
        throughput=batch / (median / 1e3) if median > 0 else float("inf"),
        extra=dict(fields.get("extra") or {}),
        **host, **dev,
    )
