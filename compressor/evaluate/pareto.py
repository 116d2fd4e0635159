"""Multi-objective math: Pareto dominance and fronts, non-dominated sorting, crowding distance,
hypervolume, and the weighted-sum scalarization. Sweeps (`compressor.sweep`) and the evolutionary
architecture search (`compressor.frontends.darts.evolution`) both rank their candidates with it.

Pure numpy, no Optuna.

Conventions. A *point* is one candidate's objective values, in the order of ``directions``
(each ``"maximize"`` or ``"minimize"``). A point that is ``None`` or holds a NaN is a failed
candidate: it is never on a front and adds no hypervolume. Internally every objective is turned
into a loss (maximize columns negated), so "better" always means "smaller".

References:
    [W] seed 002, eq. 2 (weighted-sum scalarization) and its non-dominated sorting.
    [NSGA-II] Deb et al., "A fast and elitist multiobjective genetic algorithm: NSGA-II",
        IEEE TEC 2002 (fast non-dominated sort, crowding distance).
    [HSO] While et al., "A faster algorithm for calculating hypervolume", IEEE TEC 2006
        (hypervolume by slicing objectives).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "DIRECTIONS",
    "crowding_distance",
    "dominates",
    "hypervolume",
    "hypervolume_history",
    "non_dominated_sort",
    "normalize_for_hv",
    "pareto_front",
    "weighted_sum",
]

DIRECTIONS = ("maximize", "minimize")

Point = Sequence[float]
MaybePoint = Sequence[float] | None

# Rows of the (rows x n x d) comparison block built at once by `_dominance_matrix`; bounds
# memory to a few MB while keeping the loop count small for thousands of points.
_BLOCK_ELEMENTS = 4_000_000


# --------------------------------------------------------------------------- scalarization


def weighted_sum(
    values: Mapping[str, float],
    weights: Mapping[str, float],
    directions: Mapping[str, str],
) -> float:
    """Weighted-sum scalarization ([W] eq. 2): ``Σ_i ±λ_i·f_i`` over the names in ``weights``.

    Maximized objectives are added and minimized ones subtracted, so the result is to be
    maximized, e.g. ``λ_1·f_acc − λ_2·f_flops − λ_3·f_mem``. Every weighted name needs a
    value and a direction; extra names in ``values`` are ignored. Weights must be >= 0.
    """
    total = 0.0
    for name, weight in weights.items():
        if not weight >= 0:
            raise ValueError(f"weight of {name!r} must be >= 0, got {weight!r}")
        if name not in values:
            raise ValueError(
                f"no value for weighted objective {name!r}; values has {sorted(values)}"
            )
        direction = directions.get(name)
        if direction not in DIRECTIONS:
            raise ValueError(
                f"direction of {name!r} must be one of {list(DIRECTIONS)}, got {direction!r}"
            )
        sign = 1.0 if direction == "maximize" else -1.0
        total += sign * weight * float(values[name])
    return total


# --------------------------------------------------------------------------- dominance


def _signs(directions: Sequence[str]) -> np.ndarray:
    """+1 for minimize, -1 for maximize: multiplying by it turns each objective into a loss."""
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad:
        raise ValueError(f"directions must be {' or '.join(map(repr, DIRECTIONS))}, got {bad!r}")
    return np.array([1.0 if d == "minimize" else -1.0 for d in directions])


def _as_losses(points: Sequence[MaybePoint], directions: Sequence[str]) -> np.ndarray:
    """Points as an (n, d) float array in minimize orientation; ``None`` rows become NaN."""
    signs = _signs(directions)
    d = len(signs)
    rows = np.full((len(points), d), np.nan)
    for i, point in enumerate(points):
        if point is None:
            continue
        if len(point) != d:
            raise ValueError(
                f"point {i} has {len(point)} values but there are {d} directions {list(directions)}"
            )
        rows[i] = np.asarray(point, dtype=float)
    return rows * signs


def dominates(a: Point, b: Point, directions: Sequence[str]) -> bool:
    """Whether ``a`` Pareto-dominates ``b``: no worse in every objective, better in one.

    A point with a NaN neither dominates nor is dominated.
    """
    la, lb = _as_losses([a, b], directions)
    return bool(np.all(la <= lb) and np.any(la < lb))


def _dominance_matrix(losses: np.ndarray) -> np.ndarray:
    """``D[i, j]`` is True when loss row ``i`` dominates row ``j`` (NaN rows: all False)."""
    n, d = losses.shape
    matrix = np.zeros((n, n), dtype=bool)
    block = max(1, _BLOCK_ELEMENTS // max(1, n * d))
    for start in range(0, n, block):
        rows = losses[start:start + block, None, :]
        no_worse = np.all(rows <= losses[None, :, :], axis=2)
        better = np.any(rows < losses[None, :, :], axis=2)
        matrix[start:start + block] = no_worse & better
    return matrix


def _finite_rows(losses: np.ndarray) -> np.ndarray:
    return np.flatnonzero(~np.isnan(losses).any(axis=1))


def pareto_front(points: Sequence[MaybePoint], directions: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points, in input order.

    Equal points do not dominate each other, so duplicates of a front point are all on the
    front. ``None`` and NaN points are never on it.
    """
    losses = _as_losses(points, directions)
    valid = _finite_rows(losses)
    dominated = _dominance_matrix(losses[valid]).any(axis=0)
    return [int(i) for i in valid[~dominated]]


