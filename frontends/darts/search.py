"""Architecture search in the DARTS space: one loop, seven algorithms (seed 000 sections 2.3, 4.1-4.2;
seed 004: hpe-darts; seed 002: evolution).

`run_search(options, data, out_dir)` searches the DARTS space (see `search_space.py`) on `data`
and writes `genotype.json`, the α history (`alpha_history.json`, `alpha_history.png`), a checkpoint
after every epoch (`search_checkpoint.pt`; a re-run resumes after the last finished epoch) and
`search_result.json` (a re-run of a finished search returns it at once).

The train split is cut in two, deterministically (first `train_portion` for the weights w, the rest
for α), as in the references. Each step: an α step on an α batch (after `warmup_epochs`), then a
w step on a w batch. w: SGD (momentum 0.9, wd 3e-4) with a cosine schedule from `w_lr` to
`w_lr_min` over the epochs; α: Adam (betas 0.5, 0.999; wd 1e-3). Gradients of w are clipped at
`grad_clip`.

The algorithms (darts first and second order, pc-darts, p-darts, lambda-darts, em-darts,
hpe-darts, evolution) are classes registered in `algorithms.py` (hpe-darts in `hpe.py`, evolution
in `evolution.py`); this loop calls their hooks (supernet, α step, weight step, epoch start, stage
end, derivation) and owns everything they share: data splits, the weights' schedule, resumption,
progress bars, the α history and its plot. An algorithm without α (evolution) trains its weights on
the whole train split and derives its genotype in `finish`, which may write files of its own into
`out_dir` (evolution: evolution.json and one genotype per MACs budget). Its `evo_*` options only act
in `finish`, after the epochs, so they may change on resume: a re-run with other `evo_*` options
re-runs the evolution on the trained supernet without retraining it.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from compressor.data import DataBundle, make_loader
from compressor.errors import ConfigError
from compressor.frontends.darts.algorithms import LossFn, SearchAlgorithm, search_algorithm
# the algorithms' building blocks, re-exported: the mechanism tests and earlier callers import them from here
from compressor.frontends.darts.algorithms import (  # noqa: F401
    arch_grads_first_order, arch_grads_second_order, lambda_alignment, lambda_perturbations, linear_ramp,
    pdarts_dropout, pdarts_limit_skips, pdarts_shrink, weight_gradients,
)
from compressor.frontends.darts.genotypes import Genotype
from compressor.frontends.darts.ops import PRIMITIVES
from compressor.frontends.darts.search_space import EdgePrimitives, SearchNetwork
from compressor.options import Range, option, options_dict
from compressor.train import segmentation_loss

log = logging.getLogger(__name__)

# The registered algorithms' names (a test keeps the two in sync): config files are checked against it.
Algorithm = Literal["darts", "pc-darts", "p-darts", "lambda-darts", "em-darts", "hpe-darts", "evolution", "d-darts"]
Objective = Literal["metric", "macs", "memory", "latency"]

CHECKPOINT = "search_checkpoint.pt"
RESULT = "search_result.json"
HISTORY = "alpha_history.json"
PLOT = "alpha_history.png"
GENOTYPE = "genotype.json"

# Options that may change between a run and its resumption (the evo_* options act only after the epochs).
_RESUMABLE = {"epochs", "max_steps", "stop_stable_epochs", "stop_min_epochs", "evo_population", "evo_generations", "evo_children", "evo_mutation_prob",
              "evo_bn_batches", "evo_objectives", "evo_scalarize", "evo_budgets", "evo_net_channels",
              "evo_net_layers"}


@dataclass(frozen=True)
class SearchOptions:
    algorithm: Algorithm = option("pc-darts", "search algorithm", search=list(get_args(Algorithm)))
    order: Literal[1, 2] = option(1, "1: α step at the current w; 2: DARTS unrolled (second-order) α gradient",
                                  search=[1, 2])
    epochs: int = option(50, "search epochs (p-darts: per stage)", min=1, search=[10, 25, 50])
    batch_size: int = option(64, "samples per step (for w and for α)", min=1)
    init_channels: int = option(16, "channels of the first cells (C)", min=1, max=1024)
    layers: int = option(8, "cells of the supernet (p-darts uses pdarts_stages)", min=3, max=64)
    w_lr: float = option(0.025, "initial SGD learning rate of the weights", min=0, min_exclusive=True,
                         search=Range(0.005, 0.1, log=True))
    w_lr_min: float = option(0.001, "final learning rate of the cosine schedule", min=0)
    w_momentum: float = option(0.9, "SGD momentum", min=0, max=1)
    w_wd: float = option(3e-4, "weight decay of the weights", min=0)
    a_lr: float | None = option(None, "Adam learning rate of α (null: 6e-4 for pc-darts and p-darts, else 3e-4)",
                                min=0, min_exclusive=True, search=Range(1e-4, 1e-3, log=True))
    a_wd: float = option(1e-3, "weight decay of α", min=0)
    grad_clip: float = option(5.0, "clip the weights' gradient norm (0 = off)", min=0)
    train_portion: float = option(0.5, "fraction of the train split for the weights; the rest trains α "
                                       "(evolution: unused, the weights train on the whole split)",
                                  min=0, max=1, min_exclusive=True, max_exclusive=True)
    pc_k: int = option(4, "pc-darts: 1/K of the channels go through the ops", min=1)
    warmup_epochs: int | None = option(None, "epochs of weights-only training before α updates (null: 30% for "
                                             "pc-darts, 40% of each stage for p-darts, else 0)", min=0)
    pdarts_stages: tuple[int, ...] = option((5, 11, 17), "p-darts: cells of each stage's supernet")
    pdarts_keep: tuple[int, ...] = option((5, 3, 1), "p-darts: ops kept per edge after each stage (last must be 1)")
    pdarts_skip_dropout: tuple[float, ...] = option((0.1, 0.4, 0.7), "p-darts: dropout after skip connections "
                                                                     "per stage (decayed over epochs)")
    pdarts_max_skips: int = option(2, "p-darts: most skip connections in the final normal cell", min=0, max=8)
    lambda_reg: float = option(0.125, "lambda-darts: λ, the regularizer's weight (ramped linearly)", min=0)
    lambda_eps: float = option(1e-4, "lambda-darts: ε0 of the finite difference", min=0, min_exclusive=True)
    em_max_prob: float = option(0.2, "em-darts: edge-mutation probability reached at the last epoch", min=0, max=1)
    hpe_ops_per_edge: tuple[int, ...] = option((8, 5, 3, 1), "hpe-darts: ops left per edge after the warm-up and "
                                                             "each hybrid stage (eq. 6: from 8 down to 1)")
    hpe_importance: Literal["hybrid", "accuracy", "netperf"] = option(
        "hybrid", "hpe-darts: op importance: validation-accuracy drop in the first half of the stages and "
                  "NetPerfProxy in the second (hybrid), or one of them throughout")
    hpe_decay: Literal["literal", "weight"] = option("literal", "hpe-darts: eq. 7 on α as written (literal), or on "
                                                                 "exp(α) (weight: always lowers the op's weight)")
    hpe_batch: int = option(64, "hpe-darts: validation samples that score the ops", min=2, max=4096)
    hpe_proxy: Literal["cached", "exact"] = option("cached", "hpe-darts: NetPerfProxy importances from one "
                                                           "forward (cached) or one forward per op (exact)")
    evo_population: int = option(16, "evolution: μ, the genotypes kept from one generation to the next",
                                 min=2, max=4096)
    evo_generations: int = option(10, "evolution: generations after the initial random population (0: score "
                                      "the initial population only)", min=0, max=10000)
    evo_children: int | None = option(None, "evolution: λ, the children bred per generation (null: μ)", min=1,
                                      max=4096)
    evo_mutation_prob: float = option(0.1, "evolution: probability that one (op, input) pair of a child mutates "
                                           "(its op or, as often, its input)", min=0, max=1)
    evo_bn_batches: int = option(4, "evolution: training batches that re-estimate the BatchNorm statistics "
                                    "before a candidate is scored", min=1, max=10000)
    evo_objectives: tuple[Objective, ...] = option(("metric", "macs", "memory"), "evolution: objectives: "
                                                   "metric (accuracy or IoU on val, max), macs, memory (parameter "
                                                   "+ peak activation bytes), latency (measured, ms) (min)")
    evo_scalarize: dict[str, float] | None = option(None, "evolution: λ per objective to rank by the weighted sum "
                                                          "of seed 002 eq. 2 instead of Pareto fronts, e.g. {metric: "
                                                          "1, macs: 0.01} (metric a fraction, macs in millions, "
                                                          "memory in MB, latency in ms; null: Pareto)")
    evo_budgets: tuple[float, ...] = option((), "evolution: MACs budgets, one winner each (empty: 1/3, 2/3 and 3/3 "
                                                "of the way from the final population's smallest to largest MACs)",
                                            min=0, min_exclusive=True)
    evo_net_channels: int | None = option(None, "evolution: C of the network whose MACs, memory and latency are "
                                                "counted (null: init_channels)", min=1, max=1024)
    evo_net_layers: int | None = option(None, "evolution: cells of that network (null: layers)", min=3, max=64)
    dd_w01: float = option(8.0, "d-darts: w_01, the weight of FairDARTS's zero-one loss in L_T (eq. 4.5)", min=0)
    dd_wab: float = option(0.5, "d-darts: w_AB, the weight of the ablation loss in L_T (eq. 4.5)", min=0)
    stop_stable_epochs: int = option(0, "end a stage once its derived genotype has not changed for this many "
                                        "consecutive epochs (0 = off; D-DARTS §4.2.4 uses 5)", min=0)
    stop_min_epochs: int = option(10, "no such early end before this many epochs of the stage (D-DARTS: 10)",
                                  min=1)
    max_steps: int = option(0, "stop each epoch after this many steps (0 = the whole split)", min=0)
    seed: int = option(0, "seed of α and weight initialization, shuffling and mutation", min=0)

    def __post_init__(self) -> None:
        self.algorithm_class.check_options(self)

    @property
    def algorithm_class(self) -> type[SearchAlgorithm]:
        return search_algorithm(self.algorithm)

    # ---- per-algorithm defaults ----------------------------------------------------------------
    @property
    def arch_lr(self) -> float:
        return self.a_lr if self.a_lr is not None else self.algorithm_class.default_arch_lr

    @property
    def warmup(self) -> int:
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return int(round(self.algorithm_class.default_warmup * self.epochs))

    @property
    def stages(self) -> tuple[int, ...]:
        return self.algorithm_class.stages(self)


@dataclass
class SearchResult:
    genotype: Genotype
    out_dir: Path
    genotype_path: Path
    alpha_history_path: Path
    plot_path: Path
    seconds: float
    epochs_run: int
    resumed_from: int


# ---- losses ---------------------------------------------------------------------------------------
def task_loss_fn(kind: str) -> LossFn:
    if kind == "segmentation":
        return lambda logits, y: segmentation_loss(logits.float(), y.float())
    return lambda logits, y: F.cross_entropy(logits.float(), y.long())


# ---- α history ------------------------------------------------------------------------------------
def _history_entry(model: SearchNetwork, epoch: int, stage: int, stats: dict[str, float],
                   previous: dict[str, Any] | None) -> dict[str, Any]:
    """One epoch of the α history: the weights, the genotype they derive, and its architecture distance
    M to the previous epoch's (D-DARTS eq. 4.8, `distance.py`: "distance_prev" in the edge encoding;
    "unchanged": the positional encoding's 0, i.e. the same cells; both null for the first epoch)."""
    from compressor.frontends.darts.distance import network_distance

    w = model.arch_weights()
    genotype = model.genotype()
    entry: dict[str, Any] = {"epoch": epoch, "stage": stage, "layers": model.layers,
                             "normal": np.round(w["normal"], 6).tolist(), "reduce": np.round(w["reduce"], 6).tolist(),
                             "primitives_normal": model.primitives_normal, "primitives_reduce": model.primitives_reduce,
                             "genotype": genotype.to_dict(), "distance_prev": None, "unchanged": None}
    if previous is not None and "genotype" in previous:
        before = Genotype.from_dict(previous["genotype"])
        if type(before) is type(genotype):
            entry["distance_prev"] = round(network_distance(genotype, before), 6)
            entry["unchanged"] = network_distance(genotype, before, "positional") == 0
    if "edge_normal" in w:
        entry["edge_normal"] = np.round(w["edge_normal"], 6).tolist()
        entry["edge_reduce"] = np.round(w["edge_reduce"], 6).tolist()
    entry.update({k: float(v) for k, v in stats.items()})
    return entry


