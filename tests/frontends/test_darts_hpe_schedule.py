"""HPE-DARTS as its paper runs it (seed 004): the importance measure of each hybrid stage as a schedule
(NetPerfProxy in every stage by default, section 4.2.2), the selectable measures equal to their formulas
(NetPerfProxy, its literal eq. 8-10, NASWOT, the accuracy drop), the warm-up's own epochs, and the
per-stage training and scoring times of the search."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from compressor.errors import ConfigError
from compressor.frontends.darts.hpe import (
    MEASURES, PROXY_MEASURES, HPEDarts, _accuracy, accuracy_importance, importance_measure, importance_schedule,
    proxy_importance,
)
from compressor.frontends.darts.proxy import OpKernels, importances_from_kernels
from compressor.frontends.darts.search import HISTORY, RESULT, SearchOptions, run_search
from compressor.frontends.darts.search_space import NUM_EDGES, SearchNetwork
from compressor.options import parse_options

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def hpe(**kw):
    return SearchOptions.of(algorithm="hpe-darts", **kw)


def config_error(raw):
    with pytest.raises(ConfigError) as info:
        parse_options(SearchOptions, {"algorithm": "hpe-darts", **raw}, "search")
    return str(info.value)


# ---- the schedule ------------------------------------------------------------------------------------
def test_default_schedule_is_netperf_in_every_stage_and_importance_maps_to_schedules():
    assert HPEDarts(hpe(), None).schedule == ("netperf", "netperf", "netperf")  # section 4.2.2, DARTS space
    assert HPEDarts(hpe(hpe={"ops_per_edge": [8, 4, 1]}), None).schedule == ("netperf", "netperf")
    # the old key: hybrid is accuracy in the first half of the stages (stage < S/2), netperf in the rest
    assert HPEDarts(hpe(hpe={"importance": "hybrid"}), None).schedule == ("accuracy", "accuracy", "netperf")
    assert HPEDarts(hpe(hpe={"importance": "accuracy"}), None).schedule == ("accuracy",) * 3
    assert HPEDarts(hpe(hpe={"importance": "naswot"}), None).schedule == ("naswot",) * 3
    given = ("accuracy", "naswot", "netperf-literal")
    assert HPEDarts(hpe(hpe={"schedule": list(given)}), None).schedule == given
    assert MEASURES == ("accuracy", "netperf", "netperf-literal", "naswot")
    assert PROXY_MEASURES == {"netperf": ("netperf", "similarity"), "netperf-literal": ("netperf", "paper-distance"),
                              "naswot": ("naswot", "similarity")}


def test_bad_schedules_are_one_line_config_errors():
    msg = config_error({"hpe": {"schedule": ["netperf", "accuracy"]}})
    assert msg == ("search: hpe.schedule has 2 entries ['netperf', 'accuracy'] but ops_per_edge [8, 5, 3, 1] makes 3 "
                   "hybrid stages; give one measure per stage, e.g. [netperf, netperf, netperf]")
    msg = config_error({"hpe": {"ops_per_edge": [8, 4, 1], "schedule": ["netperf"] * 3}})
    assert "makes 2 hybrid stages" in msg and "e.g. [netperf, netperf]" in msg and "\n" not in msg
    msg = config_error({"hpe": {"importance": "hybrid", "schedule": ["netperf"] * 3}})
    assert msg == ("search: hpe: importance: hybrid and schedule: ['netperf', 'netperf', 'netperf'] both set the "
                   "measures; keep one (importance is the same measure in every stage, or hybrid)")
    msg = config_error({"hpe": {"schedule": ["netperf", "nasbot", "netperf"]}})
    assert "schedule[1]: 'nasbot' is not valid; choose one of 'accuracy', 'netperf', 'netperf-literal', 'naswot'" in msg
    assert "\n" not in msg
    assert importance_schedule(hpe().hpe, 2) == ("netperf", "netperf")
    with pytest.raises(ValueError, match="valid: hybrid, accuracy, netperf, netperf-literal, naswot"):
        importance_measure(0, 3, "zen")


def test_warmup_epochs_are_separate_from_the_hybrid_stages():
    assert hpe(epochs=3).stage_epochs == (3, 3, 3, 3)  # null: E_warmup = E_prune, as before
    assert hpe(epochs=3, warmup_epochs=5).stage_epochs == (5, 3, 3, 3)
    assert hpe(epochs=3, warmup_epochs=0).stage_epochs == (0, 3, 3, 3)
    assert hpe(epochs=3, warmup_epochs=5).warmup == 0  # no α-free epochs inside the hybrid stages
    # the other algorithms keep `warmup_epochs` as α-free epochs at the start of their stage(s)
    pc = SearchOptions.of(algorithm="pc-darts", epochs=8, warmup_epochs=2)
    assert pc.stage_epochs == (8,) and pc.warmup == 2
    assert SearchOptions.of(algorithm="p-darts", epochs=10).stage_epochs == (10, 10, 10)


def test_other_algorithms_hash_the_hpe_block_as_before():
    """A pc-darts search hashes the hpe block's earlier defaults (the stage keys of its pipelines do not
    change); an hpe-darts search hashes its own block, new options included."""
    keys = SearchOptions.of(algorithm="pc-darts").key_data()
    assert {k: v for k, v in keys.items() if k.startswith("hpe_")} == {
        "hpe_ops_per_edge": [8, 5, 3, 1], "hpe_importance": "hybrid", "hpe_decay": "literal", "hpe_batch": 64,
        "hpe_proxy": "cached"}
    own = hpe(hpe={"schedule": ["naswot"] * 3}).key_data()
    assert own["hpe_schedule"] == ["naswot"] * 3 and own["hpe_importance"] is None and own["hpe_accuracy_batch"] == 32


# ---- the measures against their formulas -----------------------------------------------------------------
def _hamming(codes):
    c = np.asarray(codes, dtype=np.float64)
    return np.abs(c[:, None, :] - c[None, :, :]).sum(-1)


def _logdet(K):
    """log det of a positive definite K, else −inf (the proxies' convention)."""
    if np.linalg.eigvalsh(K).min() <= 0:
        return -math.inf
    return float(np.linalg.slogdet(K)[1])


def test_training_free_measures_equal_their_formulas_on_a_hand_example():
    """Three samples, 3-bit codes, one edge per cell type with ops [none, skip, conv]; every other edge empty.
    NetPerfProxy: K = Σ w·(L − H); its literal eq. 8-10: K_ij = Σ w·H_ij off the diagonal, ΣL on it; NASWOT:
    K = Σ (L − H), weights 1. Importance: log det K − log det K without the op's term; `none` scores 0."""
    a = [[1, 0, 1], [1, 1, 1], [0, 0, 0]]
    b = [[0, 0, 0], [0, 1, 0], [0, 1, 1]]
    c = [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    d = [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    H = {("normal", 1): np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0]]), ("normal", 2): np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]]),
         ("reduce", 1): np.array([[0, 1, 1], [1, 0, 2], [1, 2, 0]]), ("reduce", 2): np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0]])}
    for key, codes in zip(H, (a, b, c, d)):
        assert (_hamming(codes) == H[key]).all()  # the Hamming distances written out above
    L, N = 3.0, 3
    w = {"normal": [0.2, 0.3, 0.5], "reduce": [0.1, 0.6, 0.3]}
    sim, length, weights = {}, {}, {}
    for t in ("normal", "reduce"):
        sim[t] = torch.zeros(NUM_EDGES, 3, N, N, dtype=torch.float64)
        sim[t][0, 0] = L  # `none`: all-zero codes, nothing differs
        for k in (1, 2):
            sim[t][0, k] = torch.as_tensor(L - H[(t, k)], dtype=torch.float64)
        length[t] = torch.zeros(NUM_EDGES, dtype=torch.float64)
        length[t][0] = L
        weights[t] = torch.full((NUM_EDGES, 3), 1 / 3, dtype=torch.float64)
        weights[t][0] = torch.tensor(w[t], dtype=torch.float64)
    prims = [["none", "skip_connect", "sep_conv_3x3"]] * NUM_EDGES
    ok = OpKernels(sim, length, weights, {"normal": None, "reduce": None}, {"normal": prims, "reduce": prims})

    def reference(measure):
        coef = {(t, k): (1.0 if measure == "naswot" else w[t][k]) for t in ("normal", "reduce") for k in (1, 2)}
        if measure == "netperf-literal":
            def K(c):
                m = sum(c[key] * H[key] for key in c).astype(np.float64)
                np.fill_diagonal(m, 2 * L)  # L of each of the two edges with codes
                return m
        else:
            def K(c):
                return sum(c[key] * (L - H[key]) for key in c).astype(np.float64)
        base = _logdet(K(coef))
        out = {t: np.zeros((NUM_EDGES, 3)) for t in ("normal", "reduce")}
        for key in coef:
            out[key[0]][0, key[1]] = base - _logdet(K({**coef, key: 0.0}))
        return out, base

    by_hand = {}
    for measure in ("netperf", "netperf-literal", "naswot"):
        got = importances_from_kernels(ok, *PROXY_MEASURES[measure])
        want, base = reference(measure)
        assert math.isfinite(base)
        for t in ("normal", "reduce"):
            np.testing.assert_allclose(got[t], want[t], rtol=1e-12, atol=1e-12)
        by_hand[measure] = got
    # one entry by hand: NASWOT without the reduce conv leaves 3 of the 4 kernels
    K_all = sum(L - h for h in H.values()).astype(float)
    K_wo = K_all - (L - H[("reduce", 2)])
    assert by_hand["naswot"]["reduce"][0, 2] == pytest.approx(np.log(np.linalg.det(K_all) / np.linalg.det(K_wo)), rel=1e-12)
    assert all((m[t][:, 0] == 0).all() for m in by_hand.values() for t in m)  # `none`
    assert not np.allclose(by_hand["netperf"]["normal"], by_hand["naswot"]["normal"])  # α matters for netperf only


