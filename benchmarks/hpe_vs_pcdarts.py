"""HPE-DARTS vs DARTS and PC-DARTS at the same epoch budget, each search feeding a pipeline that trains the
derived network and exports it to verified ONNX (issues "NAS II", "Fidelity II"), on insar-synthetic, CPU
profile.

    python benchmarks/hpe_vs_pcdarts.py [--epochs 16] [--train-epochs 6] [--threads 1]

All three searches run `--epochs` epochs in total, the first quarter without α steps: HPE-DARTS (its default
schedule: NetPerfProxy in every hybrid stage) a warm-up stage of epochs/4 (`warmup_epochs`) and 3 hybrid
stages of epochs/4 (8 → 5 → 3 → 1 ops per edge); DARTS (first order) and PC-DARTS `epochs` epochs with
`warmup_epochs` = epochs/4. Same data, search C=16 and 5 cells; the derived genotypes are trained for
`--train-epochs` at C=16, 5 cells, and measured on the validation split (IoU) and as ONNX. Each search's time
is split per stage (HPE-DARTS) or phase (warm-up / α epochs) into training (the α and weight steps) and
scoring (the algorithm's hooks: HPE-DARTS's op scoring and pruning; the derivation), from the search's own
records (`search_result.json`, `alpha_history.json`). Then one scoring round of each HPE-DARTS measure is
timed on a fresh 8-op supernet of the same size.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write_section  # noqa: E402

C, LAYERS, SIZE, BATCH = 16, 5, 16, 16
DATA = {"name": "insar-synthetic", "size": SIZE, "n_train": 128, "n_val": 64, "n_test": 32}


def phases(name: str, search_dir: Path) -> tuple[list[tuple], dict]:
    """Rows (phase, epochs, ops per edge, train s, score s) and the stage records' totals."""
    result = json.loads((search_dir / "search_result.json").read_text())
    history = json.loads((search_dir / "alpha_history.json").read_text())
    stages = result["stages"]
    rows = []
    if name == "hpe-darts":
        labels = ["warm-up (α fixed)", "hybrid stage 1", "hybrid stage 2", "hybrid stage 3"]
        for s in stages:
            h = [e for e in history if e["stage"] == s["stage"]]
            ops = len(h[0]["primitives_normal"][0]) if h else 0
            rows.append((labels[s["stage"]], s["epochs"], ops, s["train_s"], s["score_s"]))
    else:
        warm = [e for e in history if e.get("val_loss") is None]  # no α step: the warm-up epochs
        rest = [e for e in history if e.get("val_loss") is not None]
        ops = len(history[0]["primitives_normal"][0])
        rows.append(("warm-up (α fixed)", len(warm), ops, sum(e["train_s"] for e in warm),
                     sum(e["score_s"] for e in warm)))
        # the derivation (`finish`) is the last phase's scoring
        end = stages[0]["score_s"] - sum(e["score_s"] for e in history)
        rows.append(("α epochs", len(rest), ops, sum(e["train_s"] for e in rest),
                     sum(e["score_s"] for e in rest) + end))
    totals = {k: sum(s[k] for s in stages) for k in ("train_s", "score_s", "seconds")}
    return rows, totals


