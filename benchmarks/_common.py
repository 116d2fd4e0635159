"""Shared by the benchmark scripts: the machine line and the BENCHMARKS.md section writer."""
from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from compressor.store import atomic_write

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"


def machine() -> str:
    import torch

    from compressor.evaluate.latency import device_name

    return (f"{device_name()}, {os.cpu_count()} cores{cpu_isa()}, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads)")


def cpu_isa() -> str:
    """' (AVX-512 with VNNI)' and the like, from /proc/cpuinfo's flags: what int8 kernels can use."""
    try:
        flags = next((ln.split(":", 1)[1].split() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("flags")), [])
    except OSError:
        return ""
    if "avx512f" in flags:
        return " (AVX-512 with VNNI)" if "avx512_vnni" in flags else " (AVX-512, no VNNI)"
    if "avx2" in flags:
        return " (AVX2 with VNNI)" if "avx_vnni" in flags else " (AVX2, no VNNI)"
    return ""


def write_section(name: str, body: str, path: Path = BENCHMARKS) -> str:
    """Replace (or append) the `<!-- bench:NAME -->` section of BENCHMARKS.md with `body`, atomically."""
    section = f"<!-- bench:{name} -->\n{body.strip()}\n<!-- /bench:{name} -->"
    text = path.read_text() if path.exists() else (
        "# Benchmarks\n\nFigures from actual runs of the scripts in `benchmarks/`; each section names its "
        "command and machine. Metrics are on the pipeline's evaluation split; latency at batch 1.\n")
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _m: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    atomic_write(path, text)
    return section


def side_by_side_latency(paths: list[Path], rounds: int, iters: int, threads: int | None = None,
                         batch: int = 1, spinning: bool = True) -> list[float]:
    """`compressor.evaluate.latency.side_by_side_onnxruntime` (the int8 pass's mixed precision times with it too)."""
    from compressor.evaluate.latency import side_by_side_onnxruntime

    return side_by_side_onnxruntime(paths, rounds, iters, threads=threads, batch=batch, spinning=spinning)
