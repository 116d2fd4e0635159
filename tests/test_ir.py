import torch

from compressor.errors import FrontendError
from compressor.ir import ModelIR
from compressor.passes import PruneL1

import pytest


def test_save_load_roundtrip(tmp_path, seg_ir):
    pruned = PruneL1(ratio=0.5)(seg_ir)
    pruned.save(tmp_path / "ir.pt")
    back = ModelIR.load(tmp_path / "ir.pt")
    x = pruned.example_inputs(2)
    assert torch.equal(back.module(*x), pruned.module(*x))
    assert back.inputs == pruned.inputs and back.task == pruned.task
    assert [r.name for r in back.history] == ["prune-l1"]
    assert not list(tmp_path.glob("*.tmp"))


def test_clone_is_independent(seg_ir):
    c = seg_ir.clone()
    with torch.no_grad():
        c.module.get_submodule("head").weight.zero_()
    assert seg_ir.module.get_submodule("head").weight.abs().sum() > 0


def test_load_errors(tmp_path):
    with pytest.raises(FrontendError, match="no IR file"):
        ModelIR.load(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(FrontendError, match="not a readable IR file"):
        ModelIR.load(tmp_path / "junk.pt")
    torch.save({"a": 1}, tmp_path / "other.pt")
    with pytest.raises(FrontendError, match="not an IR file written by compressor"):
        ModelIR.load(tmp_path / "other.pt")


def test_summary_lists_modules_and_history(cls_ir):
    text = PruneL1(ratio=0.5)(cls_ir).summary()
    assert "classification (10 classes)" in text
    assert "features.0.0" in text and "classifier" in text
    assert "1. prune-l1{" in text
