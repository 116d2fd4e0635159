"""D-DARTS's losses (thesis eq. 3.1, 4.2-4.5) and Algorithm 2, against hand-computed values."""
import pytest
import torch

from compressor.errors import ConfigError
from compressor.frontends.darts.ddarts import (
    ablation_losses, expand_cell_indices, marginal_contributions, total_losses, zero_one_loss,
)


def test_zero_one_loss():
    assert float(zero_one_loss(torch.zeros(14, 8))) == 0.0  # σ(0) = 0.5: the loss's maximum
    big = torch.tensor([[50.0, -50.0]])
    assert float(zero_one_loss(big)) == pytest.approx(-0.25)  # σ at 0 or 1: its minimum
    a = torch.tensor([0.0, 2.0])
    s = torch.sigmoid(torch.tensor(2.0))
    assert float(zero_one_loss(a)) == pytest.approx(-float((s - 0.5) ** 2) / 2)


def test_ablation_loss_on_a_three_cell_example():
    # the supernet loss 1.0; without cell 0, 1, 2: 1.5, 1.2, 1.3
    m = marginal_contributions(torch.tensor(1.0), [torch.tensor(1.5), torch.tensor(1.2), torch.tensor(1.3)])
    assert torch.allclose(m, torch.tensor([-0.5, -0.2, -0.3]))
    # mean(M) = -1/3: L_AB = (M - mean) / mean
    assert torch.allclose(ablation_losses(m), torch.tensor([0.5, -0.4, -0.1]), atol=1e-6)
    assert float(ablation_losses(m).sum()) == pytest.approx(0.0, abs=1e-6)  # normalized around the mean
    assert torch.equal(ablation_losses(torch.tensor([0.2, -0.2])), torch.zeros(2))  # mean 0: defined as 0


def test_total_loss_and_its_gradient_reach_each_cells_alpha():
    alphas = [torch.zeros(2, requires_grad=True) for _ in range(3)]
    scale = [1.0 + a.sum() for a in alphas]  # each cell's α changes "its" loss term
    loss_all = 1.0 * scale[0] * scale[1] * scale[2]
    without = [torch.tensor(1.5) * scale[1] * scale[2], torch.tensor(1.2) * scale[0] * scale[2],
               torch.tensor(1.3) * scale[0] * scale[1]]
    lt = total_losses(loss_all, without, alphas, w_01=8.0, w_ab=0.5)
    assert [float(v.detach()) for v in lt] == pytest.approx([1.0 + 0.5 * 0.5, 1.0 - 0.5 * 0.4, 1.0 - 0.5 * 0.1], abs=1e-6)
    g = torch.autograd.grad(lt[0], alphas[0])[0]
    assert float(g.abs().sum()) > 0  # L_AB stays differentiable in α (the thesis detaches nothing)
    with pytest.raises(ValueError, match="3 cells"):
        total_losses(loss_all, without[:2], alphas, 1.0, 1.0)


