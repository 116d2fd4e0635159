"""The hierarchical frontend (seed 002's space): genotype validation, hand-counted parameters, the three heads,
recipe rebuild, block configurations and MACs, and pipelines through prune-l1 / int8 / onnx, prune-dario, distill."""
from __future__ import annotations

import json

import onnx
import pytest
import torch

from compressor.adapters.blocks import find_blocks
from compressor.errors import ConfigError
from compressor.evaluate.stats import count_macs
from compressor.frontends import hierarchical as h
from compressor.frontends.vision import MobileNetV2
from compressor.ir import ModelIR, TaskSpec
from compressor.pipeline import Pipeline

# A: classification; stem 8, a residual sep stage, a stride-2 mbconv (e3, SE) stage.
GENO_A = {"stem": {"channels": 8},
          "stages": [{"channels": 8, "blocks": [{"op": "sep"}]},
                     {"channels": 16, "stride": 2, "blocks": [{"op": "mbconv", "expansion": 3, "se": True}]}]}
# B: segmentation; a 5×5 conv stage that widens (no residual) then skips, a max-pool stage that widens (1×1 conv).
GENO_B = {"stem": {"channels": 8},
          "stages": [{"channels": 16, "stride": 2, "blocks": [{"op": "conv", "kernel": 5}, {"op": "skip"}]},
                     {"channels": 24, "stride": 2, "blocks": [{"op": "pool", "pool": "max"}]}]}
# every op and option, for the pipelines
GENO_MIX = {"stem": {"channels": 8},
            "stages": [{"channels": 8, "blocks": [{"op": "conv", "se": True}, {"op": "skip"}, {"op": "sep"}]},
                       {"channels": 16, "stride": 2, "blocks": [{"op": "pool", "pool": "avg"},
                                                                {"op": "mbconv", "expansion": 3, "kernel": 5, "se": True},
                                                                {"op": "mbconv", "expansion": 6, "kernel": 7}]},
                       {"channels": 16, "stride": 2, "blocks": [{"op": "mbconv", "expansion": 1}]}]}


# tiny models: one intra-op thread is as fast, and much faster on 2 busy shared cores (conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _stage(**kw):
    return {"channels": 8, "blocks": [{"op": "sep"}], **kw}


