"""D-DARTS's losses and its depth expansion (thesis, seed 001, chapter 4: 4.1.1-4.1.3, Algorithms 1-2).

D-DARTS gives every cell of the supernet its own architecture weights α_i and its own optimizer, and
trains α_i on a cell-specific total loss (eq. 4.5):

    L_T^i = L_CE + w_01 · L_01(α_i) + w_AB · L_AB^i

- L_01 is FairDARTS's zero-one loss (eq. 3.1): −mean((σ(α) − 0.5)²), which pushes each sigmoid
  weight towards 0 or 1. **Choice:** the mean runs over every entry of the cell's α (FairDARTS's
  code does this); the thesis writes "N, the number of nodes in a cell".
- L_AB^i is the ablation loss (eq. 4.2-4.3): cell i's marginal contribution
  M_i = L_CE(C) − L_CE(C \\ {C_i}), the supernet loss with all cells minus the loss with cell i
  deactivated, normalized as (M_i − mean(M)) / mean(M), and 0 when mean(M) = 0.
  **Choices** (the thesis does not say): a deactivated cell outputs zeros of its output's shape
  (all its edges off; its input and output channels differ, so it cannot pass its input through);
  L_CE(C \\ {C_i}) stays in the autograd graph, so ∂L_AB^i/∂α_i flows through both M_i and mean(M)
  (Algorithm 1 optimizes L_T^i over cell i's weights without detaching anything).

Algorithm 2 expands a searched n-cell network to more cells, keeping the reductions at 1/3 and 2/3
and repeating each segment's searched normal cells (`expand_cell_indices`); a per-cell genotype
(`genotypes.CellsGenotype`) lowers to a deeper network through it.

`algorithm: d-darts` (`DDarts`, `CellwiseSearchNetwork`): every cell has its own α, weighted by
σ(α) as in FairDARTS; each α step runs the supernet on the α batch once with all cells and once
with each cell deactivated (n + 1 forward and backward passes: the thesis reports the same doubling
of memory and more), and steps every cell's α on the gradient of its own L_T^i
(`total_loss_alpha_grads`). Defaults w_01 = 8 and w_AB = 0.5, the values of the thesis's
experimental settings (4.2.1; its hyperparameter study in 4.2.2 settles on w_01 = 7 instead). The
weights train as in DARTS.

The genotype has one gene per cell, parsed on σ(α_i) (`parse_cell`) by the block's `parsing`:
- `darts` (default): each node keeps its 2 strongest edges, each its strongest non-`none` op (the
  thesis's *darts* parsing; the networks of every other algorithm);
- `threshold`: each node keeps every non-`none` op on its incoming edges with σ(α) ≥ `threshold`
  (default 0.85, the thesis's value in 4.2.1): a variable number of ops per node, several ops per
  edge allowed;
- `edge` and `sparse`: the two FairDARTS threshold parsings the thesis names in 4.2.1 ("edge: 2
  operations maximum per edge", "sparse: 1 operation maximum per edge"), as FairDARTS's code
  (xiaomi-automl/FairDARTS, utils.py `parse`) defines them: *edge* keeps, on every incoming edge, its
  2 strongest non-`none` ops each if σ ≥ `threshold`; *sparse* takes the node's 2 DARTS edges and
  keeps each edge's strongest non-`none` op if σ ≥ `threshold`.
**Choice** (the thesis and FairDARTS leave a node with no op above the threshold without inputs,
which a cell cannot compute): such a node keeps its single strongest non-`none` (op, edge), so every
node has at least one input. Within a node the kept pairs are ordered strongest first (ties: lower
input, then primitive order). A threshold parsing gives variable-input genes (`CellsGenotype` with
node sizes); one where every node kept exactly 2 pairs is the DARTS form.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn as nn

from compressor.errors import ConfigError
# expand_cell_indices (Algorithm 2) lives with the genotypes that use it; re-exported here with the rest of D-DARTS
from compressor.frontends.darts.genotypes import CellsGenotype, expand_cell_indices  # noqa: F401
from compressor.frontends.darts.search_base import SearchAlgorithm, register_search
from compressor.frontends.darts.search_space import (CONCAT, NUM_EDGES, STEPS, EdgePrimitives, SearchNetwork,
                                                     derive_cell)
from compressor.options import option

if TYPE_CHECKING:
    from compressor.data.base import DataBundle
    from compressor.frontends.darts.search_base import SearchOptions, Stage


def zero_one_loss(alpha: torch.Tensor) -> torch.Tensor:
    """FairDARTS eq. 3.1: −mean((σ(α) − 0.5)²) over every entry of α."""
    return -((torch.sigmoid(alpha) - 0.5) ** 2).mean()


def marginal_contributions(loss_all: torch.Tensor, losses_without: Sequence[torch.Tensor]) -> torch.Tensor:
    """Eq. 4.2: M_i = L_CE(C) − L_CE(C \\ {C_i}) for every cell i (a 1-D tensor)."""
    if not losses_without:
        raise ValueError("marginal contributions need the loss without each cell; got none")
    return loss_all - torch.stack(list(losses_without))


def ablation_losses(contributions: torch.Tensor) -> torch.Tensor:
    """Eq. 4.3: L_AB^i = (M_i − mean(M)) / mean(M), or 0 for every cell when mean(M) = 0."""
    mean = contributions.mean()
    if float(mean.detach()) == 0.0:
        return torch.zeros_like(contributions)
    return (contributions - mean) / mean


def total_losses(loss_all: torch.Tensor, losses_without: Sequence[torch.Tensor], alphas: Sequence[torch.Tensor],
                 w_01: float, w_ab: float) -> list[torch.Tensor]:
    """Eq. 4.5 for every cell: L_CE + w_01·L_01(α_i) + w_AB·L_AB^i (cell i's α: `alphas[i]`, one
    tensor or a concatenation of its normal/edge weights)."""
    if len(alphas) != len(losses_without):
        raise ValueError(f"{len(alphas)} cells' α but {len(losses_without)} losses without a cell")
    ab = ablation_losses(marginal_contributions(loss_all, losses_without))
    return [loss_all + w_01 * zero_one_loss(a) + w_ab * ab[i] for i, a in enumerate(alphas)]


def total_loss_alpha_grads(grad_all: Sequence[torch.Tensor], grad_without: Sequence[Sequence[torch.Tensor]],
                           contributions: torch.Tensor, alphas: Sequence[torch.Tensor], w_01: float,
                           w_ab: float) -> list[torch.Tensor]:
    r"""∂L_T^i/∂α_i for every cell i, from n + 1 backward passes instead of n through n + 1 graphs.

    `grad_all[i]` = ∂L_CE(C)/∂α_i; `grad_without[j][i]` = ∂L_CE(C \ {C_j})/∂α_i (zero for i = j: a
    deactivated cell does not read its α); `contributions` = M (eq. 4.2, values). With
    m̄ = mean(M), ∂M_j/∂α_i = grad_all[i] − grad_without[j][i] and L_AB^i = M_i/m̄ − 1:

        ∂L_AB^i/∂α_i = (∂M_i/∂α_i · m̄ − M_i · ∂m̄/∂α_i) / m̄²,   ∂m̄/∂α_i = mean_j ∂M_j/∂α_i

    (0 when m̄ = 0, where eq. 4.3 defines L_AB as 0). Tested against autograd of L_T^i."""
    n = len(alphas)
    m = contributions.detach()
    mean = float(m.mean())
    out = []
    for i in range(n):
        a = alphas[i].detach().requires_grad_(True)
        g01 = torch.autograd.grad(zero_one_loss(a), a)[0]
        g = grad_all[i] + w_01 * g01
        if mean != 0.0:
            dm = [grad_all[i] - grad_without[j][i] for j in range(n)]
            dmean = torch.stack(dm).mean(0)
            g = g + w_ab * (dm[i] * mean - m[i] * dmean) / mean ** 2
        out.append(g)
    return out


# ---- parsing ----------------------------------------------------------------------------------------
Parsing = Literal["darts", "threshold", "edge", "sparse"]
PARSINGS = ("darts", "threshold", "edge", "sparse")


def parse_cell(weights: np.ndarray, primitives: EdgePrimitives, parsing: str = "darts",
               threshold: float = 0.85) -> tuple[list[tuple[str, int]], tuple[int, ...] | None]:
    """One cell's gene from its σ(α) (`weights`, one row per edge): (pairs, node sizes), node sizes
    None for `darts` (2 per node, `derive_cell`). The threshold parsings (module docstring) keep
    σ ≥ `threshold`; a node where none passes keeps its strongest non-`none` (op, edge)."""
    if parsing not in PARSINGS:
        raise ValueError(f"unknown parsing {parsing!r}; valid: {', '.join(PARSINGS)}")
    if parsing == "darts":
        return derive_cell(weights, primitives), None
    W = np.asarray(weights, dtype=np.float64)
    pairs: list[tuple[str, int]] = []
    sizes: list[int] = []
    start = 0
    for i in range(STEPS):
        n = 2 + i
        # (σ, input, op index) of every non-`none` op on the node's edges, strongest first (ties: input, op)
        cands = sorted(((float(W[start + j][k]), j, k) for j in range(n) for k, p in enumerate(primitives[start + j])
                        if p != "none"), key=lambda c: (-c[0], c[1], c[2]))
        if not cands:
            raise ValueError(f"node {i}: its edges hold only 'none'; cannot derive an op")
        if parsing == "threshold":
            kept = [c for c in cands if c[0] >= threshold]
        elif parsing == "edge":  # every edge: its 2 strongest ops, each if above the threshold
            kept = [c for j in range(n) for c in [c for c in cands if c[1] == j][:2] if c[0] >= threshold]
        else:  # sparse: the 2 DARTS edges (by their strongest op), each's strongest op if above the threshold
            best = {}
            for c in cands:
                best.setdefault(c[1], c)
            edges = sorted(best, key=lambda j: (-best[j][0], j))[:2]
            kept = [best[j] for j in edges if best[j][0] >= threshold]
        kept = sorted(kept, key=lambda c: (-c[0], c[1], c[2])) or cands[:1]  # no op passes: the strongest
        pairs += [(primitives[start + j][k], j) for _, j, k in kept]
        sizes.append(len(kept))
        start += n
    return pairs, tuple(sizes)


# ---- the d-darts search algorithm -----------------------------------------------------------------
class CellwiseSearchNetwork(SearchNetwork):
    """The D-DARTS supernet: the DARTS supernet with one α per cell (`alphas_cells`, shape
    (layers, 14, n_ops)) weighted by σ(α) (FairDARTS: independent sigmoids, not a softmax), instead of
    one α per cell type. One Adam over the stacked tensor is exactly one Adam per cell (Adam is
    elementwise and every cell has the same hyperparameters), the thesis's "own optimizer" per cell."""

    def __init__(self, *args: object, parsing: str = "darts", threshold: float = 0.85, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if self.edge_norm or self.partial_k != 1:
            raise ValueError("d-darts searches every op on all channels without edge normalization")
        if parsing not in PARSINGS:
            raise ValueError(f"unknown parsing {parsing!r}; valid: {', '.join(PARSINGS)}")
        self.parsing, self.threshold = parsing, float(threshold)
        n_ops = self.alphas_normal.shape[1]
        del self.alphas_normal, self.alphas_reduce
        self.alphas_cells = nn.Parameter(1e-3 * torch.randn(self.layers, NUM_EDGES, n_ops))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas_cells]

    def arch_names(self) -> set[str]:
        return {"alphas_cells"}

    def reduction_cells(self) -> tuple[int, ...]:
        return tuple(i for i, c in enumerate(self.cells) if c.reduction)

    def cell_weights(self, off: int | None = None) -> list[torch.Tensor]:
        """σ(α_i) per cell; cell `off` gets zeros: deactivated, it outputs zeros (module docstring)."""
        w = torch.sigmoid(self.alphas_cells)
        return [torch.zeros_like(w[i]) if i == off else w[i] for i in range(self.layers)]

    def op_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean σ(α) over the normal cells and over the reduction cells (the α history and its
        plot show these; the genotype has every cell's own)."""
        w = torch.sigmoid(self.alphas_cells)
        red = set(self.reduction_cells())
        normal = [w[i] for i in range(self.layers) if i not in red]
        return torch.stack(normal).mean(0), torch.stack([w[i] for i in sorted(red)]).mean(0)

    def forward(self, x: torch.Tensor, cell_weights: Sequence[torch.Tensor] | None = None,
                detach_arch: bool = False, genotype: object = None) -> torch.Tensor:
        if genotype is not None:
            raise ValueError("the d-darts supernet runs its own per-cell α, not a genotype path")
        if cell_weights is None:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not detach_arch):
                cell_weights = self.cell_weights()
        return super().forward(x, cell_weights=cell_weights, detach_arch=detach_arch)

    def genotype(self) -> CellsGenotype:
        """One gene per cell from σ(α_i), parsed by `self.parsing` (`parse_cell`): DARTS parsing (2
        strongest edges per node, each its strongest non-`none` op) or a threshold parsing at
        `self.threshold` (variable-input genes)."""
        with torch.no_grad():
            w = torch.sigmoid(self.alphas_cells).double().cpu().numpy()
        genes = [parse_cell(w[i], self.primitives_reduce if c.reduction else self.primitives_normal, self.parsing,
                            self.threshold) for i, c in enumerate(self.cells)]
        return CellsGenotype(tuple(tuple(p) for p, _ in genes), tuple(CONCAT for _ in genes), self.reduction_cells(),
                             tuple(nodes for _, nodes in genes))