def test_algorithm_2_expands_8_searched_cells_to_14():
    idx = expand_cell_indices(8, 14)
    # searched: normal 0 1 | reduce 2 | normal 3 4 | reduce 5 | normal 6 7
    assert idx == [0, 1, 0, 1, 2, 4, 3, 4, 3, 5, 6, 7, 6, 7]
    assert idx[14 // 3] == 8 // 3 and idx[2 * 14 // 3] == 2 * 8 // 3  # reductions where the networks put them
    assert expand_cell_indices(8, 8) == list(range(8))
    assert expand_cell_indices(5, 20).count(1) == 1 and expand_cell_indices(5, 20).count(3) == 1


@pytest.mark.parametrize("searched,cells,match", [(4, 8, "at least 5"), (8, 6, "at least 8")])
def test_algorithm_2_refuses_what_it_cannot_expand(searched, cells, match):
    with pytest.raises(ConfigError, match=match):
        expand_cell_indices(searched, cells)


def test_alpha_gradients_from_n_plus_1_backward_passes_equal_autograd_of_each_total_loss():
    """The supernet-free check of `total_loss_alpha_grads`: losses that are smooth functions of three
    cells' α (cell j deactivated = its α not read), gradients combined from n + 1 backward passes
    against autograd of each L_T^i with respect to α_i."""
    from compressor.frontends.darts.ddarts import total_loss_alpha_grads

    torch.manual_seed(0)
    n = 3
    alphas = [torch.randn(4, 3, dtype=torch.float64, requires_grad=True) for _ in range(n)]
    w = [torch.randn(4, 3, dtype=torch.float64) for _ in range(n)]

    def loss(off: int | None) -> torch.Tensor:  # a cell's "output" is 1 + tanh(<w, σ(α)>); off: deactivated
        terms = [torch.tanh((w[i] * torch.sigmoid(alphas[i])).sum()) if i != off else torch.zeros((), dtype=torch.float64)
                 for i in range(n)]
        return (2.0 - sum(terms)) ** 2

    w01, wab = 8.0, 0.5
    l_all, l_wo = loss(None), [loss(j) for j in range(n)]
    lt = total_losses(l_all, l_wo, alphas, w01, wab)
    want = [torch.autograd.grad(lt[i], alphas[i], retain_graph=True)[0] for i in range(n)]
    g_all = torch.autograd.grad(l_all, alphas, retain_graph=True)
    g_wo = [torch.autograd.grad(l_wo[j], alphas, retain_graph=True, allow_unused=True) for j in range(n)]
    g_wo = [[g if g is not None else torch.zeros_like(alphas[i]) for i, g in enumerate(row)] for row in g_wo]
    got = total_loss_alpha_grads(g_all, g_wo, marginal_contributions(l_all, l_wo).detach(), alphas, w01, wab)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


# ---- the d-darts search ---------------------------------------------------------------------------
def test_cellwise_supernet_holds_one_sigmoid_alpha_per_cell_and_deactivates_cells():
    from compressor.frontends.darts.ddarts import CellwiseSearchNetwork

    torch.manual_seed(0)
    net = CellwiseSearchNetwork(4, 3, 5, in_channels=1).train()
    assert [n for n, _ in net.named_parameters() if "alpha" in n] == ["alphas_cells"]
    assert net.alphas_cells.shape == (5, 14, 8) and net.arch_parameters() == [net.alphas_cells]
    assert not any("alpha" in n for n, _ in net.named_weight_parameters())
    assert net.reduction_cells() == (1, 3)
    w = net.cell_weights(off=2)
    assert torch.equal(w[2], torch.zeros(14, 8)) and torch.allclose(w[0], torch.sigmoid(net.alphas_cells[0]))
    # a deactivated cell outputs zeros
    seen = {}
    net.cells[2].register_forward_hook(lambda _m, _i, out: seen.setdefault("out", out))
    net(torch.randn(2, 1, 8, 8), cell_weights=w)
    assert torch.equal(seen["out"], torch.zeros_like(seen["out"]))
    g = net.genotype()
    assert len(g.cells) == 5 and g.reduce_at == (1, 3)


def test_ddarts_arch_step_gives_every_cell_the_gradient_of_its_own_total_loss(digits):
    """One α step on a tiny supernet: the gradient each cell's α receives equals autograd of that
    cell's L_T^i (eq. 4.5) through n + 1 forwards."""
    from compressor.frontends.darts.ddarts import DDarts
    from compressor.frontends.darts.search import SearchOptions, Stage, task_loss_fn

    data = digits
    opts = SearchOptions.of(algorithm="d-darts", init_channels=4, layers=3, batch_size=8, epochs=1)
    algo = DDarts(opts, task_loss_fn("classification"))
    torch.manual_seed(0)
    st = Stage(algo, data, 0, None, None, "cpu")
    model = st.model.double().train()
    x = torch.stack([data.train[i][0] for i in range(8)]).double()
    y = torch.tensor([int(data.train[i][1]) for i in range(8)])
    with torch.no_grad():
        model.alphas_cells.normal_(0, 1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    loss_fn = task_loss_fn("classification")
    l_all = loss_fn(model(x), y)
    l_wo = [loss_fn(model(x, cell_weights=model.cell_weights(off=j)), y) for j in range(3)]
    lt = total_losses(l_all, l_wo, list(model.alphas_cells), opts.ddarts.w01, opts.ddarts.wab)
    want = torch.stack([torch.autograd.grad(lt[i], model.alphas_cells, retain_graph=True)[0][i] for i in range(3)])
    model.load_state_dict(state)  # the forwards above updated BN statistics
    st.a_opt = torch.optim.SGD([model.alphas_cells], lr=1.0)  # so that the step is α -= grad
    before = model.alphas_cells.detach().clone()
    algo.arch_step(st, x, y, x, y, 0.1)
    got = before - model.alphas_cells.detach()
    # the task loss runs in float32 (task_loss_fn casts the logits), hence 1e-5
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-9), float((got - want).abs().max())
    assert float(got.abs().sum()) > 0


def test_ddarts_search_end_to_end_and_lowering_deeper_by_algorithm_2(tmp_path, digits):
    from compressor.frontends.darts.frontend import lower_genotype
    from compressor.frontends.darts.genotypes import CellsGenotype, Genotype
    from compressor.frontends.darts.search import SearchOptions, run_search

    opts = SearchOptions.of(algorithm="d-darts", init_channels=4, layers=5, batch_size=8, epochs=1, max_steps=2)
    res = run_search(opts, digits, tmp_path / "s", progress=False)
    g = res.genotype
    assert isinstance(g, CellsGenotype) and len(g.cells) == 5 and g.reduce_at == (1, 3)
    assert Genotype.load(tmp_path / "s" / "genotype.json") == g
    ir = lower_genotype(g, task="classification", in_channels=1, input_size=8, num_classes=10, init_channels=4,
                        layers=8)
    assert len(ir.module.cells) == 8
    with pytest.raises(ConfigError, match="first-order"):
        SearchOptions.of(algorithm="d-darts", order=2)
