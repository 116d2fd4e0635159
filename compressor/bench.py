"""`compress bench ARTIFACT`: time a deployable artifact on one or more backends.

Benchmarking an .onnx file imports numpy and onnxruntime only (and onnx where installed, to read
the graph's precision), and an .engine file numpy and tensorrt only, never torch, so that both run on an edge device; torch is imported only for an
IR directory (a stage directory of a run, written by ModelIR.save). Nothing is ever unpickled: a
.pt file is refused in one line.

Each result reports the precision of the artifact it ran (`extra["precision"]`, the table's
precision column; `artifact_precision`): an .onnx file's is read from its graph without running it
(the `onnx` package, if installed: "-" without it), an engine's from its sidecar, an IR's from its
ir.json (the torch backends show the cast precision instead where --precision asks for one).

A hostile file is refused in one line before anything runs: where `onnx` is installed, a graph with no nodes
or outputs, a tensor of a type ONNX does not define, an initializer whose data does not match its shape, and a
Loop whose trip count is a constant over MAX_LOOP_TRIPS (a trip count computed from data cannot be bounded in
advance); the settings beyond MAX_ITERS / MAX_WARMUP; random inputs beyond latency.MAX_INPUT_BYTES.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

from compressor.errors import ConfigError
from compressor.evaluate.backends import AUTO, BACKEND_SUFFIXES, BACKENDS, DEFAULT_BY_SUFFIX, IR_KIND, backends_for
from compressor.evaluate.latency import (
    LatencyStats,
    format_stats_table,
    latency_engine,
    latency_onnxruntime,
)
from compressor.options import closest
from compressor.precision import check_cast_precision
from compressor.store import is_pickle

__all__ = ["BACKENDS", "SUFFIXES", "artifact_precision", "check_onnx_graph", "check_onnx_loops", "onnx_precision",
           "refuse_empty", "run_bench", "run_bench_many", "format_stats_table", "tensor_nbytes", "edge_metadata",
           "format_metadata", "MAX_ITERS", "MAX_WARMUP", "MAX_THREADS", "MAX_LOOP_TRIPS"]

# artifact kind -> the backend "auto" picks (the backend table's, under its older name here)
SUFFIXES: dict[str, str] = DEFAULT_BY_SUFFIX
# the most timed / untimed calls one bench makes (10**30 would never end; 10**6 calls of a 1 ms model take 17 min)
MAX_ITERS = 1_000_000
MAX_WARMUP = 100_000
MAX_THREADS = 1024  # onnxruntime starts every intra-op thread up front: 100,000 takes minutes, 10**30 overflows
# the largest constant Loop trip count bench runs: one trip of even a tiny body takes microseconds
MAX_LOOP_TRIPS = 1_000_000
# metadata_props the ONNX exporter writes (JSON): the task and the data's preprocessing, for the edge side
TASK_KEY = "compressor.task"
PREPROCESS_KEY = "compressor.preprocess"
MAX_METADATA_CHARS = 1 << 20  # a larger value is not ours: it is skipped rather than parsed


def artifact_kind(path: Path) -> str:
    """'.onnx', '.engine', IR_KIND (a directory or its ir.json), or the file's own suffix."""
    if path.is_dir() or path.name == "ir.json":
        return IR_KIND
    return path.suffix.lower()


# operators of onnxruntime's QOperator format (quantized kernels; QDQ graphs use Quantize/DequantizeLinear)


def _graphs(graph: Any) -> Iterator[Any]:
    """`graph` and every subgraph in it (If / Loop / Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _graphs(sub)


def _nodes(graph: Any) -> Iterator[Any]:
    """Every node of `graph` and of its subgraphs."""
    for g in _graphs(graph):
        yield from g.node


def _constants(model: Any) -> dict[str, Any]:
    """Name -> TensorProto of every initializer and Constant node (`value`) of the model, subgraphs included."""
    out = {t.name: t for g in _graphs(model.graph) for t in g.initializer}
    for node in _nodes(model.graph):
        if node.op_type == "Constant" and node.output:
            out.update({node.output[0]: attr.t for attr in node.attribute if attr.name == "value"})
    return out


# sub-byte types, stored packed in raw_data (onnx.numpy_helper unpacks them alike)
_PACKED_BITS = {"INT4": 4, "UINT4": 4, "FLOAT4E2M1": 4, "INT2": 2, "UINT2": 2, "FLOAT6E2M3": 6, "FLOAT6E3M2": 6}


def tensor_nbytes(t: Any) -> int | None:
    """The bytes `t`'s shape and type need in raw_data; None for strings and types ONNX does not define."""
    from onnx import TensorProto, helper

    if t.data_type == TensorProto.STRING or t.data_type not in TensorProto.DataType.values():
        return None
    n = math.prod(t.dims)
    bits = _PACKED_BITS.get(TensorProto.DataType.Name(t.data_type))
    if bits is not None:
        return (n * bits + 7) // 8
    try:
        return n * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except (KeyError, ValueError, TypeError):  # UNDEFINED, or a type this numpy cannot hold
        return None


