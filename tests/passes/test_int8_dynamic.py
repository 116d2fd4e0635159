"""int8-dynamic: onnxruntime dynamic quantization of Linear layers, through the Pipeline and the CLI, on a
tiny Hugging Face ViT and a tiny CNN: smaller ONNX with DynamicQuantizeLinear/MatMulInteger, agreement with
the fp32 model, the torch mirror equal to onnxruntime, one-line errors, compress bench on the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from click.testing import CliRunner
from onnx import numpy_helper

from compressor.cli import main
from compressor.context import PassContext
from compressor.errors import ConfigError, ExportError, PassError
from compressor.pipeline import Pipeline
from compressor.registry import PASSES

SAMPLES = str(Path(__file__).resolve().parents[2] / "samples")
VIT = {"frontend": "torch", "factory": "user_models:hf_vit", "search_path": SAMPLES,
       "kwargs": {"layers": 2, "hidden": 32, "heads": 4, "patch": 2}, "train": {"epochs": 1, "batch_size": 32}}
CNN = {"frontend": "zoo", "model": "cls-cnn", "width": 16, "train": {"epochs": 1, "batch_size": 32}}
EVALUATE = {"max_samples": 64, "macs": False, "latency": {"backends": []}}


# tiny models: one intra-op thread is as fast, and much faster on 2 busy shared cores (conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _doc(model: dict, passes: list, name: str) -> dict:
    return {"name": name, "seed": 0, "data": {"name": "digits"}, "model": model, "passes": passes,
            "export": ["onnx"], "evaluate": EVALUATE}


def _weights(path: Path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


@pytest.fixture(scope="module")
def vit_runs(tmp_path_factory):
    """The tiny HF ViT, trained one epoch on digits: fp32 → onnx and int8-dynamic → onnx (one shared store)."""
    pytest.importorskip("transformers", reason="the [hf] extra (transformers) is part of [dev]")
    root = tmp_path_factory.mktemp("vit")
    fp32 = Pipeline.from_dict(_doc(VIT, [], "vit-fp32")).run(out=root / "fp32", progress=False, store=root / "store")
    dyn = Pipeline.from_dict(_doc(VIT, ["int8-dynamic"], "vit-dyn")).run(out=root / "dyn", progress=False,
                                                                          store=root / "store")
    return fp32, dyn


def test_vit_onnx_is_dynamically_quantized_smaller_and_agrees(vit_runs):
    fp32, dyn = vit_runs
    q_stage, export = dyn.stages[1], dyn.stages[2]
    assert q_stage.ir.precision == "int8-dynamic" and q_stage.record["precision"] == "int8-dynamic"
    stats = q_stage.ir.history[-1].stats
    assert stats["quantized_layers"] == 13  # 2 layers × (q, k, v, o, fc1, fc2) + the classifier
    assert stats["bytes_after"] < 0.45 * stats["bytes_before"]
    path, ref_path = export.output.artifact, fp32.stages[1].output.artifact
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= _ops(path)
    info = export.output.info["info"]
    assert info["precision"] == "int8-dynamic" and info["verified"]
    assert min(info["class_agreement"].values()) >= 0.98 and info["tolerance"] == {"min_agreement": 0.98}
    assert info["int8_dynamic"]["matmul_integer_nodes"] >= 9 and info["int8_dynamic"]["per_channel"] is True
    assert abs(info["int8_dynamic"]["metric_check"]["drop"]) <= 1.0  # the run has data: accuracy vs fp32
    int8_bytes = sum(w.nbytes for w in _weights(path).values() if w.dtype == np.int8 and w.ndim == 2)
    fp32_linear_bytes = sum(w.nbytes for w in _weights(ref_path).values() if w.ndim == 2 and w.dtype == np.float32)
    assert int8_bytes == fp32_linear_bytes // 4  # every Linear weight, one byte instead of four
    assert path.stat().st_size < 0.6 * ref_path.stat().st_size
    # the stage's torch metrics are the quantized model's, measured by the mirror of onnxruntime's arithmetic
    assert abs(q_stage.record["metrics"]["accuracy"] - export.record["metrics"]["accuracy"]) <= 1 / 64


def test_torch_mirror_equals_onnxruntime(vit_runs, tmp_path):
    """DynamicInt8Layer computes what DynamicQuantizeLinear + MatMulInteger compute (per channel, int8 and uint8)."""
    import onnxruntime as ort

    from compressor.exporters.onnx import export_onnx

    fp32, _ = vit_runs
    ir = fp32.stages[0].ir
    x = ir.example_inputs(4)[0]
    for opts in ({}, {"weight_type": "uint8"}, {"per_channel": False}):
        q = PASSES["int8-dynamic"](**opts)(ir, PassContext(progress=False))
        res = export_onnx(q, tmp_path / "m.onnx")
        sess = ort.InferenceSession(str(res.primary), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            mirror = q.module(x).numpy()
        assert np.abs(got - mirror).max() < 1e-5, opts
        # per tensor, onnxsim's merged q/k/v MatMul would share one scale: the unsimplified graph is kept
        assert res.info["simplified"] is (opts.get("per_channel", True))


def test_cnn_cli_run_and_bench(tmp_path):
    """The zoo CNN through the CLI: only its Linear head is quantized (convolutions stay fp32); bench reads the file."""
    cfg = tmp_path / "cnn.yaml"
    cfg.write_text(yaml.safe_dump(_doc(CNN, [{"int8-dynamic": {"weight_type": "int8"}}], "cnn-dyn")))
    r = CliRunner().invoke(main, ["run", str(cfg), "--out", str(tmp_path / "run"), "--store", str(tmp_path / "store")])
    assert r.exit_code == 0, r.output
    path = tmp_path / "run" / "02_onnx" / "model.onnx"
    ops = _ops(path)
    assert {"DynamicQuantizeLinear", "MatMulInteger", "Conv"} <= ops and "ConvInteger" not in ops
    int8 = sorted(w.shape for w in _weights(path).values() if w.dtype == np.int8)
    assert int8 == [(10,), (64, 10)]  # the classifier's weight (in → out) and its per-channel zero points
    r = CliRunner().invoke(main, ["bench", str(path), "--iters", "3", "--warmup", "1", "--min-seconds", "0"])
    assert r.exit_code == 0, r.output
    assert "int8-dynamic" in r.output and "onnxruntime-cpu" in r.output


@pytest.mark.parametrize("opts, fragment", [
    ({"weight_type": "int4"}, "weight_type"),
    ({"per_chanel": False}, "did you mean 'per_channel'"),
    ({"exclude": "classifier"}, "exclude"),
])
def test_bad_options_are_one_line_config_errors(tmp_path, opts, fragment):
    with pytest.raises(ConfigError, match=fragment) as e:
        PASSES["int8-dynamic"](**opts)
    assert "\n" not in str(e.value)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump(_doc(CNN, [{"int8-dynamic": opts}], "bad")))
    r = CliRunner().invoke(main, ["validate", str(cfg)])
    assert r.exit_code == 2 and fragment in r.output and len(r.output.strip().splitlines()) == 1, r.output


@pytest.mark.parametrize("passes, fragment", [
    ("[fp16, int8-dynamic]", "int8-dynamic takes an fp32 IR but gets fp16; run int8-dynamic instead of fp16"),
    ("[int8-dynamic, prune-l1]", "prune-l1 takes an fp32 IR but gets int8-dynamic; run prune-l1 before int8-dynamic"),
    ("[int8-dynamic, int8-dynamic]", "int8-dynamic: the IR is already int8-dynamic"),
    ("[int8, int8-dynamic]", "int8-dynamic takes an fp32 IR but gets int8; run int8-dynamic instead of int8"),
])
def test_chain_contracts(passes, fragment):
    text = f"data: {{name: digits}}\nmodel: {{frontend: zoo, model: cls-cnn}}\npasses: {passes}\n"
    with pytest.raises(ConfigError, match=fragment):
        Pipeline.from_text(text)


@pytest.mark.parametrize("exclude, simplified", [(["model.classifier"], True), (["*.attention.q_proj"], False)])
def test_exclude_keeps_layers_fp32(vit_runs, tmp_path, exclude, simplified):
    """Excluded Linear layers stay fp32 in torch and in the graph; onnxsim merging an excluded q_proj with the
    quantized k/v projections (one input) is refused, so the unsimplified graph is kept."""
    import fnmatch

    import torch.nn as nn

    from compressor.exporters.onnx import export_onnx
    from compressor.passes.int8_dynamic import DynamicInt8Layer

    ir = vit_runs[0].stages[0].ir
    q = PASSES["int8-dynamic"](exclude=exclude)(ir, PassContext(progress=False))
    kept = [n for n, m in q.module.named_modules() if isinstance(m, nn.Linear) and not n.endswith(".inner")]
    assert kept and all(any(fnmatch.fnmatch(n, p) for p in exclude) for n in kept)
    assert not any(isinstance(q.module.get_submodule(n), DynamicInt8Layer) for n in kept)
    res = export_onnx(q, tmp_path / "m.onnx")
    info = res.info["int8_dynamic"]
    assert res.info["simplified"] is simplified and info["float_weight_nodes"] == len(kept)
    float_weights = {w.shape for w in _weights(res.primary).values() if w.dtype == np.float32 and w.ndim == 2}
    for name in kept:  # each excluded layer's weight is still a float initializer (as (in, out) or (out, in))
        shape = tuple(ir.module.get_submodule(name).weight.shape)
        assert shape in float_weights or shape[::-1] in float_weights, name
    assert min(res.info["class_agreement"].values()) >= 0.98


def test_bad_exclude_patterns_fail_in_one_line(cls_ir):
    with pytest.raises(PassError, match=r"exclude pattern\(s\) \['head'\] match no module; Linear layers look like "
                                        r"classifier"):
        PASSES["int8-dynamic"](exclude=["head"])(cls_ir)
    with pytest.raises(PassError, match="leaves none of the 1 Linear layers"):
        PASSES["int8-dynamic"](exclude=["classifier"])(cls_ir)


def test_model_without_linear_stays_fp32(seg_ir):
    out = PASSES["int8-dynamic"]()(seg_ir, PassContext(progress=False))
    assert out.precision == "fp32" and not out.history[-1].changed
    assert "no Linear layer" in out.history[-1].stats["note"]


def test_tensorrt_refuses_it_in_one_line(cls_ir, tmp_path):
    from compressor.exporters.tensorrt import TensorRTExporter

    q = PASSES["int8-dynamic"]()(cls_ir)
    with pytest.raises(ExportError, match="no TensorRT engine for an int8-dynamic IR; export it with onnx") as e:
        TensorRTExporter().export(q, tmp_path / "trt", PassContext(progress=False))
    assert "\n" not in str(e.value) and not (tmp_path / "trt" / "model.onnx").exists()


def test_state_bytes_and_reload(cls_ir, tmp_path):
    from compressor.ir import ModelIR

    q = PASSES["int8-dynamic"](per_channel=False)(cls_ir)
    head = cls_ir.module.classifier.weight
    assert cls_ir.state_bytes() - q.state_bytes() == head.numel() * 3  # four bytes → one per head weight
    q.save(tmp_path / "ir")
    back = ModelIR.load(tmp_path / "ir")
    x = cls_ir.example_inputs(3)[0]
    with torch.no_grad():
        assert back.precision == "int8-dynamic" and torch.equal(back.module(x), q.module(x))
