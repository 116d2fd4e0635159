"""Objective math for sweeps: the M-factor here; weighted sums, Pareto fronts, non-dominated sorting,
crowding distance and hypervolume from `compressor.evaluate.pareto` (which the evolutionary architecture
search shares), re-exported.

Pure numpy, no Optuna: the samplers, the study driver and the report all call these.

References:
    [M] Thudumu et al., "M-Factor: a metric balancing accuracy and model size in NAS"
        (seed 003), eq. 6-8.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from compressor.evaluate import pareto
from compressor.evaluate.pareto import (DIRECTIONS, crowding_distance, dominates, hypervolume, hypervolume_history,
                                        non_dominated_sort, normalize_for_hv, pareto_front, weighted_sum)

__all__ = ["m_factor", "m_factors", *pareto.__all__]

# --------------------------------------------------------------------------- M-factor


def m_factor(accuracy: float, params: float, p_min: float, alpha: float = 1.0) -> float:
    """The weighted M-factor of one model ([M] eq. 8; eq. 6 is ``alpha=1``).

    ``M_α = (1+α)·A·S′ / (α·A + S′)`` with ``S′ = P_min / P`` ([M] eq. 7): a weighted
    harmonic mean of the accuracy ``A`` in [0, 1] and the inverse relative size ``S′`` in
    (0, 1], so it is high only when both are high. ``α → 0`` gives ``A``; ``α → ∞`` gives
    ``S′``; ``α > 1`` weighs size more and ``0 < α < 1`` weighs accuracy more ([M] 4.3).
    The 0/0 case (``A = 0`` and ``S′ = 0``, or ``α·A + S′ = 0``) is defined as ``M = 0``.

    Args:
        accuracy: A, in [0, 1].
        params: P, the model's parameter count, > 0.
        p_min: P_min, the smallest parameter count considered, in (0, P].
        alpha: α, a finite weight >= 0.
    """
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    if not params > 0:
        raise ValueError(f"params must be > 0, got {params!r}")
    if not p_min > 0:
        raise ValueError(f"p_min must be > 0, got {p_min!r}")
    if p_min > params:
        raise ValueError(
            f"p_min must be <= params (the smallest model), got p_min={p_min!r} > params={params!r}"
        )
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(
            f"accuracy must be in [0, 1] (a fraction, not a percentage), got {accuracy!r}"
        )
    size = p_min / params
    denominator = alpha * accuracy + size
    if denominator == 0.0:
        return 0.0
    return float((1.0 + alpha) * accuracy * size / denominator)


def m_factors(
    accuracies: Sequence[float], params: Sequence[float], alpha: float = 1.0
) -> list[float]:
    """The M-factor of each trial, with ``P_min`` the smallest ``params`` among these trials.

    [M] takes ``P_min`` as the smallest model *in the search space*. Here ``P_min`` is the
    smallest model *seen so far* (a sweep's ``m_factor.p_min: trials``): the caller passes the
    trials completed up to now, and every M is recomputed as trials arrive. Values are therefore
    comparable within one call, and the ranking of two trials only changes when a new smallest
    model appears. Once the smallest model of the space has been evaluated both definitions
    agree. A sweep's ``p_min: space`` builds that model up front instead
    (`compressor.sweep.smallest`) and calls `m_factor` with it.
    """
    if len(accuracies) != len(params):
        raise ValueError(
            "accuracies and params must have the same length, "
            f"got {len(accuracies)} and {len(params)}"
        )
    if not params:
        return []
    p_min = min(params)
    return [m_factor(a, p, p_min, alpha) for a, p in zip(accuracies, params)]
