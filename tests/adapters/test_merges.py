"""Channel merges: which layers read concatenated copies of one feature's channels (Swin's patch merging,
DINOv2's [CLS, mean] classifier), which look alike but are not (a flatten, a pooled channel), what the
pruner removes, the layouts refused in one line, and prune-l1 through them (replayed from the recipe)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from compressor.adapters.merges import Merge, MergeError, MergePruning, find_merges
from compressor.context import PassContext
from compressor.data import ArrayDataset, DataBundle
from compressor.errors import PassError
from compressor.frontends.torch import TorchModel
from compressor.ir import ModelIR, TaskSpec
from compressor.passes import PruneL1


class MLPBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(c), nn.Linear(c, 2 * c), nn.Linear(2 * c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(self.norm(x))))


class PatchMerge(nn.Module):
    """Swin's patch merging as transformers writes it: the 2×2 neighbours of a (B, H, W, C) map
    concatenated along channels → LayerNorm(4C) → Linear(4C → 2C)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm, self.reduction = nn.LayerNorm(4 * c), nn.Linear(4 * c, 2 * c, bias=False)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, _, c = x.shape
        x = x.view(b, *hw, c)
        x = torch.cat([x[:, r::2, s::2, :] for s in range(2) for r in range(2)], dim=-1).view(b, -1, 4 * c)
        return self.reduction(self.norm(x))


class MergeNet(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.embed = nn.Conv2d(1, c, 2, stride=2)
        self.block = MLPBlock(c)
        self.merge = PatchMerge(c)
        self.after = MLPBlock(2 * c)
        self.head = nn.Linear(2 * c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        return self.head(self.after(self.merge(self.block(t), (4, 4))).mean(1))


class ClsMeanNet(nn.Module):
    """DINOv2's head: a CLS token upstream, the classifier on [CLS, mean of the patch tokens]."""

    def __init__(self, c: int = 8, norm_head: bool = False) -> None:
        super().__init__()
        self.embed = nn.Conv2d(1, c, 2, stride=2)
        self.cls = nn.Parameter(torch.randn(1, 1, c))
        self.block = MLPBlock(c)
        self.norm = nn.LayerNorm(c)
        self.head = nn.Sequential(nn.LayerNorm(2 * c), nn.Linear(2 * c, 10)) if norm_head else nn.Linear(2 * c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = self.norm(self.block(torch.cat([self.cls.expand(len(t), -1, -1), t], 1)))
        return self.head(torch.cat([t[:, 0], t[:, 1:].mean(1)], dim=1))


def _x() -> tuple[torch.Tensor]:
    return (torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)),)


def test_patch_merging_is_one_opaque_merge_of_four_copies():
    assert find_merges(MergeNet(), _x()) == [
        Merge("merge", "block", 4, "merge.reduction", ["merge.norm"], [], opaque=True)]


def test_classifier_on_cls_and_mean_is_a_merge_of_two_copies():
    assert find_merges(ClsMeanNet(), _x()) == [Merge("head", "norm", 2, "head")]


def test_flatten_and_pooled_channels_are_not_merges():
    flatten = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 64, 10))
    pooled = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    assert find_merges(flatten, _x()) == [] and find_merges(pooled, _x()) == []


def test_copies_that_are_mixed_are_not_merges():
    class Mixed(MergeNet):  # the same concatenation, of a map whose channels were first mixed by a matmul
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = self.embed(x).flatten(2).transpose(1, 2)
            t = self.block(t)
            t = t @ torch.ones(8, 8)
            return self.head(self.after(self.merge(t, (4, 4))).mean(1))

    assert find_merges(Mixed(), _x()) == []


