"""Running TensorRT engines: `EngineRunner`, `latency_tensorrt`, `evaluate_engine`.

Runs on edge devices (Jetson) that have numpy, tensorrt and cuda-python but no torch: this module
imports only numpy and compressor modules that do not import torch at module level. tensorrt and
cuda-python (`from cuda.bindings import runtime as cudart`, or `from cuda import cudart` for
cuda-python < 12.6) are imported inside the functions that use them. `evaluate_engine` imports
`compressor.evaluate.metrics` (torch, torchmetrics) when called: the pipeline path calls it, the
bench path (`latency_tensorrt`) never does.

The runner uses TensorRT's name-based tensor API (TensorRT >= 10, unchanged in 11): I/O tensors by
`num_io_tensors` / `get_tensor_name` / `get_tensor_mode` / `get_tensor_dtype`,
`set_input_shape` for the batch, one `cudaMalloc` buffer per tensor bound with `set_tensor_address`,
and `execute_async_v3` on one CUDA stream. Host buffers are ordinary (pageable) numpy arrays.

Timing: host latency (perf_counter around H2D copy + execute + D2H copy + stream sync: what an
application sees per batch) and device compute time (CUDA events recorded on the stream around
`execute_async_v3` only), like trtexec's "Latency" and "GPU Compute Time".
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from compressor.errors import CompressError, ConfigError
from compressor.evaluate.timing import LatencyStats, summarize

__all__ = ["EngineRunner", "TensorInfo", "latency_tensorrt", "evaluate_engine"]

TRT_HINT = ("the tensorrt Python package is not installed; install it on the target (pip install "
            "'compressor[gpu]' on x86-64 with CUDA, or JetPack's python3-libnvinfer on Jetson)")
CUDART_HINT = ("cuda-python is not installed (TensorRT engines need it for device buffers); "
               "pip install cuda-python (on Jetson: the version matching JetPack's CUDA)")
NO_GPU_HINT = "no CUDA GPU is visible ({why}); run on a machine with an NVIDIA GPU and its driver"

_NP_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64,
              "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_, "DOUBLE": np.float64}


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise ConfigError(f"backend 'tensorrt': {TRT_HINT}") from None
    return tensorrt


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise ConfigError(f"backend 'tensorrt': {CUDART_HINT}") from None
    return cudart


def _ok(err: Any) -> bool:
    return int(getattr(err, "value", err)) == 0


def _call(result: Any, what: str) -> Any:
    """cuda-python calls return (err, *values): check err, return None / the value / the values."""
    if not isinstance(result, tuple):
        result = (result,)
    err, rest = result[0], result[1:]
    if not _ok(err):
        raise CompressError(f"CUDA call {what} failed: {getattr(err, 'name', err)}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def _handle(obj: Any) -> int:
    """A cuda-python handle (stream, pointer) as the int TensorRT takes."""
    try:
        return int(obj)
    except TypeError:
        return int(obj.getPtr())


def gpu_name(cudart: Any, device: int = 0) -> str:
    props = _call(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = getattr(props, "name", b"")
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
    return str(name) or f"cuda:{device}"


def _check_gpu(cudart: Any) -> None:
    result = cudart.cudaGetDeviceCount()
    err, count = result[0], (result[1] if len(result) > 1 else 0)
    if not _ok(err) or int(count) < 1:
        why = getattr(err, "name", str(err)) if not _ok(err) else "cudaGetDeviceCount found 0 devices"
        raise ConfigError(f"backend 'tensorrt': {NO_GPU_HINT.format(why=why)}")


def _np_dtype(trt: Any, dtype: Any) -> Any:
    nptype = getattr(trt, "nptype", None)
    if nptype is not None:
        try:
            return np.dtype(nptype(dtype)).type
        except (TypeError, KeyError, ValueError):
            pass
    name = str(getattr(dtype, "name", dtype)).split(".")[-1].upper()
    if name not in _NP_DTYPES:
        raise ConfigError(f"engine tensor type {name} has no numpy equivalent; supported: {', '.join(_NP_DTYPES)}")
    return _NP_DTYPES[name]


@dataclass
class TensorInfo:
    name: str
    is_input: bool
    dtype: Any  # numpy scalar type
    shape: tuple[int, ...]  # as the engine declares it (-1: dynamic)


class EngineRunner:
    """One deserialized engine, one execution context, one stream; buffers sized for the last batch."""

    def __init__(self, engine_path: str | os.PathLike[str], device: int = 0) -> None:
        self.trt = trt = _import_tensorrt()
        self.cudart = cudart = _import_cudart()
        _check_gpu(cudart)
        path = Path(engine_path)
        if not path.is_file():
            raise ConfigError(f"no TensorRT engine at {path}; pass the model.engine of a tensorrt export stage")
        self.path = path
        _call(cudart.cudaSetDevice(device), "cudaSetDevice")
        self.device_name = gpu_name(cudart, device)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ConfigError(f"TensorRT {trt.__version__} cannot load {path} on {self.device_name}: an engine "
                              f"runs only on the GPU model and TensorRT version it was built for; rebuild it "
                              f"there with the stage's build_engine.sh")
        self.context = self.engine.create_execution_context()
        self.tensors: list[TensorInfo] = []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            self.tensors.append(TensorInfo(name, is_input, _np_dtype(trt, self.engine.get_tensor_dtype(name)),
                                           tuple(int(d) for d in self.engine.get_tensor_shape(name))))
        if not any(t.is_input for t in self.tensors) or not any(not t.is_input for t in self.tensors):
            raise ConfigError(f"{path}: the engine needs at least one input and one output tensor")
        self.stream = _call(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._start = _call(cudart.cudaEventCreate(), "cudaEventCreate")
        self._end = _call(cudart.cudaEventCreate(), "cudaEventCreate")
        self._device_ptrs: dict[str, int] = {}
        self._host_out: dict[str, np.ndarray] = {}
        self.batch: int | None = None

    # ---- tensors -----------------------------------------------------------------------------
    @property
    def inputs(self) -> list[TensorInfo]:
        return [t for t in self.tensors if t.is_input]

    @property
    def outputs(self) -> list[TensorInfo]:
        return [t for t in self.tensors if not t.is_input]

    @property
    def max_batch(self) -> int | None:
        """The largest batch of optimization profile 0 (None where the engine does not say)."""
        try:
            shapes = self.engine.get_tensor_profile_shape(self.inputs[0].name, 0)
            return int(shapes[2][0])
        except Exception:
            return None

    def input_shape(self, info: TensorInfo, batch: int) -> tuple[int, ...]:
        rest = info.shape[1:]
        if any(d < 0 for d in rest):
            raise ConfigError(f"input '{info.name}' has a dynamic non-batch dimension {list(info.shape)}; "
                              f"only the batch dimension may be dynamic")
        return (batch, *rest)

    def allocate(self, batch: int) -> None:
        """Set every input's shape for `batch`, (re)allocate device buffers, bind every I/O tensor."""
        if batch == self.batch:
            return
        if batch < 1:
            raise ConfigError(f"batch must be >= 1, got {batch}")
        self._free_buffers()
        for info in self.inputs:
            self.context.set_input_shape(info.name, self.input_shape(info, batch))
        for info in self.tensors:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(info.name))
            if any(d < 0 for d in shape):
                raise ConfigError(f"tensor '{info.name}' has no concrete shape at batch {batch} ({list(shape)}); "
                                  f"is the batch inside the engine's profile (max {self.max_batch})?")
            nbytes = max(1, int(np.prod(shape)) * np.dtype(info.dtype).itemsize)
            ptr = _call(self.cudart.cudaMalloc(nbytes), "cudaMalloc")
            self._device_ptrs[info.name] = ptr
            self.context.set_tensor_address(info.name, _handle(ptr))
            if not info.is_input:
                self._host_out[info.name] = np.empty(shape, dtype=info.dtype)
        self.batch = batch

    # ---- running -----------------------------------------------------------------------------
    def _h2d(self, arrays: dict[str, np.ndarray]) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        for name, arr in arrays.items():
            _call(self.cudart.cudaMemcpyAsync(self._device_ptrs[name], arr.ctypes.data, arr.nbytes, kind,
                                              self.stream), "cudaMemcpyAsync H2D")

    def _execute(self) -> None:
        if not self.context.execute_async_v3(_handle(self.stream)):
            raise CompressError(f"TensorRT execute_async_v3 failed on {self.path} (see the TensorRT log)")

    def _d2h(self) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, arr in self._host_out.items():
            _call(self.cudart.cudaMemcpyAsync(arr.ctypes.data, self._device_ptrs[name], arr.nbytes, kind,
                                              self.stream), "cudaMemcpyAsync D2H")

    def _sync(self) -> None:
        _call(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def _prepare(self, x: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = x if isinstance(x, dict) else {self.inputs[0].name: x}
        missing = [t.name for t in self.inputs if t.name not in feed]
        if missing:
            raise ConfigError(f"missing engine inputs {missing}; inputs: {[t.name for t in self.inputs]}")
        batch = int(np.asarray(next(iter(feed.values()))).shape[0])
        self.allocate(batch)
        out = {}
        for info in self.inputs:
            arr = np.ascontiguousarray(np.asarray(feed[info.name]), dtype=info.dtype)
            want = self.input_shape(info, batch)
            if arr.shape != want:
                raise ConfigError(f"input '{info.name}' has shape {list(arr.shape)}; the engine expects {list(want)}")
            out[info.name] = arr
        return out

    def infer_all(self, x: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by name for one batch: H2D, execute, D2H, sync."""
        feed = self._prepare(x)
        self._h2d(feed)
        self._execute()
        self._d2h()
        self._sync()
        return {name: arr.copy() for name, arr in self._host_out.items()}

    def infer(self, x: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        """The first output for one batch (an array, or a dict of arrays by input name)."""
        return self.infer_all(x)[self.outputs[0].name]

    def timed_run(self, feed: dict[str, np.ndarray]) -> tuple[float, float]:
        """One timed call on prepared inputs: (host latency s, device compute s)."""
        cudart = self.cudart
        t0 = time.perf_counter()
        self._h2d(feed)
        _call(cudart.cudaEventRecord(self._start, self.stream), "cudaEventRecord")
        self._execute()
        _call(cudart.cudaEventRecord(self._end, self.stream), "cudaEventRecord")
        self._d2h()
        self._sync()
        host = time.perf_counter() - t0
        ms = _call(cudart.cudaEventElapsedTime(self._start, self._end), "cudaEventElapsedTime")
        return host, float(ms) / 1e3

    def random_inputs(self, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        out = {}
        for info in self.inputs:
            shape = self.input_shape(info, batch)
            if np.issubdtype(info.dtype, np.floating):
                out[info.name] = rng.standard_normal(shape).astype(info.dtype)
            else:
                out[info.name] = rng.integers(0, 2, shape).astype(info.dtype)
        return out

    # ---- cleanup -----------------------------------------------------------------------------
    def _free_buffers(self) -> None:
        for ptr in self._device_ptrs.values():
            self.cudart.cudaFree(ptr)
        self._device_ptrs.clear()
        self._host_out.clear()
        self.batch = None

    def close(self) -> None:
        if getattr(self, "cudart", None) is None:
            return
        self._free_buffers()
        for ev in (getattr(self, "_start", None), getattr(self, "_end", None)):
            if ev is not None:
                self.cudart.cudaEventDestroy(ev)
        if getattr(self, "stream", None) is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None
        self._start = self._end = None

    def __enter__(self) -> "EngineRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _percentiles(times_s: list[float]) -> dict[str, float]:
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    return {"median": float(np.median(ms)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean())}


def latency_tensorrt(engine_path: str | os.PathLike[str], batch: int = 1, warmup: int = 10,
                     iters: int = 100) -> LatencyStats:
    """Latency of a TensorRT engine on GPU 0 at `batch`, random inputs.

    The statistics (median_ms, p90_ms, ...) are host latency per batch: H2D copy + execute + D2H
    copy + sync. `extra["device_compute_ms"]` holds the GPU compute time of execute_async_v3 alone
    (CUDA events), `extra["host_latency_ms"]` the same percentiles of the host latency.
    """
    if iters < 1:
        raise ConfigError(f"iters must be >= 1, got {iters}")
    if warmup < 0:
        raise ConfigError(f"warmup must be >= 0, got {warmup}")
    with EngineRunner(engine_path) as runner:
        feed = runner._prepare(runner.random_inputs(batch))
        for _ in range(warmup):
            runner.timed_run(feed)
        host, device = [], []
        for _ in range(iters):
            h, d = runner.timed_run(feed)
            host.append(h)
            device.append(d)
        extra = {
            "tensorrt_version": str(runner.trt.__version__),
            "device_compute_ms": _percentiles(device),
            "host_latency_ms": _percentiles(host),
            "numpy": np.__version__,
            "inputs": {k: [list(v.shape), np.dtype(v.dtype).name] for k, v in feed.items()},
            "artifact": str(Path(engine_path)),
        }
        return summarize(host, backend="tensorrt", device=runner.device_name, batch=batch, threads=0,
                         warmup=warmup, iters=len(host), extra=extra)


def evaluate_engine(engine_path: str | os.PathLike[str], loader_batches: Iterable[Any], task: Any) -> dict[str, float]:
    """Task metrics of an engine over `(x, y)` batches (numpy arrays, or CPU tensors).

    Batches larger than the engine's profile maximum are run in chunks. Imports
    `compressor.evaluate.metrics` (torch) when called: the pipeline path uses it, bench never does.
    """
    import torch

    from compressor.evaluate.metrics import TaskMetrics

    metrics = TaskMetrics(task)
    with EngineRunner(engine_path) as runner:
        limit = runner.max_batch
        for batch in loader_batches:
            x, y = batch[0], batch[1]
            x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
            y = y.detach().cpu() if torch.is_tensor(y) else torch.from_numpy(np.asarray(y))
            step = limit or x.shape[0]
            outs = [runner.infer(x[i:i + step]) for i in range(0, x.shape[0], step)]
            logits = np.concatenate(outs, axis=0) if len(outs) > 1 else outs[0]
            metrics.update(torch.from_numpy(np.asarray(logits, dtype=np.float32)), y)
    return metrics.compute()
