"""DARIO on a Hugging Face ViT (transformers ViTForImageClassification, 12 layers, digits), issue 11.

    python benchmarks/dario_hf_vit.py                  # CPU: ~5 minutes on 2 cores
    python benchmarks/dario_hf_vit.py --no-write       # print, leave BENCHMARKS.md alone

The model is a user's model: `samples/user_models.py:hf_vit` (random init from a small config: hidden
64, 4 heads, patch 2, 12 layers) behind the three-line wrapper that returns `.logits`, built by the
`torch` frontend. Four pipelines share its trained baseline stage:
  unpruned = baseline → finetune (F epochs) → onnx
  blocks   = baseline → prune-dario{granularity: block, remove_blocks: 6, F epochs of fine-tuning} → onnx
  heads    = baseline → prune-dario{granularity: head, remove_heads: 24 (half of 48), F epochs} → onnx
  thesis   = baseline → prune-dario{granularity: block, threshold: 0.65 (the layers whose σ(α) ≥ 0.65 stay),
             F epochs of fine-tuning of the last kept layer and the head (finetune_scope: last-block)} → onnx
Accuracy of each on its ONNX file (onnxruntime, validation split); inference throughput of the four
ONNX files side by side in one process (onnxruntime CPU, interleaved rounds) at batch 1 and 64.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, side_by_side_latency, write_section  # noqa: E402


def pipeline(name: str, passes: list, args: argparse.Namespace) -> dict:
    from dario_vit import pipeline as digits_pipeline

    return digits_pipeline(name, passes, args, model={
        "frontend": "torch", "factory": "user_models:hf_vit", "search_path": str(ROOT / "samples"),
        "kwargs": {"layers": args.depth, "hidden": 64, "heads": 4, "patch": 2}})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "dario_hf_vit")
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=30, help="baseline training epochs (HF init, N(0, 0.02), trains slower than the zoo ViT)")
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--finetune-lr", type=float, default=5e-4)
    ap.add_argument("--threshold", type=float, default=0.65, help="of the thesis-mode pipeline")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    remove_blocks, heads_total = args.depth // 2, args.depth * 4

    from compressor.pipeline import Pipeline

    start = time.perf_counter()
    ft = {"finetune_epochs": args.finetune_epochs, "finetune_lr": args.finetune_lr, "finetune_scope": "all",
          "finetune_batch_size": 16}
    plans = {
        "unpruned": [{"finetune": {"epochs": args.finetune_epochs, "lr": args.finetune_lr, "batch_size": 16}}],
        "blocks": [{"prune-dario": {"granularity": "block", "remove_blocks": remove_blocks, **ft}}],
        "heads": [{"prune-dario": {"granularity": "head", "remove_heads": heads_total // 2, **ft}}],
        "thesis": [{"prune-dario": {"granularity": "block", "threshold": args.threshold,
                                    **ft, "finetune_scope": "last-block"}}],
    }
    results = {}
    for name, passes in plans.items():
        p = Pipeline.from_dict(pipeline(f"dario_hf_vit_{name}", passes, args))
        print(f"{name}: {p.to_line()}", file=sys.stderr, flush=True)
        results[name] = (p, p.run(out=args.out / name, progress=False))
    pipelines_s = time.perf_counter() - start

    print("throughput, side by side ...", file=sys.stderr, flush=True)
    recs = {n: r.stages[-1].record for n, (_, r) in results.items()}
    paths = [results[n][1].run_dir / recs[n]["artifact"] for n in plans]
    lat1 = side_by_side_latency(paths, args.rounds, args.iters, batch=1)
    lat64 = side_by_side_latency(paths, args.rounds, max(5, args.iters // 8), batch=64)
    wall = time.perf_counter() - start

    acc = {n: 100 * recs[n]["metrics"]["accuracy"] for n in plans}
    stats = {n: results[n][1].ir.history[-1].stats for n in ("blocks", "heads", "thesis")}
    heads_left = {n: sum(sum(s["kept"]) for s in stats[n]["structures"] if s["kind"] == "heads") for n in ("heads",)}
    lines = [
        f"## DARIO on a Hugging Face ViT ({args.depth} layers, digits)",
        "",
        "- command: `python benchmarks/dario_hf_vit.py`",
        f"- machine: {machine()}",
        f"- date: {dt.date.today().isoformat()}; wall time {wall / 60:.1f} min ({pipelines_s / 60:.1f} min of pipelines; "
        "stages already in --out are reused)",
        "- model: transformers `ViTForImageClassification` (hidden 64, 4 heads, patch 2, random init) behind the "
        "`.logits` wrapper of `samples/user_models.py`, built by the `torch` frontend (no tracing)",
    ]
    lines += [f"- {n}: `{results[n][0].to_line()}`" for n in plans]
    lines += [
        "",
        "| Model | Layers | Heads | Params | Accuracy % (ONNX, val) | p50 ms, batch 1 | items/s, batch 1 | "
        "p50 ms, batch 64 | items/s, batch 64 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    layers = {"unpruned": args.depth, "blocks": args.depth - len(stats["blocks"]["removed_blocks"]), "heads": args.depth,
              "thesis": args.depth - len(stats["thesis"]["removed_blocks"])}
    heads = {"unpruned": heads_total, "blocks": 4 * layers["blocks"], "heads": heads_left["heads"],
             "thesis": 4 * layers["thesis"]}
    sig_t = [s["sigma"][0] for s in stats["thesis"]["structures"] if s["kind"] == "block"]
    for k, n in enumerate(plans):
        lines.append(f"| {n} | {layers[n]} | {heads[n]} | {recs[n]['params']:,} | {acc[n]:.2f} | {lat1[k]:.2f} | "
                     f"{1000 / lat1[k]:.0f} | {lat64[k]:.2f} | {64000 / lat64[k]:.0f} |")
    lines += [
        "",
        f"- removed layers: {', '.join(s.rsplit('.', 1)[-1] for s in stats['blocks']['removed_blocks'])} "
        f"(of `model.vit.layers`)",
        f"- half the layers removed: throughput **{100 * (lat1[0] / lat1[1] - 1):+.0f}%** at batch 1, "
        f"**{100 * (lat64[0] / lat64[1] - 1):+.0f}%** at batch 64 (target ≥ +69%, the thesis's MAE-ViT-base figure); "
        f"accuracy {acc['blocks'] - acc['unpruned']:+.2f} points (target: within 1 point)",
        f"- half the heads removed ({heads_total - heads_left['heads']} of {heads_total}): throughput "
        f"**{100 * (lat1[0] / lat1[2] - 1):+.0f}%** at batch 1, **{100 * (lat64[0] / lat64[2] - 1):+.0f}%** at batch 64; "
        f"accuracy {acc['heads'] - acc['unpruned']:+.2f} points",
        f"- thesis mode (threshold {args.threshold:g}, last layer + head fine-tuned, "
        f"{stats['thesis']['finetune']['trainable_params']:,} of {recs['thesis']['params']:,} parameters): σ(α) of layers "
        f"0–{args.depth - 1}: {', '.join(f'{v:.3f}' for v in sig_t)}; {len(stats['thesis']['removed_blocks'])} removed"
        f"{' (' + ', '.join(x.rsplit('.', 1)[-1] for x in stats['thesis']['removed_blocks']) + ')' if stats['thesis']['removed_blocks'] else ''}; "
        f"throughput **{100 * (lat1[0] / lat1[3] - 1):+.0f}%** at batch 1, **{100 * (lat64[0] / lat64[3] - 1):+.0f}%** "
        f"at batch 64; accuracy {acc['thesis'] - acc['unpruned']:+.2f} points",
        f"- search inside the passes: {stats['blocks']['search']['seconds']:.1f} s (blocks), "
        f"{stats['heads']['search']['seconds']:.1f} s (heads), {stats['blocks']['search']['evaluations']} proxy "
        "evaluations each (measured when the stage was computed)",
    ]
    body = "\n".join(lines) + "\n"
    print(body)
    if not args.no_write:
        write_section("dario-hf-vit", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