def non_dominated_sort(points: Sequence[MaybePoint], directions: Sequence[str]) -> list[list[int]]:
    """Pareto fronts, best first, by NSGA-II's fast non-dominated sort ([NSGA-II] §III-A).

    Front 0 is :func:`pareto_front`; front k holds the points dominated only by points of
    fronts < k. Indices within a front are in input order. ``None`` and NaN points (failed
    trials) have no rank and are left out of every front. O(n²·d) time, vectorized.
    """
    losses = _as_losses(points, directions)
    valid = _finite_rows(losses)
    dominance = _dominance_matrix(losses[valid])
    remaining = dominance.sum(axis=0)  # how many points dominate each point
    fronts: list[list[int]] = []
    current = np.flatnonzero(remaining == 0)
    while current.size:
        fronts.append([int(valid[i]) for i in current])
        remaining[current] = -1  # placed
        remaining -= dominance[current].sum(axis=0)
        current = np.flatnonzero(remaining == 0)
    return fronts


def crowding_distance(
    points: Sequence[MaybePoint], front: Sequence[int], directions: Sequence[str]
) -> list[float]:
    """NSGA-II crowding distance of each member of ``front`` ([NSGA-II] §III-B).

    For each objective, the members are sorted by it; the two extremes get ``inf`` and every
    other member adds ``(f_next − f_prev) / (f_max − f_min)``. An objective that is constant
    over the front adds nothing (it does not separate the members). Fronts of one or two
    points are all ``inf``. Returned in the order of ``front``.
    """
    if not front:
        return []
    losses = _as_losses(points, directions)[list(front)]
    if np.isnan(losses).any():
        raise ValueError("crowding_distance needs a front without None/NaN points")
    m = len(front)
    distance = np.zeros(m)
    if m <= 2:
        return [math.inf] * m
    for column in losses.T:
        span = column.max() - column.min()
        if span == 0:
            continue
        order = np.argsort(column, kind="stable")
        distance[order[0]] = distance[order[-1]] = math.inf
        gaps = (column[order[2:]] - column[order[:-2]]) / span
        distance[order[1:-1]] += gaps
    return [float(x) for x in distance]


# --------------------------------------------------------------------------- hypervolume


def _hypervolume_of_losses(losses: np.ndarray, reference: np.ndarray) -> float:
    """Exact HV of loss points that all strictly dominate ``reference``, by slicing ([HSO]).

    Sort by the last objective; between consecutive values the dominated region is a slab
    whose cross-section is the (d−1)-dimensional HV of the points seen so far. The base cases
    are a min (1-D) and a staircase sweep (2-D). Dominated points are dropped before each
    recursion into 3 or more dimensions; the 2-D sweep tolerates them.
    """
    n, d = losses.shape
    if n == 0:
        return 0.0
    if d == 1:
        return float(reference[0] - losses[:, 0].min())
    if d == 2:
        order = np.lexsort((losses[:, 1], losses[:, 0]))
        x, y = losses[order, 0], losses[order, 1]
        best_y = np.minimum.accumulate(y)
        widths = np.diff(np.append(x, reference[0]))
        return float(np.sum(widths * (reference[1] - best_y)))
    losses = losses[np.argsort(losses[:, -1], kind="stable")]
    upper = np.append(losses[1:, -1], reference[-1])
    total = 0.0
    for i in range(n):
        depth = upper[i] - losses[i, -1]
        if depth <= 0:
            continue
        section = losses[: i + 1, :-1]
        if d - 1 >= 3:
            section = section[~_dominance_matrix(section).any(axis=0)]
        total += depth * _hypervolume_of_losses(section, reference[:-1])
    return total


