import pytest
import torch
import torch.nn as nn

from compressor.errors import ConfigError, PassError
from compressor.passes import PruneL1
from compressor.analysis import output_layers, penultimate_layers
from compressor.passes.prune_l1 import PRUNABLE


def groups_by_root(ir):
    return {g["root"]: g for g in ir.history[-1].stats["groups"]}


def test_output_layer_detected(seg_ir, cls_ir):
    assert output_layers(seg_ir.module, seg_ir.example_inputs(1), PRUNABLE) == {"head"}
    assert output_layers(cls_ir.module, cls_ir.example_inputs(1), PRUNABLE) == {"classifier"}


def test_penultimate_layers_detected(seg_ir, cls_ir):
    assert penultimate_layers(seg_ir.module, seg_ir.example_inputs(1), PRUNABLE) == {"dec1.0"}
    # through pool and flatten to the last conv
    assert penultimate_layers(cls_ir.module, cls_ir.example_inputs(1), PRUNABLE) == {"features.3.1.0"}


@pytest.mark.parametrize("mode", ["freeze", "follow"])
def test_protect_penultimate_keeps_the_head_inputs(seg_ir, mode):
    """Without the option the layer feeding the head loses filters; with it, it keeps all of them
    in both exclusion meanings, and the record says why."""
    plain = PruneL1(ratio=0.5, exclude_mode=mode)(seg_ir)
    assert plain.module.get_submodule("dec1.0").out_channels == 4
    out = PruneL1(ratio=0.5, exclude_mode=mode, protect_penultimate=True)(seg_ir)
    assert out.module.get_submodule("dec1.0").out_channels == 8
    g = groups_by_root(out)["dec1.0"]
    assert g["decision"] == "frozen" and "feeds the output layer" in g["reason"]
    assert out.parameter_count() > plain.parameter_count()
    # the rest is pruned as before
    assert out.module.get_submodule("stem.0").out_channels == 4


def test_prunes_and_keeps_function(seg_ir):
    out = PruneL1(ratio=0.5)(seg_ir)
    assert out.parameter_count() < seg_ir.parameter_count()
    # the input IR is untouched (passes work on a clone)
    assert seg_ir.module.get_submodule("stem.0").out_channels == 8
    assert out.module.get_submodule("stem.0").out_channels == 4
    y = out.module(*out.example_inputs(batch=3))
    assert y.shape == (3, 1, 32, 32)
    assert out.module.head.out_channels == 1


def test_freeze_semantics_depthwise(seg_ir):
    """Excluding depthwise convs freezes every group in which a depthwise conv loses output channels."""
    g = groups_by_root(PruneL1(ratio=0.5)(seg_ir))
    assert g["enc1.0"]["decision"] == "frozen"
    assert "down1.0.0 (depthwise conv)" in g["enc1.0"]["reason"]
    assert g["stem.0"]["decision"] == "pruned" and g["stem.0"]["pruned_channels"] == 4
    assert g["head"]["decision"] == "frozen" and "output layer" in g["head"]["reason"]
    # an excluded layer may still lose *input* channels: dec1 is pruned although head is protected
    assert g["dec1.0"]["decision"] == "pruned"


def test_depthwise_included_prunes_more(seg_ir):
    frozen = PruneL1(ratio=0.5)(seg_ir)
    free = PruneL1(ratio=0.5, exclude_depthwise=False)(seg_ir)
    assert free.parameter_count() < frozen.parameter_count()
    g = groups_by_root(free)
    assert g["enc1.0"]["decision"] == "pruned"
    assert free.module.get_submodule("down1.0.0").groups == free.module.get_submodule("down1.0.0").in_channels == 4


def test_min_out_channels_excludes_small_layers(seg_ir):
    g = groups_by_root(PruneL1(ratio=0.5, min_out_channels=9)(seg_ir))
    # stem and dec1 have 8 outputs (< 9): frozen; dec2 has 16: pruned
    assert g["stem.0"]["decision"] == "frozen" and "min_out_channels=9" in g["stem.0"]["reason"]
    assert g["dec2.0"]["decision"] == "pruned"


def test_filters_ranked_by_l1(seg_ir):
    """The kept filters of the stem conv are the ones with the largest L1 norms."""
    w = seg_ir.module.get_submodule("stem.0").weight.detach()
    with torch.no_grad():
        scale = torch.tensor([5.0, 0.1, 4.0, 0.2, 3.0, 0.3, 2.0, 0.4]).view(-1, 1, 1, 1)
        seg_ir.module.get_submodule("stem.0").weight.copy_(w.sign() * scale)
    out = PruneL1(ratio=0.5)(seg_ir)
    kept = out.module.get_submodule("stem.0").weight.detach().abs().flatten(1).mean(1)
    assert torch.allclose(kept.sort().values, torch.tensor([2.0, 3.0, 4.0, 5.0]))


def test_ratio_zero_changes_nothing(cls_ir):
    out = PruneL1(ratio=0.0)(cls_ir)
    assert out.parameter_count() == cls_ir.parameter_count()
    assert out.history[-1].changed is False


