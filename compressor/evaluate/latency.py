"""Latency measurement on every backend: warm-up excluded, many timed calls, median / p90 / p99.

Backends (the names used by `compress bench --backend`, by `evaluate.latency.backends` in a
pipeline and in reports):

    torch-cpu, torch-cuda                                   an IR (a stage directory / ModelIR)
    onnxruntime-cpu, onnxruntime-cuda, onnxruntime-tensorrt an .onnx file
    tensorrt                                                a TensorRT .engine file

Reported numbers are "SingleStream-style" latency percentiles of one call on one batch, and
"throughput at batch N" (items per second = batch / median); this is not an MLPerf-compliant
measurement. Where the device's own clock is available (torch-cuda: CUDA events) the stats also
carry device compute time (`device_median_ms`, ...) beside the host latency.

This module runs on edge devices that have only numpy and onnxruntime (and maybe tensorrt): it
must not import torch, nor any compressor module that does, at import time. torch, onnxruntime
and tensorrt are imported inside the functions that use them.
"""
from __future__ import annotations

import copy
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from compressor.errors import ConfigError
# the backend table (names, aliases, the artifacts each runs), re-exported: it lives in a module of plain data
from compressor.evaluate.backends import ALIASES, BACKEND_SUFFIXES, BACKENDS, IR_KIND
# what a measurement is and the machine it ran on: also what trt_runtime reports, so they live below both
from compressor.evaluate.timing import LatencyStats, device_name, gpu_info, host_info, summarize
from compressor.precision import check_cast_precision, get_precision, precision_of_dtype

__all__ = [
    "BACKENDS", "ALIASES", "BACKEND_SUFFIXES", "IR_KIND", "BackendUnavailable", "LatencyStats", "summarize",
    "time_callable", "latency_onnxruntime", "latency_torch", "latency_ir", "latency_engine",
    "make_cuda_graph", "normalize_backend", "engine_unavailable", "device_name", "host_info", "gpu_info", "format_stats_table",
]

# onnxruntime backend -> the providers asked for, in priority order
_ORT_PROVIDERS: dict[str, list[str]] = {
    "onnxruntime-cpu": ["CPUExecutionProvider"],
    "onnxruntime-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "onnxruntime-tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
_ORT_INSTALL_HINT = "pip install 'compressor[gpu]', which replaces the CPU onnxruntime"


class BackendUnavailable(ConfigError):
    """A valid backend that cannot run on this machine (no GPU, provider or library missing).

    A pipeline records it as skipped with this message; `compress bench` prints it as one line.
    """


def normalize_backend(name: str) -> str:
    """The canonical backend name for `name` (an alias or a canonical name), else ConfigError."""
    from compressor.options import closest  # torch-free

    name = str(name)
    if name in BACKEND_SUFFIXES:
        return name
    if name in ALIASES:
        return ALIASES[name]
    guess = closest(name, [*BACKENDS, *ALIASES])
    hint = f"did you mean '{ALIASES.get(guess, guess)}'? " if guess else ""
    raise ConfigError(f"unknown latency backend '{name}'; {hint}valid: {', '.join(BACKENDS)}")


# ---- the timing loop ----------------------------------------------------------------------------

def _check_loop(warmup: int, iters: int, min_seconds: float) -> None:
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if min_seconds < 0:
        raise ValueError(f"min_seconds must be >= 0, got {min_seconds}")


def time_callable(fn: Callable[[], Any], warmup: int = 5, iters: int = 50,
                  min_seconds: float = 0.0) -> list[float]:
    """Call `fn` `warmup` times untimed, then time each call with perf_counter.

    Keeps calling until both `iters` calls and `min_seconds` of timed calls are reached, but
    never more than 10 * iters calls. Returns the per-call times in seconds.
    """
    _check_loop(warmup, iters, min_seconds)
    for _ in range(warmup):
        fn()
    cap = 10 * iters
    times: list[float] = []
    elapsed = 0.0
    while len(times) < iters or (elapsed < min_seconds and len(times) < cap):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        elapsed += dt
    return times


def _time_cuda(fn: Callable[[], Any], device: Any, warmup: int, iters: int,
               min_seconds: float) -> tuple[list[float], list[float]]:
    """Host latency (perf_counter around the call and a synchronize) and device time (CUDA events
    on the current stream around the call) of each timed call, in seconds. Same stopping rule as
    `time_callable`."""
    import torch

    _check_loop(warmup, iters, min_seconds)
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize(device)
    stream = torch.cuda.current_stream(device)
    cap = 10 * iters
    host: list[float] = []
    events: list[tuple[Any, Any]] = []
    elapsed = 0.0
    while len(host) < iters or (elapsed < min_seconds and len(host) < cap):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record(stream)
        fn()
        end.record(stream)
        torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        host.append(dt)
        events.append((start, end))
        elapsed += dt
    device_times = [s.elapsed_time(e) / 1e3 for s, e in events]  # elapsed_time is in ms
    return host, device_times


# ---- onnxruntime ------------------------------------------------------------------------------

_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8, "tensor(bool)": np.bool_,
}


