"""Ablation of seed_tables.py's best chain: what the teacher and the feature alignment each add.

    python benchmarks/seed_tables.py                 # first: trains the baseline (the teacher)
    python benchmarks/best_chain_ablation.py         # then: three variants of the best row

The best chain distills the PC-DARTS baseline into a small student of its genotype with feature
alignment on the decoder, then converts it to FP16. Each variant below is that pipeline with one
thing taken away; everything else (student, epochs, learning rate, data, seed) is the same:

- `as in the grid`: α = best_alpha, T = best_temperature, feature alignment on FEATURE_LAYERS;
- `no features`: the same without feature alignment;
- `no teacher`: α = 0 and no feature alignment, i.e. the student trained on the labels alone.

The baseline and the grid's best row are reused from seed_tables.py's run directory (their stages
are copied and the runner's keys find them cached); the variants run under runs/best_chain_ablation.
Figures are those of the final FP16 ONNX file, measured through onnxruntime on the validation split.
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


def variant_rows(prof: dict) -> list[st.Row]:
    best = next(r for r in st.rows(prof) if r.id == "best")
    out = []
    for name, change in VARIANTS.items():
        row = copy.deepcopy(best)
        row.id, row.label = "best-" + name.replace(" ", "-"), name
        row.passes[0]["distill"].update(change)
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

    from compressor.pipeline import Pipeline

    prof = st.PROFILES[args.profile]
    grid = args.grid or ROOT / "runs" / f"seed_tables_{args.profile}"
    out = args.out or ROOT / "runs" / "best_chain_ablation"
    if not (grid / "baseline" / "00_baseline" / "ir.pt").exists():
        print(f"error: no baseline in {grid}; run `python benchmarks/seed_tables.py --profile {args.profile}` "
              f"first (or give --grid DIR)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    lines = ["| Variant | α | T | Feature alignment | Accuracy | Recall | IoU | ΔIoU vs baseline | Stage min |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    base_iou = None
    for row in variant_rows(prof):
        run_dir = out / row.id
        st._seed_stages(grid / "baseline", run_dir, 1)
        if row.label == "as in the grid":
            st._seed_stages(grid / "best", run_dir, 1 + len(row.passes))
        print(f"{row.label}: {Pipeline.from_dict(st.pipeline_dict(prof, row, 0)).to_line()}", file=sys.stderr,
              flush=True)
        result = Pipeline.from_dict(st.pipeline_dict(prof, row, 0)).run(out=run_dir, progress=False)
        base_iou = base_iou if base_iou is not None else (result.stages[0].record.get("metrics") or {}).get("iou")
        m = result.stages[-1].record.get("metrics") or {}
        d = row.passes[0]["distill"]
        minutes = sum(s.record.get("seconds") or 0 for s in result.stages[1:]) / 60
        lines.append(f"| {row.label} | {d['alpha']:g} | {d['temperature']:g} | "
                     f"{', '.join(d['feature_layers']) or 'none'} | {st._pct(m.get('accuracy'))} | "
                     f"{st._pct(m.get('recall'))} | {st._pct(m.get('iou'))} | "
                     f"{100 * ((m.get('iou') or 0) - (base_iou or 0)):+.2f} | {minutes:.1f} |")
    body = (f"## Best chain ablation, {args.profile} profile\n\n"
            f"- command: `python benchmarks/best_chain_ablation.py --profile {args.profile}` (after "
            f"`python benchmarks/seed_tables.py --profile {args.profile}`)\n- machine: {machine()}\n"
            f"- date: {dt.date.today().isoformat()}; wall time {(time.perf_counter() - start) / 60:.1f} min "
            "(stages already computed are reused)\n"
            f"- student C={prof['best_student'][0]}, {prof['best_student'][1]} cells, {prof['best_epochs']} epochs, "
            f"lr {prof['best_lr']}, then FP16; baseline (teacher) IoU {st._pct(base_iou)}; figures of the FP16 "
            "ONNX file through onnxruntime on the validation split; one run per variant (seed 0)\n\n" + "\n".join(lines) + "\n")
    print(body)
    if not args.no_write:
        write_section(f"best-chain-ablation-{args.profile}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
