"""Multi-objective evolutionary NAS (`algorithm: evolution`, seed 002) vs PC-DARTS on insar-synthetic, CPU profile.

    python benchmarks/evolution_nas.py [--epochs 8] [--train-epochs 6] [--population 16] [--generations 10]
    python benchmarks/evolution_nas.py --quick      # a smoke run: tiny data, 1 epoch, prints only

The evolution trains its weight-sharing supernet for `--epochs` epochs (one random path per step), then evolves
`--population` genotypes for `--generations` generations on (IoU, MACs, memory) and writes one winner per MACs
budget (the default three: 1/3, 2/3, 3/3 of the final population's MACs range). PC-DARTS searches for the same
`--epochs` on the same data (α from a quarter of them), and so does D-DARTS (`--no-ddarts` skips it). Every genotype (the budget winners and PC-DARTS's) is then
trained by the same pipeline for `--train-epochs` at C=8, 5 cells (as the searches) and measured on the
validation split. MACs, params: the pipeline's record; memory: parameter + peak activation bytes at batch 1
(`evolution.network_costs`); "supernet IoU": the evolution's own estimate, inherited weights with re-estimated BN;
every trained network is exported to verified ONNX ("IoU (ONNX)": the ONNX model's IoU). The final population's
front is plotted into benchmarks/evolution_front.png.
The full run writes its table into BENCHMARKS.md (section evolution-nas); --quick only prints it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write_section  # noqa: E402

C, LAYERS = 8, 5


def train_genotype(name: str, model: dict, data: dict, train_epochs: int, out: Path) -> dict:
    """Run a pipeline that builds `model` (a darts model block: a genotype path or a search) and trains it;
    return its base stage's record and the IR's meta."""
    from compressor.pipeline import Pipeline

    doc = {"name": f"bench-evolution-{name}", "seed": 0, "data": data,
           "model": {"frontend": "darts", "init_channels": C, "layers": LAYERS, **model,
                     "train": {"epochs": train_epochs, "batch_size": 32, "lr": 0.003}},
           "export": ["onnx"]}
    start = time.perf_counter()
    result = Pipeline.from_dict(doc).run(out=out / name, progress=False)
    base, onnx = result.stages[0], result.stages[-1]
    return {"record": base.record, "onnx": onnx.record, "meta": base.output.ir.meta,
            "wall": time.perf_counter() - start}


def plot_front(evo: dict, path: Path) -> None:
    """The final population in (MACs, IoU), memory as colour, the first front joined, the winners marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pop = evo["population"]
    macs = [p["objectives"]["macs"] / 1e6 for p in pop]
    iou = [100 * p["objectives"]["metric"] for p in pop]
    mem = [p["objectives"]["memory"] / 1e3 for p in pop]
    fig = Figure(figsize=(6.5, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    sc = ax.scatter(macs, iou, c=mem, cmap="viridis", s=36, zorder=2)
    fig.colorbar(sc, ax=ax, label="memory (KB: params + peak activations, batch 1)")
    front = sorted((m, i) for m, i, p in zip(macs, iou, pop) if p["rank"] == 0)
    ax.plot([m for m, _ in front], [i for _, i in front], color="gray", lw=1, zorder=1, label="first front (3-D)")
    for b in evo["budgets"]:
        if b["file"] is not None:
            ax.scatter([b["objectives"]["macs"] / 1e6], [100 * b["objectives"]["metric"]], marker="*", s=160,
                       facecolor="none", edgecolor="red", zorder=3)
            ax.annotate(f"budget {b['budget']}", (b["objectives"]["macs"] / 1e6, 100 * b["objectives"]["metric"]),
                        textcoords="offset points", xytext=(6, -10), fontsize=8, color="red")
    ax.set_xlabel("MACs (M)")
    ax.set_ylabel("IoU on val, supernet weights (%)")
    ax.set_title("evolution: final population")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=8, help="search epochs (both searches)")
    ap.add_argument("--train-epochs", type=int, default=6, help="training epochs of every genotype")
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--generations", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="tiny data and budgets: checks that it runs")
    ap.add_argument("--no-ddarts", action="store_true", help="skip the D-DARTS search and its row")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-evolution")
    args = ap.parse_args()
    import torch

    from compressor.data import build_data
    from compressor.frontends.darts.evolution import lowered_network, network_costs
    from compressor.frontends.darts.genotypes import Genotype
    from compressor.frontends.darts.search import SearchOptions, run_search

    if args.quick:
        args.epochs, args.train_epochs, args.population, args.generations = 1, 1, 4, 2
        data = {"name": "insar-synthetic", "size": 16, "n_train": 32, "n_val": 16, "n_test": 16}
        args.out = args.out.with_name(args.out.name + "-quick")
        torch.set_num_threads(1)  # tiny tensors: one thread is fastest
    else:
        data = {"name": "insar-synthetic", "size": 32, "n_train": 256, "n_val": 64, "n_test": 64}
    bundle = build_data(data["name"], {k: v for k, v in data.items() if k != "name"}, seed=0)

    # 1. the evolutionary search (writes genotype_budget{k}.json and evolution.json)
    opts = SearchOptions.of(algorithm="evolution", epochs=args.epochs, batch_size=32, init_channels=C, layers=LAYERS,
                            evolution={"population": args.population, "generations": args.generations},
                            max_steps=2 if args.quick else 0)
    search = run_search(opts, bundle, args.out / "evolution-search", progress=not args.quick)
    evo_seconds = search.seconds  # the search's own time (also when a finished search is reused)
    evo = json.loads((search.out_dir / "evolution.json").read_text())

    # 2. train every budget winner, and PC-DARTS's searched genotype, with the same pipeline
    rows, trained = [], {}
    for b in evo["budgets"]:
        if b["file"] is None:
            continue
        path = search.out_dir / b["file"]
        geno = Genotype.load(path)
        if geno not in trained:  # two budgets may share a winner: train it once
            trained[geno] = train_genotype(f"budget{b['budget']}", {"genotype": str(path)}, data, args.train_epochs,
                                           args.out)
        rows.append((f"evolution budget {b['budget']} (≤ {b['macs_budget'] / 1e6:.3f} M MACs)", geno, trained[geno],
                     b["objectives"]["metric"]))
    pc_search = {"algorithm": "pc-darts", "epochs": args.epochs, "warmup_epochs": max(0, args.epochs // 4),
                 "batch_size": 32, "init_channels": C, "layers": LAYERS, **({"max_steps": 2} if args.quick else {})}
    run = train_genotype("pc-darts", {"search": pc_search}, data, args.train_epochs, args.out)
    rows.append(("pc-darts (searched)", Genotype.from_dict(run["meta"]["genotype_json"]), run, None))
    if not args.no_ddarts:  # D-DARTS (thesis ch. 4): per-cell α; its α steps cost n + 1 passes
        dd_search = {**pc_search, "algorithm": "d-darts"}
        run = train_genotype("d-darts", {"search": dd_search}, data, args.train_epochs, args.out)
        rows.append(("d-darts (searched, one gene per cell)", Genotype.from_dict(run["meta"]["genotype_json"]), run,
                     None))

    lines = [f"Machine: {machine()}. Command: `python benchmarks/evolution_nas.py"
             + (" --quick" if args.quick else f" --epochs {args.epochs} --train-epochs {args.train_epochs} "
                f"--population {args.population} --generations {args.generations}") + "` "
             f"(insar-synthetic {data['size']}×{data['size']}, {data['n_train']} train; search and network C={C}, "
             f"{LAYERS} cells; both searches {args.epochs} epochs; evolution search {evo_seconds:.0f} s with "
             f"{evo['scored']} candidates scored; every genotype trained {args.train_epochs} epochs).", "",
             "| genotype | supernet IoU | IoU (trained, val) | IoU (ONNX) | MACs (M) | memory (KB) | params | ONNX MB "
             "| search s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, geno, run, proxy in rows:
        rec, meta = run["record"], run["meta"]
        costs = network_costs(lowered_network(geno, bundle, C, LAYERS), bundle.input_shape)
        secs = meta.get("search_seconds", f"{evo_seconds:.0f}" if proxy is not None else "")
        iou, onnx_iou = rec["metrics"].get("iou"), run["onnx"]["metrics"].get("iou")
        lines.append(f"| {name} | {'' if proxy is None else f'{100 * proxy:.2f}'} | "
                     f"{'' if iou is None else f'{100 * iou:.2f}'} | "
                     f"{'' if onnx_iou is None else f'{100 * onnx_iou:.2f}'} | {rec['macs'] / 1e6:.3f} | "
                     f"{costs['memory'] / 1e3:.1f} | {rec['params']:,} | {run['onnx']['size_bytes'] / 1e6:.3f} | {secs} |")
    front_png = ROOT / "benchmarks" / ("evolution_front_quick.png" if args.quick else "evolution_front.png")
    plot_front(evo, front_png)
    hv = [round(h["hypervolume"], 4) for h in evo["history"]]
    lines += ["", f"Hypervolume of the population per generation (IoU, MACs, memory; normalized): {hv}", "",
              f"The final population's front (IoU vs MACs, memory as colour): `benchmarks/{front_png.name}`.", "",
              "Normal cells found (d-darts: its first cell):", ""] + [
                  f"- {name}: `{json.dumps([list(p) for p in (geno.normal if hasattr(geno, 'normal') else geno.cells[0])])}`"
                  for name, geno, _, _ in rows]
    body = "## Evolutionary NAS vs PC-DARTS (CPU profile)\n\n" + "\n".join(lines)
    print(body if args.quick else write_section("evolution-nas", body))


if __name__ == "__main__":
    main()
