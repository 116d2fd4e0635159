"""`compress bench`: ONNX benchmarking without torch, IR files on torch, clear errors."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import onnx
import pytest
from onnx import TensorProto, helper

from compressor.bench import format_stats_table, run_bench
from compressor.errors import ConfigError


def _relu_onnx(path) -> None:
    shape = ["N", 3, 4, 4]
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))


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
    from compressor.cli import BENCH_BACKENDS
    from compressor.evaluate.latency import BACKENDS

    assert BENCH_BACKENDS == ("auto", *BACKENDS)
