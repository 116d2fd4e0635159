"""Latency backends: names and aliases, dispatch by file, the ones that cannot run here, the CLI with
several backends, a pipeline that records skipped backends, and the GPU paths (skipped without one)."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper

from compressor.bench import run_bench, run_bench_many
from compressor.cli import main
from compressor.errors import ConfigError
from compressor.evaluate.latency import (
    ALIASES,
    BACKENDS,
    BackendUnavailable,
    latency_engine,
    latency_ir,
    latency_onnxruntime,
    normalize_backend,
)

ort = pytest.importorskip("onnxruntime")
HAS_CUDA = torch.cuda.is_available()
ORT_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
ORT_TRT = "TensorrtExecutionProvider" in ort.get_available_providers()
HAS_TRT = importlib.util.find_spec("tensorrt") is not None
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


def _onnx(path, shape=("N", 2, 8, 8)) -> None:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))


def _without_pruning(text: str) -> str:
    """The tiny pipeline without prune-l1 and finetune: faster, and no torch-pruning needed."""
    for block in ("  - prune-l1:\n      ratio: 0.5\n", "  - finetune:\n      epochs: 1\n      batch_size: 16\n"):
        assert block in text
        text = text.replace(block, "")
    return text


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


# ---- names ------------------------------------------------------------------------------------

def test_backend_names_and_aliases() -> None:
    assert BACKENDS == ("torch-cpu", "torch-cuda", "onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt",
                        "tensorrt")
    assert normalize_backend("torch") == "torch-cpu" and normalize_backend("onnxruntime") == "onnxruntime-cpu"
    assert all(normalize_backend(b) == b for b in BACKENDS) and set(ALIASES.values()) <= set(BACKENDS)
    with pytest.raises(ConfigError, match="unknown latency backend 'torch-gpu'; did you mean 'torch-cpu'"):
        normalize_backend("torch-gpu")


def test_latency_options_aliases_and_bad_name(tmp_path) -> None:
    from conftest import TINY_PIPELINE

    pytest.importorskip("torch_pruning")  # validating a pipeline loads every built-in pass
    from compressor.options import options_dict, parse_options
    from compressor.pipeline import LatencyOptions, Pipeline

    assert LatencyOptions().backends == ["torch-cpu", "onnxruntime-cpu"] and LatencyOptions().cuda_graphs is False
    opts = parse_options(LatencyOptions, {"backends": ["torch", "onnxruntime", "torch-cpu", "tensorrt"]}, "x")
    assert opts.backends == ["torch-cpu", "onnxruntime-cpu", "tensorrt"]  # aliases resolved, repeats dropped
    # an old pipeline and its new spelling measure the same thing: same cache key
    assert options_dict(opts) == options_dict(
        parse_options(LatencyOptions, {"backends": ["torch-cpu", "onnxruntime-cpu", "tensorrt"]}, "x"))
    p = tmp_path / "p.yaml"
    p.write_text(_without_pruning(TINY_PIPELINE).replace("    iters: 3\n", "    iters: 3\n    backends: [torch-cpu, onnxrt-cuda]\n"))
    with pytest.raises(ConfigError) as exc:
        Pipeline.from_yaml(p)
    msg = _one_line(exc)
    assert "p.yaml:" in msg and "unknown latency backend 'onnxrt-cuda'; did you mean 'onnxruntime-cuda'?" in msg


# ---- what cannot run here ------------------------------------------------------------------------

@pytest.mark.skipif(ORT_CUDA, reason="this onnxruntime has the CUDA provider")
def test_onnxruntime_cuda_missing_provider(tmp_path) -> None:
    _onnx(tmp_path / "m.onnx")
    with pytest.raises(BackendUnavailable) as exc:
        latency_onnxruntime(tmp_path / "m.onnx", backend="onnxruntime-cuda", warmup=0, iters=1)
    assert _one_line(exc).startswith("onnxruntime-cuda needs onnxruntime-gpu (pip install 'compressor[gpu]', "
                                     "which replaces the CPU onnxruntime)")


@pytest.mark.skipif(ORT_TRT, reason="this onnxruntime has the TensorRT provider")
def test_onnxruntime_tensorrt_missing_provider(tmp_path) -> None:
    _onnx(tmp_path / "m.onnx")
    with pytest.raises(BackendUnavailable) as exc:
        run_bench(tmp_path / "m.onnx", backend="onnxruntime-tensorrt", warmup=0, iters=1)
    assert _one_line(exc).startswith("onnxruntime-tensorrt needs onnxruntime-gpu and TensorRT's libraries")


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_onnxruntime_provider_that_fails_to_load(tmp_path, monkeypatch) -> None:
    """onnxruntime only warns when a listed GPU provider cannot load, and runs on CPU: we refuse."""
    if ORT_CUDA:
        pytest.skip("the CUDA provider is really available here")
    _onnx(tmp_path / "m.onnx")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(BackendUnavailable, match="CUDAExecutionProvider failed to load"):
        latency_onnxruntime(tmp_path / "m.onnx", backend="onnxruntime-cuda", warmup=0, iters=1)


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA GPU is available")
def test_torch_cuda_without_gpu(seg_ir) -> None:
    with pytest.raises(BackendUnavailable) as exc:
        latency_ir(seg_ir, "torch-cuda", warmup=0, iters=1)
    assert _one_line(exc).startswith("torch-cuda needs a CUDA GPU and none is available")


@pytest.mark.skipif(HAS_TRT and HAS_CUDA, reason="tensorrt and a CUDA GPU are available")
def test_tensorrt_unavailable(tmp_path) -> None:
    (tmp_path / "m.engine").write_bytes(b"not an engine")
    with pytest.raises(BackendUnavailable) as exc:
        latency_engine(tmp_path / "m.engine", warmup=0, iters=1)
    assert "tensorrt" in _one_line(exc).lower()
    with pytest.raises(ConfigError, match="no TensorRT engine"):
        latency_engine(tmp_path / "missing.engine")


# ---- CPU backends end to end, dispatch -----------------------------------------------------------

def test_cpu_backends_end_to_end(tmp_path, seg_ir) -> None:
    s32 = latency_ir(seg_ir, "torch-cpu", batch=2, threads=1, warmup=1, iters=3)
    s16 = latency_ir(seg_ir, "torch-cpu", batch=2, threads=1, warmup=1, iters=3, precision="fp16")
    assert (s32.backend, s32.batch, s32.threads, s32.extra["precision"]) == ("torch-cpu", 2, 1, "fp32")
    assert s16.extra["precision"] == "fp16" and s16.extra["dtype"] == "float16" and seg_ir.precision == "fp32"
    assert s32.device_median_ms is None and 0 < s32.min_ms <= s32.median_ms <= s32.p99_ms
    _onnx(tmp_path / "m.onnx")
    so = latency_onnxruntime(tmp_path / "m.onnx", batch=4, threads=1, warmup=1, iters=3, min_seconds=0.05)
    assert so.backend == "onnxruntime-cpu" and so.iters >= 3 and so.extra["io_binding"] is False
    assert so.extra["providers"] == ["CPUExecutionProvider"] and so.throughput == pytest.approx(4e3 / so.median_ms)
    with pytest.raises(ConfigError, match="cannot run an IR"):
        latency_ir(seg_ir, "onnxruntime-cpu")
    with pytest.raises(ConfigError, match="cuda_graphs needs the torch-cuda backend"):
        latency_ir(seg_ir, "torch-cpu", cuda_graphs=True)


def test_auto_dispatch(tmp_path, seg_ir) -> None:
    _onnx(tmp_path / "m.onnx")
    seg_ir.save(tmp_path / "ir")
    assert run_bench(tmp_path / "m.onnx", warmup=0, iters=1).backend == "onnxruntime-cpu"
    s = run_bench(tmp_path / "ir", warmup=0, iters=1, precision="fp16")
    assert s.backend == "torch-cpu" and s.extra["precision"] == "fp16" and s.extra["artifact"].endswith("ir")
    if not (HAS_TRT and HAS_CUDA):
        (tmp_path / "m.engine").write_bytes(b"x")
        with pytest.raises(BackendUnavailable):  # auto picked tensorrt for the .engine file
            run_bench(tmp_path / "m.engine", warmup=0, iters=1)
    # repeats (auto and its pick) collapse to one measurement
    assert [s.backend for s in run_bench_many(tmp_path / "m.onnx", ["auto", "onnxruntime-cpu"], warmup=0, iters=1)] \
        == ["onnxruntime-cpu"]


# ---- the CLI --------------------------------------------------------------------------------------

def test_cli_several_backends(tmp_path, seg_ir, monkeypatch) -> None:
    """Two backends in one table and one JSON list. Here only the CPU provider exists, so the GPU
    one is stood in for by the CPU provider (the plumbing is what is tested)."""
    import compressor.bench as bench

    _onnx(tmp_path / "m.onnx")
    real = bench.latency_onnxruntime
    if not ORT_CUDA:
        def fake(path, backend="onnxruntime-cpu", **kw):
            s = real(path, backend="onnxruntime-cpu", **kw)
            s.backend = backend
            return s
        monkeypatch.setattr(bench, "latency_onnxruntime", fake)
    args = ["bench", str(tmp_path / "m.onnx"), "--backend", "onnxruntime-cpu", "--backend", "onnxruntime-cuda",
            "--warmup", "1", "--iters", "3", "--min-seconds", "0", "--batch", "2"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 5 and lines[2].startswith("onnxruntime-cpu") and lines[3].startswith("onnxruntime-cuda")
    assert lines[4] == "integrity: unverified: no stage.json beside it records its sha256"
    r = CliRunner().invoke(main, [*args, "--json"])
    data = json.loads(r.output)
    assert [d["backend"] for d in data] == ["onnxruntime-cpu", "onnxruntime-cuda"] and data[0]["batch"] == 2
    assert all(d["iters"] == 3 and d["median_ms"] > 0 for d in data)

    seg_ir.save(tmp_path / "ir")
    r = CliRunner().invoke(main, ["bench", str(tmp_path / "ir"), "--backend", "torch-cuda", "--backend",
                                  "onnxruntime-cuda"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "backend 'onnxruntime-cuda' cannot run 'ir'; it takes .onnx files; backends for IR directories: " \
           "torch-cpu, torch-cuda" in r.output
    r = CliRunner().invoke(main, ["bench", str(tmp_path / "ir"), "--precision", "fp16", "--warmup", "0",
                                  "--iters", "2", "--min-seconds", "0", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)  # one backend: one object
    assert d["backend"] == "torch-cpu" and d["extra"]["precision"] == "fp16"
    r = CliRunner().invoke(main, ["bench", str(tmp_path / "ir"), "--backend", "tensorflow"])
    assert r.exit_code == 2 and "tensorflow" in r.output
    if not HAS_CUDA:
        r = CliRunner().invoke(main, ["bench", str(tmp_path / "ir"), "--backend", "torch-cpu", "--backend",
                                      "torch-cuda", "--cuda-graphs", "--iters", "1", "--min-seconds", "0"])
        assert r.exit_code == 2 and "torch-cuda needs a CUDA GPU" in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1


# ---- the pipeline -------------------------------------------------------------------------------

def test_pipeline_records_skipped_backends(tmp_path) -> None:
    from conftest import TINY_PIPELINE

    from compressor.pipeline import Pipeline

    # validation loads every built-in pass (torch-pruning); the onnx export of an fp16 IR needs the others
    for module in ("torch_pruning", "onnxsim", "onnxconverter_common"):
        pytest.importorskip(module)
    text = _without_pruning(TINY_PIPELINE)
    text = text.replace("    iters: 3\n", "    iters: 3\n    backends: [torch-cpu, torch-cuda, onnxruntime-cpu]\n")
    assert "torch-cuda" in text
    p = tmp_path / "p.yaml"
    p.write_text(text)
    result = Pipeline.from_yaml(p).run(out=tmp_path / "run", progress=False)
    stages = {o.name: o.record for o in result.stages}
    assert list(stages) == ["baseline", "fp16", "onnx"]
    for name in ("baseline", "fp16"):
        st = stages[name]
        assert set(st["latency"]) == ({"torch-cpu", "torch-cuda"} if HAS_CUDA else {"torch-cpu"}), name
        if not HAS_CUDA:
            assert st["latency_skipped"]["torch-cuda"].startswith("torch-cuda needs a CUDA GPU")
    assert stages["fp16"]["latency"]["torch-cpu"]["extra"]["precision"] == "fp16"  # fp16 IRs timed in fp16
    assert stages["baseline"]["latency"]["torch-cpu"]["extra"]["precision"] == "fp32"
    assert set(stages["onnx"]["latency"]) == {"onnxruntime-cpu"} and stages["onnx"]["latency_skipped"] == {}
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    md = (tmp_path / "run" / "report.md").read_text()
    assert "torch-cpu p50 ms" in md and "onnxruntime-cpu p50 ms" in md and report


def test_runner_engine_artifact_without_tensorrt(tmp_path, seg_ir) -> None:
    """The runner measures an exporter's artifact through the exporter's own runtime: the tensorrt
    exporter's engine is timed on `tensorrt` only, and skipped with the reason where it cannot run."""
    from compressor.exporters.tensorrt import TensorRTExporter
    from compressor.pipeline import LatencyOptions
    from compressor.instruments import measure_latency

    if HAS_TRT and HAS_CUDA:
        pytest.skip("tensorrt and a CUDA GPU are available")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    exporter = TensorRTExporter()
    latency, skipped = measure_latency(exporter, engine,
                                       LatencyOptions(backends=["torch-cpu", "onnxruntime-cpu", "tensorrt"]))
    assert latency == {} and list(skipped) == ["tensorrt"] and skipped["tensorrt"]
    metrics, why = exporter.evaluate(engine, [], seg_ir, threads=None, progress=False)  # never reaches the data
    assert metrics == {} and why


