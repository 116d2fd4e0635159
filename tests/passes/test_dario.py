"""prune-dario: gates (prepare/convert equivalences), proxies against hand-computed values, the
search modes, decisions, and the pass's errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from compressor.context import PassContext
from compressor.errors import ConfigError, PassError
from compressor.frontend import input_spec_from, lower
from compressor.ir import TaskSpec
from compressor.adapters.blocks import SkipBlock, find_blocks
from compressor.passes.dario import (
    BlockGate,
    Prepared,
    PruneDario,
    SearchResult,
    _Objective,
    _search_mode,
    convert,
    decide,
    prepare,
    proxy,
    proxy_values,
    search,
)

INF = math.inf


class Attention(nn.Module):
    """timm's fused-qkv layout (found by the fused-qkv adapter)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.scale = self.head_dim ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        a = ((qkv[0] @ qkv[1].transpose(-2, -1)) * self.scale).softmax(-1)
        return self.proj((a @ qkv[2]).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, depth: int = 3, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Conv2d(1, dim, 2, 2)
        self.pos = nn.Parameter(torch.randn(1, 16, dim) * 0.1)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.norm(self.blocks(x)).mean(1))


class Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
        self.downsample = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + identity)


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, 1, 1), nn.ReLU())
        self.layer1 = nn.Sequential(Basic(8, 8), Basic(8, 8))
        self.layer2 = nn.Sequential(Basic(8, 16, 2), Basic(16, 16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer2(self.layer1(self.stem(x))).mean((2, 3)))


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def _ir(model: nn.Module):
    torch.manual_seed(0)
    return lower(model, [input_spec_from((1, 8, 8), (0.0, 16.0))], TaskSpec("classification", 10))


def _randomize_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)


@pytest.fixture
def vit_ir():
    torch.manual_seed(0)
    return _ir(TinyViT())


@pytest.fixture
def resnet_ir():
    torch.manual_seed(0)
    m = TinyResNet()
    _randomize_bn(m)
    return _ir(m)


def _x(batch: int = 3) -> torch.Tensor:
    return torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 16


def _prepare(ir, granularity="block") -> Prepared:
    return prepare(ir.module, (_x(2),), granularity)


def _gate_values(p: Prepared, keep: dict[str, list[bool]]) -> torch.Tensor:
    return torch.tensor([INF if k else -INF for s in p.structures for k in keep[s.name]])


# ---- finding blocks ----------------------------------------------------------------------------

def test_vit_blocks_are_the_transformer_blocks(vit_ir):
    blocks = find_blocks(vit_ir.module, (_x(2),))
    assert [b.name for b in blocks] == ["blocks.0", "blocks.1", "blocks.2"]
    assert all(b.tuple_len == 0 and b.params == sum(q.numel() for q in Block(16, 4).parameters()) for b in blocks)


def test_resnet_identity_blocks_are_gated_projection_blocks_are_not(resnet_ir):
    p = _prepare(resnet_ir)
    assert [s.name for s in p.structures] == ["layer1.0", "layer1.1", "layer2.1"]
    assert p.structures[0].params == sum(q.numel() for q in TinyResNet().layer1[0].parameters())


