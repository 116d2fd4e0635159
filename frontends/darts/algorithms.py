"""Search algorithms as registered classes: the hooks that the one loop in `search.py` calls.

`SearchAlgorithm` (`search_base.py`, with `SearchOptions`, `Stage` and the registry) is plain DARTS; each
algorithm is a subclass, registered by name, that overrides what differs; its gradients are in
`gradients.py`. One instance serves one run (`run_search` builds it from the options and the task
loss); the loop owns data, schedules of the weights' learning rate, resumption, progress, α history
and plots, and calls, in this order:

    check_options(opts), stages(opts)         class level, from SearchOptions: validation; cells per stage
    stage_epochs(opts), alpha_free_epochs(opts)   class level: epochs per stage (default `epochs` each);
                                              α-free epochs at each stage's start (default `warmup_epochs`)
    build_supernet(stage, data, pn, pr)       per stage, after torch.manual_seed(seed + 1000·stage)
    per epoch:  epoch_start(model, stage, epoch) → schedule values for the α history
        per step:   arch_step(st, x, y, x_val, y_val, lr) → α-split loss   (after the warm-up)
                    weight_step(st, x, y) → {"loss": …, …}
    stage_end(model, stage) → the next stage's ops per edge    (only between stages)
    finish(model, data, out_dir, device, progress) → the final genotype   (default: derive(model))

`st` is the loop's `Stage` (`search_base.py`): `st.model` (the supernet), `st.w_opt` (SGD of the weights),
`st.a_opt` (Adam of α). Per-epoch state (λ, the mutation probability) is set in `epoch_start`,
which the loop calls before any step, also after a resume, so an algorithm has nothing to
checkpoint. Class attributes: the option defaults that `SearchOptions` reads (`default_arch_lr`,
`default_warmup`: a fraction of each stage's epochs), `clip_arch_grads` (of the base α step) and
`split_train` (False: the weights train on the whole train split, for an algorithm without α steps;
`train_portion` is then unused). `finish` is for an algorithm whose derivation needs more than the
supernet (the data, the device, files of its own in the search's folder); the others override
`derive`.

Algorithms (our reading of the references; each is tested for its distinguishing mechanism in
tests/frontends/test_darts_search.py):

- darts (quark0/darts): order 1 takes the α step on the α-split loss at the current w. Order 2
  takes it on L_val(w', α) with the virtual step w' = w − η(momentum·buf + ∇_w L_train + wd·w), and
  ∇_α = ∇_α L_val(w', α) − η·[∇_α L_train(w⁺, α) − ∇_α L_train(w⁻, α)] / 2R with
  w± = w ± R·∇_w' L_val(w', α), R = 0.01/‖∇_w' L_val‖ (the finite-difference Hessian-vector product).
  `order` applies to every algorithm's α step.
- pc-darts (yuhuixu1993/PC-DARTS): partial channels (ops see C/K channels, the rest bypasses,
  channel shuffle with K groups), edge normalization β (per node softmax), genotype derivation
  from α·β; α updates start after `warmup_epochs` (default 30% of the epochs: 15 of 50); a_lr 6e-4.
- p-darts (chenxin061/pdarts): `pdarts.stages` supernets of increasing depth (5, 11, 17 cells), each
  trained for `epochs` epochs with fresh weights and α, the first `warmup_epochs` (default 40%: 10
  of 25) weights-only. After stage s each edge keeps its `pdarts.keep[s]` strongest ops (by the
  stage's softmax(α), `none` included; after the last stage `none` is dropped first), and the next
  stage's MixedOps hold only those. Dropout after the stride-1 skip connections with rate
  `pdarts.skip_dropout[s]`, decayed as the reference does: rate·(E−e−1)/E during warm-up, then
  rate·exp(−0.2·(e − warmup)). α gradients are clipped at `grad_clip`; a_lr 6e-4. The final normal
  cell keeps at most `pdarts.max_skips` skip connections: while there are more, the chosen skip with
  the smallest weight is zeroed and the cell re-derived (its edge then takes its next-best op, and
  edges are re-ranked), as the reference's `delete_min_sk_prob` / `keep_1_on` / `keep_2_branches`.
- lambda-darts (dr-faustus/Lambda-DARTS, seed 000 eq. 3-4): the weight objective is
  L_train(w, α) − λ·Λ(w, α) with Λ = (1 / C(L, 2)) Σ_{l<l'} cos(g_l, g_l'), g_l = ∂L/∂ᾱ_l the
  gradient w.r.t. the (softmaxed) α of normal cell l. As in the reference, ∇_w Λ is not computed by
  double backprop: with u_l = g_l/‖g_l‖, the perturbation p_l = (1/C(L,2))·(I − u_l u_lᵀ)Σ_l' u_l' / ‖g_l‖
  (= ∂Λ/∂g_l; reduction cells get p = 0, as in the reference), ε = ε0/‖p‖, and
  ∇_w(−Λ) ≈ [∇_w L(ᾱ − εp) − ∇_w L(ᾱ + εp)] / 2ε, added with weight λ_t = λ·e/(E−1) (linear ramp
  over the epochs) to the weight gradient before clipping. α steps are plain DARTS.
- em-darts (Liu et al. 2025; no public code). Our interpretation: during weight steps only, each
  edge of each cell independently, with probability p(e) = em.max_prob·e/(E−1) (linear from 0 at
  the first epoch to `em.max_prob` at the last), is "mutated": it outputs one parametric op (drawn
  uniformly among sep_conv_3x3/5x5, dil_conv_3x3/5x5), unweighted, instead of the α-weighted sum.
  α steps and the derivation are plain DARTS. em.max_prob defaults to 0.2 (our choice).
- evolution (seed 002, "Multi-Objective Optimization" and "Search Algorithm"; evolution.py): no α.
  The supernet's weights train one uniformly sampled discrete path per step (single-path weight
  sharing); afterwards `finish` runs an NSGA-II-style evolution over genotypes scored by inherited
  weights (metric, MACs, memory) and writes one winner per MACs budget.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from compressor.frontends.darts.genotypes import Genotype
# the α and weight gradients, re-exported: callers of this module import them from here
from compressor.frontends.darts.gradients import (  # noqa: F401
    LossFn, arch_grads_first_order, arch_grads_second_order, lambda_alignment, lambda_perturbations,
    weight_gradients,
)
from compressor.frontends.darts.ops import PRIMITIVES
# the registry (compressor.registry) and the hooks' base class (search_base.py) (the loop imports them without the algorithms)
from compressor.frontends.darts.search_base import (  # noqa: F401
    SEARCHES, SearchAlgorithm, SearchOptions, register_search, search_algorithm, step_weights,
)
from compressor.frontends.darts.search_space import CONCAT, EdgePrimitives, SearchNetwork, derive_cell
from compressor.options import option

if TYPE_CHECKING:
    from compressor.data.base import DataBundle
    from compressor.frontends.darts.search_base import Stage


# ---- the algorithms -------------------------------------------------------------------------------
@register_search("darts")
class Darts(SearchAlgorithm):
    """quark0/darts: the base class as it is."""


@dataclass(frozen=True)
class PCDartsOptions:
    k: int = option(4, "1/K of the channels go through the ops", min=1)


@register_search("pc-darts")
class PCDarts(SearchAlgorithm):
    """Partial channels and edge normalization in the supernet; α steps after a 30% warm-up."""

    Options = PCDartsOptions
    block = "pc"
    default_arch_lr = 6e-4
    default_warmup = 0.3

    @classmethod
    def check_options(cls, opts: SearchOptions) -> None:
        k = opts.pc.k
        if opts.init_channels % k:
            raise ValueError(f"pc-darts needs init_channels divisible by pc.k; got {opts.init_channels} and "
                             f"{k} (e.g. init_channels: {k * max(1, opts.init_channels // k)})")

    def build_supernet(self, stage: int, data: DataBundle, primitives_normal: EdgePrimitives | None,
                       primitives_reduce: EdgePrimitives | None) -> SearchNetwork:
        return self.supernet(stage, data, primitives_normal, primitives_reduce, partial_k=self.opts.pc.k,
                             edge_norm=True)


@dataclass(frozen=True)
class PDartsOptions:
    stages: tuple[int, ...] = option((5, 11, 17), "cells of each stage's supernet")
    keep: tuple[int, ...] = option((5, 3, 1), "ops kept per edge after each stage (last must be 1)")
    skip_dropout: tuple[float, ...] = option((0.1, 0.4, 0.7), "dropout after skip connections per stage (decayed "
                                                              "over epochs)")
    max_skips: int = option(2, "most skip connections in the final normal cell", min=0, max=8)


@register_search("p-darts")
class PDarts(SearchAlgorithm):
    """Stages of deeper supernets over a shrinking space, skip dropout, at most `pdarts.max_skips`."""

    Options = PDartsOptions
    block = "pdarts"
    default_arch_lr = 6e-4
    default_warmup = 0.4
    clip_arch_grads = True

    @classmethod
    def check_options(cls, opts: SearchOptions) -> None:
        o = opts.pdarts
        n = len(o.stages)
        if n == 0 or len(o.keep) != n or len(o.skip_dropout) != n:
            raise ValueError(f"p-darts needs one entry per stage in pdarts.stages, pdarts.keep and "
                             f"pdarts.skip_dropout; got {len(o.stages)}, {len(o.keep)}, "
                             f"{len(o.skip_dropout)} (e.g. [5, 11, 17], [5, 3, 1], [0.1, 0.4, 0.7])")
        if any(c < 3 for c in o.stages):
            raise ValueError(f"pdarts.stages: every stage needs at least 3 cells, got {list(o.stages)}")
        keep = list(o.keep)
        if keep[-1] != 1 or any(k < 2 for k in keep[:-1]) or keep[0] >= len(PRIMITIVES) or \
                any(a <= b for a, b in zip(keep, keep[1:])):
            raise ValueError(f"pdarts.keep must decrease from < {len(PRIMITIVES)} to a last entry of 1 "
                             f"(one op per edge), each earlier entry ≥ 2; got {keep} (e.g. [5, 3, 1])")
        if any(not 0 <= p < 1 for p in o.skip_dropout):
            raise ValueError(f"pdarts.skip_dropout rates must be in [0, 1), got {list(o.skip_dropout)}")

    @classmethod
    def stages(cls, opts: SearchOptions) -> tuple[int, ...]:
        return tuple(opts.pdarts.stages)

    def build_supernet(self, stage: int, data: DataBundle, primitives_normal: EdgePrimitives | None,
                       primitives_reduce: EdgePrimitives | None) -> SearchNetwork:
        return self.supernet(stage, data, primitives_normal, primitives_reduce,
                             skip_dropout=self.opts.pdarts.skip_dropout[stage])

    def epoch_start(self, model: SearchNetwork, stage: int, epoch: int) -> dict[str, float]:
        opts = self.opts
        model.set_skip_dropout(pdarts_dropout(opts.pdarts.skip_dropout[stage], epoch, opts.epochs, opts.warmup))
        return {}

    def stage_end(self, model: SearchNetwork, stage: int) -> tuple[EdgePrimitives, EdgePrimitives]:
        # between stages `none` competes like any op; the last stage's `keep` (1) is the derivation
        w, keep = model.arch_weights(), self.opts.pdarts.keep[stage]
        return (pdarts_shrink(w["normal"], model.primitives_normal, keep),
                pdarts_shrink(w["reduce"], model.primitives_reduce, keep))

    def derive(self, model: SearchNetwork) -> Genotype:
        w = model.arch_weights()
        normal = pdarts_limit_skips(w["normal"], model.primitives_normal, self.opts.pdarts.max_skips)
        reduce = derive_cell(w["reduce"], model.primitives_reduce)
        return Genotype(normal=normal, normal_concat=CONCAT, reduce=reduce, reduce_concat=CONCAT)


@dataclass(frozen=True)
class LambdaDartsOptions:
    reg: float = option(0.125, "λ, the regularizer's weight (ramped linearly)", min=0)
    eps: float = option(1e-4, "ε0 of the finite difference", min=0, min_exclusive=True)


@register_search("lambda-darts")
class LambdaDarts(SearchAlgorithm):
    """Weight steps add λ_t·∇_w(−Λ), the alignment of the normal cells' α gradients; λ ramps up."""

    Options = LambdaDartsOptions
    block = "lambda"
    lam = 0.0

    def epoch_start(self, model: SearchNetwork, stage: int, epoch: int) -> dict[str, float]:
        self.lam = linear_ramp(self.opts.block.reg, epoch, self.opts.epochs)
        return {"lambda": self.lam}

    def weight_step(self, st: Stage, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        stats = weight_gradients(st.model, self.loss_fn, x, y, self.lam, self.opts.block.eps)
        step_weights(st, self.opts.grad_clip)
        return stats


@dataclass(frozen=True)
class EMDartsOptions:
    max_prob: float = option(0.2, "edge-mutation probability reached at the last epoch", min=0, max=1)


@register_search("em-darts")
class EMDarts(SearchAlgorithm):
    """Weight steps mutate each edge with a probability that ramps from 0 to `em.max_prob`."""

    Options = EMDartsOptions
    block = "em"
    mutation = 0.0

    def epoch_start(self, model: SearchNetwork, stage: int, epoch: int) -> dict[str, float]:
        self.mutation = linear_ramp(self.opts.em.max_prob, epoch, self.opts.epochs)
        return {"mutation_prob": self.mutation}

    def weight_step(self, st: Stage, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        st.model.mutation_prob = self.mutation  # the supernet's forward reads it (training mode only)
        try:
            return super().weight_step(st, x, y)
        finally:
            st.model.mutation_prob = 0.0  # α steps and evaluation see the α-weighted sum


# ---- schedules ------------------------------------------------------------------------------------
def linear_ramp(final: float, epoch: int, epochs: int) -> float:
    """final·e/(E−1): 0 at the first epoch, `final` at the last (λ-DARTS λ, EM-DARTS p)."""
    return final * epoch / (epochs - 1) if epochs > 1 else final


def pdarts_dropout(rate: float, epoch: int, epochs: int, warmup: int) -> float:
    """The P-DARTS skip-connection dropout at stage epoch `epoch` (chenxin061/pdarts train_search.py)."""
    if epoch < warmup:
        return rate * (epochs - epoch - 1) / epochs
    return rate * math.exp(-(epoch - warmup) * 0.2)


# ---- P-DARTS space shrinking ----------------------------------------------------------------------
def pdarts_shrink(probs: np.ndarray, primitives: Sequence[Sequence[str]], keep: int,
                  drop_none: bool = False) -> list[list[str]]:
    """Keep each edge's `keep` ops with the largest weight (order of PRIMITIVES preserved). With
    `drop_none` (after the last stage), `none` goes first and the strongest others stay."""
    out = []
    for e, prims in enumerate(primitives):
        cand = [k for k, p in enumerate(prims) if not (drop_none and p == "none")]
        best = sorted(cand, key=lambda k: -probs[e][k])[:keep]
        out.append([prims[k] for k in sorted(best)])
    return out


def pdarts_limit_skips(probs: np.ndarray, primitives: Sequence[Sequence[str]],
                       max_skips: int) -> list[tuple[str, int]]:
    """Derive the normal cell, then, while it holds more than `max_skips` skip connections, zero
    the weight of its weakest chosen skip_connect and derive again (pdarts `delete_min_sk_prob`)."""
    p = np.array(probs, dtype=np.float64, copy=True)
    for e, prims in enumerate(primitives):  # the reference zeroes `none` before ranking the edges
        for k, name in enumerate(prims):
            if name == "none":
                p[e][k] = 0.0
    while True:
        gene = derive_cell(p, primitives)
        chosen = _chosen_edges(gene)
        skips = [(p[e][list(primitives[e]).index("skip_connect")], e) for e, op in chosen if op == "skip_connect"]
        if len(skips) <= max_skips:
            return gene
        _, e = min(skips)
        p[e][list(primitives[e]).index("skip_connect")] = 0.0


def _chosen_edges(gene: Sequence[tuple[str, int]]) -> list[tuple[int, str]]:
    """(edge index, op) of each pair of a derived cell."""
    out = []
    starts = [sum(2 + k for k in range(i)) for i in range(len(gene) // 2)]
    for idx, (op, j) in enumerate(gene):
        out.append((starts[idx // 2] + j, op))
    return out
