"""Time one search epoch per DARTS algorithm and print a markdown table.

Small-but-real settings by default (C=8, 5 cells, batch 32, 32×32 synthetic InSAR, 2 channels);
`--steps` bounds the steps per epoch (0 = the whole weight half of the train split). The α updates
run from the first step (warmup 0) so every algorithm pays its full per-step cost. P-DARTS times
the first stage (`--layers` cells, all 8 ops). HPE-DARTS runs its warm-up epoch and one hybrid epoch
(8 -> 1 ops, NetPerfProxy scoring every op at the epoch's start) and reports their mean. Each run writes into a temporary directory; the
times include the per-epoch checkpoint and α plot (well under a second).

    python benchmarks/search_epoch_time.py                       # CPU
    python benchmarks/search_epoch_time.py --device cuda --steps 50 --batch-size 64 --size 64
    python benchmarks/search_epoch_time.py --reference                  # also the NCHW reference ops

`--reference` runs each algorithm a second time, right after, under `ops.reference_ops()` (every op
NCHW with its own ReLU, as the reference code) and adds that time and the ratio.
"""
from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import torch

from compressor.data import build_data
from compressor.frontends.darts.ops import reference_ops
from compressor.frontends.darts.search import SearchOptions, run_search

RUNS = [("darts", 1), ("darts", 2), ("pc-darts", 1), ("p-darts", 1), ("lambda-darts", 1), ("em-darts", 1),
        ("hpe-darts", 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", default="insar-synthetic", choices=["insar-synthetic", "digits"])
    ap.add_argument("--size", type=int, default=32, help="insar-synthetic image size")
    ap.add_argument("--n-train", type=int, default=256)
    ap.add_argument("--init-channels", type=int, default=8)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10, help="steps per epoch (0 = the whole split)")
    ap.add_argument("--only", nargs="*", default=None, help="algorithms to time (default: all)")
    ap.add_argument("--reference", action="store_true", help="also time the NCHW reference ops, side by side")
    args = ap.parse_args()

    if args.data == "insar-synthetic":
        data = build_data("insar-synthetic", {"n_train": args.n_train, "n_val": 8, "n_test": 8, "size": args.size})
    else:
        data = build_data("digits", {})
    print(f"data {data.name} {tuple(data.input_shape)} ({data.task.kind}), C={args.init_channels}, "
          f"{args.layers} cells, batch {args.batch_size}, device {args.device}, torch threads "
          f"{torch.get_num_threads()}\n")
    with tempfile.TemporaryDirectory() as tmp:  # warm-up: imports (matplotlib), allocator, kernels
        run_search(SearchOptions.of(algorithm="darts", epochs=1, batch_size=args.batch_size,
                                    init_channels=args.init_channels, layers=args.layers, max_steps=1), data, Path(tmp), device=args.device, progress=False)
    if args.reference:
        print("| algorithm | order | steps | s / epoch | s / step | reference ops: s / step | speed-up |")
        print("|---|---|---|---|---|---|---|")
    else:
        print("| algorithm | order | steps | s / epoch | s / step |")
        print("|---|---|---|---|---|")
    for algorithm, order in RUNS:
        if args.only and algorithm not in args.only:
            continue
        extra = {"pdarts": {"stages": (args.layers,), "keep": (1,), "skip_dropout": (0.1,)}} \
            if algorithm == "p-darts" else {}
        if algorithm == "hpe-darts":  # the warm-up epoch and one hybrid epoch (with its op scoring), 8 -> 1
            extra = {"hpe": {"ops_per_edge": (8, 1), "importance": "netperf"}}
        opts = SearchOptions.of(algorithm=algorithm, order=order, epochs=1, batch_size=args.batch_size,
                                init_channels=args.init_channels, layers=args.layers, warmup_epochs=0,
                                max_steps=args.steps, **extra)
        n_weight = int(len(data.train) * opts.train_portion)
        steps = -(-n_weight // args.batch_size)
        steps = min(steps, args.steps) if args.steps else steps
        seconds = epoch_seconds(opts, data, args.device)
        row = f"| {algorithm} | {order} | {steps} | {seconds:.2f} | {seconds / max(steps, 1):.3f} |"
        if args.reference:
            with reference_ops():
                ref = epoch_seconds(opts, data, args.device)
            row += f" {ref / max(steps, 1):.3f} | {ref / seconds:.2f}x |"
        print(row, flush=True)


def epoch_seconds(opts: SearchOptions, data, device: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        sync = torch.cuda.synchronize if device.startswith("cuda") else contextlib.nullcontext
        sync()
        t0 = time.perf_counter()
        result = run_search(opts, data, Path(tmp), device=device, progress=False)
        sync()
        return (time.perf_counter() - t0) / max(result.epochs_run, 1)

if __name__ == "__main__":
    main()
