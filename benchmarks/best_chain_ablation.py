"""Ablation of seed_tables.py's best chain: what the teacher, the feature alignment and the student add.

    python benchmarks/seed_tables.py                 # first: trains the baseline (the teacher)
    python benchmarks/best_chain_ablation.py         # then: four variants of the best row

The best chain distills the PC-DARTS baseline into a small student of its genotype with feature
alignment on the decoder, then converts it to FP16. Each variant below is that pipeline with one
thing taken away; everything else (student, epochs, learning rate, data, seed) is the same:

- `as in the grid`: α = best_alpha, T = best_temperature, feature alignment on FEATURE_LAYERS;
- `no features`: the same without feature alignment;
- `no teacher`: α = 0 and no feature alignment, i.e. the student trained on the labels alone;
- `pruned student`: the same distillation, but into the teacher pruned by prune-l1 (0.6, follow,
  `round_to: 8`, `protect_penultimate`) instead of a fresh small network: the "prune + distill +
  FP16" chain, with the two fixes that BENCHMARKS.md's reading of the seed tables motivates.

The baseline and the grid's best row are reused from seed_tables.py's stage store (the runs share
`<grid>/.store`, so the runner's keys find them computed); the variants run under runs/best_chain_ablation.
Figures are those of the final FP16 ONNX file, measured through onnxruntime on the validation split;
latency is measured side by side with the baseline's fp32 file.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write_section  # noqa: E402
import seed_tables as st  # noqa: E402

VARIANTS: dict[str, dict] = {
    "as in the grid": {},
    "no features": {"feature_layers": []},
    "no teacher": {"feature_layers": [], "alpha": 0.0},
}


# the other way to get a small student: prune the teacher (aligned, head inputs protected), then
# distill into the pruned network with the same loss
PRUNED_STUDENT = {"ratio": 0.6, "exclude_mode": "follow", "round_to": 8, "protect_penultimate": True}


def variant_rows(prof: dict) -> list[st.Row]:
    best = next(r for r in st.rows(prof) if r.id == "best")
    out = []
    for name, change in VARIANTS.items():
        row = copy.deepcopy(best)
        row.id, row.label = "best-" + name.replace(" ", "-"), name
        row.passes[0]["distill"].update(change)
        out.append(row)
    row = copy.deepcopy(best)
    row.id, row.label = "best-pruned-student", "pruned student: prune-l1 " + ", ".join(
        f"{k}={v}" for k, v in PRUNED_STUDENT.items())
    distill = row.passes[0]["distill"]
    for key in ("student_init_channels", "student_layers"):
        distill.pop(key)
    distill["student"] = "current"
    row.passes.insert(0, {"prune-l1": dict(PRUNED_STUDENT)})
    out.append(row)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--profile", choices=sorted(st.PROFILES), default="cpu")
    ap.add_argument("--grid", type=Path, default=None, help="seed_tables.py's runs directory "
                    "(default: runs/seed_tables_PROFILE)")
    ap.add_argument("--out", type=Path, default=None, help="runs directory (default: runs/best_chain_ablation)")
    ap.add_argument("--no-write", action="store_true", help="print the table but leave BENCHMARKS.md alone")
    args = ap.parse_args()

    prof = st.PROFILES[args.profile]
    grid = args.grid or ROOT / "runs" / f"seed_tables_{args.profile}"
    out = args.out or ROOT / "runs" / "best_chain_ablation"
    error = st.grid_error(grid, args.profile)
    if error:
        print(error, file=sys.stderr)
        return 2
    start = time.perf_counter()
    base = st.Row("baseline", "baseline", "baseline (teacher, fp32)", [])
    rows = [base] + variant_rows(prof)
    st.run_from_grid(prof, rows, grid, out, prof["latency_rounds"], prof["latency_iters"])
    base_iou = (base.record.get("metrics") or {}).get("iou") or 0.0
    lines = ["| Variant | α | T | Feature alignment | Params | IoU | ΔIoU vs baseline | Size ratio | Speed-up | "
             "Stage min |", "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows[1:]:
        m = row.record.get("metrics") or {}
        d = next(p["distill"] for p in row.passes if isinstance(p, dict) and "distill" in p)
        lines.append(f"| {row.label} | {d['alpha']:g} | {d['temperature']:g} | "
                     f"{', '.join(d['feature_layers']) or 'none'} | {row.record['params']:,} | "
                     f"{st._pct(m.get('iou'))} | {100 * ((m.get('iou') or 0) - base_iou):+.2f} | "
                     f"{base.record['size_bytes'] / row.record['size_bytes']:.1f}× | "
                     f"{base.latency_ms / row.latency_ms:.2f}× | {row.record['compute_min']:.1f} |")
    body = (f"## Best chain ablation, {args.profile} profile\n\n"
            f"- command: `python benchmarks/best_chain_ablation.py --profile {args.profile}` (after "
            f"`python benchmarks/seed_tables.py --profile {args.profile}`)\n- machine: {machine()}\n"
            f"- date: {dt.date.today().isoformat()}; wall time {(time.perf_counter() - start) / 60:.1f} min "
            "(stages already computed are reused)\n"
            f"- student C={prof['best_student'][0]}, {prof['best_student'][1]} cells, {prof['best_epochs']} epochs, "
            f"lr {prof['best_lr']}, then FP16; baseline (teacher) IoU {st._pct(base_iou)}; figures of the FP16 "
            "ONNX file through onnxruntime on the validation split; size ratio and speed-up against the "
            "baseline's fp32 ONNX file, latency measured side by side (onnxruntime CPU, batch 1, median of "
            f"{prof['latency_rounds']} interleaved rounds × {prof['latency_iters']} calls); one run per variant "
            "(seed 0)\n\n" + "\n".join(lines) + "\n")
    print(body)
    if not args.no_write:
        write_section(f"best-chain-ablation-{args.profile}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
