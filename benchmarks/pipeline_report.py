"""Run a sample pipeline from scratch and record its report in BENCHMARKS.md.

    python benchmarks/pipeline_report.py samples/quickstart.yaml [--out DIR]

The section for the pipeline (between `<!-- bench:NAME -->` markers) is replaced, so re-running
keeps one up-to-date section per pipeline. It records the machine, the command, the total wall time
and the per-stage table written by the pipeline itself (all from this one run).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    from compressor.evaluate.latency import device_name

    import torch

    return (f"{device_name()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pipeline", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="run directory (default: a temp dir)")
    ap.add_argument("--benchmarks", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()

    from compressor.pipeline import Pipeline

    p = Pipeline.from_yaml(args.pipeline)
    out = args.out or Path(tempfile.mkdtemp(prefix=f"bench-{p.name}-"))
    start = time.perf_counter()
    result = p.run(out=out, progress=False, force=True)
    wall = time.perf_counter() - start
    table = result.report["md"].read_text().split("\n", 2)[2].strip()
    cmd = f"python benchmarks/pipeline_report.py {args.pipeline}"
    section = (f"<!-- bench:{p.name} -->\n## `{p.name}`: {p.to_line()}\n\n"
               f"- command: `{cmd}` (a fresh run: every stage recomputed)\n"
               f"- machine: {machine()}\n- date: {dt.date.today().isoformat()}\n"
               f"- total wall time: {wall:.0f} s\n\n{table}\n<!-- /bench:{p.name} -->")
    path = args.benchmarks
    text = path.read_text() if path.exists() else (
        "# Benchmarks\n\nFigures from actual runs of the scripts in `benchmarks/`; each section names its "
        "command and machine. Metrics are on the pipeline's evaluation split; latency at batch 1.\n")
    pattern = re.compile(rf"<!-- bench:{re.escape(p.name)} -->.*?<!-- /bench:{re.escape(p.name)} -->", re.S)
    text = pattern.sub(lambda _m: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
