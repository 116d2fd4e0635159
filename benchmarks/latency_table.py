"""The per-block latency table's predictor against end-to-end measurement, onnxruntime CPU.

    python benchmarks/latency_table.py                          # 20 networks at 32×32, batch 1
    python benchmarks/latency_table.py --networks 10 --size 64 --threads 1

Samples `--networks` random genotypes of a small hierarchical space (3 stages of 1-2 blocks, widths 8-32,
every op; `genotypes.sample_genotype`, seed `--seed`), measures their parts into a latency table (a fresh
store in a temporary directory unless `--store` is given, where a second run reuses the table) and each whole
network end-to-end the same way (ONNX on onnxruntime-cpu, `--rounds` rounds of `--iters` calls, median), then
prints every network's predicted and measured ms, Spearman's ρ and the MAPE. With `--write`, the summary lines
go into BENCHMARKS.md's `latency-table` section (one row per setting: a later run with another setting adds its
row, the same setting replaces its row).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCHMARKS, machine, write_section  # noqa: E402

from compressor.frontends.hierarchical.latency import check_predictor  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=20)
    ap.add_argument("--size", type=int, default=32, help="input height and width")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: its own)")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--segmentation", action="store_true", help="decoder heads instead of classifier heads")
    ap.add_argument("--store", default=None, help="store root to keep the table in (default: a temporary one)")
    ap.add_argument("--write", action="store_true", help="add this setting's row to BENCHMARKS.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="latency-table-") as tmp:
        r = check_predictor(args.store or tmp, n=args.networks, input_shape=(3, args.size, args.size),
                            batch=args.batch, segmentation=args.segmentation, seed=args.seed, threads=args.threads,
                            iters=args.iters, rounds=args.rounds)
    print(f"machine: {machine()}")
    print(f"{args.networks} networks, 3×{args.size}×{args.size}, batch {args.batch}, threads "
          f"{args.threads or 'default'}, {args.rounds}×{args.iters} calls; {r['parts_measured']} table entries "
          f"measured; {r['seconds']:.0f} s")
    print(f"{'net':>4} {'predicted ms':>13} {'measured ms':>12}")
    for i, (p, m) in enumerate(zip(r["predicted_ms"], r["measured_ms"])):
        print(f"{i:>4} {p:>13.3f} {m:>12.3f}")
    print(f"Spearman rho {r['rho']:.3f}   MAPE {r['mape']:.1f}%")
    if args.write:
        write_row(args, r)


HEADER = "| networks | input | batch | threads | head | entries | Spearman ρ | MAPE % | predicted/measured ms, median |"


def write_row(args: argparse.Namespace, r: dict) -> None:
    """Add (or replace) this setting's row of the `latency-table` section."""
    import re

    import numpy as np

    setting = (f"| {args.networks} | 3×{args.size}×{args.size} | {args.batch} | {args.threads or 'default'} | "
               f"{'decoder' if args.segmentation else 'classifier'} |")
    ratio = float(np.median(np.asarray(r["predicted_ms"]) / np.asarray(r["measured_ms"])))
    row = f"{setting} {r['parts_measured']} | {r['rho']:.3f} | {r['mape']:.1f} | {ratio:.2f} |"
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else ""
    found = re.search(r"<!-- bench:latency-table -->.*?<!-- /bench:latency-table -->", text, re.S)
    rows = [line for line in (found.group(0).splitlines() if found else [])
            if line.startswith("| ") and not line.startswith(("| networks", "|---")) and not line.startswith(setting)]
    body = "\n".join([
        "## Latency table: per-block prediction vs end-to-end latency (hierarchical space), onnxruntime CPU", "",
        "- command: `python benchmarks/latency_table.py --networks N --size S [--threads T] [--segmentation] --write`",
        f"- machine: {machine()}; last row added {__import__('datetime').date.today().isoformat()}",
        "- random genotypes of a small space (3 stages of 1-2 blocks, widths 8-32, every op), each part measured alone "
        "into the table, each network end-to-end (ONNX, 3 rounds of 30 calls, median); ρ is Spearman's rank "
        "correlation of predicted and measured, MAPE the mean absolute percentage error", "",
        HEADER, "|---:|---|---:|---:|---|---:|---:|---:|---:|", *rows, row])
    write_section("latency-table", body)


if __name__ == "__main__":
    main()