class NotResidual(nn.Module):
    """Shape-preserving elements of a Sequential without a residual add: not blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.ReLU(), nn.Conv2d(1, 1, 3, padding=1))
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).flatten(1))


def test_shape_preserving_layers_without_a_residual_are_not_blocks():
    assert find_blocks(NotResidual(), (_x(2),)) == []


def test_heads_found_with_their_block(vit_ir):
    p = _prepare(vit_ir, "both")
    heads = [s for s in p.structures if s.kind == "heads"]
    assert [(s.name, s.size, s.block) for s in heads] == [(f"blocks.{i}.attn", 4, f"blocks.{i}") for i in range(3)]
    assert len(p.alpha()) == 3 + 12


# ---- prepare / convert equivalences ------------------------------------------------------------

@pytest.mark.parametrize("granularity", ["block", "head", "both"])
def test_open_gates_equal_the_original(vit_ir, granularity):
    x = _x()
    ref = vit_ir.module(x)
    p = _prepare(vit_ir, granularity)
    assert torch.equal(p.module(x), ref)


def test_open_gates_equal_the_original_resnet(resnet_ir):
    x = _x()
    resnet_ir.module.eval()
    ref = resnet_ir.module(x)
    p = _prepare(resnet_ir)
    assert torch.equal(p.module.eval()(x), ref)


def test_removed_block_equals_gate_at_zero(vit_ir):
    x = _x()
    p = _prepare(vit_ir, "block")
    keep = {"blocks.0": [True], "blocks.1": [False], "blocks.2": [True]}
    p.set_alpha(_gate_values(p, keep))
    gated = p.module(x)
    before = sum(q.numel() for q in p.module.parameters())
    info = convert(p, keep)
    assert info["removed_blocks"] == ["blocks.1"]
    torch.testing.assert_close(p.module(x), gated, rtol=1e-5, atol=1e-6)
    removed = sum(q.numel() for q in Block(16, 4).parameters())
    assert sum(q.numel() for q in p.module.parameters()) == before - removed - 3  # - the three gates
    assert not any(isinstance(m, BlockGate) for m in p.module.modules()) and not hasattr(p.module, "dario_gates")
    assert isinstance(p.module.get_submodule("blocks.1"), SkipBlock)


@pytest.mark.parametrize("kept", [(False, False, True), (True, False, False), (False, False, False)])
def test_adjacent_removed_blocks_equal_gates_at_zero(vit_ir, kept):
    x = _x()
    p = _prepare(vit_ir, "block")
    keep = {f"blocks.{i}": [k] for i, k in enumerate(kept)}
    p.set_alpha(_gate_values(p, keep))
    gated = p.module(x)
    convert(p, keep)
    torch.testing.assert_close(p.module(x), gated, rtol=1e-5, atol=1e-6)
    per_block = sum(q.numel() for q in Block(16, 4).parameters())
    base = sum(q.numel() for q in TinyViT().parameters())
    assert sum(q.numel() for q in p.module.parameters()) == base - per_block * kept.count(False)


def test_removed_resnet_block_equals_gate_at_zero(resnet_ir):
    x = _x()
    p = _prepare(resnet_ir)
    p.module.eval()
    keep = {"layer1.0": [False], "layer1.1": [False], "layer2.1": [False]}
    p.set_alpha(_gate_values(p, keep))
    gated = p.module(x)
    convert(p, keep)
    torch.testing.assert_close(p.module(x), gated, rtol=1e-5, atol=1e-6)


def test_removed_heads_equal_gates_at_zero(vit_ir):
    x = _x()
    p = _prepare(vit_ir, "head")
    keep = {"blocks.0.attn": [True, False, True, False], "blocks.1.attn": [True] * 4,
            "blocks.2.attn": [False, False, False, True]}
    p.set_alpha(_gate_values(p, keep))
    gated = p.module(x)
    info = convert(p, keep)
    assert info["removed_heads"] == {"blocks.0.attn": [1, 3], "blocks.2.attn": [0, 1, 2]}
    a0, a2 = p.module.get_submodule("blocks.0.attn"), p.module.get_submodule("blocks.2.attn")
    assert (a0.num_heads, tuple(a0.qkv.weight.shape), tuple(a0.proj.weight.shape)) == (2, (24, 16), (16, 8))
    assert (a2.num_heads, tuple(a2.qkv.weight.shape)) == (1, (12, 16))
    torch.testing.assert_close(p.module(x), gated, rtol=1e-5, atol=1e-6)


def test_convert_refuses_to_remove_every_head(vit_ir):
    p = _prepare(vit_ir, "head")
    keep = {s.name: [False] * 4 for s in p.structures}
    with pytest.raises(PassError, match="every head"):
        convert(p, keep)


# ---- proxies -------------------------------------------------------------------------------------

THETA = [torch.tensor([1.0, -2.0, 0.0]), torch.tensor([[3.0, 0.0], [0.0, -4.0]])]


def test_norm_and_variance_proxies_match_hand_computation():
    flat = np.array([1, -2, 0, 3, 0, 0, -4], dtype=float)
    l0, l1, l2 = (2 + 2) / 2, (3 + 7) / 2, (math.sqrt(5) + 5) / 2
    var = flat.var(ddof=1)  # Bessel-corrected
    assert proxy("l0", THETA).item() == pytest.approx(l0)
    assert proxy("l1", THETA).item() == pytest.approx(l1)
    assert proxy("l2", THETA).item() == pytest.approx(l2)
    assert proxy("var", THETA).item() == pytest.approx(var)
    assert proxy("l0-var", THETA, c1=2.0).item() == pytest.approx(l0 - 2 * var)
    assert proxy("l1-var", THETA, c2=0.5).item() == pytest.approx(l1 - 0.5 * var)
    assert proxy("l0-l1", THETA, c3=3.0).item() == pytest.approx(l0 + 3 * l1)
    with pytest.raises(PassError, match="unknown proxy"):
        proxy("l3", THETA)


def test_synflow_of_a_two_layer_linear_net():
    """y = W2 W1 x on ones with |W|: R = 1ᵀ|W2||W1|1 = [1 1]·[3 7] = 10; each layer's
    Σ ∂R/∂θ ⊙ |θ| equals R (R is linear in each layer), so synflow = 2R = 20; N = 6 parameters."""
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 2.0], [-3.0, 4.0]]))
        net[1].weight.copy_(torch.tensor([[1.0, -1.0]]))
    obj = _Objective(Prepared(net, []), (2,), 1, "synflow", 0.0, (1, 1, 1))
    syn = obj._synflow([], create_graph=False)
    assert proxy("synflow", obj.theta, syn).item() == pytest.approx(20.0)
    assert proxy("nsynflow", obj.theta, syn).item() == pytest.approx(20.0 / 6)
    # γ = 0: the inner step leaves θ as it is; the objective negates maximized proxies
    assert obj.evaluate(torch.zeros(0)) == pytest.approx(-20.0)


def test_proxy_values_are_the_search_objectives_proxies(vit_ir):
    """One inner step shared by every proxy gives each proxy's raw value: the search's objective times its sign
    (var minimized, the rest maximized)."""
    p = _prepare(vit_ir)
    alpha = torch.tensor([1.5, -INF, 0.3])
    got = proxy_values(p, (1, 8, 8), alpha, gamma=1e-2, coefs=(2.0, 0.5, 3.0))
    assert list(got) == ["var", "l0", "l1", "l2", "synflow", "nsynflow", "l0-var", "l1-var", "l0-l1"]
    for kind, value in got.items():
        with _search_mode(p.module):
            objective = _Objective(p, (1, 8, 8), 1, kind, 1e-2, (2.0, 0.5, 3.0)).evaluate(alpha)
        assert value == pytest.approx(objective * (1 if kind == "var" else -1), rel=1e-6), kind


def test_proxy_values_of_an_ungated_model_are_its_parameters_proxies():
    """A model without gates (a pruned one) and γ = 0: the proxies of its own parameters."""
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 2.0], [-3.0, 4.0]]))
        net[1].weight.copy_(torch.tensor([[1.0, -1.0]]))
    got = proxy_values(Prepared(net, []), (2,), torch.zeros(0), ("var", "l1", "synflow"), gamma=0.0)
    flat = np.array([1, 2, -3, 4, 1, -1], dtype=float)
    assert got == pytest.approx({"var": flat.var(ddof=1), "l1": (10 + 2) / 2, "synflow": 20.0})


# ---- search --------------------------------------------------------------------------------------

def test_differentiable_search_moves_alpha_and_keeps_theta(vit_ir):
    p = _prepare(vit_ir)
    before = {k: v.clone() for k, v in p.module.state_dict().items() if "dario" not in k}
    r = search(p, (1, 8, 8), iterations=5, warm_start=3, gamma=1e-2, seed=0)
    assert r.alpha.shape == (3,) and len(r.curve) == 5 and r.evaluations == 1 + 3 + 5 + 1
    assert r.best <= r.warm_start
    after = {k: v for k, v in p.module.state_dict().items() if "dario" not in k}
    assert all(torch.equal(before[k], after[k]) for k in before)


def _first_step(p: Prepared, mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(α0, the α-gradient the mode should use at α0, the search's iterate after one step)."""
    obj = _Objective(p, (1, 8, 8), 1, "var", 1e-2, (1, 1, 1))
    alpha0 = torch.randn(3, generator=torch.Generator().manual_seed(0))  # warm_start=0: α0 ~ N(0, 1)
    alpha = alpha0.clone().requires_grad_(True)
    if mode == "reference-code":
        theta = [t.detach().requires_grad_(True) for t in obj.theta]
        obj._forward(theta, obj.set_alpha_tensors(alpha)).sum().backward()
    else:
        obj.value(obj.set_alpha_tensors(alpha), create_graph=True).backward()
    r = search(p, (1, 8, 8), mode=mode, iterations=1, warm_start=0, lr=0.1, weight_decay=0.0, gamma=1e-2, seed=0)
    return alpha0, alpha.grad, r.last


