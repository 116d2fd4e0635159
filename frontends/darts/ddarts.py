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
and repeating each segment's searched normal cells (`expand_cell_indices`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from compressor.errors import ConfigError


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
    """∂L_T^i/∂α_i for every cell i, from n + 1 backward passes instead of n through n + 1 graphs.

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


def expand_cell_indices(searched: int, cells: int) -> list[int]:
    """Algorithm 2: for each of `cells` cells of the expanded network, the index of the searched cell
    it copies. The reductions stay at cells//3 and 2·cells//3 (the searched ones at searched//3 and
    2·searched//3); cell i of a segment copies searched normal cell (i mod k) + first, where k is the
    segment's number of searched normal cells: the thesis's formula, which indexes by the position
    i in the whole network, not in the segment. **Choice:** the thesis loops over i in [0, n]; we
    build exactly `cells` cells (0 ≤ i < cells), and refuse to shrink (cells < searched)."""
    m, m2 = searched // 3, (2 * searched) // 3
    if searched < 5 or m < 1 or m2 - 1 - m < 1 or searched - 1 - m2 < 1:
        raise ConfigError(f"Algorithm 2 needs a searched network with a normal cell before, between and after "
                          f"its two reductions (at {m} and {m2}); {searched} cells has not: search at least 5")
    if cells < searched:
        raise ConfigError(f"Algorithm 2 expands a searched network; {cells} cells is fewer than the {searched} "
                          f"searched: ask for at least {searched}")
    if cells == searched:
        return list(range(cells))
    out = []
    r1, r2 = cells // 3, (2 * cells) // 3
    for i in range(cells):
        if i < r1:
            out.append(i % m)
        elif i == r1:
            out.append(m)
        elif i < r2:
            out.append(i % (m2 - 1 - m) + m + 1)
        elif i == r2:
            out.append(m2)
        else:
            out.append(i % (searched - 1 - m2) + m2 + 1)
    return out
