"""Every frontend and every pass: the stage saved to disk and loaded back (rebuilt from its recipe, edits
replayed, weights loaded strictly) gives outputs equal to the in-memory IR (torch.equal)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compressor.context import PassContext
from compressor.data import build_data
from compressor.frontends.darts.frontend import lower_genotype
from compressor.frontends.zoo import Zoo
from compressor.ir import ModelIR
from compressor.passes import FP16, Distill, Finetune, PruneDario, PruneL1


def _same(ir: ModelIR, path: Path) -> ModelIR:
    ir.save(path)
    back = ModelIR.load(path, trust_factory=True)
    x = ir.example_inputs(2, seed=3)
    with torch.no_grad():
        assert torch.equal(back.module.eval()(*x), ir.module.eval()(*x)), path.name
    assert [r.name for r in back.history] == [r.name for r in ir.history]
    assert back.recipe == ir.recipe and back.precision == ir.precision
    return back


@pytest.fixture(scope="module")
def insar():
    return build_data("insar-synthetic", {"n_train": 16, "n_val": 8, "n_test": 8, "size": 16}, seed=0)


@pytest.fixture(scope="module")
def digits():
    return build_data("digits", {}, seed=0)


def test_zoo_seg_chain(tmp_path, insar):
    ctx = PassContext(data=insar, progress=False)
    ir = Zoo(model="seg-cnn", width=4).build(insar, ctx)
    ctx.teacher = ir
    _same(ir, tmp_path / "0")
    steps = [PruneL1(ratio=0.5, exclude_mode="follow", iterative_steps=2), Finetune(epochs=1, max_steps=1),
             Distill(epochs=1, max_steps=1, feature_layers=["dec1"]), FP16(keep_fp32=["head"])]
    for i, step in enumerate(steps, 1):
        ir = step(ir, ctx)
        _same(ir, tmp_path / str(i))
    assert [e["kind"] for e in ir.recipe.edits] == ["prune", "fp16"]


def test_darts_frontend_and_student(tmp_path, insar):
    ctx = PassContext(data=insar, progress=False)
    teacher = lower_genotype("PC_DARTS_cifar", task="segmentation", in_channels=2, input_size=16, init_channels=4,
                             layers=3, value_range=insar.input_range)
    ctx.teacher = teacher
    _same(teacher, tmp_path / "teacher")
    student = Distill(student="darts", student_init_channels=4, student_layers=3, epochs=1, max_steps=1)(teacher, ctx)
    assert student.recipe.frontend["name"] == "darts" and student.recipe.edits == []
    _same(student, tmp_path / "student")
    _same(PruneL1(ratio=0.5, exclude_mode="follow")(teacher, ctx), tmp_path / "pruned")


def test_darts_per_cell_genotype_stage(tmp_path):
    """A D-DARTS genotype (one gene per cell) lowers, expands by Algorithm 2, and reloads from its recipe."""
    from compressor.frontends.darts.genotypes import GENOTYPES, CellsGenotype

    g = GENOTYPES["PC_DARTS_cifar"]
    cells = tuple(g.reduce if i in (1, 3) else (g.normal[1], g.normal[0]) + g.normal[2:] for i in range(5))
    per_cell = CellsGenotype(cells, tuple(g.normal_concat for _ in range(5)), (1, 3)).validate()
    ir = lower_genotype(per_cell, task="segmentation", in_channels=2, input_size=16, init_channels=4, layers=8)
    assert ir.meta["genotype_json"] == per_cell.to_dict() and len(ir.module.cells) == 8
    _same(ir, tmp_path / "per-cell")


@pytest.mark.parametrize("model", ["vit", "resnet", "mobilenet-v2"])
def test_zoo_dario_stages(tmp_path, digits, model):
    ctx = PassContext(data=digits, progress=False)
    ir = Zoo(model=model, width=8, **({"depth": 2} if model != "mobilenet-v2" else {})).build(digits, ctx)
    out = PruneDario(granularity="both", iterations=1, warm_start=2, remove_blocks=1,
                     remove_heads=2 if model == "vit" else None)(ir, ctx)
    assert out.history[-1].stats["removed_blocks"]
    back = _same(out, tmp_path / model)
    assert back.parameter_count() == out.parameter_count() < ir.parameter_count()
    _same(FP16()(PruneL1(ratio=0.25, exclude_mode="follow")(out, ctx), ctx), tmp_path / f"{model}-more")
