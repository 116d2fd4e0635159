"""Seed 002's budget table (Table 1: one searched network per doubling FLOPs budget) on a classification stand-in.

    python benchmarks/hierarchical_budgets.py --write     # digits and noisy digits; BENCHMARKS.md section
    python benchmarks/hierarchical_budgets.py --quick     # a smoke run: 1 supernet epoch, tiny evolution, prints only

For each dataset — scikit-learn's 8×8 digits as they are, and `noisy_digits` (the same splits with a fixed
Gaussian pixel noise per sample, clipped to [0, 1], val and test with several noise draws per image: a harder
stand-in where small networks run out of capacity)
— it runs the hierarchical search (`frontends/hierarchical/evolution.py`, `run_search`: an SPOS-trained
weight-sharing supernet, then NSGA-II over accuracy, MACs and memory, latency not used) with the default
doubling MACs budgets b, 2b, 4b, then trains each budget's winner twice with the project's training loop
(`compressor.train.fit`, the same options and epochs): from scratch (the frontend's initialisation, as
`model: {frontend: hierarchical, genotype: genotype_budget{k}.json}` builds it) and from the supernet's weights
(`HierarchicalSearchResult.inherit`, BatchNorm re-estimated). Both are evaluated on the test split.

Table per dataset: budget k, the budget's MMACs, the winner's MMACs, parameters, memory (parameter + peak
activation bytes at batch 1, as the search counts it), the supernet's val accuracy of the winner (inherited
weights), the trained test accuracies; two more rows, the space's smallest and largest networks trained from
scratch, show how much accuracy capacity can buy on that data at all. Then seed 002's Table 1 rows (CIFAR-10) for
the shape, one computed sentence per dataset on whether accuracy rises with the budget, and the reading.
Defaults (σ 0.4, 4 val/test draws, expansion 3 only) and why: see READING.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_section  # noqa: E402

from compressor.data import ArrayDataset, DataBundle  # noqa: E402
from compressor.ir import TaskSpec  # noqa: E402

NOISE_SALT = 0x2002  # keeps the noise draws apart from other users of the same seed
# Seed 002, Table 1 (CIFAR-10): accuracy %, MFLOPs, M params of the searched network under each budget
PAPER_TABLE1 = [(1, 96.82, 78, 0.45), (2, 97.18, 156, 0.92), (3, 97.41, 312, 1.85)]


def noisy_digits(sigma: float, noise_seed: int = 0, seed: int = 0, eval_copies: int = 1) -> DataBundle:
    """The digits bundle of `build_data("digits", seed=seed)` (same splits, same order) with Gaussian noise of
    standard deviation `sigma` added to every pixel and the result clipped to [0, 1] (the data's input range).
    Copy c of image i of scikit-learn's digits (its index in the whole set) gets the noise of its own generator,
    seeded by (NOISE_SALT, noise_seed, i, c): an image is the same in every run and whichever split it falls in.
    The train split holds copy 0 of its images; val and test hold `eval_copies` copies of theirs (copy 0 of every
    image, then copy 1, ...), so their accuracy averages over noise draws. sigma 0 and one copy give the plain
    bundle."""
    from sklearn.datasets import load_digits

    from compressor.data.digits import DigitsOptions, split_indices

    if sigma < 0 or eval_copies < 1:
        raise ValueError(f"noisy_digits needs sigma >= 0 and eval_copies >= 1, got {sigma} and {eval_copies}")
    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0  # as compressor.data.digits: 0..16 gray levels → [0, 1]
    labels = bunch.target.astype(np.int64)
    opts = DigitsOptions()
    idx = split_indices(labels, opts.train_fraction, opts.val_fraction, seed)

    def noisy(index: np.ndarray, copy: int) -> np.ndarray:
        if sigma == 0:
            return images[index]
        noise = np.stack([np.random.default_rng([NOISE_SALT, noise_seed, int(i), copy]).standard_normal((8, 8))
                          for i in index]).astype(np.float32)
        return np.clip(images[index] + sigma * noise, 0.0, 1.0)

    splits = {}
    for split, index in idx.items():
        copies = 1 if split == "train" else eval_copies
        x = np.concatenate([noisy(index, c) for c in range(copies)])[:, None]
        y = np.concatenate([labels[index]] * copies)
        splits[split] = ArrayDataset(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))
    return DataBundle(name=f"digits-noise{sigma:g}", task=TaskSpec("classification", 10), input_shape=(1, 8, 8),
                      input_range=(0.0, 1.0), **splits)


def test_accuracy(net: torch.nn.Module, bundle: DataBundle, split: str = "test") -> float:
    from compressor.data import make_loader
    from compressor.evaluate.metrics import evaluate_module

    return float(evaluate_module(net, make_loader(bundle.split(split), 256), bundle.task)["accuracy"])


def train_winner(genotype: Any, bundle: DataBundle, result: Any, init: str, train: Any, bn_batches: int,
                 seed: int = 0) -> tuple[torch.nn.Module, float]:
    """Build `genotype` (the frontend's initialisation, `seed`), optionally load the supernet's slices into it
    (`init` "supernet"), train it with `compressor.train.fit`; returns it and the seconds trained."""
    from itertools import islice

    from compressor.data import make_loader
    from compressor.frontends.hierarchical import HierarchicalNet
    from compressor.train import fit

    torch.manual_seed(seed)  # as Hierarchical.rebuild
    net = HierarchicalNet(genotype, 1, bundle.task.num_classes, input_hw=tuple(bundle.input_shape[-2:]))
    if init == "supernet":
        loader = make_loader(bundle.train, train.batch_size, shuffle=True, seed=seed + 1)
        result.inherit(net, [x for x, _ in islice(loader, bn_batches)])
    start = time.perf_counter()
    fit(net, make_loader(bundle.train, train.batch_size, shuffle=True, seed=seed), bundle.task, train,
        progress=False, desc=f"train {init}")
    return net, time.perf_counter() - start


def run_dataset(label: str, bundle: DataBundle, opts: Any, train: Any, out: Path) -> dict[str, Any]:
    """Search, then train every budget's winner from scratch and from the supernet's weights (a winner shared by
    two budgets is trained once), and the space's smallest and largest networks from scratch (the capacity span
    of the task: how far the accuracy can rise from the smallest to the largest network)."""
    from compressor.frontends.hierarchical import HierGenotype
    from compressor.frontends.hierarchical.evolution import SubnetEvaluator, run_search

    t0 = time.perf_counter()
    result = run_search(opts, bundle, out, progress=False)
    search_s = time.perf_counter() - t0
    print(f"[{label}] search {search_s:.0f} s: {result.steps} supernet steps, {result.scored} scored", flush=True)
    trained: dict[tuple[Any, str], float] = {}

    def accuracy(g: Any, init: str) -> float:
        if (g, init) not in trained:
            net, _ = train_winner(g, bundle, result, init, train, opts.bn_batches)
            trained[(g, init)] = test_accuracy(net, bundle)
        return trained[(g, init)]

    def params(g: Any) -> int:
        from compressor.frontends.hierarchical import HierarchicalNet

        net = HierarchicalNet(g, 1, bundle.task.num_classes, input_hw=tuple(bundle.input_shape[-2:]))
        return sum(p.numel() for p in net.parameters())

    rows = []
    for k, (budget, w) in enumerate(zip(result.budgets, result.winners), 1):
        row: dict[str, Any] = {"k": k, "budget": budget, "winner": w}
        if w:
            g = HierGenotype.from_dict(w["genotype"], f"winner {k}")
            row.update(genotype=g, params=params(g), metric=w["metric"], scratch=accuracy(g, "scratch"),
                       supernet=accuracy(g, "supernet"))
            print(f"[{label}] budget {k}: {w['macs'] / 1e6:.3f} MMACs, supernet val {w['metric']:.4f}, test "
                  f"scratch {row['scratch']:.4f}, supernet-init {row['supernet']:.4f}", flush=True)
        rows.append(row)
    evaluate = SubnetEvaluator(result.supernet, bundle, opts, out)  # the search's own scoring and costs
    space = opts.space()
    span = []
    for name, g in (("smallest", space.smallest()), ("largest", space.largest())):
        v = evaluate(g)
        span.append({"name": name, "winner": v, "genotype": g, "params": params(g), "metric": v["metric"],
                     "scratch": accuracy(g, "scratch")})
        print(f"[{label}] space's {name}: {v['macs'] / 1e6:.3f} MMACs, supernet val {v['metric']:.4f}, test "
              f"scratch {span[-1]['scratch']:.4f}", flush=True)
    return {"label": label, "rows": rows, "span": span, "search_s": search_s, "steps": result.steps,
            "scored": result.scored, "seconds": time.perf_counter() - t0}


def describe(g: Any) -> str:
    """depth×width per stage, then each block's kernel/expansion: 'd2 w0.5 [k3e6 k5e3] | ...'."""
    return " | ".join(f"d{s.depth} w{s.width_mult:g} [" + " ".join(f"k{b.kernel}e{b.expansion}" for b in s.blocks)
                      + "]" for s in g.stages)


def table(res: dict[str, Any]) -> list[str]:
    lines = [f"**{res['label']}** (search {res['search_s']:.0f} s: {res['steps']} supernet steps, "
             f"{res['scored']} candidates scored; whole dataset {res['seconds']:.0f} s)", "",
             "| budget | budget MMACs | winner MMACs | params | memory (bytes) | supernet val acc % | "
             "test acc %, scratch | test acc %, supernet init |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        w = r["winner"]
        if not w:
            lines.append(f"| {r['k']} | {r['budget'] / 1e6:.3f} | none within it | | | | | |")
            continue
        lines.append(f"| {r['k']} | {r['budget'] / 1e6:.3f} | {w['macs'] / 1e6:.3f} | {r['params']:,} | "
                     f"{int(w['memory']):,} | {100 * r['metric']:.2f} | {100 * r['scratch']:.2f} | "
                     f"{100 * r['supernet']:.2f} |")
    for r in res.get("span", []):
        v = r["winner"]
        lines.append(f"| space's {r['name']} (no budget) | | {v['macs'] / 1e6:.3f} | {r['params']:,} | "
                     f"{int(v['memory']):,} | {100 * r['metric']:.2f} | {100 * r['scratch']:.2f} | |")
    lines += ["", "Winners (per stage: depth, width multiplier, [kernel, expansion per block]):", ""]
    lines += [f"- budget {r['k']}: `{describe(r['genotype'])}`" for r in res["rows"] if r["winner"]]
    return lines


def paper_table() -> list[str]:
    return ["Seed 002, Table 1 (CIFAR-10, its searched networks under three doubling FLOPs budgets):", "",
            "| budget | MFLOPs | params (M) | accuracy % |", "|---:|---:|---:|---:|",
            *[f"| {k} | {f} | {p} | {a} |" for k, a, f, p in PAPER_TABLE1]]


def trend(rows: list[dict[str, Any]], key: str) -> str:
    """How `key` moves over the budgets that have a winner, in words."""
    vals = [r[key] for r in rows if r["winner"]]
    pairs = list(zip(vals, vals[1:]))
    if all(b > a for a, b in pairs):
        return "rises with every budget"
    if all(b >= a for a, b in pairs):
        return "never falls, flat between two budgets"
    return "falls at a larger budget"


def shared(rows: list[dict[str, Any]]) -> str:
    """'' if every budget's winner differs, else which budgets share one."""
    groups: dict[Any, list[int]] = {}
    for r in rows:
        if r["winner"]:
            groups.setdefault(r["genotype"], []).append(r["k"])
    same = [ks for ks in groups.values() if len(ks) > 1]
    return "; ".join("budgets " + " and ".join(map(str, ks)) + " pick the same network" for ks in same)


def dataset_sentence(res: dict[str, Any]) -> str:
    rows = [r for r in res["rows"] if r["winner"]]
    pct = lambda key: " → ".join(f"{100 * r[key]:.1f}" for r in rows)  # noqa: E731
    macs = " → ".join(f"{r['winner']['macs'] / 1e6:.2f}" for r in rows)
    same = shared(res["rows"])
    return (f"- {res['label']}: winners {macs} MMACs{' (' + same + ')' if same else ''}; supernet val accuracy "
            f"{pct('metric')} ({trend(rows, 'metric')}); trained from scratch {pct('scratch')} "
            f"({trend(rows, 'scratch')}); from the supernet's weights {pct('supernet')} ({trend(rows, 'supernet')})"
            + "".join(f"; the space's smallest → largest network trained from scratch "
                      f"{100 * lo['scratch']:.1f} → {100 * hi['scratch']:.1f}" for lo, hi in [res["span"]]
                      if res.get("span")) + ".")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sigma", type=float, default=0.4, help="noise std of the noisy digits (pixels in [0, 1])")
    ap.add_argument("--eval-copies", type=int, default=4, help="noisy copies of every val and test image")
    ap.add_argument("--epochs", type=int, default=30, help="supernet epochs")
    ap.add_argument("--population", type=int, default=12)
    ap.add_argument("--generations", type=int, default=6)
    ap.add_argument("--train-epochs", type=int, default=15, help="training epochs of every winner (both inits)")
    ap.add_argument("--lr", type=float, default=3e-3, help="training learning rate (adam, cosine to 0)")
    ap.add_argument("--channels", type=int, nargs="+", default=[16, 24, 40], help="stage base channels")
    ap.add_argument("--widths", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0], help="stage width_mults")
    ap.add_argument("--kernels", type=int, nargs="+", default=[3, 5])
    ap.add_argument("--expansions", type=int, nargs="+", default=[3])
    ap.add_argument("--max-depth", type=int, default=3)
    ap.add_argument("--datasets", nargs="+", default=["digits", "noisy"], choices=["digits", "noisy"])
    ap.add_argument("--quick", action="store_true", help="1 supernet epoch, population 4, 1 generation, 1 epoch")
    ap.add_argument("--write", action="store_true", help="write BENCHMARKS.md's hierarchical-budgets section")
    args = ap.parse_args()
    if args.quick:
        args.epochs, args.population, args.generations, args.train_epochs = 1, 4, 1, 1
    from compressor.data import build_data
    from compressor.frontends.hierarchical.evolution import HierarchicalSearchOptions
    from compressor.train import TrainOptions

    strides = tuple([1] + [2] * (len(args.channels) - 1))
    opts = HierarchicalSearchOptions(stage_channels=tuple(args.channels), stage_strides=strides, epochs=args.epochs,
                                     batch_size=64, population=args.population, generations=args.generations,
                                     kernels=tuple(args.kernels), expansions=tuple(args.expansions),
                                     width_mults=tuple(args.widths), max_depth=args.max_depth,
                                     objectives=("metric", "macs", "memory"))
    train = TrainOptions(epochs=args.train_epochs, batch_size=64, lr=args.lr)
    bundles = {"digits": ("digits (8×8, as is)", lambda: build_data("digits", seed=0)),
               "noisy": (f"noisy digits (σ = {args.sigma:g}, clipped to [0, 1]; val and test ×{args.eval_copies} "
                         f"noise draws)", lambda: noisy_digits(args.sigma, eval_copies=args.eval_copies))}
    start = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="hier-budgets-") as tmp:
        for name in args.datasets:
            label, make = bundles[name]
            results.append(run_dataset(label, make(), opts, train, Path(tmp) / name))
    total = time.perf_counter() - start
    body = [f"- machine: {machine()}; whole run {total:.0f} s", ""]
    for res in results:
        body += table(res) + [""]
    body += paper_table() + ["", *[dataset_sentence(res) for res in results]]
    print("\n".join(body))
    if args.write:
        if args.quick:
            raise SystemExit("--quick runs are not written to BENCHMARKS.md; drop --quick")
        write(args, opts, results, total)