def _reference_losses(reference: Point, directions: Sequence[str]) -> np.ndarray:
    signs = _signs(directions)
    ref = np.asarray(reference, dtype=float)
    if ref.shape != signs.shape or not np.all(np.isfinite(ref)):
        raise ValueError(
            f"reference must be {len(signs)} finite values (one per direction), "
            f"got {list(reference)!r}"
        )
    return ref * signs


def _strictly_inside(losses: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Rows that strictly dominate the reference (NaN rows compare False and drop out)."""
    return losses[np.all(losses < reference, axis=1)]


def hypervolume(points: Sequence[MaybePoint], reference: Point, directions: Sequence[str]) -> float:
    """Exact hypervolume dominated by ``points`` and bounded by ``reference``, any dimension.

    The volume of ``∪_p {x : p ≼ x ≼ r}`` (in minimize orientation: between each point and
    the reference). Points that do not strictly dominate the reference (and None/NaN points)
    contribute nothing. Exact, by slicing objectives ([HSO]); meant for fronts of a few
    hundred points in up to 4-5 objectives.
    """
    ref = _reference_losses(reference, directions)
    inside = _strictly_inside(_as_losses(points, directions), ref)
    if inside.shape[0] == 0:
        return 0.0
    return _hypervolume_of_losses(np.unique(inside, axis=0), ref)


def hypervolume_history(
    points: Sequence[MaybePoint], reference: Point, directions: Sequence[str]
) -> list[float]:
    """``[HV(points[:1]), HV(points[:2]), …, HV(points)]``: the anytime curve of a sweep.

    Non-decreasing by construction. A None/NaN point (a failed trial) or one outside the
    reference box keeps the previous value. Only the current front is kept, and the HV is
    recomputed only when a new point joins it.
    """
    ref = _reference_losses(reference, directions)
    losses = _as_losses(points, directions)
    front = np.empty((0, ref.size))
    value = 0.0
    history: list[float] = []
    for row in losses:
        inside = bool(np.all(row < ref))  # False for NaN rows
        if inside and not np.any(np.all(front <= row, axis=1)):
            keep = ~np.all(row <= front, axis=1)  # drop front points the new one covers
            front = np.vstack([front[keep], row])
            value = _hypervolume_of_losses(front, ref)
        history.append(value)
    return history


def normalize_for_hv(
    points: Sequence[MaybePoint],
    directions: Sequence[str],
    bounds: Sequence[tuple[float, float]] | None = None,
) -> tuple[list[list[float] | None], list[float]]:
    """Min–max normalize each objective to [0, 1], best = 0, and give the reference point.

    ``v ↦ (v − lo) / (hi − lo)`` for minimize and ``(hi − v) / (hi − lo)`` for maximize,
    so every normalized objective is to be *minimized*: call :func:`hypervolume` on the result
    with all directions ``"minimize"`` and the returned reference ``(1.1, …, 1.1)``, whose
    margin lets the worst point of each objective still add volume. ``(lo, hi)`` per
    objective are the min and max over the finite points, or the explicit ``bounds`` (in the
    objectives' own units): pass the same bounds for several studies (e.g. one per sampler,
    using the union of their points) so their hypervolumes are comparable. A constant
    objective (``hi == lo``) maps to 0. None points stay None; NaN values stay NaN.
    """
    signs = _signs(directions)
    d = len(signs)
    raw = _as_losses(points, directions) * signs  # validated, original orientation
    if bounds is None:
        finite = raw[_finite_rows(raw)]
        if finite.shape[0]:
            lo, hi = finite.min(axis=0), finite.max(axis=0)
        else:
            lo, hi = np.zeros(d), np.ones(d)
    else:
        if len(bounds) != d:
            raise ValueError(
                f"bounds must give (lo, hi) for each of the {d} objectives, got {len(bounds)}"
            )
        lo, hi = (np.asarray(b, dtype=float) for b in zip(*bounds))
        if np.any(hi < lo):
            raise ValueError(f"bounds must have lo <= hi, got {list(bounds)!r}")
    span = hi - lo
    safe_span = np.where(span > 0, span, 1.0)
    best = np.where(signs > 0, lo, hi)
    scaled = (raw - best) * signs / safe_span
    scaled[:, span == 0] = np.where(np.isnan(raw[:, span == 0]), np.nan, 0.0)
    normalized: list[list[float] | None] = [
        None if point is None else [float(v) for v in row] for point, row in zip(points, scaled)
    ]
    return normalized, [1.1] * d
