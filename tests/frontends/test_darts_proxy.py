import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from compressor.errors import ConfigError
from compressor.frontends.darts.ops import PRIMITIVES
from compressor.frontends.darts.proxy import (
    collect_op_kernels, edge_kernel, log_det, naswot_kernel, naswot_score, net_perf_kernel, net_perf_proxy,
    op_importance, op_importances,
)
from compressor.frontends.darts.search_space import NUM_EDGES, SearchNetwork, node_softmax

# One parametric-free or parametric op per edge, cycling through the non-`none` primitives.
SINGLE = [[PRIMITIVES[1 + e % 7]] for e in range(NUM_EDGES)]


def _net(seed=0, **kw):
    torch.manual_seed(seed)
    return SearchNetwork(C=4, num_classes=3, layers=3, **kw)


def _x(seed=1, n=8):
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _codes(rows):
    return torch.tensor(rows, dtype=torch.float32)


def _all_codes(L):
    return _codes(list(itertools.product([0, 1], repeat=L)))


# ---- NASWOT kernel and log det ---------------------------------------------------------------------
def test_naswot_kernel_is_code_length_minus_hamming():
    c = _codes([[1, 0, 1, 1], [1, 1, 0, 1], [0, 0, 0, 0]])
    # Hamming: (1,2) = 2, (1,3) = 3, (2,3) = 3; D = 4.
    expected = torch.tensor([[4, 2, 1], [2, 4, 1], [1, 1, 4]], dtype=torch.float64)
    K = naswot_kernel(c)
    assert K.dtype == torch.float64
    assert torch.equal(K, expected)
    assert torch.equal(naswot_kernel(c.bool()), expected)
    assert torch.equal(K, (c @ c.T + (1 - c) @ (1 - c).T).double())


def test_naswot_kernel_rejects_non_binary_codes():
    with pytest.raises(ValueError, match="binary"):
        naswot_kernel(torch.tensor([[0.5, 1.0], [0.0, 1.0]]))


def test_log_det_values_and_minus_inf_cases():
    assert log_det(3 * torch.eye(4)) == pytest.approx(4 * math.log(3))
    assert log_det(naswot_kernel(_codes([[1, 0], [1, 0], [0, 1]]))) == -math.inf  # identical inputs
    assert log_det(torch.zeros(3, 3)) == -math.inf
    assert log_det(torch.diag(torch.tensor([1.0, -1.0, 2.0]))) == -math.inf  # negative det
    # Positive determinant, but two negative eigenvalues: not positive definite.
    assert log_det(torch.diag(torch.tensor([-1.0, -1.0, 2.0]))) == -math.inf


def test_naswot_score_on_tiny_mlp_by_hand():
    lin1, lin2 = nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin1.weight.copy_(torch.eye(2))
        lin2.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
    model = nn.Sequential(lin1, nn.ReLU(), lin2, nn.ReLU()).eval()
    x = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    # Codes (layer 1 | layer 2): 11|10, 10|11, 01|10, 00|00 → K = 4 − Hamming.
    K = np.array([[4, 2, 3, 1], [2, 4, 1, 1], [3, 1, 4, 2], [1, 1, 2, 4]], dtype=np.float64)
    assert naswot_score(model, x) == pytest.approx(math.log(np.linalg.det(K)), rel=1e-12)
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert naswot_score(model, x[[0, 0, 1, 2]]) == -math.inf


def test_naswot_score_uses_train_mode_and_restores_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()).eval()
    with torch.no_grad():  # eval-mode BN would use these statistics; train mode must not
        model[1].running_mean.fill_(100.0)
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    x = _x()
    s = naswot_score(model, x)
    assert math.isfinite(s)
    assert naswot_score(model, x) == s  # Dropout off: deterministic
    assert not any(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in buffers.items())
    codes = []
    hooks = [m.register_forward_hook(lambda m, i, o: codes.append((o > 0).flatten(1)))
             for m in model if isinstance(m, nn.ReLU)]
    model.train()
    model[3].eval()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert s == log_det(sum(naswot_kernel(c) for c in codes))


def test_naswot_score_needs_relu_modules():
    with pytest.raises(ConfigError, match="nn.ReLU"):
        naswot_score(nn.Linear(2, 2), torch.randn(4, 2))


# ---- NetPerfProxy: kernels ------------------------------------------------------------------------
class _Probes(nn.Module):
    """Feeds every op output of a (hidden) supernet through a ReLU of its own, so that NASWOT on this
    module sees exactly the op-output codes NetPerfProxy uses."""

    def __init__(self, network):
        super().__init__()
        self._net = [network]  # not a submodule: its own ReLUs stay out of NASWOT's sight
        ops = [op for cell in network.cells for mixed in cell._ops for op in mixed._ops]
        self.probes = nn.ModuleList(nn.ReLU() for _ in ops)
        for op, probe in zip(ops, self.probes):
            op.register_forward_hook(self._feed(probe))

    @staticmethod
    def _feed(probe):
        def hook(_m, _i, out):
            probe(out)  # returns None: a hook that returns a value would replace the op's output
        return hook

    def forward(self, x):
        return self._net[0](x)


