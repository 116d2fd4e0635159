"""The ONNX exporter: opset read-back, dynamic batch, numerics check, fp16 graphs, fallbacks, atomicity."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.context import PassContext
from compressor.errors import ConfigError, ExportError
from compressor.exporters import onnx as onnx_exporter
from compressor.exporters.onnx import OnnxExporter, OnnxOptions, export_onnx
from compressor.ir import InputSpec, ModelIR, TaskSpec
from compressor.options import parse_options
from compressor.registry import EXPORTERS

ort = pytest.importorskip("onnxruntime")

PI = 3.1416


class TinySeg(nn.Module):
    """Conv-BN-ReLU, depthwise conv, stride-2 downsample, upsample x2, skip concat, 1x1 head."""

    def __init__(self, mode: str = "bilinear", c: int = 32) -> None:
        super().__init__()
        self.mode = mode
        self.stem = nn.Conv2d(2, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.pw = nn.Conv2d(c, c, 1)
        self.pool = nn.MaxPool2d(2)
        self.down = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(2 * c, 2 * c, 3, padding=1)
        self.head = nn.Conv2d(3 * c, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn(self.stem(x)))
        a = F.relu(self.pw(self.dw(a)))
        b = F.relu(self.down(self.pool(a)))  # 32 -> 16 -> 8
        b = F.relu(self.mid(b))
        if self.mode == "bilinear":
            b = F.interpolate(b, scale_factor=2, mode="bilinear", align_corners=False)
            b = F.interpolate(b, scale_factor=2, mode="bilinear", align_corners=False)
        else:
            b = F.interpolate(b, scale_factor=4, mode="nearest")
        return self.head(torch.cat([a, b], dim=1))


class TinyClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(x, 1))


def _with_bn_stats(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return module.eval()


def seg_ir(mode: str = "bilinear") -> ModelIR:
    torch.manual_seed(0)
    module = torch.fx.symbolic_trace(_with_bn_stats(TinySeg(mode)))
    return ModelIR(module, [InputSpec("x", (None, 2, 32, 32), value_range=(-PI, PI))],
                   TaskSpec("segmentation", 1))


def cls_ir() -> ModelIR:
    torch.manual_seed(1)
    module = torch.fx.symbolic_trace(_with_bn_stats(TinyClassifier()))
    return ModelIR(module, [InputSpec("image", (None, 3, 16, 16))], TaskSpec("classification", 10))


def opset_of(model: onnx.ModelProto) -> int:
    return next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))


def run_ort(path, ir: ModelIR, batch: int, seed: int = 7):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xs = [s.example(batch, seed).float() for s in ir.inputs]
    (out,) = sess.run(["logits"], {s.name: x.numpy() for s, x in zip(ir.inputs, xs)})
    with torch.no_grad():
        ref = ir.module.float()(*xs).numpy() if ir.precision == "fp32" else None
    return out, ref, xs


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture(scope="module")
def seg20(tmp_path_factory):
    """One fp32 dynamo export at opset 20, shared by the fp32 checks and the fp16 size comparison."""
    ir = seg_ir("bilinear")
    res = EXPORTERS.get_or_error("onnx")(opset=20).export(ir, tmp_path_factory.mktemp("fp32"), PassContext())
    return ir, res


# ---- options ----------------------------------------------------------------------------------

def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="opset"):
        parse_options(OnnxOptions, {"opset": 12}, "onnx")
    with pytest.raises(ConfigError, match="opset"):
        parse_options(OnnxOptions, {"opset": 99}, "onnx")
    with pytest.raises(ConfigError, match="did you mean 'opset'"):
        parse_options(OnnxOptions, {"opsett": 20}, "onnx")
    with pytest.raises(ConfigError, match="verify_batches"):
        parse_options(OnnxOptions, {"verify_batches": [0, 2]}, "onnx")
    with pytest.raises(ConfigError, match="verify_batches"):
        parse_options(OnnxOptions, {"verify_batches": []}, "onnx")
    opts = parse_options(OnnxOptions, {"opset": 18, "verify_batches": [1, 4]}, "onnx")
    assert opts.opset == 18 and tuple(opts.verify_batches) == (1, 4)


def test_registered_under_onnx():
    cls = EXPORTERS.get_or_error("onnx")
    assert cls is OnnxExporter
    assert cls().describe() == "onnx"
    assert cls(opset=18).describe() == "onnx{opset=18}"


# ---- fp32 export through the registry, dynamic batch, opset read-back ----------------------------

@pytest.mark.parametrize("opset,mode", [(18, "nearest"), (20, "bilinear")])
def test_segmentation_export(tmp_path, capfd, request, opset, mode):
    if opset == 20:
        ir, res = request.getfixturevalue("seg20")
    else:
        ir = seg_ir(mode)
        exporter = EXPORTERS.get_or_error("onnx")(opset=opset)
        res = exporter.export(ir, tmp_path, PassContext(seed=0))
        # the dynamo exporter's and onnxsim's chatter reaches neither stdout nor stderr
        assert capfd.readouterr() == ("", "")

    assert res.primary.name == "model.onnx" and res.files == [res.primary]
    assert res.primary.is_file() and leftovers(res.primary.parent) == ["model.onnx"]
    assert res.bytes == res.primary.stat().st_size == res.info["bytes"]
    model = onnx.load(str(res.primary))
    onnx.checker.check_model(model, full_check=True)
    assert opset_of(model) == opset == res.info["opset"]
    assert res.info["exporter"] == "dynamo"
    assert res.info["precision"] == "fp32"
    assert set(res.info["max_abs_diff"]) == {1, 2}
    assert max(res.info["max_abs_diff"].values()) < 1e-4
    assert res.info["sign_agreement"] == {1: 1.0, 2: 1.0}
    for key in ("simplified", "simplify_note", "onnx_version", "onnxruntime_version", "torch_version"):
        assert key in res.info
    assert [i.name for i in model.graph.input] == ["x"]
    assert [o.name for o in model.graph.output] == ["logits"]
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # dynamic batch

    for batch in (1, 3, 5):
        out, ref, _ = run_ort(res.primary, ir, batch)
        assert out.shape == (batch, 1, 32, 32)
        np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4)


def test_classifier_export(tmp_path):
    ir = cls_ir()
    res = export_onnx(ir, tmp_path)  # a directory gets model.onnx
    assert res.primary == tmp_path / "model.onnx"
    assert "sign_agreement" not in res.info
    assert [i.name for i in onnx.load(str(res.primary)).graph.input] == ["image"]
    for batch in (1, 3):
        out, ref, _ = run_ort(res.primary, ir, batch)
        assert out.shape == (batch, 10)
        np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4)


def test_export_does_not_touch_the_ir(tmp_path):
    ir = seg_ir()
    ir.module.half()
    ir.precision = "fp16"
    before = {k: v.clone() for k, v in ir.module.state_dict().items()}
    export_onnx(ir, tmp_path / "m.onnx", dynamo=False, verify=False)
    after = ir.module.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


# ---- fp16 -------------------------------------------------------------------------------------

def test_fp16_export(tmp_path, seg20):
    ir = seg_ir()
    ir.module.half()
    ir.precision = "fp16"
    res = export_onnx(ir, tmp_path / "model.onnx")
    assert res.info["precision"] == "fp16" and res.info["opset"] == 20
    model = onnx.load(str(res.primary))
    onnx.checker.check_model(model, full_check=True)

    inits = {i.name: i for i in model.graph.initializer}
    weights = [i for i in inits.values() if len(i.dims) >= 2]
    assert weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in weights)
    for value in list(model.graph.input) + list(model.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # Resize's scales stay float32 (the converter's default block list)
    constants = {o: n for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    resizes = [n for n in model.graph.node if n.op_type == "Resize"]
    assert resizes
    for node in resizes:
        if len(node.input) > 2 and node.input[2]:
            name = node.input[2]
            dtype = inits[name].data_type if name in inits else constants[name].attribute[0].t.data_type
            assert dtype == onnx.TensorProto.FLOAT
    assert res.bytes < 0.6 * seg20[1].bytes

    # within fp16 tolerance of the float32 torch model (the fp16 weights upcast)
    ref_module = ir.module.float()  # this IR is ours; upcasting it in place is fine here
    sess = ort.InferenceSession(str(res.primary), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = ir.inputs[0].example(batch, seed=3)
        (out,) = sess.run(None, {"x": x.numpy()})
        assert out.dtype == np.float32
        with torch.no_grad():
            ref = ref_module(x).numpy()
        np.testing.assert_allclose(out, ref, rtol=1e-2, atol=1e-2)


# ---- failures and fallbacks ---------------------------------------------------------------------

def test_numerics_failure_leaves_nothing(tmp_path, monkeypatch):
    real = onnx_exporter._run_torch
    monkeypatch.setattr(onnx_exporter, "_run_torch", lambda m, xs: [r + 1.0 for r in real(m, xs)])
    exporter = OnnxExporter(dynamo=False)
    with pytest.raises(ExportError, match="numerics check failed at batch 1") as err:
        exporter.export(seg_ir(), tmp_path, PassContext())
    assert "\n" not in str(err.value) and "verify: false" in str(err.value)
    assert leftovers(tmp_path) == []

    # an earlier artifact at the target is left as it was
    (tmp_path / "model.onnx").write_bytes(b"old")
    with pytest.raises(ExportError):
        exporter.export(seg_ir(), tmp_path, PassContext())
    assert leftovers(tmp_path) == ["model.onnx"] and (tmp_path / "model.onnx").read_bytes() == b"old"

    # verify: false skips the check
    res = OnnxExporter(dynamo=False, verify=False).export(seg_ir(), tmp_path, PassContext())
    assert res.info["verified"] is False and res.info["max_abs_diff"] == {}
    assert leftovers(tmp_path) == ["model.onnx"]


def test_zero_tolerance_fails_fp16(tmp_path):
    ir = cls_ir()
    ir.module.half()
    ir.precision = "fp16"
    with pytest.raises(ExportError, match="fp16_atol/fp16_rtol"):
        export_onnx(ir, tmp_path / "model.onnx", dynamo=False, fp16_atol=0.0, fp16_rtol=0.0,
                    verify_batches=[4])
    assert leftovers(tmp_path) == []


def _fail_dynamo(monkeypatch):
    real = torch.onnx.export

    def fake(*args, **kwargs):
        if kwargs.get("dynamo", True):
            raise RuntimeError("dynamo says no\nsecond line of a long story")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", fake)


def test_legacy_fallback(tmp_path, monkeypatch):
    _fail_dynamo(monkeypatch)
    ir = seg_ir()
    res = export_onnx(ir, tmp_path / "model.onnx")
    assert res.info["exporter"] == "legacy"
    assert "dynamo says no" in res.info["fallback_reason"] and "second line" not in res.info["fallback_reason"]
    model = onnx.load(str(res.primary))
    onnx.checker.check_model(model)
    assert opset_of(model) == 20
    for batch in (1, 3):
        out, ref, _ = run_ort(res.primary, ir, batch)
        np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4)


def test_both_exporters_fail(tmp_path, monkeypatch):
    def fake(*args, **kwargs):
        raise RuntimeError(f"no {'dynamo' if kwargs.get('dynamo', True) else 'legacy'}\ntraceback-ish")

    monkeypatch.setattr(torch.onnx, "export", fake)
    with pytest.raises(ExportError, match="both exporters") as err:
        export_onnx(seg_ir(), tmp_path / "model.onnx")
    msg = str(err.value)
    assert "no dynamo" in msg and "no legacy" in msg and "\n" not in msg
    assert leftovers(tmp_path) == []


def test_opset_conversion(tmp_path, monkeypatch):
    # the legacy exporter stops at opset 20: 23 is reached with onnx.version_converter
    res = export_onnx(seg_ir(), tmp_path / "a.onnx", dynamo=False, opset=23)
    assert res.info["opset"] == 23 and res.info["opset_converted_from"] == 20
    assert opset_of(onnx.load(str(res.primary))) == 23

    def broken(model, version):
        raise RuntimeError("no adapter")

    monkeypatch.setattr(onnx.version_converter, "convert_version", broken)
    with pytest.raises(ExportError, match=r"opset 20, not the requested 23"):
        export_onnx(seg_ir(), tmp_path / "b.onnx", dynamo=False, opset=23)
    assert not (tmp_path / "b.onnx").exists()


def test_simplify_off_and_failing(tmp_path, monkeypatch):
    ir = seg_ir()
    res = export_onnx(ir, tmp_path / "a.onnx", dynamo=False, simplify=False)
    assert res.info["simplified"] is False and res.info["simplify_note"] == "simplify: false"
    out, ref, _ = run_ort(res.primary, ir, 3)
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4)

    onnxsim = pytest.importorskip("onnxsim")

    def raises(model, **kwargs):
        raise RuntimeError("simplifier crashed")

    monkeypatch.setattr(onnxsim, "simplify", raises)
    res = export_onnx(ir, tmp_path / "b.onnx", dynamo=False)
    assert res.info["simplified"] is False and "simplifier crashed" in res.info["simplify_note"]
    assert res.primary.is_file()

    monkeypatch.setattr(onnxsim, "simplify", lambda model, **kwargs: (model, False))
    res = export_onnx(ir, tmp_path / "c.onnx", dynamo=False)
    assert res.info["simplified"] is False and "check" in res.info["simplify_note"]
    assert res.primary.is_file()


def test_too_large_for_one_file(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_exporter, "MAX_SINGLE_FILE_BYTES", 1000)
    with pytest.raises(ExportError, match="2 GB"):
        export_onnx(seg_ir(), tmp_path / "model.onnx")
    assert leftovers(tmp_path) == []


def test_fixed_batch_input_is_rejected(tmp_path):
    ir = cls_ir()
    ir.inputs = [InputSpec("image", (4, 3, 16, 16))]
    with pytest.raises(ExportError, match="fixed batch"):
        export_onnx(ir, tmp_path / "model.onnx")


def test_options_object_and_kwargs_are_exclusive(tmp_path):
    with pytest.raises(TypeError):
        export_onnx(cls_ir(), tmp_path / "m.onnx", OnnxOptions(), opset=18)
    with pytest.raises(ConfigError):
        export_onnx(cls_ir(), tmp_path / "m.onnx", opset=12)