# ---- genotype validation -----------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (lambda g: g["stages"][1]["blocks"][0].update(kernel=4),
     "genotype stages[1].blocks[0].kernel: 4 is not one of 3, 5, 7; set it to one of them"),
    (lambda g: g["stages"][1]["blocks"][0].update(expansion=4),
     "genotype stages[1].blocks[0].expansion: 4 is not one of 1, 3, 6"),
    (lambda g: g["stages"][0]["blocks"][0].update(expansion=3),
     "genotype stages[0].blocks[0].expansion: a sep block takes no expansion (only mbconv blocks do); remove it"),
    (lambda g: g["stages"][0]["blocks"].insert(0, {"op": "skip"}),
     "genotype stages[0].blocks[0].op: skip cannot be a stage's first block"),
    (lambda g: g["stages"][0]["blocks"][0].update(op="mbconvv"),
     "genotype stages[0].blocks[0].op: unknown op 'mbconvv'; did you mean 'mbconv'? valid: conv, sep, mbconv, skip, "
     "pool"),
    (lambda g: g["stages"][0]["blocks"][0].update(se="yes"),
     "genotype stages[0].blocks[0].se: expected true or false, got 'yes'"),
    (lambda g: g["stages"][1].update(stride=3), "genotype stages[1].stride: 3 is not one of 1, 2"),
    (lambda g: g["stages"][1].update(depth=3, blocks=[{"op": "sep"}, {"op": "skip"}]),
     "genotype stages[1].depth: depth 3 but 2 blocks; give one block (repeated depth times) or exactly 3 blocks"),
    (lambda g: g["stages"][1].update(chanels=3), "genotype stages[1]: unknown stage key 'chanels'; did you mean "
                                                 "'channels'?"),
    (lambda g: g["stages"][1].update(width_mult=0), "genotype stages[1].width_mult: expected a number in (0, 16]"),
    (lambda g: g.pop("stages"), "genotype: missing key 'stages'"),
    (lambda g: g["stem"].update(channels=0), "genotype stem.channels: 0 is out of range; valid: [1, 4096]"),
    (lambda g: g["stages"][0].update(blocks=[]), "genotype stages[0].blocks: expected a non-empty list of blocks"),
])
def test_genotype_errors_are_one_line_with_the_json_path(change, message):
    doc = json.loads(json.dumps(GENO_A))
    change(doc)
    with pytest.raises(ConfigError) as err:
        h.HierGenotype.from_dict(doc)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_genotype_errors_name_the_file_and_reach_the_pipeline(tmp_path):
    bad = json.loads(json.dumps(GENO_A))
    bad["stages"][1]["blocks"][0]["kernel"] = 4
    path = tmp_path / "g.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=rf"{path}: genotype stages\[1\].blocks\[0\].kernel: 4 is not one of"):
        h.get_genotype(str(path))
    with pytest.raises(ConfigError, match=r"model.*genotype stages\[1\].blocks\[0\].kernel: 4 is not one of 3, 5, 7"):
        Pipeline.from_dict({"model": {"frontend": "hierarchical", "genotype": bad}})
    with pytest.raises(ConfigError, match="unknown hierarchical genotype 'mobile-smal'; did you mean 'mobile-small'"):
        Pipeline.from_dict({"model": {"frontend": "hierarchical", "genotype": "mobile-smal"}})


def test_genotype_round_trips_and_depth_repeats_one_block(tmp_path):
    g = h.get_genotype({"stem": {"channels": 8}, "stages": [_stage(depth=3)]})
    assert g.stages[0].depth == 3 and len(set(g.stages[0].blocks)) == 1
    g.save(tmp_path / "g.json")
    again = h.get_genotype(str(tmp_path / "g.json"))
    assert again == g and again.name == "g"
    assert h.HierGenotype.from_dict(g.to_dict()) == g
    assert all(h.HierGenotype.from_dict(v.to_dict()) == v for v in h.GENOTYPES.values())


def test_a_genotype_files_content_is_part_of_the_stage_key(tmp_path):
    path = tmp_path / "g.json"
    path.write_text(json.dumps(GENO_A))
    key = Pipeline.from_dict({"model": {"frontend": "hierarchical", "genotype": str(path)}}).model.as_data()
    path.write_text(json.dumps({**GENO_A, "width_mult": 2.0}))
    again = Pipeline.from_dict({"model": {"frontend": "hierarchical", "genotype": str(path)}}).model.as_data()
    assert key["options"] == again["options"] and key["source"] != again["source"]
    assert again["source"]["genotype"]["width_mult"] == 2.0


# ---- parameters by hand ------------------------------------------------------------------------------

def test_parameter_count_by_hand_classification():
    ir = h.lower(GENO_A, task="classification", in_channels=1, input_size=8, num_classes=10)
    stem = 1 * 8 * 3 * 3 + 2 * 8                        # 3×3 conv 1→8, BN (weight + bias)
    sep = 8 * 3 * 3 + 2 * 8 + 8 * 8 + 2 * 8             # depthwise 3×3, BN, pointwise 8→8, BN
    se = (24 * 2 + 2) + (2 * 24 + 24)                   # squeeze to max(1, 8 // 4) = 2 channels, with biases
    mbconv = 8 * 24 + 2 * 24 + 24 * 9 + 2 * 24 + se + 24 * 16 + 2 * 16  # expand 8→24 (e3), dw 3×3, SE, project
    classifier = 16 * 10 + 10
    assert stem + sep + mbconv + classifier == 1468
    assert ir.parameter_count() == 1468