def test_one_op_per_edge_equals_naswot_on_the_same_codes():
    net = _net(primitives_normal=SINGLE, primitives_reduce=SINGLE)
    x = _x()
    codes = []
    handles = [op.register_forward_hook(lambda m, i, o: codes.append((o > 0).flatten(1)))
               for cell in net.cells for mixed in cell._ops for op in mixed._ops]
    net.train()
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    assert len(codes) == 3 * NUM_EDGES
    K = net_perf_kernel(net, x)
    assert torch.equal(K, sum(naswot_kernel(c) for c in codes))
    score = net_perf_proxy(net, x)
    assert math.isfinite(score)
    assert score == log_det(K)
    assert score == naswot_score(_Probes(net), x)


def test_paper_distance_on_hand_examples():
    a = _codes([[1, 0, 1], [1, 1, 1], [0, 0, 0]])  # Hamming (1,2)=1, (1,3)=2, (2,3)=3
    b = _codes([[0, 0, 0], [0, 1, 0], [0, 1, 1]])  # Hamming (1,2)=1, (1,3)=2, (2,3)=1
    paper = edge_kernel([a, b], [0.25, 0.75], kernel="paper-distance")
    # Off the diagonal 0.25·Ham_a + 0.75·Ham_b: (1,2) = 1, (1,3) = 2, (2,3) = 0.75 + 0.75; D = 3 on it.
    expected = torch.tensor([[3, 1, 2], [1, 3, 1.5], [2, 1.5, 3]], dtype=torch.float64)
    assert torch.allclose(paper, expected, rtol=0, atol=1e-15)
    sim = edge_kernel([a, b], [0.25, 0.75])
    assert torch.allclose(sim, 0.25 * naswot_kernel(a) + 0.75 * naswot_kernel(b), rtol=0, atol=1e-15)
    # The paper's matrix is not PSD in general: all eight 3-bit codes give det < 0, all sixteen
    # 4-bit codes det > 0 with four negative eigenvalues. Both score −inf. The similarity is PSD.
    for L in (3, 4):
        K = edge_kernel([_all_codes(L)], [1.0], kernel="paper-distance")
        assert torch.linalg.eigvalsh(K).min() < -0.5
        assert log_det(K) == -math.inf
        assert torch.linalg.eigvalsh(edge_kernel([_all_codes(L)], [1.0])).min() > -1e-9


def test_paper_distance_network_kernel_mirrors_the_similarity():
    net = _net(primitives_normal=SINGLE, primitives_reduce=SINGLE)
    x = _x()
    ok = collect_op_kernels(net, x)
    L = float(ok.length["normal"].sum() + ok.length["reduce"].sum())
    sim = net_perf_kernel(net, x)
    paper = net_perf_kernel(net, x, kernel="paper-distance")
    # Weight 1 everywhere: sim_ij = ΣL − ΣHamming_ij, paper_ij = ΣHamming_ij (i ≠ j), paper_ii = ΣL.
    n = x.shape[0]
    assert torch.equal(sim + paper, L * (torch.ones(n, n, dtype=torch.float64) + torch.eye(n, dtype=torch.float64)))


def test_alpha_weighting_is_linear_in_each_op_weight():
    net = _net()
    ok = collect_op_kernels(net, _x())
    coefs = ok.coefficients()
    wn, wr = net.op_weights()
    assert torch.allclose(coefs["normal"][:, 1:], wn.detach().double()[:, 1:])
    assert torch.allclose(coefs["reduce"][:, 1:], wr.detach().double()[:, 1:])
    assert (coefs["normal"][:, 0] == 0).all()  # `none` left out by default
    K = ok.kernel(coefs)
    doubled = {t: c.clone() for t, c in coefs.items()}
    doubled["reduce"][6, 4] *= 2
    delta = ok.kernel(doubled) - K
    assert torch.allclose(delta, coefs["reduce"][6, 4] * ok.sim["reduce"][6, 4], rtol=1e-12, atol=1e-9)
    # `none` has all-zero codes: its kernel is L everywhere; counted only on request.
    L = ok.length["normal"][2]
    assert (ok.sim["normal"][2, 0] == L).all()
    with_none = ok.kernel(ok.coefficients(count_none=True))
    extra = sum(ok.op_weights[t][:, 0].double() @ ok.length[t] for t in ("normal", "reduce"))
    assert torch.allclose(with_none - K, extra * torch.ones_like(K), rtol=1e-12, atol=1e-9)
    uniform = ok.coefficients("uniform")
    assert (uniform["normal"][:, 1:] == 1).all() and (uniform["normal"][:, 0] == 0).all()


