"""DARIO's data-agnostic proxies against measured importance: thesis tables 6.2/6.3 on digits.

    python benchmarks/dario_proxies.py              # CPU: ~10 minutes on 2 cores (less with trained stages)
    python benchmarks/dario_proxies.py --no-write   # print, leave BENCHMARKS.md alone

Two models, trained on digits exactly as benchmarks/dario_vit.py and benchmarks/dario_hf_vit.py train them
(their baseline stages are shared through the same --out stores): the 12-block zoo ViT and the 12-layer
Hugging Face ViT. For each:

1. Measured importance of block m: validation accuracy of the model with block m alone removed (the identity,
   prune-dario's `convert`), no fine-tuning; importance = accuracy(M) − accuracy(M∖m).
2. Every proxy of table 6.1 as the pass computes it (`passes/dario.py: proxy_values`, the pass's γ, batch
   and c1..c3), for each of the 12 models M∖m, in two views:
   - search view: S(θ̃(α)) of the gated model with block m's gate closed (α_m = −inf, the others open),
     what the search's objective sees of that removal (block m's parameters stay in θ);
   - pruned model: S(θ̃) of the converted model M∖m, over its own parameters.
3. Kendall τ-b and Spearman ρ (scipy.stats) between the proxy value of M∖m and the accuracy of M∖m over the
   12 models: the statistic of tables 6.2/6.3 (proxy value against accuracy of pruned models), sign included.
   Since accuracy(M∖m) = accuracy(M) − importance_m, this is minus the correlation between the proxy and the
   measured block importance; a proxy that ranks blocks the way the search uses it has the sign of its
   search direction (negative for var, minimized; positive for the others, maximized).
4. The DARIO gate: σ(α_m) after the pass's search (var, differentiable, --warm-start + --iterations); its row
   correlates 1 − σ(α_m) (the weight of block m's skip path) with accuracy(M∖m): positive when the gate
   keeps the important blocks.
5. The thesis's own protocol, without its fine-tuning: N models sampled uniformly from the head-granularity
   search space (each head kept with probability 1/2, gates at ±inf, so the gated model is the head-pruned
   model), the proxy (search view) against their validation accuracy: Spearman ρ and Pearson r, the
   columns of tables 6.2/6.3.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write_section  # noqa: E402

# thesis tables 6.2 (MAE-ViT-base) and 6.3 (MobileViT-small): Spearman's ρ between proxy value and the accuracy
# of fine-tuned pruned models, mean of 12 runs (table 6.3 has no synflow row)
THESIS_RHO = {
    "var": (-0.48, -0.18), "l0": (0.46, -0.05), "l1": (0.46, -0.07), "l2": (0.45, -0.04), "synflow": (0.29, None),
    "nsynflow": (0.27, -0.05), "l0-var": (0.45, 0.16), "l1-var": (0.46, 0.15), "l0-l1": (0.46, -0.06),
}
NAMES = {"var": "parameter variance", "l0": "L0 norm", "l1": "L1 norm", "l2": "L2 norm", "synflow": "synflow",
         "nsynflow": "normalized synflow", "l0-var": "L0 + parameter variance", "l1-var": "L1 + parameter variance",
         "l0-l1": "L0 + L1"}


def correlations(x: list[float], y: list[float]) -> dict[str, float]:
    """Kendall τ-b, Spearman ρ and Pearson r of x against y; nan where x (or y) is constant."""
    import numpy as np
    from scipy import stats

    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return {"tau": math.nan, "rho": math.nan, "r": math.nan}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"tau": float(stats.kendalltau(a, b).statistic),  # variant 'b' (ties) is scipy's default
                "rho": float(stats.spearmanr(a, b).statistic), "r": float(stats.pearsonr(a, b).statistic)}


def fmt(v: float | None) -> str:
    if v is None:
        return "–"
    return "n/a (constant)" if math.isnan(v) else f"{v:+.2f}"


def evaluate(module: Any, x: Any, y: Any) -> float:
    import torch

    with torch.no_grad():
        module.eval()
        return float((module(x).argmax(1) == y).float().mean()) * 100


def study(name: str, ir: Any, x: Any, y: Any, samples: int, seed: int, warm_start: int, iterations: int) -> dict[str, Any]:
    """Steps 1–5 of the module docstring for one trained model."""
    import torch

    from compressor.passes.dario import PROXIES, DarioOptions, Prepared, _example, convert, prepare, proxy_values, search

    d = DarioOptions()
    kw = {"gamma": d.gamma, "batch": d.batch_size, "coefs": (d.c1, d.c2, d.c3)}
    shape, example = tuple(ir.inputs[0].shape[1:]), _example(ir)
    base = ir.module.eval()
    acc0 = evaluate(base, x, y)
    blocks = [s.name for s in prepare(copy.deepcopy(base), example, "block").structures]
    t0 = time.perf_counter()
    acc, search_view, pruned_view = [], {k: [] for k in PROXIES}, {k: [] for k in PROXIES}
    for m in range(len(blocks)):
        module = copy.deepcopy(base)
        prep = prepare(module, example, "block")
        alpha = torch.full((len(blocks),), math.inf)
        alpha[m] = -math.inf
        for k, v in proxy_values(prep, shape, alpha, **kw).items():
            search_view[k].append(v)
        convert(prep, {s.name: [i != m] for i, s in enumerate(prep.structures)})
        acc.append(evaluate(module, x, y))
        for k, v in proxy_values(Prepared(module, []), shape, torch.zeros(0), **kw).items():
            pruned_view[k].append(v)
    one_out_s = time.perf_counter() - t0

    prep = prepare(copy.deepcopy(base), example, "block")
    print(f"{name}: one-block-removed models done ({one_out_s:.0f} s); DARIO search ...", file=sys.stderr, flush=True)
    r = search(prep, shape, mode=d.mode, proxy_kind=d.proxy, iterations=iterations, warm_start=warm_start,
               lr=d.lr, weight_decay=d.weight_decay, seed=d.seed, **kw)
    sigma = torch.sigmoid(r.alpha).tolist()

    print(f"{name}: search done ({r.seconds:.0f} s); {samples} random-head models ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    prep = prepare(copy.deepcopy(base), example, "head")
    n_heads = sum(s.size for s in prep.structures)
    gen = torch.Generator().manual_seed(seed)
    head_acc, head_proxy = [], {k: [] for k in PROXIES}
    for _ in range(samples):
        keep = torch.rand(n_heads, generator=gen) < 0.5
        alpha = torch.where(keep, math.inf, -math.inf)
        for k, v in proxy_values(prep, shape, alpha, **kw).items():
            head_proxy[k].append(v)
        prep.set_alpha(alpha)
        head_acc.append(evaluate(prep.module, x, y))
    heads_s = time.perf_counter() - t0

    rows = {k: {"search": correlations(search_view[k], acc), "pruned": correlations(pruned_view[k], acc),
                "heads": correlations(head_proxy[k], head_acc)} for k in PROXIES}
    gate = correlations([1 - s for s in sigma], acc)
    return {"name": name, "acc0": acc0, "blocks": blocks, "acc": acc, "sigma": sigma, "rows": rows, "gate": gate,
            "n_heads": n_heads, "head_acc": head_acc, "search_s": r.seconds, "one_out_s": one_out_s,
            "heads_s": heads_s}


def section(results: list[dict[str, Any]], args: argparse.Namespace, wall: float, lines_models: list[str]) -> str:
    import statistics

    from compressor.passes.dario import MINIMIZED, PROXIES

    lines = [
        "## DARIO's proxies against measured importance (thesis tables 6.2/6.3, digits)",
        "",
        f"- command: `python benchmarks/dario_proxies.py {' '.join(sys.argv[1:])}`".replace(" `", "`").replace(" --no-write", ""),
        f"- machine: {machine()}",
        f"- date: {dt.date.today().isoformat()}; wall time {wall / 60:.1f} min (trained stages already in the "
        "--out stores are reused)",
        *lines_models,
        "- one block removed: for each block, the model with that block alone removed (identity, no "
        "fine-tuning); its validation accuracy, and each table 6.1 proxy (`proxy_values`, γ = 1e-3, c1 = c2 = "
        "c3 = 1) in the *search view* (S(θ̃(α)) of the gated model with that gate closed, what the search sees) and "
        "of the *pruned model* (its own parameters)",
        "- τ-b / ρ: Kendall τ-b and Spearman ρ (scipy.stats) of the proxy value of the pruned model against its "
        "accuracy over the one-block-removed models, signed as in tables 6.2/6.3; this is minus the correlation with the measured "
        "block importance (the accuracy drop), so a proxy that ranks blocks the way the search uses it has the "
        "sign of its direction: negative for `var` (minimized), positive for the others (maximized)",
        f"- DARIO gate: 1 − σ(α_m) after the pass's search (var, differentiable, {args.warm_start} warm-start samples + "
        f"{args.iterations} iterations; the pass's default is 100 + 500) against accuracy(M∖m): positive when the "
        "gate keeps the blocks that matter",
        f"- random heads (the thesis's protocol, without its fine-tuning): {args.samples} models sampled uniformly "
        "from the head-granularity space (each head kept with probability 1/2), gated at ±inf (= the head-pruned "
        "model); ρ = Spearman, r = Pearson of the proxy (search view) against their validation accuracy",
        "- thesis: Spearman ρ of tables 6.2 (MAE-ViT-base) and 6.3 (MobileViT-small), 100 sampled models "
        "fine-tuned on ICDAR-micro, mean of 12 runs (table 6.3 has no synflow row)",
    ]
    for res in results:
        rows = res["rows"]
        imp = [res["acc0"] - a for a in res["acc"]]
        lines += [
            "",
            f"**{res['name']}**: validation accuracy {res['acc0']:.2f}% (unpruned, {len(res['y'])} images); "
            f"one-block-removed accuracies {min(res['acc']):.2f}–{max(res['acc']):.2f}%; random-head models "
            f"{min(res['head_acc']):.2f}–{max(res['head_acc']):.2f}% (median {statistics.median(res['head_acc']):.2f}), "
            f"{res['n_heads']} heads",
            "",
            "| Proxy | Search | τ-b, search view | ρ, search view | τ-b, pruned model | ρ, pruned model | "
            "ρ, random heads | r, random heads | thesis ρ, MAE-ViT-base | thesis ρ, MobileViT-small |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for k in PROXIES:
            c = rows[k]
            t62, t63 = THESIS_RHO[k]
            lines.append(f"| {NAMES[k]} (`{k}`) | {'min' if k in MINIMIZED else 'max'} | {fmt(c['search']['tau'])} | "
                         f"{fmt(c['search']['rho'])} | {fmt(c['pruned']['tau'])} | {fmt(c['pruned']['rho'])} | "
                         f"{fmt(c['heads']['rho'])} | {fmt(c['heads']['r'])} | {fmt(t62)} | {fmt(t63)} |")
        g = res["gate"]
        lines += [
            f"| DARIO gate 1 − σ(α) (`var` search) | – | {fmt(g['tau'])} | {fmt(g['rho'])} | – | – | – | – | – | – |",
            "",
            f"- measured importance (accuracy drop, points) of blocks 0–{len(imp) - 1}: "
            f"{', '.join(f'{v:+.2f}' for v in imp)}",
            f"- σ(α) after the search: {', '.join(f'{v:.3f}' for v in res['sigma'])} "
            f"({sum(v >= 0.65 for v in res['sigma'])} of {len(imp)} at or above 0.65); search {res['search_s']:.1f} s, "
            f"one-block-removed study {res['one_out_s']:.1f} s, {args.samples} random-head models {res['heads_s']:.1f} s",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--samples", type=int, default=100, help="random head-pruned models per model (thesis: 100)")
    ap.add_argument("--seed", type=int, default=0, help="of the random head masks")
    ap.add_argument("--warm-start", type=int, default=100, help="of the gate row's search (the pass's default)")
    ap.add_argument("--iterations", type=int, default=500, help="of the gate row's search (the pass's default)")
    ap.add_argument("--models", nargs="+", default=["zoo", "hf"], choices=["zoo", "hf"])
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    import torch

    from compressor.data import build_data
    from compressor.pipeline import Pipeline
    from dario_hf_vit import pipeline as hf_pipeline
    from dario_vit import pipeline as zoo_pipeline

    start = time.perf_counter()
    data = build_data("digits", {}, seed=0)
    x = torch.stack([data.val[i][0] for i in range(len(data.val))])
    y = torch.stack([torch.as_tensor(data.val[i][1]) for i in range(len(data.val))])
    # the trainings of benchmarks/dario_vit.py and dario_hf_vit.py (their defaults), no passes, no export
    specs = {
        "zoo": ("zoo ViT, 12 blocks", zoo_pipeline, argparse.Namespace(depth=12, epochs=15, lr=0.001),
                ROOT / "runs" / "dario_vit" / "proxies"),
        "hf": ("Hugging Face ViT, 12 layers", hf_pipeline, argparse.Namespace(depth=12, epochs=30, lr=0.001),
               ROOT / "runs" / "dario_hf_vit" / "proxies"),
    }
    results, model_lines = [], []
    for key in args.models:
        label, make, margs, out = specs[key]
        doc = make(f"dario_proxies_{key}", [], margs)
        doc["export"], doc["evaluate"] = [], {}
        p = Pipeline.from_dict(doc)
        print(f"{key}: {p.to_line()}", file=sys.stderr, flush=True)
        ir = p.run(out=out, progress=False).ir
        model_lines.append(f"- {label}: `{p.to_line()}`")
        res = study(label, ir, x, y, args.samples, args.seed, args.warm_start, args.iterations)
        res["y"] = y
        results.append(res)
    body = section(results, args, time.perf_counter() - start, model_lines)
    print(body)
    if not args.no_write:
        write_section("dario-proxies", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