def test_ignore_patterns(cls_ir):
    g = groups_by_root(PruneL1(ratio=0.5, ignore=["features.0.*"])(cls_ir))
    assert g["features.0.0"]["decision"] == "frozen"
    with pytest.raises(PassError, match="match no module"):
        PruneL1(ratio=0.5, ignore=["nothing.*"])(cls_ir)


def test_bad_options():
    with pytest.raises(ConfigError, match="out of range"):
        PruneL1(ratio=1.5)
    with pytest.raises(ConfigError, match="did you mean 'ratio'"):
        PruneL1(ratoi=0.5)


def test_refuses_fp16(seg_ir):
    seg_ir.precision = "fp16"
    with pytest.raises(PassError, match="before fp16"):
        PruneL1(ratio=0.5)(seg_ir)


def test_history_recorded(cls_ir):
    out = PruneL1(ratio=0.5)(cls_ir)
    rec = out.history[-1]
    assert rec.name == "prune-l1" and rec.options["ratio"] == 0.5
    assert rec.stats["params_after"] == out.parameter_count()
    assert rec.stats["groups_pruned"] >= 1


def test_follow_mode_prunes_through_depthwise(seg_ir):
    """follow: depthwise convs are never ranked but shrink with their producer's group."""
    frozen = PruneL1(ratio=0.5)(seg_ir)
    follow = PruneL1(ratio=0.5, exclude_mode="follow")(seg_ir)
    g = groups_by_root(follow)
    enc1 = next(r for r in follow.history[-1].stats["groups"] if "enc1.0" in r["members"])
    assert enc1["decision"] == "pruned" and "following: down1.0.0 (depthwise conv)" in enc1["reason"]
    dw = follow.module.get_submodule("down1.0.0")
    assert dw.groups == dw.in_channels == dw.out_channels == 4
    assert follow.parameter_count() < frozen.parameter_count()
    assert g["head"]["decision"] == "frozen"  # output layers stay protected in follow mode too
    assert follow.module(*follow.example_inputs(2)).shape == (2, 1, 32, 32)


def test_follow_mode_never_ranks_excluded_filters(seg_ir):
    """The kept channels of a group are chosen by the producer's filters, not the depthwise ones."""
    with torch.no_grad():
        enc1 = seg_ir.module.get_submodule("enc1.0").weight
        dw = seg_ir.module.get_submodule("down1.0.0").weight
        enc1.copy_(enc1.sign() * torch.arange(1, 9, dtype=torch.float32).view(-1, 1, 1, 1))   # channels 4..7 strongest
        dw.copy_(dw.sign() * torch.arange(8, 0, -1, dtype=torch.float32).view(-1, 1, 1, 1))   # the opposite
    out = PruneL1(ratio=0.5, exclude_mode="follow")(seg_ir)
    kept = out.module.get_submodule("enc1.0").weight.abs().flatten(1).mean(1)
    assert torch.allclose(kept, torch.tensor([5.0, 6.0, 7.0, 8.0]))


def test_iterative_steps_reach_the_same_ratio(cls_ir):
    one = PruneL1(ratio=0.5)(cls_ir)
    three = PruneL1(ratio=0.5, iterative_steps=3)(cls_ir)
    assert three.parameter_count() == one.parameter_count()
    g = groups_by_root(three)
    assert g["features.0.0"]["pruned_channels"] == 4


def test_finetune_between_steps_needs_data_and_trains(cls_ir):
    from compressor.context import PassContext
    from compressor.data import build_data

    with pytest.raises(PassError, match="needs training data"):
        PruneL1(ratio=0.5, iterative_steps=2, finetune_epochs=1)(cls_ir)
    ctx = PassContext(data=build_data("digits", None), progress=False)
    out = PruneL1(ratio=0.5, iterative_steps=2, finetune_epochs=1)(cls_ir, ctx)
    assert len(out.history[-1].stats["finetune_losses"]) == 2


def test_group_importance_scope(seg_ir):
    a = PruneL1(ratio=0.5, importance="group")(seg_ir)
    assert a.parameter_count() == PruneL1(ratio=0.5)(seg_ir).parameter_count()  # same counts, other choice
    assert "ranked on" in groups_by_root(a)["stem.0"]["reason"]


def test_misaligned_channel_counts_are_counted_and_hinted(cls_ir, caplog):
    """ratio 0.3 of 8 or 16 channels leaves counts that are not multiples of 8; round_to: 8 aligns them."""
    import logging

    with caplog.at_level(logging.INFO, logger="compressor.passes.prune_l1"):
        out = PruneL1(ratio=0.3)(cls_ir)
    stats = out.history[-1].stats
    assert stats["misaligned_layers"] > 0
    assert "set round_to: 8" in caplog.text
    aligned = PruneL1(ratio=0.3, round_to=8)(cls_ir)
    assert aligned.history[-1].stats["misaligned_layers"] == 0
    for name, m in aligned.module.named_modules():
        if isinstance(m, nn.Conv2d) and m.groups == 1:
            assert m.out_channels % 8 == 0, name
