"""Shared by the benchmark scripts: the machine line and the BENCHMARKS.md section writer."""
from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return section


def side_by_side_latency(paths: list[Path], rounds: int, iters: int, threads: int | None = None,
                         batch: int = 1) -> list[float]:
    """Median onnxruntime CPU latency (ms per call of `batch` samples) of each model: all sessions
    open at once and timed in `rounds` interleaved rounds of `iters` calls (after a warm-up), so
    that slow phases of a shared machine fall on every model alike."""
    import numpy as np
    import onnxruntime as ort

    from compressor.evaluate.latency import _random_input

    rng = np.random.default_rng(0)
    calls = []
    for p in paths:
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(p), sess_options=so, providers=["CPUExecutionProvider"])
        feed = {i.name: _random_input(i.name, list(i.shape), i.type, batch, rng) for i in sess.get_inputs()}
        calls.append((sess, feed))
    times: list[list[float]] = [[] for _ in paths]
    for sess, feed in calls:  # warm-up
        for _ in range(5):
            sess.run(None, feed)
    for _ in range(rounds):
        for k, (sess, feed) in enumerate(calls):
            for _ in range(iters):
                t = time.perf_counter()
                sess.run(None, feed)
                times[k].append(time.perf_counter() - t)
    return [1000 * float(np.median(t)) for t in times]
