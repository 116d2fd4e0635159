"""HPE-DARTS's schedule (seed 004, section 3.2, Algorithm 1): the pieces the search algorithm composes.

- `removal_counts`: the hard-pruning schedule Pop = [Pop_1, ..., Pop_S] (eq. 5) from the number of
  operations left on each edge after each stage (Table 3's best: 8 → 5 → 3 → 1, i.e. Pop = [3, 2, 2]),
  checked against eq. 6, Σ Pop_i = |O| − 1, so exactly one operation is left per edge;
- `soft_decay`: eq. 7, α_{o,i} = α_{o,i−1} · (1 − i / E_prune) for the unimportant operations, 0 ≤ i < E_prune;
- `least_important`: per edge, the k active operations with the smallest importance (the performance drop
  when the operation is removed: larger = more important);
- `importance_measure`: which measure scores operations in stage s of S: validation accuracy in the first
  half of the stages, NetPerfProxy (`frontends/darts/proxy.py`) in the second half (section 4.1.2), or
  one of them throughout (section 4.2 uses NetPerfProxy throughout on the DARTS space).

Choice (eq. 7 and negative α): DARTS initializes α as 1e-3·N(0, 1), so about half the α are negative, and
multiplying a negative α by (1 − i/E) moves it towards 0, which raises its softmax weight instead of
lowering it. `mode="literal"` is eq. 7 as written (the default, faithful to the formula);
`mode="weight"` applies the factor to the operation's unnormalized weight exp(α), α ← α + log(1 − i/E),
which down-weights it whatever its sign (the stated intent: "gradually decayed ... decreasing influence").
At i = 0 both leave α unchanged.
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

import torch

from compressor.errors import ConfigError


def removal_counts(ops_per_edge: Sequence[int], n_ops: int) -> list[int]:
    """Pop (eq. 5) from the operations left per edge: [n_ops, ..., 1], strictly decreasing, so that
    Σ Pop_i = |O| − 1 (eq. 6). Anything else is a one-line ConfigError naming what is valid."""
    counts = list(ops_per_edge)
    if any(isinstance(c, bool) or not isinstance(c, int) for c in counts) or len(counts) < 2:
        raise ConfigError(f"hpe ops_per_edge: expected a list of integers from {n_ops} down to 1, e.g. "
                          f"[{n_ops}, 5, 3, 1], got {counts!r}")
    if counts[0] != n_ops:
        raise ConfigError(f"hpe ops_per_edge {counts}: must start at the {n_ops} candidate operations of the search "
                          f"space, e.g. [{n_ops}, 5, 3, 1]")
    if counts[-1] != 1:
        raise ConfigError(f"hpe ops_per_edge {counts}: removals sum to {n_ops - counts[-1]}, but eq. 6 needs "
                          f"Σ Pop = |O| − 1 = {n_ops - 1} (one operation left per edge); end the list at 1")
    pops = [a - b for a, b in zip(counts, counts[1:])]
    if any(p <= 0 for p in pops):
        raise ConfigError(f"hpe ops_per_edge {counts}: every stage must remove at least one operation (strictly "
                          f"decreasing), e.g. [{n_ops}, 5, 3, 1]")
    assert sum(pops) == n_ops - 1  # eq. 6
    return pops


def soft_decay(alpha: torch.Tensor, unimportant: torch.Tensor, i: int, e_prune: int,
               mode: Literal["literal", "weight"] = "literal") -> torch.Tensor:
    """Eq. 7 on the entries of `alpha` (edges × ops) where `unimportant` is True, at pruning epoch i
    (0 ≤ i < e_prune); the others are unchanged. Returns a new tensor."""
    if not 0 <= i < e_prune:
        raise ValueError(f"soft pruning epoch i={i} outside 0 ≤ i < E_prune={e_prune}")
    factor = 1.0 - i / e_prune
    if mode == "literal":
        decayed = alpha * factor
    elif mode == "weight":
        decayed = alpha + math.log(factor)
    else:
        raise ValueError(f"soft_decay mode {mode!r}; valid: literal, weight")
    return torch.where(unimportant, decayed, alpha)


def least_important(importance: torch.Tensor, active: torch.Tensor, k: int) -> torch.Tensor:
    """Per edge (row), a mask of the k active operations with the smallest importance (ties: the later
    operation goes first, so the primitive order of the search space breaks them deterministically)."""
    if importance.shape != active.shape:
        raise ValueError(f"importance {tuple(importance.shape)} and active {tuple(active.shape)} differ")
    left = active.sum(dim=1)
    if k < 0 or bool((left <= k).any()):
        raise ValueError(f"cannot remove {k} operations from an edge with {int(left.min())} active ones (one must stay)")
    n = importance.shape[1]
    # inactive entries sort last; a stable sort of the column-reversed keys puts, among equal importances,
    # the larger original index first
    key = torch.where(active, importance.double(), torch.full(importance.shape, math.inf, dtype=torch.double))
    ranks = n - 1 - torch.argsort(key.flip(1), dim=1, stable=True)[:, :k]
    mask = torch.zeros_like(active, dtype=torch.bool)
    mask.scatter_(1, ranks, True)
    return mask & active


def importance_measure(stage: int, n_stages: int,
                       schedule: Literal["hybrid", "accuracy", "netperf"] = "hybrid") -> str:
    """"accuracy" or "netperf" for hybrid stage `stage` (0-based) of `n_stages`: with "hybrid", the first half
    of the stages (stage < S/2) use the validation-accuracy drop and the rest NetPerfProxy (section 4.1.2)."""
    if not 0 <= stage < n_stages:
        raise ValueError(f"stage {stage} outside 0..{n_stages - 1}")
    if schedule == "hybrid":
        return "accuracy" if stage < n_stages / 2 else "netperf"
    if schedule in ("accuracy", "netperf"):
        return schedule
    raise ValueError(f"importance schedule {schedule!r}; valid: hybrid, accuracy, netperf")