def _stable(history: Sequence[dict[str, Any]], stage: int, epoch_in_stage: int, opts: SearchOptions) -> bool:
    """Whether the stage ends early (`stop_stable_epochs`): its last that many epochs each derived the
    genotype of the epoch before, and it has run at least `stop_min_epochs` epochs."""
    n = opts.stop_stable_epochs
    if n == 0 or epoch_in_stage < opts.stop_min_epochs or epoch_in_stage >= opts.epochs or len(history) < n:
        return False
    return all(h["stage"] == stage and h.get("unchanged") for h in history[-n:])


def plot_alpha_history(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Mean softmax(α) per primitive over the edges that hold it, per epoch, normal and reduce cells."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    for ax_i, kind in enumerate(("normal", "reduce")):
        ax = fig.add_subplot(1, 2, ax_i + 1)
        for name in PRIMITIVES:
            xs, ys = [], []
            for h in history:
                vals = [row[k] for row, prims in zip(h[kind], h[f"primitives_{kind}"])
                        for k, p in enumerate(prims) if p == name]
                if vals:
                    xs.append(h["epoch"])
                    ys.append(sum(vals) / len(vals))
            if xs:
                ax.plot(xs, ys, marker="o", markersize=3, label=name)
        ax.set_title(f"{kind} cell: mean softmax(α) over edges")
        ax.set_xlabel("epoch")
        ax.margins(y=0.1)  # autoscale: early in a search the weights differ in the third decimal
        if ax_i == 1:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)


