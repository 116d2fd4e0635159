"""Latency: statistics, the timing loop, onnxruntime and torch measurements on tiny models."""
from __future__ import annotations

import json
import time

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from compressor.errors import ConfigError
from compressor.evaluate.latency import (
    LatencyStats,
    latency_onnxruntime,
    latency_torch,
    summarize,
    time_callable,
)


def relu_onnx(path, elem=TensorProto.FLOAT, shape=("batch", 3, 4, 4)) -> None:
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "relu", [helper.make_tensor_value_info("x", elem, list(shape))],
                              [helper.make_tensor_value_info("y", elem, list(shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))


def test_summarize_known_values() -> None:
    times = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    s = summarize(times, backend="x", batch=4, threads=2, warmup=3)
    assert s.median_ms == pytest.approx(50.5)
    assert s.p90_ms == pytest.approx(np.percentile(np.arange(1, 101), 90))
    assert s.p99_ms == pytest.approx(99.01)
    assert s.mean_ms == pytest.approx(50.5)
    assert s.std_ms == pytest.approx(np.std(np.arange(1, 101)))
    assert s.min_ms == pytest.approx(1.0)
    assert s.throughput == pytest.approx(4 / 0.0505)
    assert (s.backend, s.batch, s.threads, s.warmup, s.iters) == ("x", 4, 2, 3, 100)
    assert s.device  # filled from this machine
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert LatencyStats.from_dict(d) == s
    with pytest.raises(ValueError):
        summarize([])


def test_time_callable_counts() -> None:
    calls = []
    times = time_callable(lambda: calls.append(1), warmup=3, iters=7)
    assert len(times) == 7 and len(calls) == 10
    assert all(t >= 0 for t in times)
    # min_seconds extends the run, but never beyond 10 * iters calls
    times = time_callable(lambda: time.sleep(0.001), warmup=0, iters=2, min_seconds=10.0)
    assert len(times) == 20
    times = time_callable(lambda: time.sleep(0.002), warmup=0, iters=1, min_seconds=0.01)
    assert len(times) >= 2  # one call of ~2 ms does not reach 10 ms
    assert sum(times[:-1]) < 0.01 <= sum(times) or len(times) == 10  # stops once both are reached
    with pytest.raises(ValueError):
        time_callable(lambda: None, iters=0)


def test_latency_onnxruntime_sane(tmp_path) -> None:
    relu_onnx(tmp_path / "m.onnx")
    s = latency_onnxruntime(tmp_path / "m.onnx", batch=3, threads=1, warmup=1, iters=5)
    assert s.backend == "onnxruntime-cpu" and s.batch == 3 and s.threads == 1 and s.iters == 5
    assert 0 < s.min_ms <= s.median_ms <= s.p90_ms <= s.p99_ms
    assert s.throughput > 0
    assert s.extra["inputs"]["x"] == [[3, 3, 4, 4], "float32"]
    assert "onnxruntime" in s.extra


def test_latency_onnxruntime_fp16_input_and_default_threads(tmp_path) -> None:
    import os

    relu_onnx(tmp_path / "h.onnx", elem=TensorProto.FLOAT16, shape=(None, 2))
    s = latency_onnxruntime(tmp_path / "h.onnx", batch=2, warmup=0, iters=3)
    assert s.extra["inputs"]["x"] == [[2, 2], "float16"]
    assert s.threads == os.cpu_count()


def test_latency_onnxruntime_rejects_dynamic_inner_dims(tmp_path) -> None:
    relu_onnx(tmp_path / "d.onnx", shape=("batch", "channels"))
    with pytest.raises(ConfigError, match="dynamic non-batch"):
        latency_onnxruntime(tmp_path / "d.onnx", warmup=0, iters=1)


def test_latency_torch_sane_and_restores_threads() -> None:
    before = torch.get_num_threads()
    model = torch.nn.Conv2d(3, 4, 3).train()
    s = latency_torch(model, (torch.randn(2, 3, 8, 8),), threads=1, warmup=1, iters=4)
    assert torch.get_num_threads() == before
    assert model.training
    assert s.backend == "torch-cpu" and s.batch == 2 and s.threads == 1 and s.iters == 4
    assert 0 < s.min_ms <= s.median_ms <= s.p99_ms
    assert s.extra["torch"] == torch.__version__


def test_summarize_device_times_and_table() -> None:
    from compressor.evaluate.latency import format_stats_table

    host = [0.010, 0.012, 0.011, 0.013]
    dev = [0.008, 0.009, 0.0085, 0.0095]
    s = summarize(host, dev, backend="torch-cuda", device="GPU X", batch=8,
                  extra={"precision": "fp16", "cuda_graphs": True})
    assert s.median_ms == pytest.approx(11.5) and s.device_median_ms == pytest.approx(8.75)
    assert s.device_min_ms == pytest.approx(8.0) and s.device_p90_ms <= s.device_p99_ms <= 9.5
    assert s.throughput == pytest.approx(8 / 0.0115)
    assert LatencyStats.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    cpu = summarize(host, backend="torch-cpu", extra={"precision": "fp32"})
    assert cpu.device_median_ms is None
    table = format_stats_table([s, cpu]).splitlines()
    assert "dev p50 ms" in table[0] and len(table) == 4
    assert "fp16+graphs" in table[2] and "8.750" in table[2]
    assert table[3].rstrip().endswith("-")  # no device time on the CPU row
    assert "dev p50" not in format_stats_table([cpu])  # the column only when some row has it


def test_host_and_gpu_info_are_best_effort(tmp_path, monkeypatch) -> None:
    from compressor.evaluate.latency import gpu_info, host_info

    info = host_info()
    assert info["numpy"] == np.__version__ and info["cpu_count"] and info["cpu"]
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi at all
    assert gpu_info() == {}
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 580.159.04, 1980, 2619, 1980, P0'\n")
    smi.chmod(0o755)
    assert gpu_info() == {"gpu": "NVIDIA H100 80GB HBM3", "driver_version": "580.159.04", "gpu_sm_mhz": 1980,
                          "gpu_mem_mhz": 2619, "gpu_max_sm_mhz": 1980, "gpu_pstate": "P0"}
    smi.write_text("#!/bin/sh\nexit 9\n")  # a failing nvidia-smi is not an error
    assert gpu_info() == {}


def test_latency_torch_precision_copies() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()
    s = latency_torch(model, (torch.randn(1, 3, 8, 8),), warmup=0, iters=2, precision="fp16")
    assert s.extra["precision"] == "fp16" and s.extra["dtype"] == "float16"
    assert next(model.parameters()).dtype == torch.float32  # timed a copy, the model is untouched
    half = torch.nn.Conv2d(3, 4, 3).half()
    s = latency_torch(half, (torch.randn(1, 3, 8, 8).half(),), warmup=0, iters=2, precision="fp32")
    assert s.extra["precision"] == "fp32" and next(half.parameters()).dtype == torch.float16
    with pytest.raises(ConfigError, match="cuda_graphs needs the torch-cuda backend"):
        latency_torch(model, (torch.randn(1, 3, 8, 8),), cuda_graphs=True)
    with pytest.raises(ConfigError, match="precision 'int8'"):
        latency_torch(model, (torch.randn(1, 3, 8, 8),), precision="int8")
