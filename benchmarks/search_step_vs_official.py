"""Time our PC-DARTS search step against the official `model_search.py`, side by side in one process.

A step is what both searches do per batch, first order: one α step (Adam on α and β, loss on an α
batch) and one weight step (loss, backward, gradient clipping at 5, SGD with momentum and weight
decay). Settings as the official CIFAR search: C=16, 8 cells, K=4, 3×32×32, 10 classes, batch 32,
random data (the data loader is not timed). The two steps alternate, `--rounds` times after
`--warmup` untimed rounds each; we report medians, minima and their ratios. On a shared 2-core
machine the 2-thread times of either side jump between two levels from run to run (the official
step: 3.5 or 5.1 s); `OMP_NUM_THREADS=1` gives stable figures.

The official code (yuhuixu1993/PC-DARTS: model_search.py, operations.py, genotypes.py, with its
`.cuda()` calls removed) is NOT part of this project; put it in a scratch directory and pass it:

    git clone https://github.com/yuhuixu1993/PC-DARTS /tmp/pcdarts_official
    sed -i 's/\\.cuda()//g' /tmp/pcdarts_official/model_search.py
    python benchmarks/search_step_vs_official.py --official /tmp/pcdarts_official

Our step is the search loop's own (`algorithms.PCDarts.arch_step` and `weight_step` on a
`search.Stage`), so it measures what `compress run` runs. Before timing, the script checks that
both supernets have the same number of weights and α/β entries.
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

from compressor.data import ArrayDataset, DataBundle
from compressor.frontends.darts.search import SearchOptions, Stage, task_loss_fn
from compressor.ir import TaskSpec


def official_step(model: nn.Module, w_opt: torch.optim.Optimizer, a_opt: torch.optim.Optimizer,
                  criterion: nn.Module, x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor,
                  yv: torch.Tensor) -> None:
    """train_search.py's loop body with architect.step(..., unrolled=False)."""
    a_opt.zero_grad()
    model._loss(xv, yv).backward()
    a_opt.step()
    w_opt.zero_grad()
    loss = criterion(model(x), y)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    w_opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, required=True,
                    help="directory holding the official model_search.py, operations.py, genotypes.py")
    ap.add_argument("--init-channels", type=int, default=16)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--only", choices=["ours", "official"], default=None,
                    help="time one of the two (a cross-check: the figure to quote is the side-by-side run)")
    args = ap.parse_args()
    if not (args.official / "model_search.py").is_file():
        sys.exit(f"error: {args.official}/model_search.py not found; see this script's docstring for how to get it")
    sys.path.insert(0, str(args.official))
    official = importlib.import_module("model_search")

    C, L, B, classes = args.init_channels, args.layers, args.batch_size, 10
    torch.manual_seed(0)
    x, xv = torch.randn(B, 3, 32, 32), torch.randn(B, 3, 32, 32)
    y, yv = torch.randint(0, classes, (B,)), torch.randint(0, classes, (B,))

    criterion = nn.CrossEntropyLoss()
    theirs = official.Network(C, classes, L, criterion)
    t_w = torch.optim.SGD(theirs.parameters(), 0.1, momentum=0.9, weight_decay=3e-4)
    t_a = torch.optim.Adam(theirs.arch_parameters(), lr=6e-4, betas=(0.5, 0.999), weight_decay=1e-3)

    opts = SearchOptions.of(algorithm="pc-darts", init_channels=C, layers=L, batch_size=B, w_lr=0.1,
                            a_lr=6e-4, grad_clip=5.0)
    data = DataBundle("random", TaskSpec("classification", classes), (3, 32, 32), (-3.0, 3.0),
                      ArrayDataset(x, y), ArrayDataset(xv, yv), ArrayDataset(xv, yv))
    algo = opts.algorithm_class(opts, task_loss_fn("classification"))
    ours = Stage(algo, data, 0, None, None, "cpu")
    ours.model.train()
    theirs.train()

    n_ours = sum(p.numel() for p in ours.model.weight_parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    a_ours = sum(p.numel() for p in ours.model.arch_parameters())
    a_theirs = sum(p.numel() for p in theirs.arch_parameters())
    if (n_ours, a_ours) != (n_theirs, a_theirs):
        sys.exit(f"error: the supernets differ: ours {n_ours} weights + {a_ours} α/β, official {n_theirs} + {a_theirs}")

    def ours_step() -> None:
        algo.arch_step(ours, x, y, xv, yv, 0.1)
        algo.weight_step(ours, x, y)

    def theirs_step() -> None:
        official_step(theirs, t_w, t_a, criterion, x, y, xv, yv)

    steps = {"ours": ours_step, "official": theirs_step}
    if args.only:
        steps = {args.only: steps[args.only]}
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(args.warmup + args.rounds):
        for name, fn in (list(steps.items())[::-1] if r % 2 else list(steps.items())):
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if r >= args.warmup:
                times[name].append(dt)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"PC-DARTS search step (α step + weight step, first order): C={C}, {L} cells, K=4, 3×32×32, batch {B}, "
          f"{n_ours:,} weights, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds, medians\n")
    print("| supernet | s / step | min | max |")
    print("|---|---|---|---|")
    for k in ("official", "ours"):
        if k in med:
            print(f"| {k} | {med[k]:.3f} | {min(times[k]):.3f} | {max(times[k]):.3f} |")
    if len(med) == 2:
        print(f"\nspeed-up (official / ours): {med['official'] / med['ours']:.2f}x of the medians, "
              f"{min(times['official']) / min(times['ours']):.2f}x of the minima")


if __name__ == "__main__":
    main()
