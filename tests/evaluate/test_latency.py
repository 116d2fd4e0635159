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