def test_parameter_count_by_hand_segmentation():
    ir = h.lower(GENO_B, task="segmentation", in_channels=2, input_size=16, num_classes=1)
    stem = 2 * 8 * 3 * 3 + 2 * 8
    conv = 8 * 16 * 5 * 5 + 2 * 16                      # 5×5 conv 8→16 stride 2, BN; the skip has none
    pool = 16 * 24 + 2 * 24                             # max-pool, then 1×1 conv 16→24 (the width changes), BN
    # skips: the stem (16×16, 8 ch) and stage 0 (8×8, 16 ch); the deepest map is stage 1 (4×4, 24 ch)
    decoder = (24 + 16) * 16 * 9 + 2 * 16 + (16 + 8) * 8 * 9 + 2 * 8
    head = 8 * 1 + 1
    assert stem + conv + pool + decoder + head == 11369
    assert ir.parameter_count() == 11369


def test_mobilenet_v2_genotype_has_the_reference_parameter_count():
    ir = h.lower("mobilenet-v2", task="classification", in_channels=3, input_size=32, num_classes=1000)
    assert ir.parameter_count() == sum(p.numel() for p in MobileNetV2(3, 1000, (224, 224)).parameters()) == 3504872


# ---- heads and lowering ------------------------------------------------------------------------------

@pytest.mark.parametrize("task, shape", [(TaskSpec("classification", 10), (2, 10)),
                                         (TaskSpec("segmentation", 1), (2, 1, 12, 10)),
                                         (TaskSpec("segmentation", 3), (2, 3, 12, 10))])
@pytest.mark.parametrize("genotype", [GENO_MIX, "mobile-small"])
def test_heads_give_task_shaped_logits(task, shape, genotype):
    ir = h.lower(genotype, task=task, in_channels=2, input_size=(12, 10))
    assert tuple(ir.module(*ir.example_inputs(2)).shape) == shape


def test_stride_two_stem_segmentation_reaches_the_input_resolution():
    g = {"stem": {"channels": 8, "stride": 2}, "stages": [_stage(stride=2)]}
    ir = h.lower(g, task=TaskSpec("segmentation", 1), in_channels=2, input_size=16)
    assert tuple(ir.module(*ir.example_inputs(1)).shape) == (1, 1, 16, 16)


def test_recipe_rebuild_equals_the_built_module(tmp_path):
    ir = h.lower(GENO_MIX, task=TaskSpec("segmentation", 3), in_channels=2, input_size=16, width_mult=1.5, seed=3)
    again = h.Hierarchical.rebuild(ir.recipe.frontend)
    assert again.state_dict().keys() == ir.module.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ir.module.state_dict().values()))
    x = ir.example_inputs(2)
    assert torch.equal(again.eval()(*x), ir.module(*x))
    loaded = ModelIR.load(ir.save(tmp_path / "ir"))
    assert torch.equal(loaded.module(*x), ir.module(*x))


# ---- block configurations and MACs -------------------------------------------------------------------

def test_block_configs_are_concrete_and_build_the_blocks():
    g = h.get_genotype(GENO_MIX)
    configs = h.block_configs(g, (2, 12, 10), width_mult=1.0)
    assert [c.name for c in configs] == ["stem", "stages.0.0", "stages.0.1", "stages.0.2", "stages.1.0",
                                         "stages.1.1", "stages.1.2", "stages.2.0"]
    mb = configs[5]
    assert (mb.op, mb.cin, mb.cout, mb.kernel, mb.expansion, mb.se, mb.stride, mb.in_hw, mb.residual) == \
        ("mbconv", 16, 16, 5, 3, True, 1, (6, 5), True)
    assert configs[4].in_hw == (12, 10) and configs[4].out_hw == (6, 5) and not configs[4].residual
    assert configs[7].out_hw == (3, 3)  # ceil(6/2) × ceil(5/2)
    net = h.HierarchicalNet(g, 2, 10, input_hw=(12, 10))
    for cfg in configs[1:]:
        block = h.make_block(cfg)
        x = torch.randn(1, cfg.cin, *cfg.in_hw)
        assert tuple(block.eval()(x).shape) == (1, cfg.cout, *cfg.out_hw)
        assert block.state_dict().keys() == net.get_submodule(cfg.name).state_dict().keys()
        assert count_macs(block, (x,)) == h.block_macs(cfg), cfg.name