@dataclass(frozen=True)
class DDartsOptions:
    """The `ddarts:` block of the search options."""

    w01: float = option(8.0, "w_01, the weight of FairDARTS's zero-one loss in L_T (eq. 4.5)", min=0)
    wab: float = option(0.5, "w_AB, the weight of the ablation loss in L_T (eq. 4.5)", min=0)
    parsing: Parsing = option("darts", "how each cell's genotype is parsed from σ(α): darts (2 strongest edges per "
                                       "node, 1 op each), threshold (every op with σ ≥ threshold: a variable number "
                                       "per node), edge / sparse (FairDARTS: ≤ 2 / 1 op per edge above the threshold)")
    threshold: float = option(0.85, "σ_t, the sigmoid threshold of the threshold parsings (thesis 4.2.1: 0.85); a "
                                    "node with no op above it keeps its strongest", min=0, max=1)


@register_search("d-darts")
class DDarts(SearchAlgorithm):
    """D-DARTS (thesis Algorithm 1): per-cell α, each stepped on its own total loss L_T^i (eq. 4.5);
    weights as DARTS. First order (the thesis's α step is at the current weights)."""

    Options = DDartsOptions
    block = "ddarts"
    default_arch_lr = 3e-4
    supernet_class = CellwiseSearchNetwork
    key_when_changed = ("parsing", "threshold")  # added later: the keys of searches that leave them stay

    def supernet(self, stage: int, data: DataBundle, primitives_normal: EdgePrimitives | None,
                 primitives_reduce: EdgePrimitives | None, **extra: object) -> SearchNetwork:
        return super().supernet(stage, data, primitives_normal, primitives_reduce, parsing=self.opts.ddarts.parsing,
                                threshold=self.opts.ddarts.threshold, **extra)

    @classmethod
    def check_options(cls, opts: SearchOptions) -> None:
        if opts.order != 1:
            raise ConfigError("d-darts takes first-order α steps (Algorithm 1); set order: 1")

    def arch_step(self, st: Stage, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
                  lr: float) -> float:
        model: CellwiseSearchNetwork = st.model  # type: ignore[assignment]
        alpha = model.alphas_cells
        n = model.layers
        loss_all = self.loss_fn(model(x_val, cell_weights=model.cell_weights()), y_val)
        g_all = torch.autograd.grad(loss_all, alpha)[0]
        losses_without, g_without = [], []
        for j in range(n):  # L_CE with cell j deactivated, and its α gradients (none for cell j itself)
            loss_j = self.loss_fn(model(x_val, cell_weights=model.cell_weights(off=j)), y_val)
            g_without.append(list(torch.autograd.grad(loss_j, alpha)[0]))
            losses_without.append(loss_j.detach())
        contributions = marginal_contributions(loss_all.detach(), losses_without)
        grads = total_loss_alpha_grads(list(g_all), g_without, contributions, list(alpha.detach()),
                                       self.opts.ddarts.w01, self.opts.ddarts.wab)
        st.a_opt.zero_grad(set_to_none=True)
        alpha.grad = torch.stack(grads)
        st.a_opt.step()
        return float(loss_all.detach())