def test_merge_pruner_removes_a_channel_from_every_copy():
    model = MergeNet(c=8)
    norm_w, red_w = model.merge.norm.weight.detach().clone(), model.merge.reduction.weight.detach().clone()
    with MergePruning(model, find_merges(model, _x())) as merging:
        pruner = next(iter(merging.customized_pruners.values()))
        assert (pruner.get_in_channels(model.merge), pruner.get_out_channels(model.merge)) == (8, 16)
        pruner.prune_in_channels(model.merge, [1, 6])
        pruner.prune_out_channels(model.merge, [0])
        assert type(model.merge) is not PatchMerge  # torch-pruning finds its pruner by class
    assert type(model.merge) is PatchMerge
    keep = [i for i in range(32) if i % 8 not in (1, 6)]
    assert torch.equal(model.merge.norm.weight, norm_w[keep])
    assert torch.equal(model.merge.reduction.weight, red_w[1:, keep])


def test_opaque_merge_forward_is_unchanged_outside_tracing():
    model = MergeNet().eval()
    with torch.no_grad():
        ref = model(*_x())
        with MergePruning(model, find_merges(model, _x())) as merging:
            assert torch.equal(model(*_x()), ref)
            with merging.traced():
                assert torch.equal(model(*_x()), ref)


def test_normalized_copies_outside_a_module_are_refused_naming_the_layer():
    with pytest.raises(MergeError, match=r"^head\.0 reads 2 concatenated copies of the 8 channels of norm outside"):
        find_merges(ClsMeanNet(norm_head=True), _x())


def test_a_merge_module_with_other_layers_is_refused_naming_them():
    class MergeThenLinear(PatchMerge):
        def __init__(self, c: int) -> None:
            super().__init__(c)
            self.extra = nn.Linear(2 * c, 2 * c)

        def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
            return self.extra(super().forward(x, hw))

    model = MergeNet()
    model.merge = MergeThenLinear(8)
    with pytest.raises(MergeError, match=r"^merge\.norm reads 4 .* inside merge, whose layers are not LayerNorm → Linear "
                                         r"→ LayerNorm \(found: merge\.norm \(LayerNorm\), merge\.reduction \(Linear\), "
                                         r"merge\.extra \(Linear\)\)$"):
        find_merges(model, _x())


# ---- through prune-l1 ---------------------------------------------------------------------------

def _ir(name: str, **kwargs):
    """The model through the torch frontend (this file as the factory's module), so its stages reload."""
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ds = ArrayDataset(x, torch.arange(8) % 10)
    data = DataBundle("random", TaskSpec("classification", 10), (1, 8, 8), (0.0, 1.0), ds, ds, ds)
    torch.manual_seed(0)
    return TorchModel(factory=f"test_merges:{name}", kwargs=kwargs, search_path=str(Path(__file__).parent)).build(
        data, PassContext(data=data, progress=False))


@pytest.mark.parametrize("net", ["MergeNet", "ClsMeanNet"])
def test_prune_l1_removes_each_channel_from_every_copy_and_reloads(net, tmp_path):
    """torch-pruning alone prunes LayerNorm(4C) by the wrong count (it reads the slice along H as a slice of
    channels) and one half of [CLS, mean] (a CLS token upstream switches its concat mapping off)."""
    ir = _ir(net)
    out = PruneL1(ratio=0.5, exclude_mode="follow")(ir, PassContext(progress=False))
    m = out.module
    if net == "MergeNet":
        c = m.block.fc2.out_features
        assert c < 8 and m.merge.norm.normalized_shape == (4 * c,) and m.merge.reduction.in_features == 4 * c
    else:
        c = m.norm.normalized_shape[0]
        assert c < 8 and m.head.in_features == 2 * c
    assert list(out.history[-1].stats["merges"]) == ["merge" if net == "MergeNet" else "head"]
    out.save(tmp_path / "stage")
    back = ModelIR.load(tmp_path / "stage", trust_factory=True)  # rebuilds, replays the recipe, loads strictly
    x = ir.example_inputs(2)
    with torch.no_grad():
        assert torch.equal(back.module(*x), m(*x))


def test_prune_l1_refuses_an_unknown_copy_layout_in_one_line():
    with pytest.raises(PassError) as err:
        PruneL1(ratio=0.5)(_ir("ClsMeanNet", norm_head=True), PassContext(progress=False))
    assert str(err.value).startswith("prune-l1: head.0 reads 2 concatenated copies of the 8 channels of norm")
    assert "\n" not in str(err.value)