# the random inputs one session is fed, all inputs together: a graph declaring a 10**6 x 10**6 input would
# otherwise ask numpy for 7 TiB
MAX_INPUT_BYTES = 2**31


def _random_inputs(inputs: Sequence[Any], batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random arrays for onnxruntime's session inputs (their declared shapes, a dynamic first dimension set to
    `batch`), refused in one line before anything is allocated when they would exceed MAX_INPUT_BYTES."""
    specs: list[tuple[str, list[int], Any]] = []
    total = 0
    for inp in inputs:
        name, shape = inp.name, list(inp.shape)
        dims = []
        for i, d in enumerate(shape):
            if isinstance(d, int) and d > 0:
                dims.append(d)
            elif i == 0:  # dynamic (None) or symbolic ("batch", "N") batch dimension
                dims.append(batch)
            else:
                raise ConfigError(f"input '{name}' has a dynamic non-batch dimension {i} ({d!r}) in shape "
                                  f"{shape}; only the batch dimension may be dynamic; export with a fixed size")
        dtype = _ORT_DTYPES.get(inp.type)
        if dtype is None:
            raise ConfigError(f"input '{name}' has type {inp.type}; supported: {', '.join(_ORT_DTYPES)}")
        nbytes = math.prod(dims) * np.dtype(dtype).itemsize
        total += nbytes
        if total > MAX_INPUT_BYTES:
            also = f" (all inputs so far: {total / 2**30:,.1f} GiB)" if total != nbytes else ""
            raise ConfigError(f"input '{name}' of shape {dims} ({inp.type}) needs {nbytes / 2**30:,.1f} GiB of random "
                              f"data{also}; bench feeds at most {MAX_INPUT_BYTES / 2**30:g} GiB of inputs; lower "
                              f"--batch or export the model with a smaller input shape")
        specs.append((name, dims, dtype))
    feed = {}
    for name, dims, dtype in specs:
        if np.issubdtype(dtype, np.floating):  # drawn in float32 (float64 for double): no float64 copy to cast
            draw = np.float64 if dtype == np.float64 else np.float32
            feed[name] = rng.standard_normal(dims, dtype=draw).astype(dtype, copy=False)
        else:  # 0/1: valid booleans, and valid indices for gathers
            feed[name] = rng.integers(0, 2, dims, dtype=np.int8).astype(dtype, copy=False)
    return feed


def _ort_check_providers(ort: Any, backend: str) -> list[str]:
    providers = _ORT_PROVIDERS[backend]
    available = ort.get_available_providers()
    if providers[0] not in available:
        need = "onnxruntime-gpu" if backend == "onnxruntime-cuda" else "onnxruntime-gpu and TensorRT's libraries"
        raise BackendUnavailable(f"{backend} needs {need} ({_ORT_INSTALL_HINT}); this onnxruntime "
                                 f"{ort.__version__} has {', '.join(available)}")
    return [p for p in providers if p in available]


def _ort_errors() -> tuple[type, ...]:
    """What onnxruntime raises when a model fails to load or run (its pybind classes derive from Exception)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return (state.Fail, state.InvalidArgument, state.RuntimeException, state.NotImplemented, state.EPFail,
            state.EngineError)


