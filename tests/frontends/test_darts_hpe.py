"""HPE-DARTS's schedule pieces (seed 004, eq. 5-7, section 4.1.2)."""
import math

import pytest
import torch

from compressor.errors import ConfigError
from compressor.frontends.darts.hpe import importance_measure, least_important, removal_counts, soft_decay


def test_removal_counts_follow_eq_6():
    assert removal_counts([8, 5, 3, 1], 8) == [3, 2, 2]  # Table 3's best schedule
    assert removal_counts([8, 1], 8) == [7]
    assert sum(removal_counts([8, 7, 6, 5, 4, 3, 2, 1], 8)) == 7


@pytest.mark.parametrize("counts, fragment", [
    ([8, 5, 3, 2], "eq. 6 needs Σ Pop = |O| − 1 = 7"),
    ([7, 5, 3, 1], "must start at the 8 candidate operations"),
    ([8, 5, 5, 1], "strictly decreasing"),
    ([8], "expected a list of integers"),
    ([8, 4.0, 1], "expected a list of integers"),
])
def test_bad_schedules_are_one_line_errors(counts, fragment):
    with pytest.raises(ConfigError) as info:
        removal_counts(counts, 8)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_soft_decay_is_eq_7_on_unimportant_ops_only():
    alpha = torch.tensor([[0.5, -0.2, 1.0], [2.0, 0.3, -1.0]])
    mask = torch.tensor([[True, True, False], [False, False, True]])
    assert torch.equal(soft_decay(alpha, mask, 0, 5), alpha)  # i = 0: factor 1
    out = soft_decay(alpha, mask, 2, 5)  # factor 1 - 2/5 = 0.6
    assert torch.allclose(out, torch.tensor([[0.3, -0.12, 1.0], [2.0, 0.3, -0.6]]))
    # across the E_prune epochs the literal form multiplies by Π_i (1 - i/E)
    a = alpha.clone()
    for i in range(5):
        a = soft_decay(a, mask, i, 5)
    factor = math.prod(1 - i / 5 for i in range(5))
    assert torch.allclose(a[mask], alpha[mask] * factor) and torch.equal(a[~mask], alpha[~mask])


def test_weight_mode_always_lowers_the_softmax_weight():
    alpha = torch.tensor([[-0.5, 0.0, 0.5]])
    mask = torch.tensor([[True, False, False]])
    literal = soft_decay(alpha, mask, 3, 5)  # -0.5 * 0.4 = -0.2: the negative α moves up (the caveat)
    weight = soft_decay(alpha, mask, 3, 5, mode="weight")
    p0 = torch.softmax(alpha, 1)[0, 0]
    assert torch.softmax(literal, 1)[0, 0] > p0
    assert torch.softmax(weight, 1)[0, 0] < p0
    assert torch.allclose(torch.exp(weight[0, 0]), torch.exp(alpha[0, 0]) * 0.4)
    with pytest.raises(ValueError, match="outside 0 ≤ i < E_prune"):
        soft_decay(alpha, mask, 5, 5)


def test_least_important_per_edge_among_active_ops():
    imp = torch.tensor([[0.3, 0.1, 0.5, 0.1], [0.9, -1.0, 0.0, 0.2]])
    active = torch.tensor([[True, True, True, True], [True, False, True, True]])
    mask = least_important(imp, active, 2)
    # row 0: 0.1 at index 1 and 3 tie: the later one first, then the other; row 1: the inactive -1.0 is skipped
    assert mask.tolist() == [[False, True, False, True], [False, False, True, True]]
    assert least_important(imp, active, 1).tolist() == [[False, False, False, True], [False, False, True, False]]
    with pytest.raises(ValueError, match="one must stay"):
        least_important(imp, active, 3)


def test_importance_measure_hybrid_halves():
    assert [importance_measure(s, 3) for s in range(3)] == ["accuracy", "accuracy", "netperf"]
    assert [importance_measure(s, 4) for s in range(4)] == ["accuracy", "accuracy", "netperf", "netperf"]
    assert importance_measure(0, 3, "netperf") == "netperf"