def _net(seed=0, **kw):
    torch.manual_seed(seed)
    net = SearchNetwork(C=2, num_classes=3, layers=3, in_channels=3, **kw)
    with torch.no_grad():
        net.alphas_normal.normal_(0, 1)
        net.alphas_reduce.normal_(0, 1)
    return net


def test_proxy_measures_on_a_supernet_equal_numpy_on_its_own_codes():
    """What HPE-DARTS scores with (`proxy_importance`, cached) equals the formula computed in numpy from the
    op-output codes this test hooks itself: Hamming per cell, summed over the cells of a type."""
    net = _net()
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    codes: dict[tuple[str, int, int], list[np.ndarray]] = {}

    def hook(t, e, k):
        return lambda m, i, o: codes.setdefault((t, e, k), []).append((o > 0).flatten(1).numpy())

    handles = [op.register_forward_hook(hook("reduce" if cell.reduction else "normal", e, k))
               for cell in net.cells for e, mixed in enumerate(cell._ops) for k, op in enumerate(mixed._ops)]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    net.load_state_dict(state)  # the BatchNorm statistics as before this forward
    prims = net.primitives_normal[0]
    soft = {"normal": torch.softmax(net.alphas_normal, -1).detach().double().numpy(),
            "reduce": torch.softmax(net.alphas_reduce, -1).detach().double().numpy()}
    S = {key: sum(c.shape[1] - _hamming(c) for c in cs) for key, cs in codes.items()}
    Lsum = {key: sum(c.shape[1] for c in cs) for key, cs in codes.items()}
    diag = sum(Lsum[(t, e, 0)] for t in ("normal", "reduce") for e in range(NUM_EDGES))
    for measure in ("netperf", "netperf-literal", "naswot"):
        coef = {key: 0.0 if prims[key[2]] == "none" else (1.0 if measure == "naswot" else soft[key[0]][key[1], key[2]])
                for key in S}

        def K(c):
            if measure == "netperf-literal":
                m = sum(c[key] * (Lsum[key] - S[key]) for key in c)
                np.fill_diagonal(m, diag)
                return m
            return sum(c[key] * S[key] for key in c)

        base = _logdet(K(coef))
        assert math.isfinite(base)
        got = proxy_importance(net, x, measure)
        for (t, e, k) in S:
            want = 0.0 if coef[(t, e, k)] == 0 else base - _logdet(K({**coef, (t, e, k): 0.0}))
            assert float(got[t][e, k]) == pytest.approx(want, rel=1e-7, abs=1e-9), (measure, t, e, k)