def refuse_empty(path: Path) -> None:
    """ConfigError for a 0-byte file (protobuf reads it as an empty model, onnxruntime as nothing)."""
    if path.is_file() and path.stat().st_size == 0:
        raise ConfigError(f"{path} is empty (0 bytes); an interrupted export or copy? re-export it, or pass "
                          "another .onnx / .engine file or stage directory")


def check_onnx_graph(model: Any, path: Path) -> None:
    """Refuse in one line an ONNX ModelProto that cannot be described or run: no nodes, no outputs, a tensor
    whose type ONNX does not define, or an initializer whose data does not match its shape."""
    from onnx import TensorProto

    fix = "re-export it, or pass the model's complete .onnx file"
    if not model.graph.node:
        raise ConfigError(f"{path} holds a graph with no nodes (empty, truncated or not ONNX); {fix}")
    if not model.graph.output:
        raise ConfigError(f"{path} declares no graph outputs, so there is nothing to compute; {fix}")
    valid = TensorProto.DataType.values()
    for g in _graphs(model.graph):
        for v in [*g.input, *g.output, *g.value_info]:
            if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type not in valid:
                raise ConfigError(f"{path}: tensor '{v.name}' has element type {v.type.tensor_type.elem_type}, "
                                  f"which ONNX does not define (valid: 1-{max(valid)}); {fix}")
    for name, t in _constants(model).items():
        if t.data_type not in valid or t.data_type == TensorProto.UNDEFINED:
            raise ConfigError(f"{path}: initializer '{name}' has data type {t.data_type}, which ONNX does not define "
                              f"(valid: 1-{max(valid)}); {fix}")
        if any(d < 0 for d in t.dims):
            raise ConfigError(f"{path}: initializer '{name}' has negative dimensions {list(t.dims)}; {fix}")
        need = tensor_nbytes(t)
        if t.HasField("raw_data") and t.data_location != TensorProto.EXTERNAL and need is not None \
                and len(t.raw_data) != need:
            kind = TensorProto.DataType.Name(t.data_type).lower()
            raise ConfigError(f"{path}: initializer '{name}' holds {len(t.raw_data):,} bytes of data, but its shape "
                              f"{list(t.dims)} of {kind} needs {need:,} (a corrupt or truncated file); {fix}")


def check_onnx_loops(model: Any, path: Path) -> None:
    """Refuse a Loop node whose trip count is a constant (initializer or Constant node) above MAX_LOOP_TRIPS.
    A trip count computed at run time, or a loop that stops on a condition, cannot be bounded in advance."""
    from onnx import numpy_helper

    loops = [n for n in _nodes(model.graph) if n.op_type == "Loop" and n.input and n.input[0]]
    if not loops:
        return
    constants = _constants(model)
    value_ints = {n.output[0]: a.i for n in _nodes(model.graph) if n.op_type == "Constant" and n.output
                  for a in n.attribute if a.name == "value_int"}
    for node in loops:
        name = node.input[0]
        count = value_ints.get(name)
        if count is None and name in constants:  # not in either: computed at run time
            try:
                values = numpy_helper.to_array(constants[name]).reshape(-1)
            except (ValueError, TypeError):  # a malformed tensor: onnxruntime refuses the file when it loads it
                continue
            count = int(values[0]) if values.size and values.dtype.kind in "iu" else None
        if count is not None and count > MAX_LOOP_TRIPS:
            raise ConfigError(f"{path}: Loop node '{node.name or '?'}' has a constant trip count of {count:,} "
                              f"('{name}'), over the {MAX_LOOP_TRIPS:,} bench runs (it would not finish); "
                              f"lower the model's loop count")


def _read_onnx(path: Path) -> Any:
    """The ModelProto of `path` without its external data, or None without the `onnx` package or when
    protobuf cannot parse the file (onnxruntime then reports it)."""
    try:
        import onnx  # not needed to run an .onnx file: without it nothing is checked and the precision is unknown
    except ImportError:
        return None
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - a corrupt file is the run's error to report
        return None