def _atomic_json(doc: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)


def _atomic_torch(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ---- the loop -------------------------------------------------------------------------------------
class Stage:
    """A supernet (`model`) with its two optimizers (`w_opt`, `a_opt`) and its schedule; the
    algorithm's hooks receive it."""

    def __init__(self, algo: SearchAlgorithm, data: DataBundle, stage: int, prims_normal: EdgePrimitives | None,
                 prims_reduce: EdgePrimitives | None, device: str) -> None:
        opts = algo.opts
        torch.manual_seed(opts.seed + 1000 * stage)
        self.model = algo.build_supernet(stage, data, prims_normal, prims_reduce).to(device)
        self.w_opt = torch.optim.SGD(self.model.weight_parameters(), opts.w_lr, momentum=opts.w_momentum,
                                     weight_decay=opts.w_wd)
        self.a_opt = torch.optim.Adam(self.model.arch_parameters(), lr=opts.arch_lr, betas=(0.5, 0.999),
                                      weight_decay=opts.a_wd)
        self.epoch = 0  # the schedule's state: epochs finished in this stage

    def set_lr(self, opts: SearchOptions) -> float:
        """Cosine from w_lr (epoch 0) towards w_lr_min, in closed form so that a resumed run with a
        larger `epochs` follows the new schedule exactly."""
        lr = opts.w_lr_min + 0.5 * (opts.w_lr - opts.w_lr_min) * (1 + math.cos(math.pi * self.epoch / opts.epochs))
        for group in self.w_opt.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(),
                "sched": {"epoch": self.epoch}, "primitives_normal": self.model.primitives_normal,
                "primitives_reduce": self.model.primitives_reduce}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.epoch = state["sched"]["epoch"]


