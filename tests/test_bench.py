"""`compress bench`: ONNX benchmarking without torch, IR files on torch, clear errors."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import onnx
import pytest
from onnx import TensorProto, helper

from compressor.bench import artifact_precision, format_stats_table, run_bench
from compressor.errors import ConfigError


def _relu_onnx(path) -> None:
    shape = ["N", 3, 4, 4]
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))


def _conv_onnx(path) -> None:
    """A 1-conv torch model as fp32 ONNX (the TorchScript exporter), batch dimension dynamic."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 3, padding=1).eval()
    torch.onnx.export(model, (torch.randn(1, 3, 8, 8),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, opset_version=17, dynamo=False)


def _fp16_onnx(src, path) -> None:
    """`src` with float16 weights and fp32 inputs/outputs, as the ONNX exporter writes an fp16 graph."""
    from onnxconverter_common import float16

    onnx.save(float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(path))


def _quantized_onnx(src, path, fmt: str) -> None:
    """`src` quantized by onnxruntime's quantize_static ("QDQ" or "QOperator"), calibrated on one batch."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class OneBatch(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": np.random.default_rng(0).standard_normal((2, 3, 8, 8), dtype=np.float32)}])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    quantize_static(str(src), str(path), OneBatch(), quant_format=getattr(QuantFormat, fmt), per_channel=True)


def test_bench_reports_the_onnx_precision(tmp_path) -> None:
    _conv_onnx(tmp_path / "fp32.onnx")
    _fp16_onnx(tmp_path / "fp32.onnx", tmp_path / "fp16.onnx")
    _quantized_onnx(tmp_path / "fp32.onnx", tmp_path / "qdq.onnx", "QDQ")
    _quantized_onnx(tmp_path / "fp32.onnx", tmp_path / "qop.onnx", "QOperator")
    _relu_onnx(tmp_path / "relu.onnx")  # no weights: the input type decides
    expected = {"fp32": "fp32", "fp16": "fp16", "qdq": "int8 (QDQ)", "qop": "int8 (QOperator)", "relu": "fp32"}
    stats = []
    for name, precision in expected.items():
        s = run_bench(tmp_path / f"{name}.onnx", batch=2, threads=1, warmup=0, iters=1)
        assert s.extra["precision"] == precision, name
        stats.append(s)
    rows = format_stats_table(stats).splitlines()[2:]
    for row, precision in zip(rows, expected.values()):
        assert f"  {precision}  " in row, row


def test_artifact_precision_without_running(tmp_path, monkeypatch) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    assert artifact_precision(engine) is None  # no sidecar
    (tmp_path / "model.engine.json").write_text('{"precision": "int8", "tensorrt_version": "10.3.0"}')
    assert artifact_precision(engine) == "int8"
    (tmp_path / "ir").mkdir()
    (tmp_path / "ir" / "ir.json").write_text('{"precision": "fp16"}')
    assert artifact_precision(tmp_path / "ir") == "fp16" and artifact_precision(tmp_path / "ir" / "ir.json") == "fp16"
    (tmp_path / "broken.onnx").write_bytes(b"\x00garbage")
    assert artifact_precision(tmp_path / "broken.onnx") is None  # the run reports the broken file, not this
    _relu_onnx(tmp_path / "m.onnx")
    assert artifact_precision(tmp_path / "m.onnx") == "fp32"
    monkeypatch.setitem(sys.modules, "onnx", None)  # an edge device with onnxruntime only
    assert artifact_precision(tmp_path / "m.onnx") is None
    s = run_bench(tmp_path / "m.onnx", threads=1, warmup=0, iters=1)
    assert s.extra["precision"] is None and "  -  " in format_stats_table([s]).splitlines()[2]


def test_onnx_bench_never_imports_torch(tmp_path) -> None:
    _relu_onnx(tmp_path / "m.onnx")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        from compressor.bench import format_stats_table, run_bench
        s = run_bench({str(tmp_path / "m.onnx")!r}, batch=2, threads=1, warmup=1, iters=3)
        assert s.backend == "onnxruntime-cpu" and s.batch == 2 and s.iters == 3, s
        print(format_stats_table([s]))
        from compressor.errors import ConfigError
        open({str(tmp_path / "m.engine")!r}, "wb").write(b"x")
        try:  # the .engine path (tensorrt is missing here, or the bytes are no engine) stays torch-free too
            run_bench({str(tmp_path / "m.engine")!r}, warmup=0, iters=1)
        except ConfigError:
            pass
        assert sys.modules["torch"] is None
        print("TORCH-FREE-OK")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "TORCH-FREE-OK" in proc.stdout and "onnxruntime-cpu" in proc.stdout


def test_cli_bench_onnx_never_imports_torch(tmp_path) -> None:
    """`python -m compressor.cli bench m.onnx --backend onnxruntime-cpu` with torch blocked."""
    _relu_onnx(tmp_path / "m.onnx")
    script = textwrap.dedent(f"""
        import runpy, sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        sys.argv = ["compress", "bench", {str(tmp_path / "m.onnx")!r}, "--backend", "onnxruntime-cpu",
                    "--batch", "2", "--threads", "1", "--warmup", "1", "--iters", "3", "--min-seconds", "0"]
        try:
            runpy.run_module("compressor.cli", run_name="__main__")
        except SystemExit as exc:
            assert not exc.code, exc.code
        assert sys.modules["torch"] is None
        print("TORCH-FREE-OK")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "TORCH-FREE-OK" in proc.stdout and "onnxruntime-cpu" in proc.stdout, proc.stdout
    row = next(line for line in proc.stdout.splitlines() if line.startswith("onnxruntime-cpu"))
    assert row.split()[-1] != "0.0"  # a throughput was measured


def test_bench_ir_file_on_torch(tmp_path) -> None:
    from compressor.frontends.zoo import Zoo
    from compressor.ir import InputSpec, ModelIR, Recipe, TaskSpec

    recipe = Recipe({"name": "zoo", "options": {"model": "seg-cnn", "width": 4}, "in_channels": 2, "num_classes": 1,
                     "input_hw": [8, 8]})
    ir = ModelIR(Zoo.rebuild(recipe.frontend), [InputSpec("x", (None, 2, 8, 8))], TaskSpec("segmentation", 1),
                 recipe=recipe)
    ir.save(tmp_path / "ir")
    s = run_bench(tmp_path / "ir", batch=3, threads=1, warmup=1, iters=3)
    assert s.backend == "torch-cpu" and s.batch == 3 and s.extra["precision"] == "fp32"
    assert artifact_precision(tmp_path / "ir") == "fp32"
    s16 = run_bench(tmp_path / "ir", threads=1, warmup=0, iters=1, precision="fp16")
    assert s16.extra["precision"] == "fp16" and s16.extra["ir_precision"] == "fp32"  # the cast it timed
    table = format_stats_table([s, s])
    assert len(table.splitlines()) == 4 and "torch-cpu" in table


def test_bench_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no artifact"):
        run_bench(tmp_path / "missing.onnx")
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"unknown kind '\.bin'; valid: \.onnx.*give its stage directory"):
        run_bench(tmp_path / "model.bin")
    _relu_onnx(tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="unknown backend 'onnxruntime-gpu'; did you mean 'onnxruntime-cpu'"
                                          r"\? valid: auto, torch-cpu, .*tensorrt"):
        run_bench(tmp_path / "m.onnx", backend="onnxruntime-gpu")
    with pytest.raises(ConfigError, match="cannot run 'm.onnx'; it takes IR directories; backends for .onnx files: "
                                          "onnxruntime-cpu, onnxruntime-cuda, onnxruntime-tensorrt"):
        run_bench(tmp_path / "m.onnx", backend="torch-cpu")
    with pytest.raises(ConfigError, match="batch >= 1"):
        run_bench(tmp_path / "m.onnx", batch=0)
    with pytest.raises(ConfigError, match="--precision applies to the torch backends"):
        run_bench(tmp_path / "m.onnx", precision="fp16")
    with pytest.raises(ConfigError, match="--cuda-graphs needs --backend torch-cuda"):
        run_bench(tmp_path / "m.onnx", cuda_graphs=True)