@pytest.mark.parametrize("mode", ["differentiable", "reference-code"])
def test_one_search_step_follows_the_modes_gradient(vit_ir, mode):
    """Adam's first step moves each α by lr·g/(|g| + eps): the differentiable mode descends
    ∂S(θ̃(α))/∂α, the reference-code mode ∂R_SF/∂α (what SunHaozhe/DARIO optimizes)."""
    p = _prepare(vit_ir)
    alpha0, grad, last = _first_step(p, mode)
    assert grad.abs().min() > 0
    torch.testing.assert_close(last, alpha0 - 0.1 * grad / (grad.abs() + 1e-8), rtol=1e-5, atol=1e-5)


def test_the_two_modes_use_different_gradients(vit_ir):
    p = _prepare(vit_ir)
    _, g_diff, _ = _first_step(p, "differentiable")
    _, g_ref, _ = _first_step(p, "reference-code")
    assert not torch.allclose(g_diff / g_diff.norm(), g_ref / g_ref.norm(), atol=1e-3)


def test_random_search_keeps_the_best_sample(vit_ir):
    p = _prepare(vit_ir)
    r = search(p, (1, 8, 8), mode="random", iterations=4, warm_start=2, seed=3)
    assert len(r.curve) == 6 and all(a >= b for a, b in zip(r.curve, r.curve[1:]))
    assert r.best == r.curve[-1]