def _check_data(opts: SearchOptions, data: DataBundle) -> None:
    if data.task.kind not in ("classification", "segmentation"):
        raise ConfigError(f"search supports classification and segmentation data, got task {data.task.kind!r}")
    if len(data.input_shape) != 3:
        raise ConfigError(f"search needs image inputs (C, H, W); data {data.name} has input shape {data.input_shape}")
    h, w = data.input_shape[-2:]
    if h % 4 or w % 4:
        raise ConfigError(f"the supernet reduces the input twice, so height and width must be divisible by 4; "
                          f"data {data.name} is {h}×{w}: resize or crop it")
    if data.task.kind == "segmentation" and data.task.num_classes != 1:
        raise ConfigError(f"segmentation search predicts 1 logit per pixel; got num_classes={data.task.num_classes}")
    if len(data.train) < 2:
        raise ConfigError(f"search splits the train split into a weight half and an α half; data {data.name} has "
                          f"{len(data.train)} training sample(s): give it at least 2")


def _split(train, portion: float) -> tuple[Subset, Subset]:
    n = len(train)
    cut = min(max(1, int(math.floor(portion * n))), n - 1)
    return Subset(train, list(range(cut))), Subset(train, list(range(cut, n)))


def _structural(opts: SearchOptions) -> dict[str, Any]:
    return {k: v for k, v in options_dict(opts).items() if k not in _RESUMABLE}