def test_accuracy_drop_runs_batched_and_equals_one_forward_per_op():
    """The 2·14·8 + 1 variants run batched (per-sample op weights), each equal to a forward of that variant
    alone with the op's α at −inf; segmentation (pixel accuracy) so that many drops differ from 0."""
    torch.manual_seed(0)
    net = SearchNetwork(4, 1, 3, task="segmentation", in_channels=1)
    with torch.no_grad():
        net.alphas_normal.normal_(0, 1)
        net.alphas_reduce.normal_(0, 1)
        net.train()
        for _ in range(3):
            net(torch.randn(16, 1, 8, 8))  # BatchNorm running statistics that are not the initial ones
    x = torch.randn(12, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = (torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    net.train()
    calls = []
    handle = net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    alpha_before = net.alphas_normal.detach().clone()
    got = accuracy_importance(net, x, y, max_samples=240)
    handle.remove()
    assert calls == [240] * 11 + [12 * (225 - 11 * 20)]  # 20 variants of 12 samples per forward
    assert net.training and torch.equal(net.alphas_normal, alpha_before)
    assert sum(int((got[t] != 0).sum()) for t in got) > 20
    net.eval()
    with torch.no_grad():
        base = _accuracy(net(x), y)
        for t, edges in (("normal", (0, 5, 13)), ("reduce", (2, 9))):  # every op of a few edges (time)
            alpha = getattr(net, f"alphas_{t}")
            for e in edges:
                for j in range(alpha.shape[1]):
                    saved = alpha[e, j].item()
                    alpha[e, j] = -math.inf
                    assert float(got[t][e, j]) == base - _accuracy(net(x), y), (t, e, j)
                    alpha[e, j] = saved


# ---- in the search -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    from compressor.data import build_data

    return build_data("digits", {})


def test_scoring_rounds_draw_one_batch_each(digits):
    algo = HPEDarts(hpe(hpe={"batch": 8, "accuracy_batch": 4}, seed=2), None)
    algo.build_supernet(0, digits, None, None)
    x1, y1 = algo.scoring_batch(1, 0, 8)
    x2, _ = algo.scoring_batch(1, 0, 8)
    x3, _ = algo.scoring_batch(1, 1, 8)
    assert x1.shape[0] == 8 and torch.equal(x1, x2) and not torch.equal(x1, x3)
    assert algo.scoring_batch(1, 0, 10_000)[0].shape[0] == len(digits.split("val"))  # all of them if fewer


def test_warmup_stage_schedule_and_per_stage_times_in_the_search(digits, tmp_path):
    """E_warmup = 2, E_prune = 1, a schedule with a different measure per stage: the history holds 2 warm-up
    epochs (their cosine over 2 epochs) and 1 epoch per hybrid stage with its measure; the result holds the
    per-stage times, scoring only in the hybrid stages."""
    opts = hpe(epochs=1, warmup_epochs=2, batch_size=8, init_channels=4, layers=3, max_steps=1,
               hpe={"batch": 8, "schedule": ["naswot", "netperf-literal", "netperf"]})
    res = run_search(opts, digits, tmp_path, progress=False)
    history = json.loads((tmp_path / HISTORY).read_text())
    assert [h["hpe_stage"] for h in history] == [0, 0, 1, 2, 3]
    assert [h.get("hpe_measure") for h in history] == [None, None, 3, 2, 1]
    lr0, lr_min = opts.w_lr, opts.w_lr_min
    assert [round(h["lr"], 9) for h in history] == [round(v, 9) for v in (lr0, (lr0 + lr_min) / 2, lr0, lr0, lr0)]
    assert all(h["train_s"] > 0 and h["score_s"] >= 0 for h in history)
    stages = json.loads((tmp_path / RESULT).read_text())["stages"]
    assert stages == res.stage_seconds
    assert [s["stage"] for s in stages] == [0, 1, 2, 3] and [s["epochs"] for s in stages] == [2, 1, 1, 1]
    for s in stages:
        assert s["seconds"] >= s["train_s"] + s["score_s"] - 0.002  # rounded to ms
    # scoring: none in the warm-up; each hybrid stage scores at its epoch start and at its end (the derivation
    # for the last)
    assert all(stages[0]["score_s"] < s["score_s"] for s in stages[1:])
    assert res.genotype.validate()