def test_differentiable_objective_has_an_alpha_gradient(vit_ir):
    p = _prepare(vit_ir)
    obj = _Objective(p, (1, 8, 8), 1, "var", 1e-2, (1, 1, 1))
    alpha = torch.zeros(3, requires_grad=True)
    obj.value(obj.set_alpha_tensors(alpha), create_graph=True).backward()
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0


# ---- decisions -----------------------------------------------------------------------------------

def test_decide_threshold_count_min_blocks_and_heads(vit_ir):
    p = _prepare(vit_ir, "both")
    logit = lambda s: math.log(s / (1 - s))  # noqa: E731
    blocks = [0.9, 0.2, 0.5]
    heads = [[0.9, 0.1, 0.7, 0.2], [0.1, 0.2, 0.3, 0.4], [0.8] * 4]
    a = torch.tensor([logit(v) for v in blocks] + [logit(v) for h in heads for v in h])
    keep = decide(p.structures, a, 0.65)
    assert [keep[f"blocks.{i}"] for i in range(3)] == [[True], [False], [False]]
    assert keep["blocks.0.attn"] == [True, False, True, False]
    assert keep["blocks.1.attn"] == [False, False, False, True]  # never all heads: the highest σ stays
    assert decide(p.structures, a, 0.65, remove_blocks=1)["blocks.2"] == [True]
    assert [decide(p.structures, a, 0.95, min_blocks=2)[f"blocks.{i}"] for i in range(3)] == [[True], [False], [True]]
    # exactly 6 heads, lowest σ first: 0.1, 0.1, 0.2, 0.2, 0.3, (0.4 is blocks.1's last head: skipped), 0.7
    keep = decide(p.structures, a, 0.65, remove_heads=6)
    assert keep["blocks.0.attn"] == [True, False, False, False]
    assert keep["blocks.1.attn"] == [False, False, False, True]
    assert keep["blocks.2.attn"] == [True] * 4


def _logit(s: float) -> float:
    return math.log(s / (1 - s))


def test_decide_threshold_boundary_is_kept():
    """σ(α) ≥ threshold is kept: α = 0 gives σ exactly 0.5, kept at threshold 0.5; α = −1e-6 (σ = 0.49999975
    in float32) is not."""
    torch.manual_seed(0)
    p = prepare(TinyViT(depth=3), (_x(2),), "block")
    keep = decide(p.structures, torch.tensor([0.0, -1e-6, 1.0]), 0.5)
    assert [keep[f"blocks.{i}"] for i in range(3)] == [[True], [False], [True]]