def command() -> str:
    """The command line of this run, as given."""
    return "python " + " ".join(["benchmarks/hierarchical_budgets.py", *sys.argv[1:]])


def write(args: argparse.Namespace, opts: Any, results: list[dict[str, Any]], total: float) -> None:
    import datetime

    space = (f"stage_channels {list(opts.stage_channels)}, strides {list(opts.stage_strides)}, stem "
             f"{opts.stem_channels}, depths {opts.min_depth}..{opts.max_depth}, width_mults "
             f"{[float(w) for w in opts.width_mults]}, kernels {list(opts.kernels)}, expansions "
             f"{list(opts.expansions)}")
    body = [
        "## Seed 002's budget table on a classification stand-in (hierarchical search, digits)", "",
        f"- command: `{command()}`",
        f"- machine: {machine()}; {datetime.date.today().isoformat()}; whole run {total:.0f} s (under `nice`, "
        f"on a machine shared with other jobs)",
        f"- search (`run_search`, latency not used): space {space}; objectives metric, macs, memory; supernet "
        f"{opts.epochs} epochs of SPOS (batch {opts.batch_size}, SGD lr {opts.lr}); NSGA-II population "
        f"{opts.population}, {opts.generations} generations; the default doubling budgets b, 2b, 4b with b = "
        f"max(smallest, largest / 4) network's MACs",
        f"- each budget's winner trained {args.train_epochs} epochs (`compressor.train.fit`: adam, lr {args.lr:g} "
        f"cosine to 0, batch 64) from scratch (the frontend's initialisation, seed 0) and from the supernet's "
        f"weights (`HierarchicalSearchResult.inherit`, BatchNorm re-estimated on 4 training batches); accuracy on "
        f"the test split. MACs: stem and blocks at batch 1 (the search's `macs`); memory: parameter + peak "
        f"activation bytes at batch 1 (the search's `memory`); supernet val acc: the search's own score of the "
        f"winner (inherited weights, BatchNorm re-estimated)",
        f"- noisy digits: the digits splits with a fixed Gaussian noise of σ = {args.sigma:g} per pixel (each "
        f"image's own seeded generator, clipped to [0, 1]); val and test hold {args.eval_copies} noisy copies of "
        f"each of their images (each copy its own draw), train one", ""]
    for res in results:
        body += table(res) + [""]
    body += paper_table() + ["", "Per dataset (budget 1 → 2 → 3):", "",
                             *[dataset_sentence(res) for res in results], "", READING]
    write_section("hierarchical-budgets", "\n".join(body))