def edge_metadata(path: Path, model: Any) -> dict[str, Any]:
    """{"task": ..., "preprocess": ...} from an .onnx file's metadata_props (those present and valid JSON
    objects): read from `model` (a ModelProto), or without the `onnx` package through onnxruntime's
    model metadata. Never raises: a file without them, or one that cannot be read, gives {}."""
    try:
        if model is not None:
            props = {p.key: p.value for p in model.metadata_props}
        else:
            import onnxruntime as ort

            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            props = dict(session.get_modelmeta().custom_metadata_map)
    except Exception:  # noqa: BLE001 - best effort: the run reports a broken file
        return {}
    out: dict[str, Any] = {}
    for name, key in (("task", TASK_KEY), ("preprocess", PREPROCESS_KEY)):
        text = props.get(key)
        if not text or len(text) > MAX_METADATA_CHARS:
            continue
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            out[name] = value
    return out


def format_metadata(stats: Sequence[LatencyStats]) -> list[str]:
    """The `preprocess:` and `task:` lines printed after the table (one JSON object each), for the
    artifact's metadata that `edge_metadata` found."""
    extra = next((s.extra for s in stats if s.extra.get("preprocess") or s.extra.get("task")), {})
    return [f"{name}: {json.dumps(extra[name], separators=(', ', ': '))}" for name in ("preprocess", "task")
            if extra.get(name)]


def onnx_precision(model: Any) -> str:
    """The precision of an ONNX ModelProto, from its graph alone: the label of the first registered precision
    that recognizes it (`compressor.precision`: "int8 (QOperator)" with quantized operators, "int8 (QDQ)"
    with QuantizeLinear / DequantizeLinear nodes, "fp16" when most floating weight elements (initializers
    and Constant nodes; without any, the graph inputs) are float16, else "fp32")."""
    from onnx import TensorProto

    from compressor.precision import GraphSummary, recognize_graph

    ops = frozenset(node.op_type for node in _nodes(model.graph))
    tensors = list(model.graph.initializer) + [
        attr.t for node in _nodes(model.graph) if node.op_type == "Constant" for attr in node.attribute
        if attr.HasField("t")]
    elements = {TensorProto.FLOAT16: 0, TensorProto.FLOAT: 0}
    for t in tensors:
        if t.data_type in elements:
            n = 1
            for d in t.dims:
                n *= d
            elements[t.data_type] += n
    if not any(elements.values()):  # no floating weights: the graph inputs' types
        for vi in model.graph.input:
            if vi.type.tensor_type.elem_type in elements:
                elements[vi.type.tensor_type.elem_type] += 1
    label = recognize_graph(GraphSummary(ops, elements[TensorProto.FLOAT], elements[TensorProto.FLOAT16]))
    return label or "unknown"


def artifact_precision(path: Path) -> str | None:
    """The precision of an artifact without running it, None where it cannot be told: an .onnx
    file's graph (`onnx_precision`; needs the `onnx` package, external data is not read), a
    TensorRT engine's sidecar (`model.engine.json`, "precision"), an IR directory's ir.json
    ("precision"). Never raises: an unreadable file is the run's error to report, not this one's."""
    kind = artifact_kind(path)
    try:
        if kind == ".onnx":
            model = _read_onnx(path)
            return onnx_precision(model) if model is not None else None
        doc_path = {".engine": path.with_name(path.name + ".json"),
                    IR_KIND: path / "ir.json" if path.is_dir() else path}.get(kind)
        doc = json.loads(doc_path.read_text()) if doc_path is not None else None
        found = doc.get("precision") if isinstance(doc, dict) else None
        return str(found) if found else None
    except Exception:  # noqa: BLE001 - best effort: a missing module, sidecar or a corrupt file
        return None


def _plural(kind: str) -> str:
    return "IR directories" if kind == IR_KIND else f"{kind} files"


def _resolve_backend(path: Path, backend: str) -> str:
    suffix = artifact_kind(path)
    if suffix not in SUFFIXES:
        what = "is a pickle (torch.save) file, and pickled files are never loaded (loading one can run code)" \
            if path.is_file() and is_pickle(path) else f"is of unknown kind '{suffix or path.name}'"
        raise ConfigError(f"cannot benchmark '{path.name}': it {what}; valid: "
                          + ", ".join(f"{s} ({b})" for s, b in SUFFIXES.items())
                          + "; for a model, give its stage directory from a run")
    if backend == AUTO:
        return SUFFIXES[suffix]
    if backend not in BACKEND_SUFFIXES:
        guess = closest(backend, [*BACKENDS, AUTO])
        hint = f"did you mean '{guess}'? " if guess else ""
        raise ConfigError(f"unknown backend '{backend}'; {hint}valid: {AUTO}, {', '.join(BACKENDS)}")
    if suffix not in BACKEND_SUFFIXES[backend]:
        takes = ", ".join(_plural(k) for k in BACKEND_SUFFIXES[backend])
        here = backends_for(suffix)
        fits = f"backends for {_plural(suffix)}: {', '.join(here)}" if here else "use --backend auto"
        raise ConfigError(f"backend '{backend}' cannot run '{path.name}'; it takes {takes}; {fits}")
    return backend