# ---- GPU paths (skipped here) ----------------------------------------------------------------

@needs_cuda
def test_cuda_graphs_equal_eager(seg_ir) -> None:
    from compressor.evaluate.latency import make_cuda_graph

    module = seg_ir.module.to("cuda").eval()
    x = tuple(t.to("cuda") for t in seg_ir.example_inputs(4))
    with torch.no_grad():
        replay, static_in, static_out = make_cuda_graph(module, x)
        for _ in range(2):  # new data through the static buffers, each replay matches eager
            fresh = tuple(torch.randn_like(t) for t in x)
            for s, f in zip(static_in, fresh):
                s.copy_(f)
            replay()
            torch.cuda.synchronize()
            torch.testing.assert_close(static_out, module(*fresh), rtol=1e-4, atol=1e-4)
    seg_ir.module.to("cpu")


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("graphs", [False, True])
def test_torch_cuda_latency(seg_ir, precision, graphs) -> None:
    s = latency_ir(seg_ir, "torch-cuda", batch=2, warmup=2, iters=5, precision=precision, cuda_graphs=graphs)
    assert s.backend == "torch-cuda" and s.extra["precision"] == precision and s.extra["cuda_graphs"] is graphs
    assert s.device_median_ms is not None and 0 < s.device_median_ms <= s.median_ms * 1.05
    assert s.extra["cuda"] == torch.version.cuda and s.device == torch.cuda.get_device_name(0)
    assert next(seg_ir.module.parameters()).device.type == "cpu"  # the IR stays on the CPU