def scoring_rounds(accuracy_batch: int, batch: int) -> list[tuple[str, int, float]]:
    """(measure, samples, seconds) of one scoring round of each measure on a fresh 8-op supernet at C, LAYERS."""
    import torch

    from compressor.data import build_data, make_loader
    from compressor.frontends.darts.hpe import accuracy_importance, proxy_importance
    from compressor.frontends.darts.search_space import SearchNetwork

    data = build_data(DATA["name"], {k: v for k, v in DATA.items() if k != "name"})
    x, y = next(iter(make_loader(data.split("val"), batch, shuffle=False)))
    x = x.float()
    torch.manual_seed(0)
    net = SearchNetwork(C, 1, LAYERS, task="segmentation", in_channels=x.shape[1])
    out = []
    for measure in ("netperf", "netperf-literal", "naswot"):
        t = time.perf_counter()
        proxy_importance(net, x[:batch], measure)
        out.append((measure, batch, time.perf_counter() - t))
    t = time.perf_counter()
    accuracy_importance(net, x[:accuracy_batch], y[:accuracy_batch])
    out.append(("accuracy", accuracy_batch, time.perf_counter() - t))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=16, help="search epochs in total (a multiple of 4)")
    ap.add_argument("--train-epochs", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    ap.add_argument("--accuracy-batch", type=int, default=8, help="samples of the timed accuracy-drop round")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-hpe")
    ap.add_argument("--no-write", action="store_true", help="print the section instead of writing BENCHMARKS.md")
    args = ap.parse_args()
    import torch

    from compressor.pipeline import Pipeline

    torch.set_num_threads(args.threads)
    quarter = max(1, args.epochs // 4)
    common = {"batch_size": BATCH, "init_channels": C, "layers": LAYERS}
    searches = {
        "hpe-darts": {"algorithm": "hpe-darts", "epochs": quarter, "warmup_epochs": quarter},
        "darts": {"algorithm": "darts", "epochs": 4 * quarter, "warmup_epochs": quarter},
        "pc-darts": {"algorithm": "pc-darts", "epochs": 4 * quarter, "warmup_epochs": quarter},
    }
    bench_start = time.perf_counter()
    rows, per_phase = [], {}
    for name, search in searches.items():
        doc = {"name": f"bench-{name}", "seed": 0, "data": DATA,
               "model": {"frontend": "darts", "init_channels": C, "layers": LAYERS,
                         "search": {**search, **common},
                         "train": {"epochs": args.train_epochs, "batch_size": BATCH, "lr": 0.003}},
               "export": ["onnx"]}
        start = time.perf_counter()
        result = Pipeline.from_dict(doc).run(out=args.out / name, progress=False)
        wall = time.perf_counter() - start
        base, onnx = result.stages[0], result.stages[-1]
        meta = base.output.ir.meta
        per_phase[name], totals = phases(name, Path(meta["search_dir"]))
        rows.append((name, meta.get("search_seconds"), totals, base.record["metrics"].get("iou"),
                     onnx.record["metrics"].get("iou"), base.record["params"], wall,
                     json.dumps(meta.get("genotype_json", {}).get("normal"))))
        print(name, f"{wall:.0f} s", flush=True)
    rounds = scoring_rounds(args.accuracy_batch, 64)
    bench_wall = time.perf_counter() - bench_start

    lines = [f"Machine: {machine()}, shared with other jobs. Command: `python benchmarks/hpe_vs_pcdarts.py --epochs "
             f"{args.epochs} --train-epochs {args.train_epochs} --threads {args.threads}` (insar-synthetic "
             f"{SIZE}×{SIZE}, {DATA['n_train']} train, {DATA['n_val']} val; search and network C={C}, {LAYERS} cells, "
             f"batch {BATCH}; {args.epochs} search epochs each, the first {quarter} without α steps; whole run "
             f"{bench_wall / 60:.1f} min).", "",
             "| algorithm | search s | training s | scoring s | other s | IoU (trained, val) | IoU (ONNX) | params "
             "| pipeline wall s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, secs, tot, iou, onnx_iou, params, wall, _ in rows:
        other = tot["seconds"] - tot["train_s"] - tot["score_s"]
        lines.append(f"| {name} | {secs} | {tot['train_s']:.1f} | {tot['score_s']:.1f} | {other:.1f} | {100 * iou:.2f} "
                     f"| {100 * onnx_iou:.2f} | {params:,} | {wall:.0f} |")
    lines += ["", "Per stage (HPE-DARTS) or phase (DARTS, PC-DARTS): training = the α and weight steps, scoring = "
              "the algorithm's hooks (HPE-DARTS: NetPerfProxy scoring at each epoch start and stage end, soft and hard "
              "pruning; all: the final derivation), other = supernet builds, checkpoints, α-history plots.", "",
              "| algorithm | stage / phase | epochs | ops per edge | training s | training s / epoch | scoring s |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for name, phase_rows in per_phase.items():
        for label, epochs, ops, train_s, score_s in phase_rows:
            per_epoch = f"{train_s / epochs:.1f}" if epochs else ""
            lines.append(f"| {name} | {label} | {epochs} | {ops} | {train_s:.1f} | {per_epoch} | {score_s:.1f} |")
    lines += ["", f"One scoring round of each HPE-DARTS measure on a fresh 8-op supernet (C={C}, {LAYERS} cells, "
              f"{SIZE}×{SIZE}; netperf, netperf-literal, naswot: cached, one forward; accuracy: 2·14·8 + 1 = 225 "
              "variants, batched):", "",
              "| measure | samples | seconds |", "|---|---:|---:|"]
    lines += [f"| {m} | {n} | {s:.1f} |" for m, n, s in rounds]
    lines += ["", "Normal cells found:", ""] + [f"- {r[0]}: `{r[7]}`" for r in rows]
    body = "## HPE-DARTS vs DARTS and PC-DARTS (CPU profile)\n\n" + "\n".join(lines)
    print(body if args.no_write else write_section("hpe-vs-pcdarts", body))


if __name__ == "__main__":
    main()