READING = """Reading. Seed 002's Table 1 (CIFAR-10) has accuracy rising with the FLOPs budget, \
96.82 → 97.18 → 97.41 %, each budget's network about twice the previous one's FLOPs and parameters. Plain digits \
leave little room: the \
space's smallest and largest networks (the last two rows of each table, trained the same way) end a few points \
apart, and the winners sit near the top of that range from the first budget on (the test split has 270 images: \
one image is 0.37 points). The noisy stand-in is there to make capacity matter, and its σ was chosen for that in \
a few tuning runs: at σ = 0.5 the winners all ended near 60 %, where noise, not capacity, bounds the accuracy; \
at σ = 0.3 and 0.4 the smallest network trailed the largest by more than ten points, and 0.4 leaves more of that \
gap inside the budgets. The space keeps expansion 3 only: at 8×8 the first stage's expanded channels carry most \
of the MACs, and with expansions 3 and 6 the default budgets (0.47, 0.93, 1.86 MMACs) all lay at or above where \
the supernet's accuracy levelled off in those runs. Val and test hold several noise draws of each image so that \
the search's choice among close candidates, and the trained accuracies, do not turn on a handful of images. \
Whether a larger budget buys a larger winner is the search's call: a budget's winner is the best supernet \
accuracy within it, so when no larger candidate scores higher on the supernet (SPOS samples the widest and \
deepest paths least), two budgets share a winner. One run, seed 0: differences of a point or two are within \
run-to-run noise."""


if __name__ == "__main__":
    main()
