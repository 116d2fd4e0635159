"""Search algorithms as registered classes: the hooks that the one loop in `search.py` calls.

`SearchAlgorithm` is plain DARTS; each algorithm is a subclass, registered by name, that overrides
what differs. One instance serves one run (`run_search` builds it from the options and the task
loss); the loop owns data, schedules of the weights' learning rate, resumption, progress, α history
and plots, and calls, in this order:

    check_options(opts), stages(opts)         class level, from SearchOptions: validation; cells per stage
    build_supernet(stage, data, pn, pr)       per stage, after torch.manual_seed(seed + 1000·stage)
    per epoch:  epoch_start(model, stage, epoch) → schedule values for the α history
        per step:   arch_step(st, x, y, x_val, y_val, lr) → α-split loss   (after the warm-up)
                    weight_step(st, x, y) → {"loss": …, …}
    stage_end(model, stage) → the next stage's ops per edge    (only between stages)
    finish(model, data, out_dir, device, progress) → the final genotype   (default: derive(model))

`st` is the loop's `search.Stage`: `st.model` (the supernet), `st.w_opt` (SGD of the weights),
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
- p-darts (chenxin061/pdarts): `pdarts_stages` supernets of increasing depth (5, 11, 17 cells), each
  trained for `epochs` epochs with fresh weights and α, the first `warmup_epochs` (default 40%: 10
  of 25) weights-only. After stage s each edge keeps its `pdarts_keep[s]` strongest ops (by the
  stage's softmax(α), `none` included; after the last stage `none` is dropped first), and the next
  stage's MixedOps hold only those. Dropout after the stride-1 skip connections with rate
  `pdarts_skip_dropout[s]`, decayed as the reference does: rate·(E−e−1)/E during warm-up, then
  rate·exp(−0.2·(e − warmup)). α gradients are clipped at `grad_clip`; a_lr 6e-4. The final normal
  cell keeps at most `pdarts_max_skips` skip connections: while there are more, the chosen skip with
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
  edge of each cell independently, with probability p(e) = em_max_prob·e/(E−1) (linear from 0 at
  the first epoch to `em_max_prob` at the last), is "mutated": it outputs one parametric op (drawn
  uniformly among sep_conv_3x3/5x5, dil_conv_3x3/5x5), unweighted, instead of the α-weighted sum.
  α steps and the derivation are plain DARTS. em_max_prob defaults to 0.2 (our choice).
- evolution (seed 002, "Multi-Objective Optimization" and "Search Algorithm"; evolution.py): no α.
  The supernet's weights train one uniformly sampled discrete path per step (single-path weight
  sharing); afterwards `finish` runs an NSGA-II-style evolution over genotypes scored by inherited
  weights (metric, MACs, memory) and writes one winner per MACs budget.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.frontends.darts.genotypes import Genotype
from compressor.frontends.darts.ops import PRIMITIVES
from compressor.frontends.darts.search_space import CONCAT, EdgePrimitives, SearchNetwork, derive_cell
from compressor.registry import Registry

if TYPE_CHECKING:
    from pathlib import Path

    from compressor.data import DataBundle
    from compressor.frontends.darts.search import SearchOptions, Stage

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SEARCHES = Registry("search algorithm")
register_search = SEARCHES.register


def search_algorithm(name: str, where: str = "search.algorithm") -> type[SearchAlgorithm]:
    """The class registered as `name`; a ConfigError naming the closest registered name if none is."""
    if name in SEARCHES:  # the built-ins are registered below, so a known name loads nothing more
        return SEARCHES[name]
    return SEARCHES.get_or_error(name, where)


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


# ---- the algorithms -------------------------------------------------------------------------------
@register_search("darts")
class Darts(SearchAlgorithm):
    """quark0/darts: the base class as it is."""


@register_search("pc-darts")
class PCDarts(SearchAlgorithm):
    """Partial channels and edge normalization in the supernet; α steps after a 30% warm-up."""

    default_arch_lr = 6e-4
    default_warmup = 0.3

    @classmethod
    def check_options(cls, opts: SearchOptions) -> None:
        if opts.init_channels % opts.pc_k:
            raise ValueError(f"pc-darts needs init_channels divisible by pc_k; got {opts.init_channels} and "
                             f"{opts.pc_k} (e.g. init_channels: {opts.pc_k * max(1, opts.init_channels // opts.pc_k)})")

    def build_supernet(self, stage: int, data: DataBundle, primitives_normal: EdgePrimitives | None,
                       primitives_reduce: EdgePrimitives | None) -> SearchNetwork:
        return self.supernet(stage, data, primitives_normal, primitives_reduce, partial_k=self.opts.pc_k,
                             edge_norm=True)


@register_search("p-darts")
class PDarts(SearchAlgorithm):
    """Stages of deeper supernets over a shrinking space, skip dropout, at most `pdarts_max_skips`."""

    default_arch_lr = 6e-4
    default_warmup = 0.4
    clip_arch_grads = True

    @classmethod
    def check_options(cls, opts: SearchOptions) -> None:
        n = len(opts.pdarts_stages)
        if n == 0 or len(opts.pdarts_keep) != n or len(opts.pdarts_skip_dropout) != n:
            raise ValueError(f"p-darts needs one entry per stage in pdarts_stages, pdarts_keep and "
                             f"pdarts_skip_dropout; got {len(opts.pdarts_stages)}, {len(opts.pdarts_keep)}, "
                             f"{len(opts.pdarts_skip_dropout)} (e.g. [5, 11, 17], [5, 3, 1], [0.1, 0.4, 0.7])")
        if any(c < 3 for c in opts.pdarts_stages):
            raise ValueError(f"pdarts_stages: every stage needs at least 3 cells, got {list(opts.pdarts_stages)}")
        keep = list(opts.pdarts_keep)
        if keep[-1] != 1 or any(k < 2 for k in keep[:-1]) or keep[0] >= len(PRIMITIVES) or \
                any(a <= b for a, b in zip(keep, keep[1:])):
            raise ValueError(f"pdarts_keep must decrease from < {len(PRIMITIVES)} to a last entry of 1 "
                             f"(one op per edge), each earlier entry ≥ 2; got {keep} (e.g. [5, 3, 1])")
        if any(not 0 <= p < 1 for p in opts.pdarts_skip_dropout):
            raise ValueError(f"pdarts_skip_dropout rates must be in [0, 1), got {list(opts.pdarts_skip_dropout)}")

    @classmethod
    def stages(cls, opts: SearchOptions) -> tuple[int, ...]:
        return tuple(opts.pdarts_stages)

    def build_supernet(self, stage: int, data: DataBundle, primitives_normal: EdgePrimitives | None,
                       primitives_reduce: EdgePrimitives | None) -> SearchNetwork:
        return self.supernet(stage, data, primitives_normal, primitives_reduce,
                             skip_dropout=self.opts.pdarts_skip_dropout[stage])

    def epoch_start(self, model: SearchNetwork, stage: int, epoch: int) -> dict[str, float]:
        opts = self.opts
        model.set_skip_dropout(pdarts_dropout(opts.pdarts_skip_dropout[stage], epoch, opts.epochs, opts.warmup))
        return {}

    def stage_end(self, model: SearchNetwork, stage: int) -> tuple[EdgePrimitives, EdgePrimitives]:
        # between stages `none` competes like any op; the last stage's `keep` (1) is the derivation
        w, keep = model.arch_weights(), self.opts.pdarts_keep[stage]
        return (pdarts_shrink(w["normal"], model.primitives_normal, keep),
                pdarts_shrink(w["reduce"], model.primitives_reduce, keep))

    def derive(self, model: SearchNetwork) -> Genotype:
        w = model.arch_weights()
        normal = pdarts_limit_skips(w["normal"], model.primitives_normal, self.opts.pdarts_max_skips)
        reduce = derive_cell(w["reduce"], model.primitives_reduce)
        return Genotype(normal=normal, normal_concat=CONCAT, reduce=reduce, reduce_concat=CONCAT)


@register_search("lambda-darts")
class LambdaDarts(SearchAlgorithm):
    """Weight steps add λ_t·∇_w(−Λ), the alignment of the normal cells' α gradients; λ ramps up."""

    lam = 0.0

    def epoch_start(self, model: SearchNetwork, stage: int, epoch: int) -> dict[str, float]:
        self.lam = linear_ramp(self.opts.lambda_reg, epoch, self.opts.epochs)
        return {"lambda": self.lam}

    def weight_step(self, st: Stage, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        stats = weight_gradients(st.model, self.loss_fn, x, y, self.lam, self.opts.lambda_eps)
        step_weights(st, self.opts.grad_clip)
        return stats


@register_search("em-darts")
class EMDarts(SearchAlgorithm):
    """Weight steps mutate each edge with a probability that ramps from 0 to `em_max_prob`."""

    mutation = 0.0

    def epoch_start(self, model: SearchNetwork, stage: int, epoch: int) -> dict[str, float]:
        self.mutation = linear_ramp(self.opts.em_max_prob, epoch, self.opts.epochs)
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


# ---- α gradients ----------------------------------------------------------------------------------
def arch_grads_first_order(model: SearchNetwork, loss_fn: LossFn, x_val: torch.Tensor,
                           y_val: torch.Tensor) -> tuple[list[torch.Tensor], float]:
    loss = loss_fn(model(x_val), y_val)
    grads = torch.autograd.grad(loss, model.arch_parameters())
    return list(grads), float(loss.detach())


def arch_grads_second_order(model: SearchNetwork, loss_fn: LossFn, x_train: torch.Tensor, y_train: torch.Tensor,
                            x_val: torch.Tensor, y_val: torch.Tensor, eta: float,
                            w_optimizer: torch.optim.Optimizer | None = None, momentum: float = 0.0,
                            weight_decay: float = 0.0, r: float = 1e-2) -> tuple[list[torch.Tensor], float]:
    """The DARTS unrolled α gradient (quark0/darts cnn/architect.py `_backward_step_unrolled`).

    The virtual model is a `torch.func.functional_call` with the stepped weights (and copies of the
    BN buffers, as the reference's fresh model copy), so the model itself is left untouched."""
    from torch.func import functional_call

    named = model.named_weight_parameters()
    names = [n for n, _ in named]
    w = [p for _, p in named]
    arch = model.arch_parameters()

    def call(weights: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        state = {n: b.clone() for n, b in model.named_buffers()}
        state.update(dict(zip(names, weights)))
        return functional_call(model, state, (x,))

    # virtual step w' = w − η (momentum·buf + ∇L_train + wd·w)
    loss_train = loss_fn(model(x_train), y_train)
    g_train = torch.autograd.grad(loss_train, w, allow_unused=True)
    w_virtual = []
    for p, g in zip(w, g_train):
        g = torch.zeros_like(p) if g is None else g
        d = g + weight_decay * p.detach()
        buf = w_optimizer.state.get(p, {}).get("momentum_buffer") if w_optimizer is not None else None
        if buf is not None:
            d = d + momentum * buf
        w_virtual.append((p.detach() - eta * d).requires_grad_(True))

    loss_val = loss_fn(call(w_virtual, x_val), y_val)
    g = torch.autograd.grad(loss_val, list(arch) + w_virtual, allow_unused=True)
    d_alpha = [torch.zeros_like(a) if gi is None else gi for a, gi in zip(arch, g[:len(arch)])]
    v = [torch.zeros_like(p) if gi is None else gi for p, gi in zip(w_virtual, g[len(arch):])]

    # finite-difference Hessian-vector product ∇²_{α,w} L_train · v
    R = r / torch.cat([x.reshape(-1) for x in v]).norm().clamp_min(1e-12)
    w_plus = [p.detach() + R * vi for p, vi in zip(w, v)]
    w_minus = [p.detach() - R * vi for p, vi in zip(w, v)]
    g_plus = torch.autograd.grad(loss_fn(call(w_plus, x_train), y_train), arch, allow_unused=True)
    g_minus = torch.autograd.grad(loss_fn(call(w_minus, x_train), y_train), arch, allow_unused=True)
    out = []
    for da, gp, gm, a in zip(d_alpha, g_plus, g_minus, arch):
        gp = torch.zeros_like(a) if gp is None else gp
        gm = torch.zeros_like(a) if gm is None else gm
        out.append(da - eta * (gp - gm) / (2 * R))
    return out, float(loss_val.detach())


# ---- weight gradients (λ-DARTS) -------------------------------------------------------------------
def lambda_perturbations(cell_grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """∂Λ/∂g_l for Λ = mean_{l<l'} cos(g_l, g_l'): (1/C(L,2))·(I − u_l u_lᵀ)·Σ_l' u_l' / ‖g_l‖."""
    L = len(cell_grads)
    if L < 2:
        return [torch.zeros_like(g) for g in cell_grads]
    flat = [g.reshape(-1) for g in cell_grads]
    norms = [f.norm().clamp_min(1e-12) for f in flat]
    u = [f / n for f, n in zip(flat, norms)]
    sum_u = sum(u)
    scale = 1.0 / (L * (L - 1) / 2)
    return [(scale * (sum_u - ul * torch.dot(ul, sum_u)) / n).reshape(g.shape)
            for ul, n, g in zip(u, norms, cell_grads)]


def lambda_alignment(cell_grads: Sequence[torch.Tensor]) -> float:
    """Λ: the mean pairwise cosine similarity of the per-cell α gradients (seed 000 eq. 3)."""
    flat = [g.reshape(-1) for g in cell_grads]
    sims = [float(F.cosine_similarity(flat[i], flat[j], dim=0))
            for i in range(len(flat)) for j in range(i + 1, len(flat))]
    return sum(sims) / len(sims) if sims else 0.0


def weight_gradients(model: SearchNetwork, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor,
                     lam: float = 0.0, eps0: float = 1e-4) -> dict[str, float]:
    """Fill .grad of the weights with ∇_w L_train, plus, with lam > 0, the λ-DARTS term
    lam·[∇_w L(ᾱ − εp) − ∇_w L(ᾱ + εp)] / 2ε (see the module docstring). Returns loss and Λ."""
    w = model.weight_parameters()
    for p in w:
        p.grad = None
    stats: dict[str, float] = {}
    if lam <= 0:
        loss = loss_fn(model(x, detach_arch=True), y)
        loss.backward()
        return {"loss": float(loss.detach())}
    wn, wr = (t.detach() for t in model.op_weights())
    leaves = [(wr if c.reduction else wn).clone().requires_grad_(True) for c in model.cells]
    loss = loss_fn(model(x, cell_weights=leaves, detach_arch=True), y)
    loss.backward()
    stats["loss"] = float(loss.detach())
    normal = [i for i, c in enumerate(model.cells) if not c.reduction]
    grads = [leaves[i].grad for i in normal]
    stats["alignment"] = lambda_alignment(grads)
    pert_normal = lambda_perturbations(grads)
    pert = [torch.zeros_like(l) for l in leaves]
    for i, p in zip(normal, pert_normal):
        pert[i] = p
    norm = torch.cat([p.reshape(-1) for p in pert]).norm()
    if float(norm) == 0.0:
        return stats
    eps = eps0 / float(norm)
    base = [l.detach() for l in leaves]
    f = torch.autograd.grad(loss_fn(model(x, cell_weights=[b - eps * p for b, p in zip(base, pert)],
                                          detach_arch=True), y), w, allow_unused=True)
    b = torch.autograd.grad(loss_fn(model(x, cell_weights=[b + eps * p for b, p in zip(base, pert)],
                                          detach_arch=True), y), w, allow_unused=True)
    for p, gf, gb in zip(w, f, b):
        if gf is None or gb is None:
            continue
        reg = (gf - gb) / (2 * eps)
        p.grad = reg * lam if p.grad is None else p.grad + lam * reg
    return stats


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


# hpe-darts lives in hpe.py with the rest of HPE-DARTS; importing it registers it (it imports this module's
# base class, which exists by now)
from compressor.frontends.darts import hpe as _hpe  # noqa: E402,F401
# evolution likewise (evolution.py), and d-darts (ddarts.py)
from compressor.frontends.darts import ddarts as _ddarts  # noqa: E402,F401
from compressor.frontends.darts import evolution as _evolution  # noqa: E402,F401
