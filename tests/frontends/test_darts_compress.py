"""The compression passes on DARTS networks: cells with concat, separable/dilated convs, FactorizedReduce."""
import onnx
import pytest
import torch

from compressor.exporters.onnx import export_onnx
from compressor.frontends import darts
from compressor.passes import FP16, PruneL1


@pytest.fixture(scope="module")
def dart_ir():
    return darts.lower("PC_DARTS_cifar", task="segmentation", in_channels=2, input_size=16, init_channels=4,
                       layers=3, value_range=(-3.1416, 3.1416))


def test_prune_fp16_onnx_chain(dart_ir, tmp_path):
    pruned = PruneL1(ratio=0.5, exclude_depthwise=False)(dart_ir)
    assert pruned.parameter_count() < dart_ir.parameter_count()
    half = FP16()(pruned)
    result = export_onnx(half, tmp_path / "m.onnx", dynamo=False, simplify=False)
    model = onnx.load(result.primary)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert max(result.info["max_abs_diff"].values()) < 0.05


def test_freeze_exclusion_on_darts_records_depthwise_blockers(dart_ir):
    out = PruneL1(ratio=0.5)(dart_ir)
    groups = out.history[-1].stats["groups"]
    frozen = [g for g in groups if g["decision"] == "frozen"]
    assert frozen and any("depthwise conv" in g["reason"] for g in frozen)
    assert any("output layer" in g["reason"] for g in frozen)
    x = dart_ir.example_inputs(2)
    assert out.module(*x).shape == dart_ir.module(*x).shape
