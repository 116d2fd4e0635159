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


# ---- the algorithm end to end (tiny) ----------------------------------------------------------------
import json  # noqa: E402

from compressor.data import build_data  # noqa: E402
from compressor.frontends.darts.algorithms import SEARCHES, register_search  # noqa: E402
from compressor.frontends.darts.hpe import inherit  # noqa: E402
from compressor.frontends.darts.search import HISTORY, SearchOptions, run_search  # noqa: E402
from compressor.frontends.darts.search_space import SearchNetwork  # noqa: E402

TINY = dict(algorithm="hpe-darts", epochs=2, batch_size=8, init_channels=4, layers=3, max_steps=2,
            hpe={"batch": 8, "accuracy_batch": 8})


@pytest.fixture(scope="module")
def digits():
    return build_data("digits", {})


@pytest.mark.parametrize("importance", ["hybrid", "netperf"])
def test_hpe_darts_end_to_end_yields_a_valid_genotype(digits, tmp_path, importance):
    res = run_search(SearchOptions.of(**{**TINY, "hpe": {**TINY["hpe"], "importance": importance}}), digits, tmp_path, progress=False)
    geno = res.genotype.validate()
    assert all(op != "none" for op, _ in geno.normal + geno.reduce)
    history = json.loads((tmp_path / HISTORY).read_text())
    assert len(history) == 2 * 4  # warm-up + 3 hybrid stages, 2 epochs each
    assert [h["hpe_stage"] for h in history] == [0, 0, 1, 1, 2, 2, 3, 3]
    netperf = [h.get("hpe_netperf") for h in history[2:]]
    assert netperf == ([0, 0, 0, 0, 1, 1] if importance == "hybrid" else [1] * 6)


def test_hard_pruning_counts_per_stage(digits, tmp_path):
    """The supernets of the warm-up and the 3 hybrid stages hold 8, 8, 5, 3 ops per edge; the last hard pruning
    (3 -> 1, `none` first) happens in the derivation, whose ops come from the last supernet's."""
    seen = []

    @register_search("test-hpe-probe")
    class Probe(SEARCHES["hpe-darts"]):  # records each stage's supernet
        def build_supernet(self, stage, data, pn, pr):
            model = super().build_supernet(stage, data, pn, pr)
            seen.append(model)
            return model

    try:
        res = run_search(SearchOptions.of(**{**TINY, "epochs": 1, "algorithm": "test-hpe-probe"}), digits, tmp_path,
                         progress=False)
    finally:
        SEARCHES.pop("test-hpe-probe")
    assert [(len(m.primitives_normal[0]), len(m.primitives_reduce[0])) for m in seen] == [(8, 8), (8, 8), (5, 5), (3, 3)]
    last = seen[-1]
    for cell, prims in ((res.genotype.normal, last.primitives_normal), (res.genotype.reduce, last.primitives_reduce)):
        start = 0
        for node in range(4):
            for op, j in cell[2 * node:2 * node + 2]:
                assert op in prims[start + j] and op != "none"
            start += 2 + node


def test_bad_schedule_is_a_one_line_option_error():
    from compressor.options import parse_options

    with pytest.raises(ConfigError) as info:
        parse_options(SearchOptions, {"algorithm": "hpe-darts", "hpe": {"ops_per_edge": [8, 5, 3, 2]}}, "search")
    assert "eq. 6 needs Σ Pop = |O| − 1 = 7" in str(info.value) and "\n" not in str(info.value)


def test_inherit_copies_kept_ops_weights_and_alpha():
    torch.manual_seed(0)
    old = SearchNetwork(4, 10, 3, in_channels=1)
    keep = [["sep_conv_3x3", "skip_connect", "max_pool_3x3"]] * 14
    torch.manual_seed(1)
    new = SearchNetwork(4, 10, 3, in_channels=1, primitives_normal=keep, primitives_reduce=keep)
    inherit(old, new)
    j_old = old.primitives_normal[0].index("sep_conv_3x3")
    assert torch.equal(new.alphas_normal[:, 0], old.alphas_normal[:, j_old])
    assert torch.equal(new.alphas_reduce[:, 2], old.alphas_reduce[:, old.primitives_reduce[0].index("max_pool_3x3")])
    a = dict(new.cells[0]._ops[3]._ops[0].named_parameters())
    b = dict(old.cells[0]._ops[3]._ops[j_old].named_parameters())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(new.stem[0].weight, old.stem[0].weight)


def test_registry_refuses_duplicate_names():
    with pytest.raises(ValueError, match="registered twice"):
        register_search("hpe-darts")(type("Again", (SEARCHES["hpe-darts"],), {}))