@pytest.mark.parametrize("threshold,blocks,kept", [
    (0.65, [0.9, 0.2, 0.651, 0.649, 0.7, 0.1], [0, 2, 4]),
    (0.5, [0.5, 0.3, 0.4, 0.5, 0.2, 0.95], [0, 3, 5]),  # σ = 0.5 exactly (α = 0): on the boundary, kept
])
def test_threshold_mode_keeps_exactly_the_blocks_and_heads_at_or_above_it(monkeypatch, threshold, blocks, kept):
    """The pass in threshold mode (no remove_blocks / remove_heads) with the search's α set by hand: exactly
    the blocks with σ(α) ≥ threshold remain, removed ones are the identity, and in the kept blocks exactly
    the heads with σ ≥ threshold remain (heads of removed blocks go with their block)."""
    torch.manual_seed(0)
    ir = _ir(TinyViT(depth=6))
    heads = [[0.9, 0.1, threshold + 1e-3, threshold - 1e-3]] * 6
    alpha = torch.tensor([0.0 if b == 0.5 else _logit(b) for b in blocks] + [_logit(h) for hs in heads for h in hs])
    monkeypatch.setattr("compressor.passes.dario.search",
                        lambda *a, **k: SearchResult(alpha.clone(), 0.0, 0.0, evaluations=1))
    before = sum(q.numel() for q in ir.module.parameters())
    out = PruneDario(granularity="both", threshold=threshold)(ir, PassContext(progress=False))
    stats = out.history[-1].stats
    removed = [f"blocks.{i}" for i in range(6) if i not in kept]
    assert stats["removed_blocks"] == removed and stats["blocks"] == f"{len(kept)}/6 kept"
    assert stats["removed_heads"] == {f"blocks.{i}.attn": [1, 3] for i in kept}
    for i in range(6):
        block = out.module.get_submodule(f"blocks.{i}")
        if i in kept:
            assert block.attn.num_heads == 2 and tuple(block.attn.qkv.weight.shape) == (24, 16)
        else:
            assert isinstance(block, SkipBlock)
    per_block = sum(q.numel() for q in Block(16, 4).parameters())
    two_heads = 3 * 8 * 16 + 3 * 8 + 16 * 8  # qkv rows and bias, proj columns of two heads of 4 dims
    assert stats["params_after"] == before - per_block * (6 - len(kept)) - two_heads * len(kept)


# ---- the pass ------------------------------------------------------------------------------------

def test_pass_removes_blocks_and_records_the_search(vit_ir):
    out = PruneDario(iterations=3, warm_start=2, remove_blocks=2)(vit_ir, PassContext(progress=False))
    rec = out.history[-1]
    assert rec.stats["blocks"] == "1/3 kept" and len(rec.stats["removed_blocks"]) == 2
    assert out.module(_x()).shape == (3, 10)
    assert vit_ir.module(_x()).shape == (3, 10)  # the input IR is untouched
    assert rec.stats["params_after"] < rec.stats["params_before"]


def test_pass_finetunes_the_last_block_and_head(vit_ir):
    from compressor.data import build_data

    data = build_data("digits", {}, seed=0)
    out = PruneDario(iterations=2, warm_start=1, remove_blocks=1, finetune_epochs=1, distill_alpha=0.5)(
        vit_ir, PassContext(progress=False, data=data))
    ft = out.history[-1].stats["finetune"]
    kept = [s["name"] for s in out.history[-1].stats["structures"] if s["kept"][0]]
    last = kept[-1]
    expect = sum(q.numel() for n, q in out.module.named_parameters()
                 if n.startswith(last + ".") or n.startswith(("norm.", "head.")))
    assert ft["scope"] == "last-block" and ft["trainable_params"] == expect and ft["epochs"] == 1


