"""What the search loop (`search.py`) and the search algorithms share: the `search:` block's options
(`SearchOptions`), the hooks an algorithm implements (`SearchAlgorithm`, plain DARTS), the supernet and
optimizers the hooks receive (`Stage`), and the registry of algorithms (`SEARCHES`, `@register_search`).

The built-in algorithms register from `algorithms.py` (darts, pc-darts, p-darts, lambda-darts, em-darts),
`hpe.py`, `ddarts.py` and `evolution.py`, imported by the package (`compressor.frontends.darts`); a plugin
package registers its own the same way. `algorithms.py` documents the hooks and each algorithm.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch
import torch.nn as nn

from compressor.frontends.darts.genotypes import Genotype
from compressor.frontends.darts.gradients import (LossFn, arch_grads_first_order, arch_grads_second_order,
                                                  weight_gradients)
from compressor.frontends.darts.search_space import EdgePrimitives, SearchNetwork
from compressor.options import Range, option
from compressor.registry import Registry

if TYPE_CHECKING:
    from pathlib import Path

    from compressor.data.base import DataBundle

# The registered algorithms' names (a test keeps the two in sync): config files are checked against it.
Algorithm = Literal["darts", "pc-darts", "p-darts", "lambda-darts", "em-darts", "hpe-darts", "evolution", "d-darts"]
Objective = Literal["metric", "macs", "memory", "latency"]

SEARCHES = Registry("search algorithm")
register_search = SEARCHES.register


def search_algorithm(name: str, where: str = "search.algorithm") -> type[SearchAlgorithm]:
    """The class registered as `name`; a ConfigError naming the closest registered name if none is."""
    if name in SEARCHES:  # a registered name loads no plugins
        return SEARCHES[name]
    return SEARCHES.get_or_error(name, where)


# ---- the options --------------------------------------------------------------------------------
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


# ---- the hooks ------------------------------------------------------------------------------------
class SearchAlgorithm:
    """Plain DARTS (first or second order, `opts.order`). Subclasses override what differs."""

    name: str  # set by @register_search
    default_arch_lr: float = 3e-4
    default_warmup: float = 0.0  # fraction of each stage's epochs trained without α steps
    clip_arch_grads: bool = False  # clip α's gradient norm at `grad_clip` before its step
    split_train: bool = True  # cut the train split into a weight part and an α part (`train_portion`)
    supernet_class: type[SearchNetwork] = SearchNetwork  # what `supernet` builds

    def __init__(self, opts: SearchOptions, loss_fn: LossFn) -> None:
        self.opts, self.loss_fn = opts, loss_fn

    # ---- class level: read by SearchOptions ------------------------------------------------------
    @classmethod
    def check_options(cls, opts: SearchOptions) -> None:
        """Raise ValueError, saying how to fix it, for options this algorithm cannot run with."""

    @classmethod
    def stages(cls, opts: SearchOptions) -> tuple[int, ...]:
        """Cells of each stage's supernet; each stage trains for `opts.epochs` epochs."""
        return (opts.layers,)

    # ---- supernet --------------------------------------------------------------------------------
    def build_supernet(self, stage: int, data: DataBundle, primitives_normal: EdgePrimitives | None,
                       primitives_reduce: EdgePrimitives | None) -> SearchNetwork:
        """Stage `stage`'s supernet (ops per edge: the full space at stage 0, else `stage_end`'s)."""
        return self.supernet(stage, data, primitives_normal, primitives_reduce)

    def supernet(self, stage: int, data: DataBundle, primitives_normal: EdgePrimitives | None,
                 primitives_reduce: EdgePrimitives | None, **extra: object) -> SearchNetwork:
        """The SearchNetwork of the options and data; `extra`: its algorithm-specific arguments."""
        return self.supernet_class(self.opts.init_channels, data.task.num_classes, self.stages(self.opts)[stage],
                             task=data.task.kind, in_channels=data.input_shape[0], primitives_normal=primitives_normal,
                             primitives_reduce=primitives_reduce, **extra)

    # ---- per epoch and per step ------------------------------------------------------------------
    def epoch_start(self, model: SearchNetwork, stage: int, epoch: int) -> dict[str, float]:
        """Set this epoch's schedules (`epoch` counts within the stage); return the values to record
        in the α history."""
        return {}

    def arch_step(self, st: Stage, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
                  lr: float) -> float:
        """One α update on the α batch (x_val, y_val); returns its loss. (x, y) is the step's weight
        batch and `lr` the weights' learning rate η, both for the second-order virtual step."""
        model, opts = st.model, self.opts
        if opts.order == 2:
            grads, vloss = arch_grads_second_order(model, self.loss_fn, x, y, x_val, y_val, lr, st.w_opt,
                                                   opts.w_momentum, opts.w_wd)
        else:
            grads, vloss = arch_grads_first_order(model, self.loss_fn, x_val, y_val)
        st.a_opt.zero_grad(set_to_none=True)
        for a, g in zip(model.arch_parameters(), grads):
            a.grad = g
        if self.clip_arch_grads and opts.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.arch_parameters(), opts.grad_clip)
        st.a_opt.step()
        return vloss

    def weight_step(self, st: Stage, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """One update of the weights on (x, y); returns statistics to average over the epoch."""
        stats = weight_gradients(st.model, self.loss_fn, x, y)
        step_weights(st, self.opts.grad_clip)
        return stats

    def stage_end(self, model: SearchNetwork, stage: int) -> tuple[EdgePrimitives, EdgePrimitives]:
        """The ops per edge (normal, reduce) of the next stage's supernet, after stage `stage`."""
        return model.primitives_normal, model.primitives_reduce

    def derive(self, model: SearchNetwork) -> Genotype:
        """The searched genotype, from the last stage's supernet."""
        return model.genotype()

    def finish(self, model: SearchNetwork, data: DataBundle, out_dir: Path, device: str,
               progress: bool = False) -> Genotype:
        """The searched genotype, once the last stage's epochs are done: `derive(model)` unless an
        algorithm needs the data, the device or the search's folder `out_dir` (where the loop then
        writes genotype.json) to derive it."""
        return self.derive(model)


def step_weights(st: Stage, grad_clip: float) -> None:
    """Clip the weights' gradient norm (0 = off) and take the SGD step."""
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(st.model.weight_parameters(), grad_clip)
    st.w_opt.step()


# ---- what the hooks receive ----------------------------------------------------------------------
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