_ORT_SOURCE = re.compile(r"/onnxruntime_src/\S+:\d+ .*?\)\s+(?:\S.*? was false\.\s+)?")  # file:line, C++ signature
_ORT_NODE = re.compile(r"running (\S+) node\. Name:'([^']*)' Status Message: (.*)")


def _ort_run_error(exc: Exception, path: Path, batch: int) -> ConfigError:
    """A one-line error for a graph onnxruntime loaded but cannot run, naming the failing node and op type,
    without onnxruntime's source locations and C++ signatures."""
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", " ".join(str(exc).split()))
    text = _ORT_SOURCE.sub("", text)
    node = _ORT_NODE.search(text)
    what = f"node '{node.group(2)}' ({node.group(1)}) fails: {node.group(3)}" if node else text
    return ConfigError(f"onnxruntime cannot run {path} at batch {batch}: {what[:400]}; bench feeds random inputs of "
                       f"the graph's declared shapes and types, so the graph fails on its own inputs; fix the model (or "
                       f"its declared input shapes) and re-export it")


def _ort_session(ort: Any, path: Path, opts: Any, providers: list[str]) -> Any:
    """An InferenceSession, or a ConfigError naming the file when onnxruntime cannot load it (not ONNX,
    empty, truncated, an invalid graph or an operator this onnxruntime lacks)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    load_errors = (state.InvalidProtobuf, state.InvalidArgument, state.InvalidGraph, state.NoModel, state.Fail,
                   state.NotImplemented)
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except load_errors as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        # "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from X failed:Protobuf parsing failed."
        reason = lines[0].split(f"{path} failed:", 1)[-1].split("] : ", 1)[-1].strip().rstrip(".")
        raise ConfigError(f"onnxruntime cannot load {path}: {reason}; check that it is a complete .onnx file "
                          f"(re-export it: export: [onnx] in a pipeline)") from None


def latency_onnxruntime(path: str | os.PathLike[str], batch: int = 1, threads: int | None = None,
                        warmup: int = 5, iters: int = 50, min_seconds: float = 0.0,
                        backend: str = "onnxruntime-cpu") -> LatencyStats:
    """Latency of an ONNX graph on onnxruntime.

    `backend`: onnxruntime-cpu (CPUExecutionProvider), onnxruntime-cuda (CUDAExecutionProvider)
    or onnxruntime-tensorrt (TensorrtExecutionProvider, CUDA for the nodes TensorRT rejects).
    Random inputs of each graph input's shape and dtype, the batch dimension (dynamic or symbolic)
    set to `batch`. On a GPU backend the inputs are bound once as device OrtValues and the
    outputs are bound to the device (io_binding), so the timed calls exclude host copies.
    `threads` sets intra_op_num_threads; None leaves onnxruntime's default and records
    os.cpu_count(). A provider this onnxruntime lacks raises BackendUnavailable.
    """
    import onnxruntime as ort

    backend = normalize_backend(backend)
    if backend not in _ORT_PROVIDERS:
        raise ConfigError(f"latency_onnxruntime runs the onnxruntime-* backends, not '{backend}'")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no ONNX file at {path}")
    providers = _ort_check_providers(ort, backend)
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
    sess = _ort_session(ort, path, opts, providers)
    used = sess.get_providers()
    if used[0] != providers[0]:
        # onnxruntime falls back silently (a warning only) when a GPU provider fails to load
        raise BackendUnavailable(f"{backend}: {providers[0]} failed to load (missing CUDA/cuDNN/TensorRT "
                                 f"libraries? see onnxruntime's warning); the session would run on {used[0]}")
    if not sess.get_outputs():
        raise ConfigError(f"{path} declares no graph outputs, so there is nothing to time; re-export it")
    feed = _random_inputs(sess.get_inputs(), batch, np.random.default_rng(0))
    gpu = backend != "onnxruntime-cpu"
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # a failing kernel is logged on stderr before it raises; the raise is our one line
    if gpu:
        binding = sess.io_binding()
        for name, arr in feed.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr, "cuda", 0))
        for out in sess.get_outputs():
            binding.bind_output(out.name, "cuda", 0)

        def call() -> None:
            sess.run_with_iobinding(binding, quiet)
            binding.synchronize_outputs()
    else:
        def call() -> None:
            sess.run(None, feed, quiet)

    try:
        times = time_callable(call, warmup=warmup, iters=iters, min_seconds=min_seconds)
    except _ort_errors() as exc:
        raise _ort_run_error(exc, path, batch) from None
    gpu_desc = gpu_info() if gpu else {}
    return summarize(
        times, backend=backend, device=gpu_desc.get("gpu", "CUDA GPU") if gpu else device_name(), batch=batch,
        threads=threads if threads is not None else (os.cpu_count() or 0),
        warmup=warmup, iters=len(times),
        extra={
            "onnxruntime": ort.__version__, **host_info(), **gpu_desc,
            "providers": used, "io_binding": gpu,
            "inputs": {k: [list(v.shape), str(v.dtype)] for k, v in feed.items()},
            "artifact": str(path),
        },
    )


# ---- torch ------------------------------------------------------------------------------------

def side_by_side_onnxruntime(paths: Sequence[str | os.PathLike[str]], rounds: int, iters: int,
                             threads: int | None = None, batch: int = 1, spinning: bool = True) -> list[float]:
    """Median onnxruntime CPU latency (ms per call of `batch` samples) of each model: all sessions
    open at once and timed in `rounds` interleaved rounds of `iters` calls (after a warm-up), so
    that slow phases of a shared machine fall on every model alike.

    `spinning=False` sets onnxruntime's `session.intra_op.allow_spinning` to 0: idle pool threads sleep
    instead of spin-waiting. On a small shared machine the spinning threads of one session (and of other
    processes) take cores from the session being timed; measured on 2 cores under load, ResNet-50's
    int8/fp32 ratio read 2.25-2.42x with spinning and 3.31-3.56x without (both sessions ran faster)."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    calls = []
    for p in paths:
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        if not spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(str(p), sess_options=so, providers=["CPUExecutionProvider"])
        calls.append((sess, _random_inputs(sess.get_inputs(), batch, rng)))
    times: list[list[float]] = [[] for _ in paths]
    for sess, feed in calls:  # warm-up
        for _ in range(5):
            sess.run(None, feed)
    for _ in range(rounds):
        for k, (sess, feed) in enumerate(calls):
            for _ in range(iters):
                t = time.perf_counter()
                sess.run(None, feed)
                times[k].append(time.perf_counter() - t)
    return [1000 * float(np.median(t)) for t in times]