def test_genotype_macs_equal_the_counted_network_less_the_classifier():
    g = h.GENOTYPES["mobile-small"]
    ir = h.lower(g, task="classification", in_channels=3, input_size=32, num_classes=10)
    assert h.genotype_macs(g, (3, 32, 32)) + 96 * 10 == count_macs(ir.module, ir.example_inputs(1))


def test_width_and_depth_multipliers():
    g = h.get_genotype({"stem": {"channels": 16}, "stages": [_stage(channels=24, depth=2)],
                        "width_mult": 0.5, "depth_mult": 2.0})
    configs = h.block_configs(g, (3,), width_mult=1.5)
    # stem 16 · 0.5 · 1.5 = 12 → 16 (nearest multiple of 8, ties up); stage 24 · 0.75 = 18 → 16 is more than 10%
    # below 18, so 24; 2 blocks · depth_mult 2 = 4 blocks, the first widening 16 → 24 (no residual)
    assert [c.cout for c in configs] == [16, 24, 24, 24, 24]
    assert [c.residual for c in configs[1:]] == [False, True, True, True]
    assert h.make_divisible(18) == 24 and h.make_divisible(4) == 8 and h.make_divisible(44) == 48


def test_skip_and_residual_rules_in_make_block():
    with pytest.raises(ValueError, match="skip is the identity and needs stride 1 and cin == cout"):
        h.make_block(h.BlockConfig("skip", 8, 16))
    with pytest.raises(ValueError, match="a residual needs"):
        h.make_block(h.BlockConfig("mbconv", 8, 16, residual=True))


def test_dario_finds_the_residual_blocks():
    ir = h.lower(GENO_MIX, task="classification", in_channels=1, input_size=8, num_classes=10)
    names = [b.name for b in find_blocks(ir.module, ir.example_inputs(1))]
    assert names == ["stages.0.0", "stages.0.2", "stages.1.1", "stages.1.2"]  # residual: stride 1, cin == cout


def test_prune_l1_keeps_depthwise_groups_and_prunes_the_rest():
    from compressor.passes import PruneL1

    ir = h.lower(GENO_MIX, task=TaskSpec("segmentation", 1), in_channels=2, input_size=16)
    out = PruneL1(ratio=0.5)(ir)
    groups = out.history[-1].stats["groups"]
    assert any(g["decision"] == "frozen" and "depthwise conv" in g["reason"] for g in groups)
    assert out.parameter_count() < ir.parameter_count()
    x = ir.example_inputs(2)
    assert out.module(*x).shape == ir.module(*x).shape


def test_student_is_the_teachers_genotype_narrower_and_shallower():
    teacher = h.lower(GENO_MIX, task="classification", in_channels=1, input_size=8, num_classes=10, width_mult=2.0)
    student = h.Hierarchical.student(teacher, width=8, depth=2)
    assert student.module.stem.cout == 8 and teacher.module.stem.cout == 16
    assert [len(s) for s in student.module.stages] == [2, 2, 1]  # at most 2 blocks per stage, the first ones
    assert student.parameter_count() < teacher.parameter_count() / 3
    assert tuple(student.module(*teacher.example_inputs(2)).shape) == (2, 10)
    rebuilt = h.Hierarchical.rebuild(student.recipe.frontend)
    assert rebuilt.state_dict().keys() == student.module.state_dict().keys()