@pytest.mark.skipif(not (HAS_CUDA and ORT_CUDA), reason="needs onnxruntime-gpu (CUDAExecutionProvider) and a CUDA GPU")
def test_onnxruntime_cuda_io_binding(tmp_path) -> None:
    _onnx(tmp_path / "m.onnx")
    s = latency_onnxruntime(tmp_path / "m.onnx", backend="onnxruntime-cuda", batch=2, warmup=2, iters=5)
    assert s.extra["io_binding"] is True and s.extra["providers"][0] == "CUDAExecutionProvider"
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CUDAExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8)).astype(np.float32)
    b = sess.io_binding()
    b.bind_ortvalue_input("x", ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
    b.bind_output("y", "cuda", 0)
    sess.run_with_iobinding(b)
    np.testing.assert_allclose(b.copy_outputs_to_cpu()[0], np.maximum(x, 0))


def test_tensorrt_device_time_becomes_device_fields(tmp_path, monkeypatch) -> None:
    """trt_runtime reports GPU compute time in extra["device_compute_ms"]; the bench table and the
    report read it from the device_* fields."""
    from compressor.evaluate import trt_runtime
    from compressor.evaluate.latency import summarize

    def fake(path, batch=1, warmup=10, iters=100):
        return summarize([0.002, 0.003], backend="tensorrt", device="GPU", batch=batch,
                         extra={"device_compute_ms": {"median": 1.5, "p90": 1.8, "p99": 1.9, "mean": 1.6}})

    monkeypatch.setattr(trt_runtime, "latency_tensorrt", fake)
    (tmp_path / "m.engine").write_bytes(b"x")
    s = latency_engine(tmp_path / "m.engine", batch=4)
    assert (s.device_median_ms, s.device_p90_ms, s.device_p99_ms, s.device_mean_ms) == (1.5, 1.8, 1.9, 1.6)
    assert s.median_ms == pytest.approx(2.5) and s.batch == 4 and s.extra["artifact"].endswith("m.engine")

    def broken(path, **kw):
        raise ConfigError("TensorRT 10 cannot load m.engine on GPU: rebuild it")

    monkeypatch.setattr(trt_runtime, "latency_tensorrt", broken)
    with pytest.raises(ConfigError) as exc:  # a bad engine is an error, not "unavailable here"
        latency_engine(tmp_path / "m.engine")
    assert not isinstance(exc.value, BackendUnavailable)