def make_cuda_graph(module: Any, inputs: tuple, warmup: int = 3) -> tuple[Callable[[], None], tuple, Any]:
    """Capture `module(*inputs)` in a torch.cuda.CUDAGraph (the documented recipe).

    Warm-up runs on a side stream, then capture into static input buffers (copies of `inputs`).
    Returns (replay, static_inputs, static_output): copy new data into static_inputs, call
    replay(), read static_output. Call under torch.no_grad(). A module that synchronizes with the
    host or changes shapes cannot be captured: BackendUnavailable with the reason.
    """
    import torch

    static_inputs = tuple(x.clone() if torch.is_tensor(x) else x for x in inputs)
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(max(1, warmup)):
                module(*static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_output = module(*static_inputs)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackendUnavailable(f"torch-cuda: CUDA graph capture failed ({first}); run without cuda_graphs") from None
    return graph.replay, static_inputs, static_output


def _cast_floating(x: Any, dtype: Any) -> Any:
    import torch

    return x.to(dtype) if torch.is_tensor(x) and x.is_floating_point() else x


def _module_precision(module: Any) -> str:
    """The cast precision of a module's floating tensors (the first one's dtype; fp32 if none or unknown)."""
    p = next((t for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()), None)
    found = precision_of_dtype(str(p.dtype).removeprefix("torch.")) if p is not None else None
    return found or precision_of_dtype("float32")


def latency_torch(module: Any, example_inputs: tuple, threads: int | None = None,
                  warmup: int = 5, iters: int = 50, min_seconds: float = 0.0,
                  precision: str | None = None, cuda_graphs: bool = False) -> LatencyStats:
    """Latency of a torch module in eval mode (inference_mode; no_grad for CUDA graphs).

    The device follows the inputs ("torch-cpu", or "torch-cuda": host latency with a synchronize
    per call and device time from CUDA events). `precision` "fp16" / "fp32" times a half / float
    copy of the module on inputs cast alike (None: the module and inputs as given). `cuda_graphs`
    (CUDA only) captures the forward in a CUDA graph and times its replay. `threads` sets
    torch.set_num_threads for the measurement only; the previous value and the module's
    train/eval flags are restored afterwards.
    """
    import torch

    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    check_cast_precision(precision)
    first = next((x for x in example_inputs if torch.is_tensor(x)), None)
    dev = first.device if first is not None else torch.device("cpu")
    batch = int(first.shape[0]) if first is not None and first.ndim > 0 else 1
    cuda = dev.type == "cuda"
    if cuda_graphs and not cuda:
        raise ConfigError("cuda_graphs needs the torch-cuda backend (inputs on a CUDA device)")
    if precision is not None and _module_precision(module) != precision:  # cast a copy
        dtype = getattr(torch, get_precision(precision).module_dtype)
        module = copy.deepcopy(module).to(dtype)
        example_inputs = tuple(_cast_floating(x, dtype) for x in example_inputs)
    used_precision = _module_precision(module)

    previous_threads = torch.get_num_threads()
    modes = {m: m.training for m in module.modules()}
    module.eval()
    device_times: list[float] | None = None
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        used_threads = torch.get_num_threads()
        if cuda:
            with torch.cuda.device(dev):
                if cuda_graphs:
                    with torch.no_grad():
                        replay, _static_in, _static_out = make_cuda_graph(module, example_inputs)
                        times, device_times = _time_cuda(replay, dev, warmup, iters, min_seconds)
                else:
                    with torch.inference_mode():
                        times, device_times = _time_cuda(lambda: module(*example_inputs), dev, warmup, iters,
                                                         min_seconds)
        else:
            with torch.inference_mode():
                times = time_callable(lambda: module(*example_inputs), warmup=warmup, iters=iters,
                                      min_seconds=min_seconds)
    finally:
        torch.set_num_threads(previous_threads)
        for m, mode in modes.items():
            m.training = mode
    extra: dict[str, Any] = {
        "torch": torch.__version__, **host_info(), "precision": used_precision,
        "dtype": next((str(x.dtype).replace("torch.", "") for x in example_inputs if torch.is_tensor(x)), None),
        "inputs": [list(x.shape) for x in example_inputs if torch.is_tensor(x)],
    }
    if cuda:
        props = torch.cuda.get_device_properties(dev)
        extra.update({
            "cuda_graphs": cuda_graphs, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "tf32_conv": torch.backends.cudnn.allow_tf32, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "compute_capability": f"{props.major}.{props.minor}", "gpu_memory_gb": round(props.total_memory / 2**30, 1),
            **gpu_info(dev.index or 0),
        })
    return summarize(
        times, device_times, backend=f"torch-{dev.type}",
        device=torch.cuda.get_device_name(dev) if cuda else device_name(),
        batch=batch, threads=used_threads, warmup=warmup, iters=len(times), extra=extra,
    )


def latency_ir(ir: Any, backend: str = "torch-cpu", batch: int = 1, threads: int | None = None,
               warmup: int = 5, iters: int = 50, min_seconds: float = 0.0, precision: str | None = None,
               cuda_graphs: bool = False) -> LatencyStats:
    """Latency of a ModelIR on torch-cpu or torch-cuda, at the IR's precision unless `precision`
    says otherwise. torch-cuda times a copy moved to the GPU (the IR's module stays where it is);
    without a CUDA GPU it raises BackendUnavailable."""
    import torch

    backend = normalize_backend(backend)
    if backend not in ("torch-cpu", "torch-cuda"):
        raise ConfigError(f"backend '{backend}' cannot run an IR; IR backends: torch-cpu, torch-cuda")
    if backend == "torch-cpu" and cuda_graphs:
        raise ConfigError("cuda_graphs needs the torch-cuda backend")
    inputs = ir.example_inputs(batch)
    module = ir.module
    if backend == "torch-cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise BackendUnavailable(f"torch-cuda needs a CUDA GPU and none is available (torch {torch.__version__}, "
                                     f"{build}); use torch-cpu")
        module = copy.deepcopy(module).to("cuda")
        inputs = tuple(x.to("cuda") if torch.is_tensor(x) else x for x in inputs)
    stats = latency_torch(module, inputs, threads=threads, warmup=warmup, iters=iters, min_seconds=min_seconds,
                          precision=precision, cuda_graphs=cuda_graphs)
    stats.extra["ir_precision"] = ir.precision
    return stats


# ---- TensorRT ---------------------------------------------------------------------------------

_TRT_UNAVAILABLE = "backend 'tensorrt':"  # how trt_runtime words "tensorrt / cuda-python / a GPU is missing"


def engine_unavailable(exc: ConfigError) -> bool:
    """Whether a ConfigError from trt_runtime means this machine cannot run engines at all (as
    opposed to a problem with one engine, which stays an error)."""
    return str(exc).startswith(_TRT_UNAVAILABLE)


def latency_engine(path: str | os.PathLike[str], batch: int = 1, warmup: int = 10, iters: int = 100) -> LatencyStats:
    """Latency of a TensorRT .engine file (compressor.evaluate.trt_runtime; torch-free): host
    latency per batch, and the device compute time trt_runtime measures as the device_* fields.
    BackendUnavailable when tensorrt, cuda-python, a CUDA GPU or the runtime module is missing."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no TensorRT engine at {path}")
    try:
        from compressor.evaluate import trt_runtime
    except ImportError as exc:
        raise BackendUnavailable(f"tensorrt: cannot load compressor.evaluate.trt_runtime ({exc})") from None
    try:
        stats = trt_runtime.latency_tensorrt(path, batch=batch, warmup=warmup, iters=iters)
    except BackendUnavailable:
        raise
    except ConfigError as exc:
        if engine_unavailable(exc):
            raise BackendUnavailable(str(exc)) from None
        raise
    extra = dict(stats.extra or {})
    device = extra.get("device_compute_ms")
    if isinstance(device, dict) and stats.device_median_ms is None:
        for key in ("median", "p90", "p99", "mean", "std", "min"):
            if isinstance(device.get(key), (int, float)):
                setattr(stats, f"device_{key}_ms", float(device[key]))
    stats.extra = {**host_info(), **gpu_info(), **extra, "artifact": str(path)}
    return stats


# ---- presentation -----------------------------------------------------------------------------

def format_stats_table(stats: list[LatencyStats]) -> str:
    """An aligned text table, one row per measurement; device-time columns when any row has them."""
    with_device = any(s.device_median_ms is not None for s in stats)
    header = ["backend", "device", "precision", "batch", "threads", "p50 ms", "p90 ms", "p99 ms",
              "mean ms", "std ms", "min ms", "items/s"]
    if with_device:
        header += ["dev p50 ms", "dev p90 ms"]

    def row(s: LatencyStats) -> list[str]:
        extra = s.extra or {}
        prec = str(extra.get("precision") or "-")
        if extra.get("cuda_graphs"):
            prec += "+graphs"
        r = [s.backend, s.device, prec, str(s.batch), str(s.threads), f"{s.median_ms:.3f}", f"{s.p90_ms:.3f}",
             f"{s.p99_ms:.3f}", f"{s.mean_ms:.3f}", f"{s.std_ms:.3f}", f"{s.min_ms:.3f}", f"{s.throughput:,.1f}"]
        if with_device:
            r += [f"{v:.3f}" if v is not None else "-" for v in (s.device_median_ms, s.device_p90_ms)]
        return r

    rows = [row(s) for s in stats]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    left = {0, 1, 2}  # text columns; numbers align right

    def fmt(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)])
