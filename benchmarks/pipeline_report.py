"""Run a sample pipeline from scratch and record its report in BENCHMARKS.md.

    python benchmarks/pipeline_report.py samples/quickstart.yaml [--out DIR]

The section for the pipeline (between `<!-- bench:NAME -->` markers) is replaced, so re-running
keeps one up-to-date section per pipeline. It records the machine, the command, the total wall time
and the per-stage table written by the pipeline itself (all from this one run).
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCHMARKS, machine, write_section  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pipeline", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="run directory (default: a temp dir)")
    ap.add_argument("--benchmarks", type=Path, default=BENCHMARKS)
    args = ap.parse_args()

    from compressor.pipeline import Pipeline

    p = Pipeline.from_yaml(args.pipeline)
    out = args.out or Path(tempfile.mkdtemp(prefix=f"bench-{p.name}-"))
    start = time.perf_counter()
    result = p.run(out=out, progress=False, force=True)
    wall = time.perf_counter() - start
    table = result.report["md"].read_text().split("\n", 2)[2].strip()
    cmd = f"python benchmarks/pipeline_report.py {args.pipeline}"
    body = (f"## `{p.name}`: {p.to_line()}\n\n"
            f"- command: `{cmd}` (a fresh run: every stage recomputed)\n"
            f"- machine: {machine()}\n- date: {dt.date.today().isoformat()}\n"
            f"- total wall time: {wall:.0f} s\n\n{table}\n")
    section = write_section(p.name, body, args.benchmarks)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