def test_cli_backend_choices_match_the_library() -> None:
    """One backend table (compressor.evaluate.backends): the CLI's choices and help, bench's auto picks,
    latency's names, the exporters' and the torch runtime's backends all come from it."""
    import click

    from compressor import bench
    from compressor.cli import BENCH_BACKENDS, bench as bench_command
    from compressor.evaluate import backends as table
    from compressor.evaluate import latency
    from compressor.evaluate.options import LatencyOptions
    from compressor.evaluate.runtime import TorchRuntime
    from compressor.exporters.onnx import OnnxExporter
    from compressor.exporters.tensorrt import TensorRTExporter
    from compressor.options import describe_options

    assert BENCH_BACKENDS == ("auto", *table.BACKENDS)
    option = next(p for p in bench_command.params if p.name == "backends")
    assert isinstance(option.type, click.Choice) and tuple(option.type.choices) == BENCH_BACKENDS
    assert ".onnx onnxruntime-cpu, .engine tensorrt, a stage directory torch-cpu" in option.help
    assert (latency.BACKENDS, latency.ALIASES, latency.BACKEND_SUFFIXES, latency.IR_KIND) == \
        (table.BACKENDS, table.ALIASES, table.BACKEND_SUFFIXES, table.IR_KIND)
    assert bench.BACKENDS is table.BACKENDS and bench.SUFFIXES is table.DEFAULT_BY_SUFFIX
    assert set(bench.SUFFIXES.values()) <= set(table.BACKENDS)
    assert set(bench.SUFFIXES) == {k for kinds in table.BACKEND_SUFFIXES.values() for k in kinds}
    # every backend is some runtime's, exactly once
    runtimes = [TorchRuntime.latency_backends, OnnxExporter.latency_backends, TensorRTExporter.latency_backends]
    assert sorted(b for r in runtimes for b in r) == sorted(table.BACKENDS)
    assert OnnxExporter.latency_backends == ("onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt")
    help_text = next(o.help for o in describe_options(LatencyOptions) if o.name == "backends")
    assert all(b in help_text for b in [*table.BACKENDS, *table.ALIASES]), help_text
