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
        assert sys.modules["torch"] is None
        print("TORCH-FREE-OK")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "TORCH-FREE-OK" in proc.stdout and "onnxruntime-cpu" in proc.stdout


def test_bench_ir_file_on_torch(tmp_path) -> None:
    import torch

    from compressor.ir import InputSpec, ModelIR, TaskSpec

    gm = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Conv2d(2, 1, 3, padding=1)))
    ir = ModelIR(gm, [InputSpec("x", (None, 2, 8, 8))], TaskSpec("segmentation", 1))
    ir.save(tmp_path / "ir.pt")
    s = run_bench(tmp_path / "ir.pt", batch=3, threads=1, warmup=1, iters=3)
    assert s.backend == "torch-cpu" and s.batch == 3 and s.extra["precision"] == "fp32"
    table = format_stats_table([s, s])
    assert len(table.splitlines()) == 4 and "torch-cpu" in table


def test_bench_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no artifact"):
        run_bench(tmp_path / "missing.onnx")
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"unknown suffix '\.bin'.*\.onnx"):
        run_bench(tmp_path / "model.bin")
    _relu_onnx(tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="unknown backend 'tensorflow'; valid: auto, onnxruntime-cpu"):
        run_bench(tmp_path / "m.onnx", backend="tensorflow")
    with pytest.raises(ConfigError, match="cannot run 'm.onnx'"):
        run_bench(tmp_path / "m.onnx", backend="torch-cpu")
    with pytest.raises(ConfigError, match="batch >= 1"):
        run_bench(tmp_path / "m.onnx", batch=0)
