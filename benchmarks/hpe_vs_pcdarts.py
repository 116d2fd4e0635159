"""HPE-DARTS vs PC-DARTS at the same epoch budget, each search feeding a pipeline that trains the derived
network and exports it to verified ONNX (issue "NAS II"), on insar-synthetic, CPU profile.

    python benchmarks/hpe_vs_pcdarts.py [--epochs 8] [--train-epochs 6]

Both searches run `--epochs` epochs in total (HPE-DARTS: the warm-up and 3 hybrid stages of epochs/4 each;
PC-DARTS: epochs, α from a quarter of them) on the same data, C=8, 5 cells, 32×32; the derived genotypes are
trained for `--train-epochs` at C=8, 5 cells, and measured on the validation split (IoU) and as ONNX.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write_section  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--train-epochs", type=int, default=6)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-hpe")
    args = ap.parse_args()
    from compressor.pipeline import Pipeline

    data = {"name": "insar-synthetic", "size": 32, "n_train": 256, "n_val": 64, "n_test": 64}
    searches = {
        "hpe-darts": {"algorithm": "hpe-darts", "epochs": max(1, args.epochs // 4), "hpe": {"batch": 32}},
        "pc-darts": {"algorithm": "pc-darts", "epochs": args.epochs, "warmup_epochs": max(1, args.epochs // 4)},
    }
    rows = []
    for name, search in searches.items():
        doc = {"name": f"bench-{name}", "seed": 0, "data": data,
               "model": {"frontend": "darts", "init_channels": 8, "layers": 5,
                         "search": {**search, "batch_size": 32, "init_channels": 8, "layers": 5},
                         "train": {"epochs": args.train_epochs, "batch_size": 32, "lr": 0.003}},
               "export": ["onnx"], "evaluate": {"latency": {"backends": ["onnxruntime-cpu"], "iters": 20}}}
        start = time.perf_counter()
        result = Pipeline.from_dict(doc).run(out=args.out / name, progress=False)
        wall = time.perf_counter() - start
        base, onnx = result.stages[0], result.stages[-1]
        meta = result.stages[0].output.ir.meta
        rows.append((name, meta.get("search_seconds"), base.record["metrics"].get("iou"),
                     onnx.record["metrics"].get("iou"), base.record["params"], wall,
                     json.dumps(meta.get("genotype_json", {}).get("normal"))))
    lines = [f"Machine: {machine()}. Command: `python benchmarks/hpe_vs_pcdarts.py --epochs {args.epochs} "
             f"--train-epochs {args.train_epochs}` (insar-synthetic 32×32, 256 train; search and network C=8, "
             "5 cells; the same total search epochs).", "",
             "| algorithm | search s | IoU (trained, val) | IoU (ONNX) | params | pipeline wall s |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, secs, iou, onnx_iou, params, wall, _ in rows:
        lines.append(f"| {name} | {secs} | {100 * iou:.2f} | {100 * onnx_iou:.2f} | {params:,} | {wall:.0f} |")
    lines += ["", "Normal cells found:", ""] + [f"- {r[0]}: `{r[6]}`" for r in rows]
    print(write_section("hpe-vs-pcdarts", "## HPE-DARTS vs PC-DARTS (CPU profile)\n\n" + "\n".join(lines)))


if __name__ == "__main__":
    main()
