"""Shared by the benchmark scripts: the machine line and the BENCHMARKS.md section writer."""
from __future__ import annotations

import json
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


def op_profile(path: Path, batch: int = 1, iters: int = 10) -> list[tuple[str, float, float]]:
    """onnxruntime's own profiler on `path`: per operator type, its share of kernel time and its kernel ms per
    run, largest first."""
    import numpy as np
    import onnxruntime as ort

    from compressor.evaluate.latency import _random_inputs

    so = ort.SessionOptions()
    so.enable_profiling = True
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.profile_file_prefix = str(path.parent / "ort_profile")
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    feed = _random_inputs(sess.get_inputs(), batch, np.random.default_rng(0))
    for _ in range(iters):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + float(e.get("dur", 0))
    total = sum(per_op.values()) or 1.0
    return sorted(((op, t / total, t / 1000 / iters) for op, t in per_op.items()), key=lambda x: -x[1])