def test_nothing_gateable_is_a_clear_error():
    ir = _ir(Plain())
    with pytest.raises(PassError, match="nothing to gate.*no residual block"):
        PruneDario(iterations=1, warm_start=0)(ir, PassContext(progress=False))
    with pytest.raises(PassError, match="no attention module"):
        PruneDario(iterations=1, warm_start=0, granularity="head")(_ir(TinyResNet()), PassContext(progress=False))


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, -0.1])
def test_threshold_outside_the_open_interval_is_rejected(value):
    with pytest.raises(ConfigError, match="threshold"):
        PruneDario(threshold=value)


@pytest.mark.parametrize("model,expected", [
    ("vit", [f"blocks.{i}" for i in range(12)]),
    ("resnet", ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1", "layer3.2"]),
    ("mobilenet-v2", None),
])
def test_zoo_models_gateable_structures(model, expected):
    """The zoo's DARIO models: every ViT block, ResNet blocks with identity shortcuts, MobileNetV2's
    inverted residuals with a residual connection; open gates leave the outputs unchanged."""
    from compressor.data import build_data
    from compressor.frontends.vision import InvertedResidual
    from compressor.frontends.zoo import Zoo

    data = build_data("digits", {}, seed=0)
    ir = Zoo(model=model).build(data, PassContext(progress=False))
    x = ir.example_inputs(batch=2)[0]
    ir.module.eval()
    ref = ir.module(x)
    p = prepare(ir.module, (x,), "both")
    blocks = [s.name for s in p.structures if s.kind == "block"]
    if expected is None:  # as many as the eager model has residual inverted-residual blocks
        from compressor.frontends.vision import MobileNetV2

        eager = MobileNetV2(1, 10, (8, 8), width=16)
        expected = [f"features.{i}" for i, m in enumerate(eager.features)
                    if isinstance(m, InvertedResidual) and m.use_res_connect]
        assert expected
    assert blocks == expected
    assert len([s for s in p.structures if s.kind == "heads"]) == (12 if model == "vit" else 0)
    assert torch.equal(p.module.eval()(x), ref)


def test_head_and_block_pruned_vit_exports_to_verified_onnx(vit_ir, tmp_path):
    """After convert (blocks removed, heads sliced, num_heads updated) the IR still exports, and the
    exporter's onnxruntime-vs-torch check passes."""
    import onnx

    from compressor.exporters.onnx import export_onnx

    out = PruneDario(granularity="both", iterations=2, warm_start=2, threshold=0.5, remove_blocks=1)(
        vit_ir, PassContext(progress=False))
    heads = [out.module.get_submodule(f"{s['name']}").num_heads for s in out.history[-1].stats["structures"]
             if s["kind"] == "heads" and s["name"].rsplit(".", 1)[0] not in out.history[-1].stats["removed_blocks"]]
    res = export_onnx(out, tmp_path / "model.onnx")
    assert res.primary.is_file() and onnx.load(str(res.primary)).graph.input[0].name
    assert len(heads) == 2 and all(1 <= h <= 4 for h in heads)


class HeadScaled(nn.Module):
    """q/k/v/o projections (the hf-qkv layout) plus a per-head scale vector that no adapter slices (a 1-D
    tensor of length heads could as well be a norm's weight): removing a head leaves it one too long."""

    def __init__(self, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(dim, dim) for _ in range(4))
        self.num_heads, self.head_dim = heads, dim // heads
        self.head_scale = nn.Parameter(torch.linspace(0.5, 1.5, heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (p(x).view(b, n, -1, self.head_dim).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        attn = (q @ k.transpose(-2, -1)).softmax(-1) * self.head_scale.view(1, -1, 1, 1)
        return self.o_proj((attn @ v).transpose(1, 2).reshape(b, n, -1))


class HeadScaledNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.attn, self.head = nn.Linear(8, 16), HeadScaled(), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attn(self.embed(x.flatten(1, 2))).mean(1))


def test_a_removal_that_breaks_the_model_is_one_clear_error():
    """The converted model is run before the pass returns it: the error names the module that fails."""
    with pytest.raises(PassError) as err:
        PruneDario(granularity="head", iterations=1, warm_start=1, remove_heads=1)(_ir(HeadScaledNet()),
                                                                                 PassContext(progress=False))
    msg = str(err.value)
    assert msg.startswith("prune-dario: after removing heads of attn (keeping [") and "\n" not in msg
    assert "the model does not run: attn (HeadScaled) fails with RuntimeError" in msg