def test_fp16_and_onnx_export_agree_with_torch(tmp_path):
    from compressor.exporters.onnx import export_onnx
    from compressor.passes import FP16

    ir = h.lower(GENO_MIX, task=TaskSpec("segmentation", 3), in_channels=2, input_size=16)
    result = export_onnx(FP16()(ir), tmp_path / "m.onnx", dynamo=False, simplify=False)
    model = onnx.load(result.primary)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert max(result.info["max_abs_diff"].values()) < 0.05


# ---- pipelines ---------------------------------------------------------------------------------------

EVALUATE = {"max_samples": 32, "batch_size": 16, "macs": False, "latency": {"backends": []}}
INSAR = {"name": "insar-synthetic", "n_train": 32, "n_val": 16, "n_test": 16, "size": 16}


def _doc(name: str, model: dict, passes: list, export: list, data: dict | None = None) -> dict:
    return {"name": name, "seed": 0, "data": data or INSAR,
            "model": {"frontend": "hierarchical", "train": {"epochs": 1, "batch_size": 16}, **model},
            "passes": passes, "export": export, "evaluate": EVALUATE}


def _report(out):
    return {s["name"]: s for s in json.loads((out / "report.json").read_text())["stages"]}


def test_pipeline_train_prune_int8_onnx(tmp_path):
    doc = _doc("hier-int8", {"genotype": GENO_MIX}, [{"prune-l1": {"ratio": 0.5}},
                                                     {"int8": {"backend": "onnxruntime-cpu", "calib_batches": 2}}],
               ["onnx"])
    result = Pipeline.from_dict(doc).run(out=tmp_path / "run", progress=False)
    st = _report(tmp_path / "run")
    assert list(st) == ["baseline", "prune-l1", "int8", "onnx"]
    assert st["prune-l1"]["params"] < st["baseline"]["params"]
    assert st["int8"]["precision"] == "int8"
    onnx_dir = result.stages[-1].output.artifact
    model = onnx.load(str(onnx_dir))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    assert json.loads((tmp_path / "run" / "03_onnx" / "stage.json").read_text())["info"]["verified"] is True


def test_pipeline_prune_dario_removes_a_block(tmp_path):
    doc = _doc("hier-dario", {"genotype": GENO_MIX},
               [{"prune-dario": {"iterations": 5, "warm_start": 2, "remove_blocks": 1}}], ["onnx"],
               data={"name": "digits"})
    result = Pipeline.from_dict(doc).run(out=tmp_path / "run", progress=False)
    st = _report(tmp_path / "run")
    assert st["prune-dario"]["params"] < st["baseline"]["params"]
    removed = [type(m).__name__ for m in result.ir.module.modules()].count("SkipBlock")
    assert removed == 1


def test_pipeline_distills_a_wider_genotype_into_a_narrower_one(tmp_path):
    doc = _doc("hier-distill", {"genotype": GENO_MIX, "width_mult": 2.0},
               [{"distill": {"student": "hierarchical", "student_init_channels": 8, "epochs": 1, "batch_size": 16}}],
               [], data={"name": "digits"})
    result = Pipeline.from_dict(doc).run(out=tmp_path / "run", progress=False)
    st = _report(tmp_path / "run")
    assert st["distill"]["params"] < st["baseline"]["params"] / 2
    assert result.ir.meta["width_mult"] == pytest.approx(1.0)  # 2.0 · 8 / 16 stem channels
    assert result.ir.module.stem.cout == 8


def test_sample_pipeline_parses():
    from pathlib import Path

    sample = Path(__file__).resolve().parents[2] / "samples" / "hierarchical_insar.yaml"
    p = Pipeline.from_yaml(sample)
    assert p.model.frontend.name == "hierarchical" and p.model.frontend.options.genotype == "mobile-small"
    assert [s.name for s in p.passes] == ["int8"] and [s.name for s in p.exports] == ["onnx"]
