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
