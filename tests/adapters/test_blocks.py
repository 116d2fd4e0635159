"""Block discovery: list elements and named sibling attributes, nesting (a stage of residual layers vs a
block with its own skip connection), the removal trial, SkipBlock keeping what the parent reads."""
from __future__ import annotations

import torch
import torch.nn as nn

from compressor.adapters.blocks import SkipBlock, find_blocks, remove_blocks, removal_error, run_error


class Res(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc = nn.Linear(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.fc(x))


class NamedBlocks(nn.Module):
    """Residual blocks held as attributes `block1`, `block2`, `block3`, not in a list."""

    def __init__(self, n: int = 3) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 8)
        for i in range(n):
            setattr(self, f"block{i + 1}", Res(8))
        self.n = n
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i in range(self.n):
            x = getattr(self, f"block{i + 1}")(x)
        return self.head(x)


class Stage(nn.Module):
    """Swin's stage: a list of residual layers, then an optional downsample its parent checks for."""

    def __init__(self, c: int, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Res(c), Res(c)])
        self.downsample = nn.Linear(c, 2 * c) if downsample else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for b in self.blocks:
            x = b(x)
        return (x if self.downsample is None else self.downsample(x)), x


class Staged(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.ModuleList([Stage(8, True), Stage(16, False)])
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x, _ = stage(x)
            if stage.downsample is not None:  # the parent reads an attribute of the stage, as Swin's encoder does
                x = x * 1.0
        return self.head(x)


class Wrapped(nn.Module):
    """`x + inner(x)` where inner is itself residual: the outer block has a skip connection of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = Res(8)
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(self.inner(x))


def _x(c: int = 4) -> tuple[torch.Tensor]:
    return (torch.randn(2, 5, c, generator=torch.Generator().manual_seed(0)),)


def test_named_sibling_residuals_are_blocks():
    assert [b.name for b in find_blocks(NamedBlocks(), _x())] == ["block1", "block2", "block3"]


def test_one_residual_attribute_is_a_wrapper_not_a_repeated_block():
    assert find_blocks(NamedBlocks(n=1), _x()) == []


def test_a_stage_of_residual_layers_is_not_a_block_its_layers_are():
    names = [b.name for b in find_blocks(Staged(), _x(8))]
    assert names == ["stages.0.blocks.0", "stages.0.blocks.1", "stages.1.blocks.0", "stages.1.blocks.1"]


def test_a_block_with_its_own_skip_connection_stays_the_block():
    model = nn.Sequential(nn.Linear(4, 8), Wrapped(), Wrapped(), nn.Linear(8, 3))
    assert [b.name for b in find_blocks(model, _x())] == ["1", "2"]


def test_removed_stage_keeps_the_attributes_its_parent_reads():
    model = Staged().eval()
    remove_blocks(model, [{"name": "stages.1", "tuple_len": 2}])
    stage = model.get_submodule("stages.1")
    assert isinstance(stage, SkipBlock) and stage.downsample is None
    with torch.no_grad():
        assert model(*_x(8)).shape == (2, 5, 3)


class ReadsChildParameter(nn.Module):
    """The parent multiplies by a parameter of block2: block2 is residual, but removing it breaks the model."""

    def __init__(self) -> None:
        super().__init__()
        self.block1, self.block2, self.block3 = Res(4), Res(4), Res(4)
        self.block2.gain = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block3(self.block2(self.block1(x)) * self.block2.gain)


def test_a_residual_whose_removal_breaks_the_model_is_not_a_block():
    model = ReadsChildParameter()
    assert [b.name for b in find_blocks(model, _x())] == ["block1", "block3"]
    why = removal_error(model, [{"name": "block2", "tuple_len": 0}], _x())
    assert "AttributeError" in why and "gain" in why
    assert isinstance(model.block2, Res)  # the trial put it back


def test_run_error_names_the_innermost_failing_module():
    model = nn.Sequential(nn.Linear(4, 8), nn.Sequential(nn.ReLU(), nn.Linear(6, 3)))
    why = run_error(model, _x(), None)
    assert why.startswith("1.1 (Linear) fails with RuntimeError")
    assert run_error(nn.Linear(4, 3), _x(), (2, 5, 3)) is None
    assert "instead of (2, 3)" in run_error(nn.Linear(4, 3), _x(), (2, 3))
