"""Channel alignment and onnxruntime CPU latency: prune-l1 with and without `round_to`.

    python benchmarks/seed_tables.py                 # first: trains the baseline
    python benchmarks/channel_alignment.py           # then: prune, export and time each variant

In seed_tables.py's grid, prune 0.4 (follow) removes 63% of the MACs but runs slower than the
baseline on onnxruntime CPU. This benchmark asks whether the channel counts that L1 pruning leaves
(e.g. 19 of 48 at ratio 0.6) are the cause: the same pruning at 0.4 / 0.6 / 0.8, in both exclusion meanings,
with `round_to` unset and set to 8 (kept channel counts multiples of 8). No fine-tuning: latency does
not depend on the weights' values, and the IoU of these rows is in seed_tables.py's tables.

Each variant is a pipeline (baseline from seed_tables.py's run directory, prune-l1, ONNX); latency
is measured side by side (one onnxruntime CPU session per file, batch 1, interleaved rounds; the
median over all rounds).
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write_section  # noqa: E402
import seed_tables as st  # noqa: E402

RATIOS = (0.4, 0.6, 0.8)
ROUND_TO = (None, 8)


def variant_rows(modes: tuple[str, ...] = st.MODES) -> list[st.Row]:
    out = []
    for mode in modes:
        for r in RATIOS:
            for k in ROUND_TO:
                opts = {"ratio": r, "exclude_mode": mode, **({"round_to": k} if k else {})}
                out.append(st.Row(f"{mode}-{r}-round{k or 1}", mode, f"prune {r} ({mode})", [{"prune-l1": opts}]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--profile", choices=sorted(st.PROFILES), default="cpu")
    ap.add_argument("--grid", type=Path, default=None,
                    help="seed_tables.py's runs directory (default: runs/seed_tables_PROFILE)")
    ap.add_argument("--out", type=Path, default=None, help="runs directory (default: runs/channel_alignment)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--no-write", action="store_true", help="print the table but leave BENCHMARKS.md alone")
    args = ap.parse_args()

    prof = st.PROFILES[args.profile]
    grid = args.grid or ROOT / "runs" / f"seed_tables_{args.profile}"
    out = args.out or ROOT / "runs" / "channel_alignment"
    error = st.grid_error(grid, args.profile)
    if error:
        print(error, file=sys.stderr)
        return 2
    start = time.perf_counter()
    base = st.Row("baseline", "baseline", "baseline (fp32)", [])
    rows = [base] + variant_rows()
    st.run_from_grid(prof, rows, grid, out, args.rounds, args.iters)

    lines = ["| Row | round_to | Params | MACs | ORT p50 ms | Speed-up vs baseline |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        k = (r.passes[0]["prune-l1"].get("round_to") if r.passes else None) or "–"
        lines.append(f"| {r.label} | {k} | {r.record['params']:,} | {r.record['macs'] / 1e6:.1f} M | "
                     f"{r.latency_ms:.2f} | {base.latency_ms / r.latency_ms:.2f}× |")
    body = (f"## Channel alignment and onnxruntime CPU latency, {args.profile} profile\n\n"
            f"- command: `python benchmarks/channel_alignment.py --profile {args.profile}` (after "
            f"`python benchmarks/seed_tables.py --profile {args.profile}`)\n- machine: {machine()}\n"
            f"- date: {dt.date.today().isoformat()}; wall time {(time.perf_counter() - start) / 60:.1f} min\n"
            f"- the seed grid's baseline (C={prof['init_channels']}, {prof['layers']} cells, {prof['size']}×"
            f"{prof['size']}) pruned by prune-l1 without fine-tuning, exported to ONNX; latency = median of "
            f"{args.rounds} interleaved rounds × {args.iters} calls, batch 1, all sessions side by side in one "
            "process\n\n" + "\n".join(lines) + "\n")
    print(body)
    if not args.no_write:
        write_section(f"channel-alignment-{args.profile}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
