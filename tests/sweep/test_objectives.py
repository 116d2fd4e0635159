"""Hand-computed checks of the sweep objective math (M-factor, Pareto, hypervolume)."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from compressor.sweep.objectives import (
    crowding_distance,
    dominates,
    hypervolume,
    hypervolume_history,
    m_factor,
    m_factors,
    non_dominated_sort,
    normalize_for_hv,
    pareto_front,
    weighted_sum,
)

MIN2 = ["minimize", "minimize"]


# --------------------------------------------------------------------------- M-factor


def test_m_factor_balanced_matches_hand_value():
    # A = 0.8, P = 2·P_min → S′ = 0.5, M_1 = 2·0.8·0.5 / 1.3
    assert m_factor(0.8, 200_000, 100_000) == pytest.approx(0.8 / 1.3)
    assert m_factor(0.8, 200_000, 100_000) == pytest.approx(0.6153846153846154)


def test_m_factor_alpha_weights_size():
    assert m_factor(0.8, 200, 100, alpha=0.0) == pytest.approx(0.8)  # α → 0: accuracy
    assert m_factor(0.8, 200, 100, alpha=1e9) == pytest.approx(0.5, abs=1e-6)  # α → ∞: S′
    assert m_factor(0.8, 200, 100, alpha=3.0) == pytest.approx(4 * 0.8 * 0.5 / (3 * 0.8 + 0.5))
    # small α prefers the accurate model, large α the small one (0.794 vs 0.643; 0.54 vs 0.9)
    big_accurate, small = (0.9, 200, 100), (0.6, 100, 100)
    assert m_factor(*big_accurate, alpha=0.2) > m_factor(*small, alpha=0.2)
    assert m_factor(*big_accurate, alpha=5.0) < m_factor(*small, alpha=5.0)


def test_m_factor_edges():
    assert m_factor(0.0, 200, 100) == 0.0
    assert m_factor(1.0, 100, 100) == 1.0
    assert m_factor(0.0, math.inf, 100, alpha=0.0) == 0.0  # the 0/0 case is defined as 0


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((0.8, 200, 100), {"alpha": -1.0}, "alpha must be a finite number >= 0"),
        ((0.8, 0, 100), {}, "params must be > 0"),
        ((0.8, 200, 0), {}, "p_min must be > 0"),
        ((0.8, 100, 200), {}, "p_min must be <= params"),
        ((1.5, 200, 100), {}, r"accuracy must be in \[0, 1\]"),
        ((math.nan, 200, 100), {}, r"accuracy must be in \[0, 1\]"),
    ],
)
def test_m_factor_rejects_invalid_inputs(args, kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        m_factor(*args, **kwargs)
    assert "\n" not in str(info.value)


def test_m_factors_uses_smallest_model_seen():
    assert m_factors([0.8, 0.6], [200, 100]) == pytest.approx([0.8 / 1.3, 2 * 0.6 / 1.6])
    # a new, smaller model lowers everyone else's S′
    assert m_factors([0.8, 0.6, 0.1], [200, 100, 50])[0] == pytest.approx(m_factor(0.8, 200, 50))
    assert m_factors([], []) == []
    with pytest.raises(ValueError, match="same length"):
        m_factors([0.8], [1, 2])


# --------------------------------------------------------------------------- weighted sum


def test_weighted_sum_adds_maximized_and_subtracts_minimized():
    values = {"acc": 0.9, "flops": 2.0, "mem": 3.0, "latency": 99.0}
    weights = {"acc": 1.0, "flops": 0.5, "mem": 0.1}
    directions = {"acc": "maximize", "flops": "minimize", "mem": "minimize"}
    assert weighted_sum(values, weights, directions) == pytest.approx(0.9 - 1.0 - 0.3)


@pytest.mark.parametrize(
    ("values", "weights", "directions", "match"),
    [
        ({"acc": 0.9}, {"acc": 1.0, "mem": 1.0}, {"acc": "maximize", "mem": "minimize"}, "no value"),
        ({"acc": 0.9}, {"acc": -1.0}, {"acc": "maximize"}, "must be >= 0"),
        ({"acc": 0.9}, {"acc": 1.0}, {"acc": "up"}, "direction of 'acc'"),
    ],
)
def test_weighted_sum_errors(values, weights, directions, match):
    with pytest.raises(ValueError, match=match):
        weighted_sum(values, weights, directions)


# --------------------------------------------------------------------------- dominance


def test_dominates():
    assert dominates([1, 2], [2, 2], MIN2)
    assert not dominates([2, 2], [1, 2], MIN2)
    assert not dominates([1, 2], [1, 2], MIN2)  # equal points
    assert not dominates([1, 3], [2, 2], MIN2)  # incomparable
    assert dominates([0.9, 10], [0.8, 10], ["maximize", "minimize"])
    assert not dominates([math.nan, 0], [5, 5], MIN2)
    with pytest.raises(ValueError, match="directions must be"):
        dominates([1, 2], [2, 2], ["minimize", "max"])


def test_pareto_front_2d_with_duplicates_nan_and_none():
    points = [(1, 5), (2, 4), (2, 4), (3, 3), (4, 4), (math.nan, 0), (3, 5), (5, 1), None]
    assert pareto_front(points, MIN2) == [0, 1, 2, 3, 7]


def test_pareto_front_3d_mixed_directions():
    # accuracy (max), params (min), latency (min)
    points = [(0.9, 10, 5), (0.8, 5, 5), (0.8, 10, 5), (0.95, 20, 1), (0.7, 6, 6)]
    assert pareto_front(points, ["maximize", "minimize", "minimize"]) == [0, 1, 3]


def test_non_dominated_sort_fronts():
    points = [(1, 4), (2, 2), (4, 1), (3, 3), (2, 5), (5, 5), (math.nan, 1)]
    assert non_dominated_sort(points, MIN2) == [[0, 1, 2], [3, 4], [5]]


def test_non_dominated_sort_is_consistent_and_fast():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 6, size=(60, 3)).tolist()  # many ties and duplicates
    directions = ["minimize", "maximize", "minimize"]
    fronts = non_dominated_sort(small, directions)
    assert sorted(i for f in fronts for i in f) == list(range(60))
    assert fronts[0] == pareto_front(small, directions)
    for k, front in enumerate(fronts):
        for i in front:
            later = [j for f in fronts[k:] for j in f]
            assert not any(dominates(small[j], small[i], directions) for j in later)
            if k:
                assert any(dominates(small[j], small[i], directions) for j in fronts[k - 1])
    big = rng.random((1000, 3)).tolist()
    start = time.perf_counter()
    fronts = non_dominated_sort(big, directions)
    assert time.perf_counter() - start < 2.0
    assert sum(map(len, fronts)) == 1000


def test_crowding_distance_hand_example():
    points = [(1, 5), (2, 3), (4, 2), (5, 1)]
    # objective 0 (span 4): (4-1)/4, (5-2)/4; objective 1 (span 4): (5-2)/4, (3-1)/4
    assert crowding_distance(points, [0, 1, 2, 3], MIN2) == [math.inf, 1.5, 1.25, math.inf]
    assert crowding_distance(points, [3, 1, 0, 2], MIN2) == [math.inf, 1.5, math.inf, 1.25]
    assert crowding_distance(points, [1, 2], MIN2) == [math.inf, math.inf]
    assert crowding_distance([(1,), (2,), (4,)], [0, 1, 2], ["minimize"]) == [math.inf, 1.0, math.inf]
    # 3-D: index 1 is extreme only in the third objective; index 2 adds 3/4 + 2/4 + 2/3
    points3 = [(1, 5, 3), (2, 3, 1), (4, 2, 2), (5, 1, 4)]
    distances = crowding_distance(points3, [0, 1, 2, 3], ["minimize"] * 3)
    assert distances == [math.inf, math.inf, pytest.approx(0.75 + 0.5 + 2 / 3), math.inf]
    assert crowding_distance(points, [], MIN2) == []


# --------------------------------------------------------------------------- hypervolume


def test_hypervolume_2d_staircase():
    assert hypervolume([(1, 3), (2, 2), (3, 1)], (4, 4), MIN2) == pytest.approx(6.0)
    # a dominated point, a point beyond the reference, one on its boundary, a failed trial
    noisy = [(1, 3), (2, 2), (3, 1), (3, 3), (5, 0), (0, 4), None, (math.nan, 0)]
    assert hypervolume(noisy, (4, 4), MIN2) == pytest.approx(6.0)
    assert hypervolume([], (4, 4), MIN2) == 0.0


def test_hypervolume_maximize_directions():
    assert hypervolume([(3, 1), (2, 2), (1, 3)], (0, 0), ["maximize", "maximize"]) == pytest.approx(6.0)
    # accuracy up, params down: boxes [0.5,0.9]x[100,300] ∪ [0.5,0.7]x[50,300]
    hv = hypervolume([(0.9, 100), (0.7, 50)], (0.5, 300), ["maximize", "minimize"])
    assert hv == pytest.approx(0.4 * 200 + 0.2 * 50)


def test_hypervolume_3d_and_4d_by_hand():
    min3 = ["minimize"] * 3
    assert hypervolume([(1, 2, 3)], (4, 4, 4), min3) == pytest.approx(3 * 2 * 1)
    # 4·4·2 + 2·2·4 − their overlap [2,4]^3
    assert hypervolume([(0, 0, 2), (2, 2, 0)], (4, 4, 4), min3) == pytest.approx(32 + 16 - 8)
    min4 = ["minimize"] * 4
    assert hypervolume([(0, 0, 0, 0)], (1, 2, 3, 4), min4) == pytest.approx(24)
    assert hypervolume([(0, 0, 0, 1), (1, 1, 1, 0)], (2, 2, 2, 2), min4) == pytest.approx(8 + 2 - 1)


@pytest.mark.parametrize("dim", [3, 4])
def test_hypervolume_matches_optuna(dim):
    hv_module = pytest.importorskip("optuna._hypervolume")
    compute = getattr(hv_module, "compute_hypervolume", None)
    if compute is None:
        pytest.skip("optuna._hypervolume.compute_hypervolume not found in this Optuna version")
    rng = np.random.default_rng(dim)
    points = rng.random((30, dim))
    reference = np.full(dim, 1.1)
    expected = compute(points, reference)
    assert hypervolume(points.tolist(), reference.tolist(), ["minimize"] * dim) == pytest.approx(expected)


def test_hypervolume_history_hand_example():
    points = [(3, 1), None, (1, 3), (2, 2), (5, 5), (math.nan, 0), (2, 2)]
    assert hypervolume_history(points, (4, 4), MIN2) == pytest.approx([3, 3, 5, 6, 6, 6, 6])


def test_hypervolume_history_is_non_decreasing_and_ends_at_hypervolume():
    rng = np.random.default_rng(1)
    points: list = rng.random((80, 3)).tolist()
    points[5] = None
    points[9] = [math.nan, 0.1, 0.1]
    directions = ["maximize", "minimize", "minimize"]
    reference = (0.0, 1.0, 1.0)
    history = hypervolume_history(points, reference, directions)
    assert len(history) == 80
    assert all(b >= a for a, b in zip(history, history[1:]))
    assert history[5] == history[4] and history[9] == history[8]
    assert history[-1] == pytest.approx(hypervolume(points, reference, directions))
    assert history[10] == pytest.approx(hypervolume(points[:11], reference, directions))


def test_normalize_for_hv():
    points = [(0.9, 100, 7), (0.5, 300, 7), None, (0.7, 200, 7)]
    normalized, reference = normalize_for_hv(points, ["maximize", "minimize", "minimize"])
    assert normalized == [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], None, [pytest.approx(0.5), 0.5, 0.0]]
    assert reference == [1.1, 1.1, 1.1]
    bounded, _ = normalize_for_hv([(0.9, 100)], ["maximize", "minimize"], bounds=[(0.0, 1.0), (0, 400)])
    assert bounded == [[pytest.approx(0.1), 0.25]]
    flat, _ = normalize_for_hv([(0.9, 6)], ["maximize", "minimize"], bounds=[(0.0, 1.0), (5, 5)])
    assert flat == [[pytest.approx(0.1), 0.0]]  # lo == hi: constant, maps to 0
    with pytest.raises(ValueError, match="bounds must give"):
        normalize_for_hv([(0.9, 100)], ["maximize", "minimize"], bounds=[(0.0, 1.0)])


def test_normalized_hypervolume_is_invariant_to_units():
    rng = np.random.default_rng(2)
    points = rng.random((20, 2))
    directions = ["maximize", "minimize"]
    scaled = points * [100.0, 1e6] + [5.0, 3.0]
    hv = [
        hypervolume(*normalize_for_hv(p.tolist(), directions), ["minimize", "minimize"])
        for p in (points, scaled)
    ]
    assert hv[0] > 0 and hv[0] == pytest.approx(hv[1])