def run_bench_many(artifact: str | Path, backends: Sequence[str] = ("auto",), batch: int = 1,
                   threads: int | None = None, warmup: int = 10, iters: int = 100, min_seconds: float = 0.0,
                   precision: str | None = None, cuda_graphs: bool = False,
                   trust_factory: bool = False) -> list[LatencyStats]:
    """Latency of `artifact` on each of `backends`, in order ("auto": by kind, .onnx ->
    onnxruntime-cpu, .engine -> tensorrt, an IR directory -> torch-cpu; repeats dropped).
    `trust_factory` allows rebuilding an IR whose recipe calls a user factory (that runs its code).

    Every backend is checked against the file before anything runs. `precision` (fp32 | fp16;
    None: the IR's own) applies to the torch backends only, `cuda_graphs` to torch-cuda only.
    Each result's `extra["precision"]` is the artifact's precision (`artifact_precision`; None if
    unknown), or for a torch backend given `precision`, the precision it was cast to and timed at.
    """
    path = Path(artifact)
    if not path.exists():
        raise ConfigError(f"no artifact at {path}; pass an .onnx file, a TensorRT .engine or a stage directory "
                          "of a run")
    if not backends:
        backends = ("auto",)
    resolved: list[str] = []
    for b in backends:  # first, so a bad choice fails before file checks
        r = _resolve_backend(path, b)
        if r not in resolved:
            resolved.append(r)
    refuse_empty(path)
    threads_ok = threads is None or 1 <= threads <= MAX_THREADS
    if batch < 1 or not 1 <= iters <= MAX_ITERS or not 0 <= warmup <= MAX_WARMUP or not threads_ok \
            or not (min_seconds >= 0 and math.isfinite(min_seconds)):
        raise ConfigError(f"invalid bench settings batch={batch} threads={threads} warmup={warmup} iters={iters} "
                          f"min_seconds={min_seconds}; need batch >= 1, 1 <= threads <= {MAX_THREADS} (or unset), "
                          f"0 <= warmup <= {MAX_WARMUP:,}, 1 <= iters <= {MAX_ITERS:,}, finite min_seconds >= 0")
    check_cast_precision(precision)
    torch_backends = [b for b in resolved if b.startswith("torch-")]
    if precision is not None and not torch_backends:
        raise ConfigError(f"--precision applies to the torch backends (an IR file); the precision of "
                          f"{path.name} was fixed when it was exported")
    if cuda_graphs and "torch-cuda" not in resolved:
        raise ConfigError("--cuda-graphs needs --backend torch-cuda (an IR file)")

    ir = None
    if torch_backends:
        from compressor.ir import ModelIR  # only here: the IR backends need torch

        ir = ModelIR.load(path, trust_factory=trust_factory)
    if artifact_kind(path) == ".onnx":
        model = _read_onnx(path)
        if model is not None:  # before onnxruntime loads or runs anything
            check_onnx_graph(model, path)
            check_onnx_loops(model, path)
        own_precision = onnx_precision(model) if model is not None else None
        metadata = edge_metadata(path, model)
    else:
        own_precision = ir.precision if ir is not None else artifact_precision(path)
        metadata = {}
    out: list[LatencyStats] = []
    for b in resolved:
        if b.startswith("onnxruntime-"):
            stats = latency_onnxruntime(path, batch=batch, threads=threads, warmup=warmup, iters=iters,
                                        min_seconds=min_seconds, backend=b)
        elif b == "tensorrt":
            stats = latency_engine(path, batch=batch, warmup=warmup, iters=iters)
        else:
            from compressor.evaluate.latency import latency_ir

            stats = latency_ir(ir, b, batch=batch, threads=threads, warmup=warmup, iters=iters,
                               min_seconds=min_seconds, precision=precision,
                               cuda_graphs=cuda_graphs and b == "torch-cuda")
            stats.extra["artifact"] = str(path)
        if not (b.startswith("torch-") and precision is not None):  # else: the cast it timed
            stats.extra["precision"] = own_precision
        stats.extra.update(metadata)
        out.append(stats)
    return out


def run_bench(artifact: str | Path, backend: str = "auto", batch: int = 1, threads: int | None = None,
              warmup: int = 10, iters: int = 100, min_seconds: float = 0.0, precision: str | None = None,
              cuda_graphs: bool = False, trust_factory: bool = False) -> LatencyStats:
    """Latency of `artifact` on one `backend` (see run_bench_many)."""
    (stats,) = run_bench_many(artifact, [backend], batch=batch, threads=threads, warmup=warmup, iters=iters,
                              min_seconds=min_seconds, precision=precision, cuda_graphs=cuda_graphs,
                              trust_factory=trust_factory)
    return stats
