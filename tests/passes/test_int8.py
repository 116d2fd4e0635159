"""The int8 pass: calibration, BatchNorm folding, fake quantization, the recipe, the QDQ ONNX export
(both backends), the export's metric check, QAT, the pipeline contracts, exclude, and real models.

Everything runs on tiny models (seg-cnn width 8 on 32 px, DARTS on 16 px, a 2-layer HF ViT) with one or
two calibration batches."""
from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from compressor.context import PassContext
from compressor.data import ArrayDataset, DataBundle, build_data, make_loader
from compressor.errors import ConfigError, ExportError, PassError
from compressor.ir import ModelIR, TaskSpec
from compressor.passes.int8 import Int8, calibrate, fold_batchnorm
from compressor.quant import Int8Layer, int8_layers, quant_params


# tiny models: one intra-op thread is as fast, and much faster on 2 busy shared cores (conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def insar32():
    """insar-synthetic at 32 px: the input shape of conftest's seg_ir (2 × 32 × 32)."""
    return build_data("insar-synthetic", {"n_train": 32, "n_val": 16, "n_test": 8, "size": 32})


def _int8(ir: ModelIR, data: DataBundle, **kw) -> ModelIR:
    opts = {"calib_batches": 2, "batch_size": 8, "format": "qdq", **kw}  # format auto is tested on its own
    return Int8(**opts)(ir, PassContext(data=data, progress=False))