def test_pc_darts_weights_and_partial_code_lengths():
    net = _net(partial_k=2, edge_norm=True)
    x = _x()
    ok = collect_op_kernels(net, x)
    en, _ = net.edge_weights()
    wn, _ = net.op_weights()
    expected = (wn * en[:, None]).detach().double()
    assert torch.allclose(ok.coefficients()["normal"][:, 1:], expected[:, 1:])
    assert torch.allclose(en, node_softmax(net.betas_normal))
    # Codes cover the op's own C/K channels: normal cell 0: 2 ch × 8×8; reduce cells: 4 × 4×4 and 8 × 2×2
    # on the strided edges (inputs 0, 1) and 4 × 4×4 + 8 × 2×2 as well on the others (same output size).
    assert (ok.length["normal"] == 2 * 64).all()
    assert (ok.length["reduce"] == 4 * 16 + 8 * 4).all()
    assert math.isfinite(net_perf_proxy(net, x))


def test_identical_inputs_score_minus_inf():
    x = _x()
    x[3] = x[5]
    assert net_perf_proxy(_net(), x) == -math.inf


def test_mode_buffers_and_mutation_restored_and_no_grads():
    net = _net(skip_dropout=0.5)
    net.eval()
    net.cells[1].train()
    net.mutation_prob = 0.7
    modes = [m.training for m in net.modules()]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = _x()
    s = net_perf_proxy(net, x)
    assert s == net_perf_proxy(net, x)  # dropout and edge mutation off while scoring
    assert [m.training for m in net.modules()] == modes
    assert net.mutation_prob == 0.7
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in state.items())
    op_importance(net, x, ("normal", 0), "sep_conv_3x3")
    assert all(p.grad is None for p in net.parameters())


def test_bad_options_name_the_valid_values():
    net, x = _net(), _x()
    with pytest.raises(ConfigError, match="'similarity', 'paper-distance'"):
        net_perf_proxy(net, x, kernel="distance")
    with pytest.raises(ConfigError, match="alpha-weighted"):
        net_perf_proxy(net, x, weights="softmax")
    with pytest.raises(ConfigError, match="netperf"):
        op_importance(net, x, ("normal", 0), 1, proxy="zen")
    with pytest.raises(ConfigError, match="not on edge"):
        op_importance(net, x, ("normal", 0), "conv_7x1_1x7")
    with pytest.raises(ConfigError, match="cell_type, index"):
        op_importance(net, x, 3, 1)


# ---- op importance ---------------------------------------------------------------------------------
def test_op_importance_of_a_zero_weight_op_is_zero():
    net = _net()
    with torch.no_grad():
        net.alphas_normal[3, 5] = -math.inf  # softmax weight exactly 0
    x = _x()
    assert op_importance(net, x, ("normal", 3), "sep_conv_5x5") == 0.0
    assert op_importance(net, x, ("normal", 3), "none") == 0.0  # `none` changes nothing either
    cached = op_importances(net, x, exact=False)
    assert cached["normal"][3, 5] == 0.0 and (cached["normal"][:, 0] == 0).all()
    assert op_importance(net, x, ("normal", 3), "sep_conv_3x3") != 0.0


def test_exact_and_cached_importance_agree_where_nothing_depends_on_the_node():
    net = _net()
    net.cells = net.cells[:1]  # a single (normal) cell: its last node feeds no hooked op
    net.classifier = nn.Identity()
    x = _x()
    exact = op_importances(net, x, exact=True)
    cached = op_importances(net, x, exact=False)
    last_node = slice(9, 14)  # edges into node 3
    np.testing.assert_allclose(exact["normal"][last_node], cached["normal"][last_node], rtol=1e-12, atol=0)
    assert np.isfinite(exact["normal"]).all() and (exact["normal"][:, 1:] != 0).any()
    assert (exact["reduce"] == 0).all() and (cached["reduce"] == 0).all()  # no reduction cell
    # Earlier nodes feed later ones: there the cache is only a first-order approximation.
    assert not np.allclose(exact["normal"][:9], cached["normal"][:9], rtol=1e-9)
    assert op_importance(net, x, ("normal", 11), 4) == pytest.approx(exact["normal"][11, 4], rel=1e-12)
    paper = op_importances(net, x, kernel="paper-distance", exact=False)
    paper_exact = op_importance(net, x, ("normal", 12), 6, kernel="paper-distance")
    assert paper_exact == pytest.approx(paper["normal"][12, 6], rel=1e-12)
