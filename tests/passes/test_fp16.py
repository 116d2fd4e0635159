import pytest
import torch

from compressor.errors import PassError
from compressor.passes import FP16


def test_fp16_halves_weights_and_keeps_outputs(seg_ir):
    out = FP16()(seg_ir)
    assert out.precision == "fp16" and seg_ir.precision == "fp32"
    assert all(p.dtype == torch.float16 for p in out.module.parameters())
    assert out.state_bytes() < 0.6 * seg_ir.state_bytes()
    x = seg_ir.example_inputs(batch=2)
    ref = seg_ir.module(*x)
    got = out.module(*(t.half() for t in x)).float()
    assert torch.allclose(ref, got, atol=5e-2, rtol=5e-2)
    assert out.history[-1].stats["bytes_after"] < out.history[-1].stats["bytes_before"]


def test_fp16_twice_is_an_error(seg_ir):
    with pytest.raises(PassError, match="already fp16"):
        FP16()(FP16()(seg_ir))


def test_fp16_overflow_detected(cls_ir):
    with torch.no_grad():
        cls_ir.module.classifier.weight[0, 0] = 1e6
    with pytest.raises(PassError, match="overflow"):
        FP16()(cls_ir)


def test_keep_fp32_islands(seg_ir, tmp_path):
    import onnx

    from compressor.exporters.onnx import export_onnx

    out = FP16(keep_fp32=["head", "dec1"])(seg_ir)
    assert out.meta["fp32_modules"] == ["dec1", "head"]  # the outermost matching modules
    assert out.module.get_submodule("head.inner").weight.dtype == torch.float32
    assert out.module.get_submodule("stem.0").weight.dtype == torch.float16
    x = seg_ir.example_inputs(2)
    got = out.module(*(t.half() for t in x))
    assert got.dtype == torch.float16 and got.shape == (2, 1, 32, 32)
    assert torch.allclose(got.float(), seg_ir.module(*x), atol=5e-2, rtol=5e-2)
    # the exported fp16 graph keeps those modules' weights in fp32
    result = export_onnx(out, tmp_path / "m.onnx", simplify=False)
    model = onnx.load(result.primary)
    dtypes = {i.data_type for i in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in dtypes and onnx.TensorProto.FLOAT in dtypes
    head_w = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and tuple(i.dims) == (1, 8, 1, 1)]
    assert head_w, "the head's 1x1 conv weight should stay fp32"


def test_keep_fp32_islands_survive_simplification(seg_ir, tmp_path):
    """onnxsim drops the nodes' name scopes; the islands are tagged before it, so they stay fp32 (they became
    fp16 silently before)."""
    import onnx

    from compressor.exporters.onnx import export_onnx

    out = FP16(keep_fp32=["head"])(seg_ir)
    result = export_onnx(out, tmp_path / "m.onnx")  # simplify: true, the default
    assert result.info["simplified"]
    model = onnx.load(result.primary)
    fp32 = [tuple(i.dims) for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    assert (1, 8, 1, 1) in fp32, "the head's 1x1 conv weight should stay fp32"


def test_keep_overflow_instead_of_failing(cls_ir, tmp_path):
    with torch.no_grad():
        cls_ir.module.classifier.weight[0, 0] = 1e6
    out = FP16(keep_overflow=True)(cls_ir)
    assert out.meta["fp32_modules"] == ["classifier"]
    w = out.module.get_submodule("classifier.inner").weight
    assert w.dtype == torch.float32 and w[0, 0].item() == 1e6
    import onnx
    from onnx import numpy_helper

    from compressor.exporters.onnx import export_onnx

    result = export_onnx(out, tmp_path / "m.onnx", simplify=False)  # verified against torch inside
    weights = [numpy_helper.to_array(i) for i in onnx.load(result.primary).graph.initializer
               if i.data_type == onnx.TensorProto.FLOAT and tuple(i.dims) == (10, 32)]
    assert weights and weights[0].max() == 1e6  # stored in fp32, not as fp16 inf


def test_keep_fp32_unknown_pattern(seg_ir):
    with pytest.raises(PassError, match="match no module"):
        FP16(keep_fp32=["nothing*"])(seg_ir)
