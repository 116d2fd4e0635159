"""DARIO on the 12-block zoo ViT (digits): throughput, accuracy and search figures of issue 5.

    python benchmarks/dario_vit.py                  # CPU: a few minutes on 2 cores
    python benchmarks/dario_vit.py --no-write       # print, leave BENCHMARKS.md alone

What one run measures:
1. Three pipelines from the same trained ViT (trained once; its stage is shared):
   unpruned = baseline → finetune (F epochs) → onnx,
   pruned   = baseline → prune-dario (remove half the blocks, then F epochs of fine-tuning) → onnx, and
   thesis   = baseline → prune-dario (the thesis's mode: keep the blocks whose σ(α) ≥ 0.65, then F epochs
              of fine-tuning of the last kept block and the head, `finetune_scope: last-block`) → onnx.
   Accuracy of each is measured on its ONNX file through onnxruntime (validation split).
2. Inference throughput of the three ONNX files, side by side in one process (onnxruntime CPU,
   interleaved rounds), at batch 1 and at batch 64; the gain is pruned / unpruned − 1.
3. The search itself with the pass's defaults (500 iterations, 100 warm-start samples), timed.
4. Differentiable search vs the reference-code mode vs random search, same budget (k + n proxy
   evaluations), over several seeds: the best objective each reaches (parameter variance, lower is better).
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, side_by_side_latency, write_section  # noqa: E402


def pipeline(name: str, passes: list, args: argparse.Namespace, model: dict | None = None) -> dict:
    """A digits pipeline: `model` (default: the zoo ViT of --depth blocks), trained as the DARIO benchmarks
    train it, then `passes`, then ONNX."""
    model = model or {"frontend": "zoo", "model": "vit", "depth": args.depth}
    return {
        "name": name, "seed": 0,
        "data": {"name": "digits"},
        "model": {**model, "train": {"epochs": args.epochs, "batch_size": 16, "lr": args.lr, "optimizer": "adamw",
                                     "weight_decay": 0.1}},
        "passes": passes,
        "export": ["onnx"],
        "evaluate": {"latency": {"backends": ["onnxruntime-cpu"], "iters": 5, "warmup": 1}},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "dario_vit")
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=15, help="baseline training epochs")
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--remove", type=int, default=None, help="blocks removed (default: half)")
    ap.add_argument("--finetune-epochs", type=int, default=5)
    ap.add_argument("--finetune-lr", type=float, default=5e-4)
    ap.add_argument("--finetune-scope", default="all", choices=["all", "last-block"], help="of the fixed-count row")
    ap.add_argument("--threshold", type=float, default=0.65, help="of the thesis-mode row")
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the search-mode comparison")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    remove = args.remove if args.remove is not None else args.depth // 2

    from compressor.ir import ModelIR
    from compressor.passes.dario import DarioOptions, _example, prepare, search
    from compressor.pipeline import Pipeline

    start = time.perf_counter()
    ft = {"epochs": args.finetune_epochs, "lr": args.finetune_lr, "batch_size": 16}
    unpruned = Pipeline.from_dict(pipeline("dario_vit_unpruned", [{"finetune": ft}], args))
    dario = {"prune-dario": {"remove_blocks": remove, "finetune_epochs": args.finetune_epochs,
                             "finetune_lr": args.finetune_lr, "finetune_scope": args.finetune_scope,
                             "finetune_batch_size": 16}}
    pruned = Pipeline.from_dict(pipeline("dario_vit_pruned", [dario], args))
    thesis_pass = {"prune-dario": {"threshold": args.threshold, "finetune_epochs": args.finetune_epochs,
                                   "finetune_lr": args.finetune_lr, "finetune_scope": "last-block",
                                   "finetune_batch_size": 16}}
    thesis = Pipeline.from_dict(pipeline("dario_vit_thesis", [thesis_pass], args))
    print(f"unpruned: {unpruned.to_line()}\npruned:   {pruned.to_line()}\nthesis:   {thesis.to_line()}",
          file=sys.stderr, flush=True)
    u = unpruned.run(out=args.out / "unpruned", progress=False)
    p = pruned.run(out=args.out / "pruned", progress=False)
    t = thesis.run(out=args.out / "thesis", progress=False)
    u_rec, p_rec, t_rec = u.stages[-1].record, p.stages[-1].record, t.stages[-1].record
    dario_stats, thesis_stats = p.ir.history[-1].stats, t.ir.history[-1].stats
    pipelines_s = time.perf_counter() - start

    print("throughput, side by side ...", file=sys.stderr, flush=True)
    paths = [u.run_dir / u_rec["artifact"], p.run_dir / p_rec["artifact"], t.run_dir / t_rec["artifact"]]
    lat1 = side_by_side_latency(paths, args.rounds, args.iters, batch=1)
    lat64 = side_by_side_latency(paths, args.rounds, max(5, args.iters // 8), batch=64)

    print("search timing and mode comparison ...", file=sys.stderr, flush=True)
    base = ModelIR.load(u.run_dir / "00_baseline")
    d = DarioOptions()
    shape = tuple(base.inputs[0].shape[1:])

    def run_search(mode: str, seed: int) -> tuple[float, float, float]:
        prep = prepare(copy.deepcopy(base.module), _example(base), "block")
        r = search(prep, shape, mode=mode, proxy_kind=d.proxy, iterations=d.iterations, warm_start=d.warm_start,
                   lr=d.lr, weight_decay=d.weight_decay, gamma=d.gamma, batch=d.batch_size, seed=seed)
        return r.best, r.initial, r.seconds

    modes = ["differentiable", "reference-code", "random"]
    results = {m: [run_search(m, s) for s in range(args.seeds)] for m in modes}
    wall = time.perf_counter() - start

    acc_u, acc_p, acc_t = (100 * r["metrics"]["accuracy"] for r in (u_rec, p_rec, t_rec))
    kept_t = args.depth - len(thesis_stats["removed_blocks"])
    sig_t = [s["sigma"][0] for s in thesis_stats["structures"] if s["kind"] == "block"]
    initial = results["differentiable"][0][1]
    lines = [
        f"## DARIO on the {args.depth}-block zoo ViT (digits)",
        "",
        "- command: `python benchmarks/dario_vit.py`",
        f"- machine: {machine()}",
        f"- date: {dt.date.today().isoformat()}; wall time {wall / 60:.1f} min ({pipelines_s / 60:.1f} min of pipelines; "
        "stages already in --out are reused)",
        f"- unpruned: `{unpruned.to_line()}`",
        f"- pruned: `{pruned.to_line()}`",
        f"- thesis mode: `{thesis.to_line()}`",
        "",
        "| Model | Blocks | Params | Accuracy % (ONNX, val) | p50 ms, batch 1 | items/s, batch 1 | p50 ms, batch 64 | items/s, batch 64 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| unpruned, fine-tuned | {args.depth} | {u_rec['params']:,} | {acc_u:.2f} | {lat1[0]:.2f} | {1000 / lat1[0]:.0f} | "
        f"{lat64[0]:.2f} | {64000 / lat64[0]:.0f} |",
        f"| DARIO-pruned, fine-tuned | {args.depth - len(dario_stats['removed_blocks'])} | {p_rec['params']:,} | {acc_p:.2f} | "
        f"{lat1[1]:.2f} | {1000 / lat1[1]:.0f} | {lat64[1]:.2f} | {64000 / lat64[1]:.0f} |",
        f"| DARIO threshold {args.threshold:g}, last block + head fine-tuned | {kept_t} | {t_rec['params']:,} | "
        f"{acc_t:.2f} | {lat1[2]:.2f} | {1000 / lat1[2]:.0f} | {lat64[2]:.2f} | {64000 / lat64[2]:.0f} |",
        "",
        f"- removed blocks: {', '.join(dario_stats['removed_blocks'])}",
        f"- inference throughput gain: **{100 * (lat1[0] / lat1[1] - 1):+.0f}%** at batch 1, "
        f"**{100 * (lat64[0] / lat64[1] - 1):+.0f}%** at batch 64 (thesis: +69% for MAE-ViT-base, 6 of 12 blocks)",
        f"- accuracy change: {acc_p - acc_u:+.2f} points (target: within 1 point)",
        f"- thesis mode: σ(α) of blocks 0–{args.depth - 1}: {', '.join(f'{v:.3f}' for v in sig_t)}; "
        f"{len(thesis_stats['removed_blocks'])} below {args.threshold:g} removed"
        f"{' (' + ', '.join(thesis_stats['removed_blocks']) + ')' if thesis_stats['removed_blocks'] else ''}; "
        f"fine-tuned {thesis_stats['finetune']['trainable_params']:,} of {t_rec['params']:,} parameters; "
        f"throughput {100 * (lat1[0] / lat1[2] - 1):+.0f}% at batch 1, {100 * (lat64[0] / lat64[2] - 1):+.0f}% "
        f"at batch 64; accuracy {acc_t - acc_u:+.2f} points (thesis, MAE-ViT-base: 6 of 12 blocks removed at 0.65)",
        f"- the pass's search inside the pipeline: {dario_stats['search']['seconds']:.1f} s "
        f"({dario_stats['search']['evaluations']} proxy evaluations)",
        "",
        f"Search modes, same budget ({d.warm_start} warm-start samples + {d.iterations} iterations), proxy `{d.proxy}` "
        f"(lower is better; the unpruned model: {initial:.9g}), {args.seeds} seeds:",
        "",
        "| Mode | best objective, mean | per seed | search s, median |",
        "|---|---:|---|---:|",
    ]
    for m in modes:
        bests = [r[0] for r in results[m]]
        lines.append(f"| {m} | {statistics.mean(bests):.9g} | {', '.join(f'{b:.9g}' for b in bests)} | "
                     f"{statistics.median(r[2] for r in results[m]):.1f} |")
    diff_best = [r[0] for r in results["differentiable"]]
    rand_best = [r[0] for r in results["random"]]
    wins = sum(a < b for a, b in zip(diff_best, rand_best))
    lines += ["", f"- differentiable below random on {wins} of {args.seeds} seeds; "
              f"search time (differentiable, defaults): median {statistics.median(r[2] for r in results['differentiable']):.1f} s "
              "(target: under one minute)"]
    body = "\n".join(lines) + "\n"
    print(body)
    if not args.no_write:
        write_section("dario-vit", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
