"""compressor.evaluate.trt_runtime against fake `tensorrt` and `cudart` modules (the name-based tensor
API call sequence, buffers, statistics, missing packages), torch-free import, and a real engine
where TensorRT, cuda-python and a CUDA GPU exist."""
from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from compressor.errors import ConfigError
from compressor.evaluate import trt_runtime
from compressor.evaluate.latency import LatencyStats
from compressor.evaluate.trt_runtime import EngineRunner, evaluate_engine, latency_tensorrt

TRT_SKIP = "TensorRT is not installed here (its libraries come from NVIDIA's index)"


# ---- fakes ----------------------------------------------------------------------------------------

class FakeCudart(types.ModuleType):
    """cuda-python's runtime module: (err, value) tuples; device memory is a dict of byte arrays."""

    def __init__(self, devices: int = 1, event_ms: float = 2.0) -> None:
        super().__init__("cudart")
        self.calls: list[tuple] = []
        self.mem: dict[int, bytearray] = {}
        self.devices = devices
        self.event_ms = event_ms
        self._next = 0x1000
        self.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice="H2D", cudaMemcpyDeviceToHost="D2H")

    def cudaGetDeviceCount(self):
        return (0, self.devices)

    def cudaSetDevice(self, d):
        return (0,)

    def cudaGetDeviceProperties(self, d):
        return (0, types.SimpleNamespace(name=b"Fake Orin\x00\x00"))

    def cudaStreamCreate(self):
        self.calls.append(("cudaStreamCreate",))
        return (0, 77)

    def cudaStreamDestroy(self, s):
        self.calls.append(("cudaStreamDestroy", s))
        return (0,)

    def cudaEventCreate(self):
        return (0, object())

    def cudaEventDestroy(self, e):
        return (0,)

    def cudaEventRecord(self, e, s):
        self.calls.append(("cudaEventRecord", s))
        return (0,)

    def cudaEventElapsedTime(self, a, b):
        return (0, self.event_ms)

    def cudaMalloc(self, n):
        ptr = self._next
        self._next += 0x1000 + n
        self.mem[ptr] = bytearray(n)
        self.calls.append(("cudaMalloc", n))
        return (0, ptr)

    def cudaFree(self, p):
        self.calls.append(("cudaFree", p))
        self.mem.pop(p)
        return (0,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        import ctypes

        self.calls.append(("cudaMemcpyAsync", kind, n))
        if kind == "H2D":
            self.mem[dst][:n] = ctypes.string_at(src, n)
        else:
            ctypes.memmove(dst, bytes(self.mem[src][:n]), n)
        return (0,)

    def cudaStreamSynchronize(self, s):
        self.calls.append(("cudaStreamSynchronize", s))
        return (0,)


def make_fake_trt(cudart: FakeCudart, out_channels: int = 3, loads: bool = True) -> types.ModuleType:
    """An engine with input (-1, 2, 4, 4) float32 and output (-1, C) float32 = the per-sample sum of the
    input, repeated C times: execute_async_v3 computes it in the fake device memory."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"
    calls: list[tuple] = []
    trt.calls = calls
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.DataType = types.SimpleNamespace(FLOAT=types.SimpleNamespace(name="FLOAT"))

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Context:
        def __init__(self):
            self.shapes: dict[str, tuple] = {}
            self.addr: dict[str, int] = {}

        def set_input_shape(self, name, shape):
            calls.append(("set_input_shape", name, tuple(shape)))
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            if name == "input":
                return self.shapes.get("input", (-1, 2, 4, 4))
            b = self.shapes.get("input", (-1,))[0]
            return (b, out_channels)

        def set_tensor_address(self, name, ptr):
            calls.append(("set_tensor_address", name))
            assert isinstance(ptr, int)
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream):
            calls.append(("execute_async_v3", stream))
            b = self.shapes["input"][0]
            x = np.frombuffer(bytes(cudart.mem[self.addr["input"]]), dtype=np.float32).reshape(b, 2, 4, 4)
            y = np.repeat(x.reshape(b, -1).sum(axis=1, keepdims=True), out_channels, axis=1).astype(np.float32)
            cudart.mem[self.addr["logits"]][:] = y.tobytes()
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            calls.append(("get_tensor_name", i))
            return ["input", "logits"][i]

        def get_tensor_mode(self, name):
            calls.append(("get_tensor_mode", name))
            return trt.TensorIOMode.INPUT if name == "input" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            calls.append(("get_tensor_dtype", name))
            return trt.DataType.FLOAT

        def get_tensor_shape(self, name):
            return (-1, 2, 4, 4) if name == "input" else (-1, out_channels)

        def get_tensor_profile_shape(self, name, profile):
            return [(1, 2, 4, 4), (2, 2, 4, 4), (4, 2, 4, 4)]

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            calls.append(("deserialize_cuda_engine", blob))
            return Engine() if loads else None

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    cudart = FakeCudart()
    trt = make_fake_trt(cudart)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_runtime, "_import_cudart", lambda: cudart)
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"ENGINE")
    return trt, cudart, engine


# ---- the runner with fakes ----------------------------------------------------------------------------

def test_runner_tensor_api_sequence_and_infer(fakes):
    trt, cudart, engine = fakes
    x = np.arange(2 * 2 * 4 * 4, dtype=np.float32).reshape(2, 2, 4, 4)
    with EngineRunner(engine) as runner:
        assert runner.device_name == "Fake Orin"
        assert [(t.name, t.is_input, t.dtype, t.shape) for t in runner.tensors] == [
            ("input", True, np.float32, (-1, 2, 4, 4)), ("logits", False, np.float32, (-1, 3))]
        assert runner.max_batch == 4
        y = runner.infer(x.astype(np.float64))  # converted to the engine's dtype
        np.testing.assert_allclose(y, np.repeat(x.reshape(2, -1).sum(1, keepdims=True), 3, axis=1))
        names = [c for c in trt.calls if c[0] in ("set_input_shape", "set_tensor_address", "execute_async_v3")]
        assert names == [("set_input_shape", "input", (2, 2, 4, 4)), ("set_tensor_address", "input"),
                         ("set_tensor_address", "logits"), ("execute_async_v3", 77)]
        assert ("cudaMalloc", 2 * 2 * 4 * 4 * 4) in cudart.calls and ("cudaMalloc", 2 * 3 * 4) in cudart.calls
        kinds = [c[1] for c in cudart.calls if c[0] == "cudaMemcpyAsync"]
        assert kinds == ["H2D", "D2H"] and cudart.calls[-1] == ("cudaStreamSynchronize", 77)
        # same batch: no new allocation; another batch: old buffers freed, shape set again
        n_malloc = sum(c[0] == "cudaMalloc" for c in cudart.calls)
        runner.infer(x)
        assert sum(c[0] == "cudaMalloc" for c in cudart.calls) == n_malloc
        assert runner.infer(x[:1]).shape == (1, 3)
        assert ("set_input_shape", "input", (1, 2, 4, 4)) in trt.calls
        assert sum(c[0] == "cudaFree" for c in cudart.calls) == 2
        with pytest.raises(ConfigError, match="expects"):
            runner.infer({"input": np.zeros((1, 2, 4, 5), np.float32)})
        with pytest.raises(ConfigError, match="missing engine inputs"):
            runner.infer({"other": x})
    assert cudart.mem == {} and ("cudaStreamDestroy", 77) in cudart.calls  # everything freed


def test_latency_tensorrt_statistics(fakes):
    trt, cudart, engine = fakes
    stats = latency_tensorrt(engine, batch=2, warmup=3, iters=20)
    assert isinstance(stats, LatencyStats)
    assert stats.backend == "tensorrt" and stats.device == "Fake Orin" and stats.batch == 2
    assert stats.iters == 20 and stats.warmup == 3
    assert sum(c[0] == "execute_async_v3" for c in trt.calls) == 23
    assert sum(c[0] == "cudaEventRecord" for c in cudart.calls) == 2 * 23
    assert stats.extra["device_compute_ms"]["median"] == pytest.approx(2.0)
    assert stats.extra["device_compute_ms"]["p99"] == pytest.approx(2.0)
    host = stats.extra["host_latency_ms"]
    assert host["median"] == pytest.approx(stats.median_ms) and host["p90"] == pytest.approx(stats.p90_ms)
    assert 0 < stats.median_ms <= stats.p90_ms <= stats.p99_ms
    assert stats.extra["tensorrt_version"] == "10.3.0"
    assert stats.extra["inputs"] == {"input": [[2, 2, 4, 4], "float32"]}
    assert stats.throughput == pytest.approx(2 / (stats.median_ms / 1e3))
    with pytest.raises(ConfigError):
        latency_tensorrt(engine, iters=0)


def test_evaluate_engine_chunks_to_the_profile_max(fakes):
    from compressor.ir import TaskSpec

    trt, cudart, engine = fakes
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2, 4, 4)).astype(np.float32)
    y = np.zeros(6, dtype=np.int64)  # fake logits are equal per class: argmax picks class 0
    scores = evaluate_engine(engine, [(x, y)], TaskSpec("classification", 3))
    assert scores["accuracy"] == pytest.approx(1.0)
    shapes = [c[2][0] for c in trt.calls if c[0] == "set_input_shape"]
    assert shapes == [4, 2]  # a batch of 6 beyond max 4 runs as 4 + 2


def test_missing_tensorrt(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ConfigError, match="tensorrt Python package is not installed") as info:
        EngineRunner(tmp_path / "model.engine")
    assert "\n" not in str(info.value) and "python3-libnvinfer" in str(info.value)


def test_missing_cuda_python(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt(FakeCudart()))
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    with pytest.raises(ConfigError, match="pip install cuda-python"):
        EngineRunner(tmp_path / "model.engine")


def test_no_gpu(monkeypatch, tmp_path):
    cudart = FakeCudart(devices=0)
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt(cudart))
    monkeypatch.setattr(trt_runtime, "_import_cudart", lambda: cudart)
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        latency_tensorrt(tmp_path / "model.engine")


def test_missing_file_and_foreign_engine(fakes, tmp_path, monkeypatch):
    trt, cudart, engine = fakes
    with pytest.raises(ConfigError, match="no TensorRT engine"):
        EngineRunner(tmp_path / "nope.engine")
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt(cudart, loads=False))
    with pytest.raises(ConfigError, match="build_engine.sh"):
        EngineRunner(engine)


def test_cudart_import_prefers_cuda_bindings(monkeypatch):
    new = types.ModuleType("cuda.bindings.runtime")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = new
    cuda = types.ModuleType("cuda")
    cuda.bindings = bindings
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", new)
    assert trt_runtime._import_cudart() is new
    old = types.ModuleType("cuda.cudart")
    cuda_old = types.ModuleType("cuda")
    cuda_old.cudart = old
    monkeypatch.setitem(sys.modules, "cuda", cuda_old)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    monkeypatch.setitem(sys.modules, "cuda.cudart", old)
    assert trt_runtime._import_cudart() is old


def test_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import compressor.evaluate.trt_runtime as m\n"
            "assert 'torch' not in [k for k, v in sys.modules.items() if v is not None]\n"
            "print(m.latency_tensorrt.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "latency_tensorrt"


# ---- real TensorRT ------------------------------------------------------------------------------------

def test_real_engine_matches_onnxruntime(tmp_path, cls_ir):
    pytest.importorskip("tensorrt", reason=TRT_SKIP)
    pytest.importorskip("cuda", reason="cuda-python is not installed here")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: a TensorRT engine needs one")
    import onnxruntime as ort

    from compressor.context import PassContext
    from compressor.exporters.tensorrt import TensorRTExporter

    out = tmp_path / "run" / "01_tensorrt"
    result = TensorRTExporter(max_batch=4).export(cls_ir, out, PassContext())
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    with EngineRunner(result.primary) as runner:
        y = runner.infer(x)
    sess = ort.InferenceSession(str(Path(out) / "model.onnx"), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(y, ref, rtol=1e-2, atol=1e-2)
    stats = latency_tensorrt(result.primary, batch=2, warmup=2, iters=10)
    assert stats.backend == "tensorrt" and stats.extra["device_compute_ms"]["median"] > 0
