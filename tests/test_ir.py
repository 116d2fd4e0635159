"""The IR on disk: a directory (ir.json + weights.safetensors), rebuilt from its recipe, never unpickled."""
import json
import pickle

import pytest
import torch

from compressor.errors import FrontendError
from compressor.ir import IR_JSON, WEIGHTS, ModelIR, describe_directory
from compressor.passes import FP16, PruneL1


def test_save_load_roundtrip(tmp_path, seg_ir):
    pruned = PruneL1(ratio=0.5)(seg_ir)
    pruned.save(tmp_path / "ir")
    assert sorted(p.name for p in (tmp_path / "ir").iterdir()) == [IR_JSON, WEIGHTS]
    back = ModelIR.load(tmp_path / "ir")
    x = pruned.example_inputs(2)
    assert torch.equal(back.module(*x), pruned.module(*x))
    assert back.inputs == pruned.inputs and back.task == pruned.task
    assert [r.name for r in back.history] == ["prune-l1"]
    assert [e["kind"] for e in back.recipe.edits] == ["prune"]
    assert back.parameter_count() == pruned.parameter_count() < seg_ir.parameter_count()


def test_fp16_islands_roundtrip(tmp_path, seg_ir):
    half = FP16(keep_fp32=["head"])(PruneL1(ratio=0.5)(seg_ir))
    half.save(tmp_path / "ir")
    back = ModelIR.load(tmp_path / "ir")
    x = half.example_inputs(2)
    assert back.precision == "fp16" and torch.equal(back.module(*x), half.module(*x))
    assert back.module.get_submodule("head.inner").weight.dtype == torch.float32


def test_clone_is_independent(seg_ir):
    c = seg_ir.clone()
    with torch.no_grad():
        c.module.get_submodule("head").weight.zero_()
    assert seg_ir.module.get_submodule("head").weight.abs().sum() > 0


def test_an_ir_without_recipe_cannot_be_saved(tmp_path, seg_ir):
    with pytest.raises(FrontendError, match="no recipe"):
        seg_ir.replace(recipe=None).save(tmp_path / "ir")
    with pytest.raises(FrontendError, match="saved as a directory"):
        seg_ir.save(tmp_path / "ir.pt")


def test_load_errors(tmp_path, seg_ir):
    with pytest.raises(FrontendError, match="no IR at"):
        ModelIR.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FrontendError, match="holds no ir.json"):
        ModelIR.load(tmp_path / "empty")
    (tmp_path / "junk.txt").write_text("junk")
    with pytest.raises(FrontendError, match="is not a compressor IR; pickled files"):
        ModelIR.load(tmp_path / "junk.txt")
    torch.save({"a": 1}, tmp_path / "other.pt")
    with pytest.raises(FrontendError, match="is a pickle"):
        ModelIR.load(tmp_path / "other.pt")
    seg_ir.save(tmp_path / "ir")
    doc = json.loads((tmp_path / "ir" / IR_JSON).read_text())
    (tmp_path / "ir" / IR_JSON).write_text(json.dumps([doc]))
    with pytest.raises(FrontendError, match="not an IR document"):
        ModelIR.load(tmp_path / "ir")
    (tmp_path / "ir" / IR_JSON).write_text(json.dumps(doc))
    data = bytearray((tmp_path / "ir" / WEIGHTS).read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "ir" / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(FrontendError, match="does not match the sha256"):
        ModelIR.load(tmp_path / "ir")


def test_torch_recipe_needs_trust(tmp_path):
    from compressor.context import PassContext
    from compressor.frontends.torch import TorchModel

    spec = {"input_shape": [2, 16, 16], "task": "segmentation", "num_classes": 1,
            "search_path": str(__import__("pathlib").Path(__file__).parent / "frontends")}
    ir = TorchModel(factory="userpkg_models:tiny_seg", **spec).build(None, PassContext())
    ir.save(tmp_path / "ir")
    with pytest.raises(FrontendError, match="calling the user factory 'userpkg_models:tiny_seg', which runs code"):
        ModelIR.load(tmp_path / "ir")
    for trust in (True, "userpkg_models:tiny_seg"):
        back = ModelIR.load(tmp_path / "ir", trust_factory=trust)
        x = ir.example_inputs(2)
        assert torch.equal(back.module(*x), ir.module(*x))
    with pytest.raises(FrontendError, match="which runs code"):
        ModelIR.load(tmp_path / "ir", trust_factory="other:factory")


def test_describe_directory_reads_without_rebuilding(tmp_path, cls_ir):
    PruneL1(ratio=0.5)(cls_ir).save(tmp_path / "ir")
    doc = json.loads((tmp_path / "ir" / IR_JSON).read_text())
    doc["recipe"]["frontend"]["name"] = "no-such-frontend"  # rebuilding would fail: describing must not rebuild
    (tmp_path / "ir" / IR_JSON).write_text(json.dumps(doc))
    text = describe_directory(tmp_path / "ir")
    assert "classification (10 classes)" in text and "edit 1: prune{" in text
    assert "features.0.0" in text and "classifier" in text and "1. prune-l1{" in text


def test_summary_lists_modules_and_history(cls_ir):
    text = PruneL1(ratio=0.5)(cls_ir).summary()
    assert "classification (10 classes)" in text
    assert "features.0.0" in text and "classifier" in text
    assert "1. prune-l1{" in text and "edit 1: prune{" in text


def test_pickle_with_reduce_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(FrontendError, match="is a pickle"):
        ModelIR.load(bad)
    assert not marker.exists()