def _differing(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The option names whose stored value differs from the current one. An option the stored run did
    not know (added by a later version) counts as its default, so that an upgrade does not orphan a
    search folder whose options it only extends."""
    defaults = options_dict(SearchOptions())
    names = set(stored) | set(current)
    return sorted(k for k in names
                  if stored.get(k, defaults.get(k)) != current.get(k, defaults.get(k)) or k not in defaults)


def _result(out_dir: Path, genotype: Genotype, seconds: float, epochs_run: int, resumed_from: int) -> SearchResult:
    return SearchResult(genotype=genotype, out_dir=out_dir, genotype_path=out_dir / GENOTYPE,
                        alpha_history_path=out_dir / HISTORY, plot_path=out_dir / PLOT, seconds=seconds,
                        epochs_run=epochs_run, resumed_from=resumed_from)


def run_search(options: SearchOptions, data: DataBundle, out_dir: Path, device: str = "cpu",
               progress: bool = True) -> SearchResult:
    """Search `data` with `options`; write genotype.json, the α history and its plot into `out_dir`.

    Re-running with the same `out_dir` resumes after the last finished epoch (only `epochs` and
    `max_steps` may differ from the interrupted run); a finished search returns its stored result."""
    from compressor.progress import progress_bar as tqdm  # one line per bar when stderr is not a terminal

    opts = options
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, result_path = out_dir / CHECKPOINT, out_dir / RESULT
    n_stages = len(opts.stages)
    total = opts.epochs * n_stages

    if result_path.is_file() and (out_dir / GENOTYPE).is_file():
        doc = json.loads(result_path.read_text())
        if isinstance(doc.get("options"), dict) and not _differing(doc["options"], options_dict(opts)):
            log.info("search: %s already holds a finished search; returning it", out_dir)
            return _result(out_dir, Genotype.load(out_dir / GENOTYPE), doc["seconds"], 0, doc["epochs_done"])

    _check_data(opts, data)
    algo = opts.algorithm_class(opts, task_loss_fn(data.task.kind))
    w_split, a_split = _split(data.train, opts.train_portion) if algo.split_train else (data.train, data.train)

    stage_i, epoch_in_stage, done, history, seconds = 0, 0, 0, [], 0.0
    ckpt = None
    if ckpt_path.is_file():
        try:  # tensors and plain data only: a checkpoint never unpickles code
            ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"search checkpoint {ckpt_path} is not a plain checkpoint ({first[:160]}); it was not "
                              "loaded: delete it to restart the search") from None
        diff = _differing(ckpt["options"], _structural(opts))
        if diff:
            raise ConfigError(f"{out_dir} holds a search with different options ({', '.join(diff)}); only "
                              f"{', '.join(sorted(_RESUMABLE))} may change on resume: use a fresh out_dir or the "
                              f"same options")
        stage_i, epoch_in_stage, done = ckpt["stage"], ckpt["epoch_in_stage"], ckpt["done"]
        history, seconds = ckpt["history"], ckpt["seconds"]
        st = Stage(algo, data, stage_i, ckpt["stage_state"]["primitives_normal"],
                   ckpt["stage_state"]["primitives_reduce"], device)
        st.load_state_dict(ckpt["stage_state"])
        torch.set_rng_state(ckpt["rng"].cpu())
        log.info("search: resumed from %s after epoch %d", ckpt_path, done)
    else:
        st = Stage(algo, data, 0, None, None, device)
    resumed_from = done
    start = time.perf_counter()

    dtype = next(st.model.parameters()).dtype
    epochs_run = 0
    while True:
        if epoch_in_stage >= opts.epochs:  # the stage is over: the next one (p-darts) or stop
            if stage_i + 1 >= n_stages:
                break
            pn, pr = algo.stage_end(st.model, stage_i)
            stage_i, epoch_in_stage = stage_i + 1, 0
            st = Stage(algo, data, stage_i, pn, pr, device)
            log.info("search: %s stage %d: %d cells, %d ops per edge", opts.algorithm, stage_i + 1,
                     opts.stages[stage_i], len(st.model.primitives_normal[0]))
            continue
        if done >= total:
            break
        e = epoch_in_stage
        model = st.model
        lr = st.set_lr(opts)
        warm = e < opts.warmup
        # every history entry has the same keys; an algorithm without a λ or a mutation records 0
        schedule = {"lr": lr, "lambda": 0.0, "mutation_prob": 0.0, **algo.epoch_start(model, stage_i, e)}

        w_loader = make_loader(w_split, opts.batch_size, shuffle=True, seed=opts.seed + done)
        a_loader = make_loader(a_split, opts.batch_size, shuffle=True, seed=opts.seed + done + 7919)
        a_iter = iter(a_loader)
        steps = len(w_loader) if opts.max_steps == 0 else min(opts.max_steps, len(w_loader))
        sums = {"loss": 0.0, "val_loss": 0.0, "alignment": 0.0}
        counts = {"loss": 0, "val_loss": 0, "alignment": 0}
        bar = tqdm(total=steps, desc=f"{opts.algorithm} {done + 1}/{total}", disable=not progress, leave=False,
                   dynamic_ncols=True)
        model.train()
        for step, (x, y) in enumerate(w_loader):
            if step >= steps:
                break
            x, y = x.to(device, dtype=dtype), y.to(device)
            if not warm:
                try:
                    xv, yv = next(a_iter)
                except StopIteration:
                    a_iter = iter(a_loader)
                    xv, yv = next(a_iter)
                xv, yv = xv.to(device, dtype=dtype), yv.to(device)
                sums["val_loss"] += algo.arch_step(st, x, y, xv, yv, lr)
                counts["val_loss"] += 1
            for k, v in algo.weight_step(st, x, y).items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss'] / counts['loss']:.4f}")
        bar.close()
        st.epoch += 1
        epoch_in_stage += 1
        done += 1
        epochs_run += 1
        epoch_stats = {k: sums[k] / counts[k] for k in sums if counts[k]}
        epoch_stats.update(schedule)
        history.append(_history_entry(model, done, stage_i, epoch_stats, history[-1] if history else None))
        log.info("search %s epoch %d/%d loss %.4f genotype %s", opts.algorithm, done, total,
                 epoch_stats.get("loss", float("nan")), history[-1]["genotype"])
        if _stable(history, stage_i, epoch_in_stage, opts):
            log.info("search: stage %d's genotype unchanged for %d epochs: ending the stage after epoch %d of %d",
                     stage_i + 1, opts.stop_stable_epochs, epoch_in_stage, opts.epochs)
            history[-1]["stopped_early"] = True
            epoch_in_stage = opts.epochs
        seconds_now = seconds + time.perf_counter() - start
        _atomic_torch({"options": _structural(opts), "stage": stage_i, "epoch_in_stage": epoch_in_stage,
                       "done": done, "history": history, "seconds": seconds_now, "rng": torch.get_rng_state(),
                       "stage_state": st.state_dict()}, ckpt_path)
        _atomic_json(history, out_dir / HISTORY)
        plot_alpha_history(history, out_dir / PLOT)

    genotype = algo.finish(st.model, data, out_dir, device, progress).validate()
    genotype.save(out_dir / GENOTYPE)
    seconds_total = seconds + time.perf_counter() - start
    if not (out_dir / HISTORY).is_file():
        _atomic_json(history, out_dir / HISTORY)
        plot_alpha_history(history, out_dir / PLOT)
    _atomic_json({"genotype": genotype.to_dict(), "seconds": seconds_total, "epochs_done": done,
                  "options": options_dict(opts)}, result_path)
    return _result(out_dir, genotype, seconds_total, epochs_run, resumed_from)