def _run(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module(x)


def _onnx_run(path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def _initializers(model) -> dict:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


# ---- 1. calibration -------------------------------------------------------------------------------

def _hand_net(relu: nn.Module | None) -> nn.Sequential:
    """conv0: channel 0 = 2x + 0.5, channel 1 = -x; (relu); conv1: sum of both channels."""
    c0, c1 = nn.Conv2d(1, 2, 1), nn.Conv2d(2, 1, 1)
    with torch.no_grad():
        c0.weight.copy_(torch.tensor([2.0, -1.0]).reshape(2, 1, 1, 1))
        c0.bias.copy_(torch.tensor([0.5, 0.0]))
        c1.weight.fill_(1.0)
        c1.bias.zero_()
    return nn.Sequential(c0, relu, c1) if relu is not None else nn.Sequential(c0, c1)


B1 = torch.tensor([[-1.0, 0.5], [2.0, 0.25]]).reshape(1, 1, 2, 2)
B2 = torch.tensor([[-3.0, 1.0], [0.0, 1.5]]).reshape(1, 1, 2, 2)
# conv0 on B1: ch0 -1.5 1.5 4.5 1.0, ch1 1 -0.5 -2 -0.25; on B2: ch0 -5.5 2.5 0.5 3.5, ch1 3 -1 0 -1.5


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_calibrate_records_hand_computed_ranges(method):
    net = _hand_net(nn.ReLU())
    asym = calibrate(net, ["0", "2"], [B1, B2], method, 100.0, symmetric=False)
    assert asym["0"]["in"] == [-3.0, 2.0] and asym["0"]["out"] == [-5.5, 4.5]
    assert asym["0"]["tied_to"] is None
    # a ReLU returns a new tensor: conv1 quantizes its own input, relu(conv0) in [0, 4.5]
    assert asym["2"]["in"] == [0.0, 4.5] and asym["2"]["tied_to"] is None
    sym = calibrate(net, ["0", "2"], [B1, B2], method, 100.0, symmetric=True)
    assert sym["0"]["in"] == [-3.0, 3.0] and sym["0"]["out"] == [-5.5, 5.5]
    assert sym["2"]["in"] == [-4.5, 4.5]
    # every range contains 0: positive inputs give (0, max)
    pos = calibrate(net, ["0", "2"], [torch.full((1, 1, 2, 2), 0.5), torch.full((1, 1, 2, 2), 1.5)], method, 100.0,
                    symmetric=False)
    assert pos["0"]["in"] == [0.0, 1.5] and pos["0"]["out"] == [-1.5, 3.5]


@pytest.mark.parametrize("batches", [[B1], [B1, B2]], ids=["1-batch", "2-batches"])
def test_calibrate_relu_between_is_not_tied(batches):
    r = calibrate(_hand_net(nn.ReLU()), ["0", "2"], batches, "minmax", 99.99, symmetric=False)
    assert r["2"]["tied_to"] is None and r["2"]["in"] == [0.0, 4.5]


def test_calibrate_conv_conv_is_tied_one_batch():
    r = calibrate(_hand_net(None), ["0", "1"], [B1], "minmax", 99.99, symmetric=False)
    assert r["1"]["in"] is None and r["1"]["tied_to"] == "0"
    assert r["1"]["own_in"] == r["0"]["out"] == [-2.0, 4.5]


def test_calibrate_conv_conv_is_tied_two_batches():
    r = calibrate(_hand_net(None), ["0", "1"], [B1, B2], "minmax", 99.99, symmetric=False)
    assert r["1"]["in"] is None and r["1"]["tied_to"] == "0"


def test_calibrate_inplace_relu_between_is_not_tied():
    r = calibrate(_hand_net(nn.ReLU(inplace=True)), ["0", "2"], [B1], "minmax", 99.99, symmetric=False)
    assert r["2"]["tied_to"] is None and r["2"]["in"] == [0.0, 4.5]


# ---- 2. BatchNorm folding -------------------------------------------------------------------------

def _bn(c: int, seed: int) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(torch.rand(c, generator=g) * 3 + 0.2)
        bn.weight.copy_(torch.randn(c, generator=g))
        bn.bias.copy_(torch.randn(c, generator=g))
    return bn.eval()


class SharedOutput(nn.Module):
    """The conv's output feeds the BatchNorm and is also added back: folding would change the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = _bn(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_fold_batchnorm_keeps_outputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False), _bn(3, 1), nn.ReLU()).eval()
    x = torch.randn(4, 2, 8, 8, generator=torch.Generator().manual_seed(5))
    ref = _run(net, x)
    folded, pairs = fold_batchnorm(net, (torch.randn(2, 2, 8, 8),))
    assert pairs == [["0", "1"]]
    assert isinstance(folded[1], nn.Identity) and folded[0].bias is not None
    torch.testing.assert_close(_run(folded, x), ref, rtol=0, atol=1e-5)


def test_fold_batchnorm_skips_a_conv_output_used_elsewhere():
    torch.manual_seed(0)
    net = SharedOutput().eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    ref, w = _run(net, x), net.conv.weight.detach().clone()
    out, pairs = fold_batchnorm(net, (x,))
    assert pairs == []
    assert isinstance(out.bn, nn.BatchNorm2d) and torch.equal(out.conv.weight, w)
    assert torch.equal(_run(out, x), ref)
    # beside a foldable pair: only that one is folded (the one-by-one path)
    mixed = nn.Sequential(nn.Sequential(nn.Conv2d(3, 3, 1), _bn(3, 3)), SharedOutput()).eval()
    ref = _run(mixed, x)
    out, pairs = fold_batchnorm(mixed, (x,))
    assert pairs == [["0.0", "0.1"]]
    assert isinstance(out[0][1], nn.Identity) and isinstance(out[1].bn, nn.BatchNorm2d)
    torch.testing.assert_close(_run(out, x), ref, rtol=0, atol=1e-5)


# ---- 3. the pass on seg-cnn: IR, size, recipe, reload -----------------------------------------------

def test_int8_pass_on_seg_cnn_and_reload(seg_ir, insar32, tmp_path):
    q = _int8(seg_ir, insar32, backend="onnxruntime-cpu")
    assert q.precision == "int8" and seg_ir.precision == "fp32"
    layers = int8_layers(q.module)
    assert all(isinstance(m, Int8Layer) and not m.symmetric for m in layers.values())
    convs = [n for n, m in q.module.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(n.endswith(".inner") and n[:-len(".inner")] in layers for n in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in q.module.modules())  # all 12 folded
    # size: one byte per quantized weight, the rest (biases, ranges) at their dtype
    sd = q.module.state_dict()
    int8_keys = {f"{n}.inner.weight" for n in layers}
    expected = sum(t.numel() if k in int8_keys else t.numel() * t.element_size() for k, t in sd.items())
    assert int8_keys <= set(sd) and q.state_bytes() == expected
    assert q.state_bytes() < 0.35 * seg_ir.state_bytes()
    stats = q.history[-1].stats
    assert stats["bytes_after"] == expected and stats["folded_bn"] == 12 and stats["quantized_layers"] == len(layers)
    # the recipe: fold-bn then int8, ranges as plain JSON data equal to the module's buffers
    fold, edit = q.recipe.edits[-2:]
    assert fold["kind"] == "fold-bn" and len(fold["pairs"]) == 12 and edit["kind"] == "int8"
    assert edit["activations"] == "uint8" and set(edit["layers"]) == set(layers)
    assert json.loads(json.dumps(edit)) == edit and json.loads(json.dumps(fold)) == fold
    for name, spec in edit["layers"].items():
        for key, buf in (("in", "in_range"), ("out", "out_range")):
            rng = spec[key]
            assert rng is None or (len(rng) == 2 and all(type(v) is float for v in rng)
                                   and rng == getattr(layers[name], buf).tolist())
    # saved and rebuilt from the recipe: the same fake-quant outputs, exactly
    q.save(tmp_path / "q")
    back = ModelIR.load(tmp_path / "q")
    assert back.precision == "int8" and back.state_bytes() == q.state_bytes()
    assert set(int8_layers(back.module)) == set(layers)
    x = q.example_inputs(3, seed=2)[0]
    assert torch.equal(_run(back.module, x), _run(q.module, x))
    xb = next(iter(make_loader(insar32.val, 8)))[0]
    assert torch.equal(_run(back.module, xb), _run(q.module, xb))


# ---- 4. QDQ ONNX vs the torch fake-quant module -------------------------------------------------------

@pytest.mark.parametrize("backend, zp_dtype", [("tensorrt", np.int8), ("onnxruntime-cpu", np.uint8)])
def test_qdq_onnx_matches_fake_quant(seg_ir, insar32, tmp_path, backend, zp_dtype):
    import onnx

    from compressor.exporters.onnx import export_onnx

    q = _int8(seg_ir, insar32, backend=backend)
    res = export_onnx(q, tmp_path / "int8.onnx")
    assert res.info["verified"] and res.info["precision"] == "int8"
    assert res.info["int8"]["activations"] == ("int8" if zp_dtype is np.int8 else "uint8")
    model = onnx.load(str(res.primary))
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    inits = _initializers(model)
    qnodes = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    zps = [inits[n.input[2]] for n in qnodes]
    assert all(z.dtype == zp_dtype for z in zps)
    if zp_dtype is np.int8:
        assert all(int(z) == 0 for z in zps)
    # the graph input is quantized with exactly stem.0's recorded range
    stem = int8_layers(q.module)["stem.0"]
    (q_in,) = [n for n in qnodes if n.input[0] == model.graph.input[0].name]
    scale, zp = quant_params(*stem.in_range.tolist(), stem.symmetric)
    assert float(inits[q_in.input[1]]) == pytest.approx(scale, rel=1e-6) and int(inits[q_in.input[2]]) == zp
    # every conv weight is stored as int8
    int8_shapes = sorted(tuple(v.shape) for v in inits.values() if v.dtype == np.int8 and v.ndim == 4)
    assert int8_shapes == sorted(tuple(m.inner.weight.shape) for m in int8_layers(q.module).values())
    # onnxruntime vs the torch fake-quant module: within a few quantization steps of the output
    head = int8_layers(q.module)["head"]
    out_scale, _ = quant_params(*head.out_range.tolist(), head.symmetric)
    for x in (q.example_inputs(4, seed=7)[0], next(iter(make_loader(insar32.val, 8)))[0]):
        diff = np.abs(_onnx_run(res.primary, x) - _run(q.module, x).numpy()).max()
        assert diff <= 3 * out_scale, (diff, out_scale)
    if backend == "onnxruntime-cpu":  # the fp32 export of the same float model is over twice as large
        fp32 = export_onnx(seg_ir, tmp_path / "fp32.onnx")
        assert fp32.info["precision"] == "fp32"
        assert fp32.primary.stat().st_size > 2 * res.primary.stat().st_size


# ---- 5. the export's metric check -------------------------------------------------------------------

def test_export_metric_check(seg_ir, insar32, tmp_path, monkeypatch):
    import compressor.evaluate.metrics as metrics
    from compressor.exporters.onnx import OnnxOptions, _export
    from compressor.quant import unwrap

    q = _int8(seg_ir, insar32, backend="onnxruntime-cpu")
    res = _export(q, tmp_path / "ok" / "model.onnx", OnnxOptions(max_metric_drop=100), data=insar32)
    check = res.info["int8"]["metric_check"]
    loader = make_loader(insar32.val, 32)
    fp32 = metrics.evaluate_module(unwrap(copy.deepcopy(q.module)), loader, q.task)["iou"] * 100
    int8 = metrics.evaluate_onnx(res.primary, loader, q.task)["iou"] * 100
    assert check["metric"] == "iou"
    assert check["fp32"] == pytest.approx(fp32, abs=1e-3) and check["int8"] == pytest.approx(int8, abs=1e-3)
    assert check["drop"] == pytest.approx(fp32 - int8, abs=2e-3)

    real = metrics.evaluate_onnx

    def worse(*args, **kwargs):
        out = dict(real(*args, **kwargs))
        out["iou"] -= 0.25  # 25 points below what the graph really scores
        return out

    monkeypatch.setattr(metrics, "evaluate_onnx", worse)
    target = tmp_path / "bad" / "model.onnx"
    with pytest.raises(ExportError, match="max_metric_drop") as e:
        _export(q, target, OnnxOptions(max_metric_drop=5.0), data=insar32)
    assert "iou" in str(e.value)
    assert not target.exists() and not list(target.parent.glob("*"))


# ---- 6. QAT -----------------------------------------------------------------------------------------

SIGMA, OUTLIER, K = 1e-3, 0.3, 1000.0


@pytest.fixture
def outlier_case():
    """A 2-class problem (label: sum of the 4×4 input > 0) solved exactly by a hand-set conv, on inputs of
    std 1e-3 with two outlier pixels of ±0.3: minmax calibration gives the input a scale of 0.3/127, about
    2.4 std, so PTQ loses most of the signal; QAT learns a tighter input range."""
    from compressor.frontend import input_spec_from, lower

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 4, 4, generator=g) * SIGMA
    x[3, 0, 1, 2], x[17, 0, 2, 1] = OUTLIER, -OUTLIER
    y = (x.sum(dim=(1, 2, 3)) > 0).long()
    task = TaskSpec("classification", 2)
    ds = ArrayDataset(x, y)
    bundle = DataBundle("outliers", task, (1, 4, 4), (-OUTLIER, OUTLIER), ds, ds, ds)
    net = nn.Sequential(nn.Conv2d(1, 2, 4), nn.Flatten())
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[0] -= K
        net[0].weight[1] += K
        net[0].bias.zero_()
    ir = lower(net, [input_spec_from((1, 4, 4), (-OUTLIER, OUTLIER))], task)
    return ir, bundle, x, y


def _quality(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    logits = _run(module, x)
    return float(nn.functional.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


def test_qat_recovers_ptq_loss_and_exports_learned_ranges(outlier_case, tmp_path):
    import onnx

    from compressor.exporters.onnx import export_onnx

    ir, bundle, x, y = outlier_case
    kw = {"backend": "tensorrt", "calib_batches": 2, "batch_size": 32}
    ptq = _int8(ir, bundle, **kw)
    qat = _int8(ir, bundle, **kw, qat={"epochs": 4, "lr": 2e-2, "batch_size": 8})
    loss_f, acc_f = _quality(ir.module, x, y)
    loss_p, acc_p = _quality(ptq.module, x, y)
    loss_q, acc_q = _quality(qat.module, x, y)
    assert acc_f == 1.0 and acc_p <= 0.85 and loss_p > loss_f + 0.5  # PTQ clearly worse than float
    assert loss_q < loss_p - 0.5 * (loss_p - loss_f) and acc_q > acc_p  # QAT recovers at least half the loss gap
    stats = qat.history[-1].stats["qat"]
    assert stats["epochs"] == 4 and len(stats["losses"]) == 4
    # the ranges are learned (the input range shrank), back in buffers, and they are what the export uses
    p_in = int8_layers(ptq.module)["0"].in_range.tolist()
    layer = int8_layers(qat.module)["0"]
    q_in = layer.in_range.tolist()
    assert p_in == pytest.approx([-OUTLIER, OUTLIER])
    assert q_in[0] < 0 < q_in[1] and q_in[1] < 0.5 * p_in[1]
    assert isinstance(layer.in_range, torch.Tensor) and "in_range" in dict(layer.named_buffers())
    res = export_onnx(qat, tmp_path / "qat.onnx")
    model = onnx.load(str(res.primary))
    inits = _initializers(model)
    graph_input = model.graph.input[0].name
    (q_node,) = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == graph_input]
    want, zp = quant_params(q_in[0], q_in[1], symmetric=True)
    assert float(inits[q_node.input[1]]) == pytest.approx(want, rel=1e-6) and int(inits[q_node.input[2]]) == zp == 0
    assert want < quant_params(*p_in, symmetric=True)[0] / 2


def test_qat_keeps_a_range_trained_past_zero(outlier_case):
    ir, bundle, x, y = outlier_case
    ptq = _int8(ir, bundle, backend="tensorrt", calib_batches=2, batch_size=32)
    qat = _int8(ir, bundle, backend="tensorrt", calib_batches=2, batch_size=32,
                qat={"epochs": 5, "lr": 5e-2, "batch_size": 8})
    lo, hi = int8_layers(qat.module)["0"].in_range.tolist()
    assert hi > 0 and lo < 0
    assert _quality(qat.module, x, y)[0] < _quality(ptq.module, x, y)[0]


# ---- 7. pipeline contracts --------------------------------------------------------------------------

def _pipeline(passes: str, data: bool = True) -> str:
    from conftest import TINY_PIPELINE

    head, rest = TINY_PIPELINE.split("passes:\n")
    tail = rest[rest.index("export:"):]
    text = f"{head}passes: {passes}\n{tail}"
    if not data:
        text = "model: {frontend: zoo, model: seg-cnn, width: 4}\n" + f"passes: {passes}\n"
    return text


@pytest.mark.parametrize("passes, fragments", [
    ("[int8, prune-l1]", ["passes[1] prune-l1", "gets int8"]),
    ("[int8, fp16]", ["passes[1] fp16"]),
    ("[fp16, int8]", ["passes[1] int8", "fp16", "run int8 instead of fp16"]),
    ("[int8, int8]", ["passes[1] int8", "already int8"]),
])
def test_pipeline_refuses_bad_int8_chains(passes, fragments):
    from compressor.pipeline import Pipeline

    with pytest.raises(ConfigError) as e:
        Pipeline.from_text(_pipeline(passes))
    for f in fragments:
        assert f in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_pipeline_accepts_prune_then_int8():
    from compressor.pipeline import Pipeline

    p = Pipeline.from_text(_pipeline("[prune-l1, {int8: {calib_batches: 1}}]"))
    assert [s.name for s in p.passes] == ["prune-l1", "int8"]


def test_fp16_after_int8_message_names_int8():
    from compressor.pipeline import Pipeline

    with pytest.raises(ConfigError, match="int8"):
        Pipeline.from_text(_pipeline("[int8, fp16]"))


def test_int8_needs_data(seg_ir):
    from compressor.pipeline import Pipeline

    with pytest.raises(ConfigError, match=r"passes\[0\] int8: .*needs data"):
        Pipeline.from_text(_pipeline("[int8]", data=False))
    with pytest.raises(PassError, match="needs training data"):
        Int8()(seg_ir, PassContext(progress=False))


# ---- 8. exclude -------------------------------------------------------------------------------------

def test_exclude_keeps_layer_float(seg_ir, insar32):
    q = _int8(seg_ir, insar32, calib_batches=1, exclude=["head"])
    assert type(q.module.head) is nn.Conv2d and torch.equal(q.module.head.weight, seg_ir.module.head.weight)
    layers = int8_layers(q.module)
    assert "head" not in layers and "dec1.0" in layers and len(layers) == 12
    stats = q.history[-1].stats
    assert stats["fp32_layers"] == 1 and stats["quantized_layers"] == 12
    assert "head" not in q.recipe.edits[-1]["layers"]
    # the float head: 4 bytes per weight instead of 1, and no in/out range buffers (2 × 2 float32)
    full = _int8(seg_ir, insar32, calib_batches=1)
    assert q.state_bytes() == full.state_bytes() + 3 * q.module.head.weight.numel() - 16


def test_exclude_pattern_matching_nothing(seg_ir, insar32):
    with pytest.raises(PassError, match=r"nothing\*"):
        _int8(seg_ir, insar32, exclude=["head", "nothing*"])


# ---- 9. real models ---------------------------------------------------------------------------------
# (zoo seg-cnn: test_qdq_onnx_matches_fake_quant exports and verifies it for both backends)

def test_darts_network_exports_int8(insar, tmp_path):
    import onnx

    from compressor.exporters.onnx import export_onnx
    from compressor.frontends.darts.frontend import lower_genotype

    ir = lower_genotype("PC_DARTS_cifar", input_size=16, init_channels=4, layers=3, value_range=insar.input_range)
    q = _int8(ir, insar, calib_batches=1, backend="onnxruntime-cpu")
    layers = int8_layers(q.module)
    assert q.precision == "int8" and layers
    assert not [n for n, m in q.module.named_modules() if isinstance(m, nn.Conv2d) and not n.endswith(".inner")]
    res = export_onnx(q, tmp_path / "darts.onnx")
    assert res.info["verified"] and min(res.info["sign_agreement"].values()) >= 0.98
    assert res.info["int8"]["quantized_layers"] == len(layers)
    assert sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(res.primary)).graph.node) > 0


def _hf_vit():
    pytest.importorskip("transformers", reason="the [hf] extra (transformers) is part of [dev]")
    from test_real_models import _build

    return _build("hf-vit")


def _check_vit_int8(ir: ModelIR, q: ModelIR, path, **export_kw):
    import onnx

    from compressor.exporters.onnx import export_onnx

    linears = [n for n, m in ir.module.named_modules() if isinstance(m, nn.Linear)]
    layers = int8_layers(q.module)
    assert linears and set(linears) <= set(layers)
    assert all(isinstance(layers[n].inner, nn.Linear) and not layers[n].quant_output for n in linears)
    res = export_onnx(q, path, **export_kw)
    assert res.info["verified"] and min(res.info["class_agreement"].values()) >= 0.98
    model = onnx.load(str(res.primary))
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) > 0
    assert any(v.dtype == np.int8 and v.ndim == 2 for v in _initializers(model).values())
    return res


def test_hf_vit_int8_module_runs():
    ir, ctx = _hf_vit()
    q = Int8(backend="onnxruntime-cpu", calib_batches=1, batch_size=8)(ir, ctx)
    assert _run(q.module, q.example_inputs(2)[0]).shape == (2, 10)


def test_hf_vit_exports_int8(tmp_path):
    """Every Linear and the patch conv quantized. onnxsim merges the q/k/v MatMuls (one input) into one node,
    which would lose their per-layer scales: the export keeps the unsimplified graph and says why."""
    ir, ctx = _hf_vit()
    q = Int8(backend="onnxruntime-cpu", calib_batches=1, batch_size=8)(ir, ctx)
    assert isinstance(q.module.get_submodule("model.vit.embeddings.patch_embeddings.projection"), Int8Layer)
    res = _check_vit_int8(ir, q, tmp_path / "vit.onnx")
    assert res.info["simplified"] is False and "q_proj" in res.info["simplify_note"]


class _Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Nested(nn.Module):
    """One conv at the module path 'block.conv' (the legacy exporter names its node '/block/conv/Conv')."""

    def __init__(self) -> None:
        super().__init__()
        self.block = _Inner()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def test_nested_layer_exports_int8_with_legacy_exporter(insar, tmp_path):
    from compressor.exporters.onnx import export_onnx
    from compressor.frontend import input_spec_from, lower

    torch.manual_seed(0)
    ir = lower(_Nested(), [input_spec_from((2, 16, 16), insar.input_range)], TaskSpec("segmentation", 1))
    q = _int8(ir, insar, calib_batches=1, backend="onnxruntime-cpu")
    assert list(int8_layers(q.module)) == ["block.conv"]
    res = export_onnx(q, tmp_path / "nested.onnx", dynamo=False)
    assert res.info["exporter"] == "legacy" and res.info["verified"]


# ---- mixed precision, ONNX format, TensorRT -------------------------------------------------------

class _Fragile(nn.Module):
    """mask = x0 > 0, computed through three 1×1 convs. `fragile` sees the signal scaled to ~1e-3 beside one
    pixel of 1000 in every input: one int8 scale for that range (1000 / 127) rounds the signal to zero, so
    quantizing `fragile` alone erases the mask, while `a` and `b` quantize harmlessly."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.fragile, self.b = nn.Conv2d(2, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 1, 1)
        with torch.no_grad():
            self.a.weight.zero_()
            self.a.weight[:, 0] = 1.0
            self.fragile.weight.copy_(torch.eye(4).reshape(4, 4, 1, 1) * 1000.0)
            self.b.weight.fill_(0.25)
            for conv in (self.a, self.fragile, self.b):
                conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        spike = torch.zeros_like(h)
        spike[..., 0, 0] = 1000.0
        return self.b(torch.relu(self.fragile(h * 0.001 + spike)) * (spike == 0))  # b never sees the spike


def _sign_data(n: int = 32, size: int = 16) -> DataBundle:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((n, 2, size, size), generator=gen) * 2 - 1
    ds = ArrayDataset(x, (x[:, :1] > 0).float())
    return DataBundle("sign", TaskSpec("segmentation", 1), (2, size, size), (-1.0, 1.0), ds, ds, ds)


def test_mixed_ranks_the_fragile_layer_first_and_leaves_it_float():
    from compressor.frontend import input_spec_from, lower

    data = _sign_data()
    ir = lower(_Fragile(), [input_spec_from((2, 16, 16), (-1.0, 1.0))], TaskSpec("segmentation", 1))
    q = _int8(ir, data, backend="tensorrt", mixed={"max_drop": 5.0, "objective": "size", "batches": 2})
    stats = q.history[-1].stats
    table = {row["layer"]: row for row in stats["layers_table"]}
    assert stats["mixed"]["float_metric"] > 99  # the float model computes the mask
    assert table["fragile"]["drop"] > 50 and max(table["a"]["drop"], table["b"]["drop"]) < 5, table
    order = sorted(table, key=lambda n: (table[n]["drop"], table[n]["error"]), reverse=True)
    assert order[0] == "fragile"
    assert not table["fragile"]["int8"] and table["a"]["int8"] and table["b"]["int8"]
    assert set(int8_layers(q.module)) == {"a", "b"}
    assert stats["mixed"]["measured_drop"] <= 5.0
    assert table["a"]["group_speedup"] is None  # tensorrt: nothing timed here
    full = _int8(ir, data, backend="tensorrt")  # without mixed, the fragile layer ruins the mask
    x, y = data.val.x[:8], data.val.y[:8]
    assert ((_run(full.module, x) > 0) == (y > 0)).float().mean() < ((_run(q.module, x) > 0) == (y > 0)).float().mean()


def test_mixed_latency_objective_times_layer_kinds_on_onnxruntime(insar32):
    from compressor.frontends.darts.frontend import lower_genotype

    insar16 = build_data("insar-synthetic", {"n_train": 16, "n_val": 8, "n_test": 8, "size": 16})
    ir = lower_genotype("PC_DARTS_cifar", input_size=16, init_channels=4, layers=3, value_range=insar16.input_range)
    q = _int8(ir, insar16, calib_batches=1, backend="onnxruntime-cpu",
              mixed={"max_drop": 100.0, "objective": "latency", "batches": 1, "rounds": 1})
    mixed = q.history[-1].stats["mixed"]
    assert set(mixed["groups"]) == {"conv kxk", "pointwise conv", "depthwise conv"}
    assert set(mixed["latency_ms"]) == {"fp32", "conv kxk", "pointwise conv", "depthwise conv"}
    table = q.history[-1].stats["layers_table"]
    # with an unlimited drop budget, exactly the layers of the kinds measured faster in int8 are quantized
    faster = {g for g, v in mixed["groups"].items() if v["speedup"] > 1.0}
    assert {r["layer"] for r in table if r["int8"]} == {r["layer"] for r in table if r["kind"] in faster}
    assert set(int8_layers(q.module)) == {r["layer"] for r in table if r["int8"]}


def test_format_auto_measures_both_formats_and_the_exporter_follows(seg_ir, insar32, tmp_path):
    from compressor.exporters.onnx import export_onnx

    q = _int8(seg_ir, insar32, backend="onnxruntime-cpu", format="auto")
    stats = q.history[-1].stats
    assert set(stats["format_latency_ms"]) == {"qdq", "qoperator"}
    assert stats["format"] == min(stats["format_latency_ms"], key=stats["format_latency_ms"].get)
    q_op = _int8(seg_ir, insar32, backend="onnxruntime-cpu", format="qoperator")
    res = export_onnx(q_op, tmp_path / "qop.onnx")
    ops = {n.op_type for n in onnx.load(str(res.primary)).graph.node}
    assert res.info["int8"]["format"] == "QOperator" and "QLinearConv" in ops and res.info["verified"]
    with pytest.raises(PassError, match="format qoperator needs backend: onnxruntime-cpu"):
        _int8(seg_ir, insar32, backend="tensorrt", format="qoperator")


def test_tensorrt_exporter_writes_the_int8_qdq_graph_and_script(seg_ir, insar32, tmp_path):
    from compressor.exporters.tensorrt import TensorRTExporter

    q = _int8(seg_ir, insar32, backend="tensorrt")
    with pytest.raises(ExportError):  # no tensorrt here: the ONNX graph and the script stay for the device
        TensorRTExporter().export(q, tmp_path, PassContext(progress=False))
    ops = {n.op_type for n in onnx.load(str(tmp_path / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    script = (tmp_path / "build_engine.sh").read_text()
    assert "PRECISION_FLAGS=(--int8 --fp16)" in script
    u8 = _int8(seg_ir, insar32, backend="onnxruntime-cpu")
    with pytest.raises(ExportError, match="backend: tensorrt"):
        TensorRTExporter().export(u8, tmp_path / "u8", PassContext(progress=False))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (QAT under CUDA autocast)")
def test_qat_on_cuda_learns_ranges_and_exports(seg_ir, insar32, tmp_path):
    """QAT through the shared training loop on CUDA, where it runs under fp16 autocast: the fake quantization
    computes in fp32, the learned ranges come back on the CPU and the QDQ export verifies."""
    from compressor.exporters.onnx import export_onnx

    ptq = _int8(seg_ir, insar32, backend="tensorrt")
    ctx = PassContext(data=insar32, progress=False, device="cuda")
    q = Int8(calib_batches=2, batch_size=8, backend="tensorrt", qat={"epochs": 2, "lr": 1e-3, "batch_size": 8})(seg_ir, ctx)
    assert all(p.device.type == "cpu" for p in q.module.parameters())
    before = {n: m.in_range.clone() for n, m in int8_layers(ptq.module).items()}
    after = {n: m.in_range for n, m in int8_layers(q.module).items()}
    assert any(not torch.allclose(before[n], after[n]) for n in before)
    assert all(float(r[0]) == -float(r[1]) for r in after.values())  # symmetric ranges stay symmetric
    assert q.history[-1].stats["qat"]["epochs"] == 2
    res = export_onnx(q, tmp_path / "qat.onnx")
    assert res.info["verified"]


def test_agreement_ignores_near_ties_only():
    from compressor.evaluate.agreement import agreement

    ref = np.array([[-3.0, -1.0, 0.01, 1.0, 3.0]])  # std ≈ 2: the band is ≈ 0.1
    assert agreement("segmentation", np.array([[-3.0, -1.0, -0.01, 1.0, 3.0]]), ref) == 1.0  # the tie flipped
    assert agreement("segmentation", np.array([[-3.0, 1.0, 0.01, 1.0, 3.0]]), ref) == 0.75   # a confident one
    cls = np.array([[5.0, 4.99, 0.0], [5.0, 0.0, 0.0]])
    assert agreement("classification", np.array([[4.99, 5.0, 0.0], [5.0, 0.0, 0.0]]), cls) == 1.0
    assert agreement("classification", np.array([[5.0, 4.99, 0.0], [0.0, 5.0, 0.0]]), cls) == 0.0


def test_mixed_that_keeps_no_layer_leaves_an_fp32_model(seg_ir, insar32, tmp_path, monkeypatch):
    """When no layer kind runs faster in int8, the stage is the (BatchNorm-folded) float model, says so, and
    exports as fp32."""
    import compressor.passes.int8_mixed as mixed
    from compressor.exporters.onnx import export_onnx

    monkeypatch.setattr(mixed, "group_speedups",
                        lambda ir, module, ranges, groups, symmetric, rounds: ({g: 0.5 for g in groups}, {}))
    q = _int8(seg_ir, insar32, backend="onnxruntime-cpu", mixed={"batches": 1})
    assert q.precision == "fp32" and not int8_layers(q.module)
    assert "no layer ran faster in int8" in q.history[-1].stats["note"]
    x = seg_ir.example_inputs(2)[0]
    assert torch.allclose(_run(q.module, x), _run(seg_ir.module, x), atol=1e-4)
    assert export_onnx(q, tmp_path / "m.onnx").info["precision"] == "fp32"


def test_compact_drops_default_conv_attributes_and_shortens_names():
    from onnx import TensorProto, helper

    from compressor.precisions.int8 import compact

    w = helper.make_tensor("a_long_weight_name_QuantizeLinear_Output", TensorProto.FLOAT, [1, 1, 1, 1], [1.0])
    node = helper.make_node("Conv", ["input", w.name], ["some_long_intermediate_name"], name="conv_node",
                            auto_pad="NOTSET", group=1, dilations=[1, 1], strides=[2, 2], pads=[0, 0, 0, 0],
                            kernel_shape=[1, 1])
    relu = helper.make_node("Relu", ["some_long_intermediate_name"], ["logits"], name="relu_node")
    graph = helper.make_graph([node, relu], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], [w])
    model = helper.make_model(graph)
    compact(model)
    conv = model.graph.node[0]
    assert {a.name for a in conv.attribute} == {"strides", "kernel_shape"}  # non-defaults stay
    assert conv.input[0] == "input" and model.graph.node[1].output[0] == "logits"  # graph I/O names kept
    assert conv.input[1] == model.graph.initializer[0].name == "w0" and conv.output[0] == "t1"
    assert [n.name for n in model.graph.node] == ["n0", "n1"]
