"""Differentiable architecture search: one loop, five algorithms (seed 000 sections 2.3, 4.1-4.2).

`run_search(options, data, out_dir)` searches the DARTS space (see `search_space.py`) on `data`
and writes `genotype.json`, the α history (`alpha_history.json`, `alpha_history.png`), a checkpoint
after every epoch (`search_checkpoint.pt`; a re-run resumes after the last finished epoch) and
`search_result.json` (a re-run of a finished search returns it at once).

The train split is cut in two, deterministically (first `train_portion` for the weights w, the rest
for α), as in the references. Each step: an α step on an α batch (after `warmup_epochs`), then a
w step on a w batch. w: SGD (momentum 0.9, wd 3e-4) with a cosine schedule from `w_lr` to
`w_lr_min` over the epochs; α: Adam (betas 0.5, 0.999; wd 1e-3). Gradients of w are clipped at
`grad_clip`.

Algorithms (our reading of the references; each is tested for its distinguishing mechanism):

- darts (quark0/darts): order 1 takes the α step on the α-split loss at the current w. Order 2
  takes it on L_val(w', α) with the virtual step w' = w − η(momentum·buf + ∇_w L_train + wd·w), and
  ∇_α = ∇_α L_val(w', α) − η·[∇_α L_train(w⁺, α) − ∇_α L_train(w⁻, α)] / 2R with
  w± = w ± R·∇_w' L_val(w', α), R = 0.01/‖∇_w' L_val‖ (the finite-difference Hessian-vector product).
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
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence, get_args

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Subset

from compressor.data import DataBundle, make_loader
from compressor.errors import ConfigError
from compressor.frontends.darts.genotypes import Genotype
from compressor.frontends.darts.ops import PRIMITIVES
from compressor.frontends.darts.search_space import CONCAT, SearchNetwork, derive_cell
from compressor.options import Range, option, options_dict
from compressor.train import segmentation_loss

log = logging.getLogger(__name__)

Algorithm = Literal["darts", "pc-darts", "p-darts", "lambda-darts", "em-darts"]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

CHECKPOINT = "search_checkpoint.pt"
RESULT = "search_result.json"
HISTORY = "alpha_history.json"
PLOT = "alpha_history.png"
GENOTYPE = "genotype.json"

# Options that may change between a run and its resumption.
_RESUMABLE = {"epochs", "max_steps"}


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
    train_portion: float = option(0.5, "fraction of the train split for the weights; the rest trains α",
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
    max_steps: int = option(0, "stop each epoch after this many steps (0 = the whole split)", min=0)
    seed: int = option(0, "seed of α and weight initialization, shuffling and mutation", min=0)

    def __post_init__(self) -> None:
        if self.algorithm == "p-darts":
            n = len(self.pdarts_stages)
            if n == 0 or len(self.pdarts_keep) != n or len(self.pdarts_skip_dropout) != n:
                raise ValueError(f"p-darts needs one entry per stage in pdarts_stages, pdarts_keep and "
                                 f"pdarts_skip_dropout; got {len(self.pdarts_stages)}, {len(self.pdarts_keep)}, "
                                 f"{len(self.pdarts_skip_dropout)} (e.g. [5, 11, 17], [5, 3, 1], [0.1, 0.4, 0.7])")
            if any(c < 3 for c in self.pdarts_stages):
                raise ValueError(f"pdarts_stages: every stage needs at least 3 cells, got {list(self.pdarts_stages)}")
            keep = list(self.pdarts_keep)
            if keep[-1] != 1 or any(k < 2 for k in keep[:-1]) or keep[0] >= len(PRIMITIVES) or \
                    any(a <= b for a, b in zip(keep, keep[1:])):
                raise ValueError(f"pdarts_keep must decrease from < {len(PRIMITIVES)} to a last entry of 1 "
                                 f"(one op per edge), each earlier entry ≥ 2; got {keep} (e.g. [5, 3, 1])")
            if any(not 0 <= p < 1 for p in self.pdarts_skip_dropout):
                raise ValueError(f"pdarts_skip_dropout rates must be in [0, 1), got {list(self.pdarts_skip_dropout)}")
        if self.algorithm == "pc-darts" and self.init_channels % self.pc_k:
            raise ValueError(f"pc-darts needs init_channels divisible by pc_k; got {self.init_channels} and "
                             f"{self.pc_k} (e.g. init_channels: {self.pc_k * max(1, self.init_channels // self.pc_k)})")

    # ---- per-algorithm defaults ----------------------------------------------------------------
    @property
    def arch_lr(self) -> float:
        if self.a_lr is not None:
            return self.a_lr
        return 6e-4 if self.algorithm in ("pc-darts", "p-darts") else 3e-4

    @property
    def warmup(self) -> int:
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        if self.algorithm == "pc-darts":
            return int(round(0.3 * self.epochs))
        if self.algorithm == "p-darts":
            return int(round(0.4 * self.epochs))
        return 0

    @property
    def stages(self) -> tuple[int, ...]:
        return tuple(self.pdarts_stages) if self.algorithm == "p-darts" else (self.layers,)


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


# ---- schedules ------------------------------------------------------------------------------------
def linear_ramp(final: float, epoch: int, epochs: int) -> float:
    """final·e/(E−1): 0 at the first epoch, `final` at the last (λ-DARTS λ, EM-DARTS p)."""
    return final * epoch / (epochs - 1) if epochs > 1 else final


def pdarts_dropout(rate: float, epoch: int, epochs: int, warmup: int) -> float:
    """The P-DARTS skip-connection dropout at stage epoch `epoch` (chenxin061/pdarts train_search.py)."""
    if epoch < warmup:
        return rate * (epochs - epoch - 1) / epochs
    return rate * math.exp(-(epoch - warmup) * 0.2)


# ---- losses ---------------------------------------------------------------------------------------
def task_loss_fn(kind: str) -> LossFn:
    if kind == "segmentation":
        return lambda logits, y: segmentation_loss(logits.float(), y.float())
    return lambda logits, y: F.cross_entropy(logits.float(), y.long())


# ---- α steps --------------------------------------------------------------------------------------
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


# ---- w steps --------------------------------------------------------------------------------------
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


# ---- α history ------------------------------------------------------------------------------------
def _history_entry(model: SearchNetwork, epoch: int, stage: int, stats: dict[str, float]) -> dict[str, Any]:
    w = model.arch_weights()
    entry: dict[str, Any] = {"epoch": epoch, "stage": stage, "layers": model.layers,
                             "normal": np.round(w["normal"], 6).tolist(), "reduce": np.round(w["reduce"], 6).tolist(),
                             "primitives_normal": model.primitives_normal, "primitives_reduce": model.primitives_reduce}
    if "edge_normal" in w:
        entry["edge_normal"] = np.round(w["edge_normal"], 6).tolist()
        entry["edge_reduce"] = np.round(w["edge_reduce"], 6).tolist()
    entry.update({k: float(v) for k, v in stats.items()})
    return entry


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
class _Stage:
    """A supernet with its two optimizers and its schedule."""

    def __init__(self, opts: SearchOptions, data: DataBundle, stage: int, prims_normal, prims_reduce,
                 device: str) -> None:
        torch.manual_seed(opts.seed + 1000 * stage)
        kind = data.task.kind
        p_darts = opts.algorithm == "p-darts"
        self.model = SearchNetwork(
            opts.init_channels, data.task.num_classes, opts.stages[stage], task=kind,
            in_channels=data.input_shape[0], primitives_normal=prims_normal, primitives_reduce=prims_reduce,
            partial_k=opts.pc_k if opts.algorithm == "pc-darts" else 1, edge_norm=opts.algorithm == "pc-darts",
            skip_dropout=opts.pdarts_skip_dropout[stage] if p_darts else 0.0,
        ).to(device)
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


def _result(out_dir: Path, genotype: Genotype, seconds: float, epochs_run: int, resumed_from: int) -> SearchResult:
    return SearchResult(genotype=genotype, out_dir=out_dir, genotype_path=out_dir / GENOTYPE,
                        alpha_history_path=out_dir / HISTORY, plot_path=out_dir / PLOT, seconds=seconds,
                        epochs_run=epochs_run, resumed_from=resumed_from)


def _final_genotype(opts: SearchOptions, model: SearchNetwork) -> Genotype:
    if opts.algorithm != "p-darts":
        return model.genotype()
    w = model.arch_weights()
    normal = pdarts_limit_skips(w["normal"], model.primitives_normal, opts.pdarts_max_skips)
    reduce = derive_cell(w["reduce"], model.primitives_reduce)
    return Genotype(normal=normal, normal_concat=CONCAT, reduce=reduce, reduce_concat=CONCAT)


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
        if doc.get("options") == options_dict(opts):
            log.info("search: %s already holds a finished search; returning it", out_dir)
            return _result(out_dir, Genotype.load(out_dir / GENOTYPE), doc["seconds"], 0, doc["epochs_done"])

    _check_data(opts, data)
    loss_fn = task_loss_fn(data.task.kind)
    w_split, a_split = _split(data.train, opts.train_portion)

    stage_i, epoch_in_stage, done, history, seconds = 0, 0, 0, [], 0.0
    ckpt = None
    if ckpt_path.is_file():
        try:  # tensors and plain data only: a checkpoint never unpickles code
            ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"search checkpoint {ckpt_path} is not a plain checkpoint ({first[:160]}); it was not "
                              "loaded: delete it to restart the search") from None
        if ckpt["options"] != _structural(opts):
            diff = sorted(k for k in ckpt["options"] if ckpt["options"][k] != _structural(opts).get(k))
            raise ConfigError(f"{out_dir} holds a search with different options ({', '.join(diff)}); only "
                              f"{', '.join(sorted(_RESUMABLE))} may change on resume: use a fresh out_dir or the "
                              f"same options")
        stage_i, epoch_in_stage, done = ckpt["stage"], ckpt["epoch_in_stage"], ckpt["done"]
        history, seconds = ckpt["history"], ckpt["seconds"]
        st = _Stage(opts, data, stage_i, ckpt["stage_state"]["primitives_normal"],
                    ckpt["stage_state"]["primitives_reduce"], device)
        st.load_state_dict(ckpt["stage_state"])
        torch.set_rng_state(ckpt["rng"].cpu())
        log.info("search: resumed from %s after epoch %d", ckpt_path, done)
    else:
        st = _Stage(opts, data, 0, None, None, device)
    resumed_from = done
    start = time.perf_counter()

    dtype = next(st.model.parameters()).dtype
    epochs_run = 0
    while True:
        if epoch_in_stage >= opts.epochs:  # the stage is over: shrink (p-darts) or stop
            if stage_i + 1 >= n_stages:
                break
            w = st.model.arch_weights()
            keep = opts.pdarts_keep[stage_i]
            # between stages `none` competes like any op; the last stage's `keep` (1) is the derivation
            pn = pdarts_shrink(w["normal"], st.model.primitives_normal, keep)
            pr = pdarts_shrink(w["reduce"], st.model.primitives_reduce, keep)
            stage_i, epoch_in_stage = stage_i + 1, 0
            st = _Stage(opts, data, stage_i, pn, pr, device)
            log.info("search: p-darts stage %d: %d cells, %d ops per edge", stage_i + 1, opts.stages[stage_i], keep)
            continue
        if done >= total:
            break
        e = epoch_in_stage
        model = st.model
        lr = st.set_lr(opts)
        warm = e < opts.warmup
        if opts.algorithm == "p-darts":
            model.set_skip_dropout(pdarts_dropout(opts.pdarts_skip_dropout[stage_i], e, opts.epochs, opts.warmup))
        lam = linear_ramp(opts.lambda_reg, e, opts.epochs) if opts.algorithm == "lambda-darts" else 0.0
        mutation = linear_ramp(opts.em_max_prob, e, opts.epochs) if opts.algorithm == "em-darts" else 0.0

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
                model.mutation_prob = 0.0
                if opts.order == 2:
                    grads, vloss = arch_grads_second_order(model, loss_fn, x, y, xv, yv, lr, st.w_opt,
                                                           opts.w_momentum, opts.w_wd)
                else:
                    grads, vloss = arch_grads_first_order(model, loss_fn, xv, yv)
                st.a_opt.zero_grad(set_to_none=True)
                for a, g in zip(model.arch_parameters(), grads):
                    a.grad = g
                if opts.algorithm == "p-darts" and opts.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.arch_parameters(), opts.grad_clip)
                st.a_opt.step()
                sums["val_loss"] += vloss
                counts["val_loss"] += 1
            model.mutation_prob = mutation
            stats = weight_gradients(model, loss_fn, x, y, lam, opts.lambda_eps)
            model.mutation_prob = 0.0
            if opts.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.weight_parameters(), opts.grad_clip)
            st.w_opt.step()
            for k, v in stats.items():
                sums[k] += v
                counts[k] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss'] / counts['loss']:.4f}")
        bar.close()
        st.epoch += 1
        epoch_in_stage += 1
        done += 1
        epochs_run += 1
        epoch_stats = {k: sums[k] / counts[k] for k in sums if counts[k]}
        epoch_stats.update({"lr": lr, "lambda": lam, "mutation_prob": mutation})
        history.append(_history_entry(model, done, stage_i, epoch_stats))
        log.info("search %s epoch %d/%d loss %.4f genotype %s", opts.algorithm, done, total,
                 epoch_stats.get("loss", float("nan")), model.genotype().to_dict())
        seconds_now = seconds + time.perf_counter() - start
        _atomic_torch({"options": _structural(opts), "stage": stage_i, "epoch_in_stage": epoch_in_stage,
                       "done": done, "history": history, "seconds": seconds_now, "rng": torch.get_rng_state(),
                       "stage_state": st.state_dict()}, ckpt_path)
        _atomic_json(history, out_dir / HISTORY)
        plot_alpha_history(history, out_dir / PLOT)

    genotype = _final_genotype(opts, st.model).validate()
    genotype.save(out_dir / GENOTYPE)
    seconds_total = seconds + time.perf_counter() - start
    if not (out_dir / HISTORY).is_file():
        _atomic_json(history, out_dir / HISTORY)
        plot_alpha_history(history, out_dir / PLOT)
    _atomic_json({"genotype": genotype.to_dict(), "seconds": seconds_total, "epochs_done": done,
                  "options": options_dict(opts)}, result_path)
    return _result(out_dir, genotype, seconds_total, epochs_run, resumed_from)
