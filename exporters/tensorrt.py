"""TensorRT exporter: `model.onnx`, `build_engine.sh` and, where TensorRT and a CUDA GPU are present,
`model.engine` with its `model.engine.json` sidecar.

An engine only runs on the GPU model and TensorRT version it was built for, so this exporter always
writes the ONNX graph and the equivalent `trtexec` command: an edge user copies the stage folder to
the device and runs `./build_engine.sh` there.

What `export` does, in order:

1. Writes `model.onnx` with the ONNX exporter (`export_onnx`, atomic and verified; `onnx:` options
   are passed through, e.g. `{opset: 18}`). The precision is the IR's (`precision: auto`) or the one
   asked for: `fp16` exports the fp16 ONNX graph (fp16 weights, fp32 inputs/outputs), because
   TensorRT >= 11 is strongly typed and takes the precision from the graph; `fp32` exports an fp32
   graph even from an fp16 IR (its weights keep their fp16 rounding). `int8` needs an int8 IR (the
   `int8` pass): its ONNX graph is the QDQ graph (QuantizeLinear/DequantizeLinear pairs, int8
   weights with per-channel scales), and the Q/DQ scales are all the quantization TensorRT gets
   (explicit quantization; there is no calibration here). So `precision: int8` on a float IR, and
   `fp32`/`fp16` on an int8 IR, are ExportErrors (`precision_for`), as is an int8 IR quantized with
   uint8 activations (`ir.meta["int8"]["activations"]`, the onnxruntime CPU choice): TensorRT's
   explicit quantization takes signed symmetric int8 activations only. These are checked before
   anything is written, and an ONNX export whose `info["precision"]` is not int8 is refused too.
2. Writes `build_engine.sh` (executable): `trtexec` with the same optimization profile (batch
   dimension min/opt/max, other dimensions from the IR's inputs), workspace pool, builder
   optimization level and timing cache. For fp16 and int8 the script finds the TensorRT major
   version (`TRT_MAJOR` from the environment, else `python3 -c 'import tensorrt'`, else the
   `[TensorRT vNNNNNN]` banner of `trtexec`) and adds the precision flags only below 11: TensorRT 10
   (JetPack 6) still needs `--fp16` to pick fp16 kernels and `--int8` (with `--fp16`, see step 3) for
   the QDQ graph, TensorRT 11 removed them (the graph is enough). An fp32 build needs no precision
   flag on either version.
3. If the `tensorrt` package imports and a CUDA GPU is visible, builds the engine with the Python
   API, one code path with a version dispatch (`trt_major(trt.__version__)`):
   - network: TensorRT >= 11 `STRONGLY_TYPED` (accepted and always on there); TensorRT 10 the
     explicit-batch flag where the enum still has it (ignored by 10, networks are always explicit
     batch) and not strongly typed, because a strongly typed network forbids precision flags;
   - precision: TensorRT >= 11 sets no flag (the graph's types and Q/DQ nodes decide); TensorRT 10
     sets `BuilderFlag.FP16` for fp16, and `BuilderFlag.INT8` plus `BuilderFlag.FP16` for int8: the
     Q/DQ nodes fix which layers run int8, and FP16 lets the layers the graph leaves unquantized
     (e.g. the first and last, or an unsupported op) run fp16 instead of fp32, as TensorRT 10's
     explicit-quantization guide recommends (the sidecar's `builder_flags`: ["INT8", "FP16"]);
   - one optimization profile from min/opt/max batch, `MemoryPoolType.WORKSPACE` limit,
     `builder_optimization_level`, `ProfilingVerbosity.DETAILED` (so that the engine inspector
     reports per-layer formats);
   - the timing cache is loaded from and saved back to the cache file (atomically). Its default is
     `trt_timing.cache` in the parent of the stage folder, i.e. the run directory: every TensorRT
     build of one run directory (one sweep's trials included) shares it. A cache TensorRT rejects
     (another GPU or TensorRT version) is replaced by a fresh one.
   Then the serialized engine is deserialized and inspected; the per-layer precisions
   (`summarize_layer_precisions`) go into the sidecar. **An fp16 build whose engine has no fp16
   layer, or an int8 build whose engine has no int8 layer, fails with ExportError**: a silently
   fp32 engine is not an fp16 or int8 export. Only then are `model.engine` and `model.engine.json`
   written (atomically).
4. Without the `tensorrt` package, or without a CUDA GPU, raises ExportError with one line on what
   to install (the CLI prints it and exits 2). `model.onnx` and `build_engine.sh` are complete
   files by then (each written atomically) and stay in the stage folder for a build on the device;
   no partial engine or sidecar is ever left (the runner wipes the stage folder before the next
   attempt anyway).
"""
from __future__ import annotations

import json
import logging
import os
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from compressor.context import PassContext
from compressor.errors import ConfigError, ExportError
from compressor.evaluate.backends import backends_for
from compressor.ir import ModelIR
from compressor.exporters.onnx import OnnxOptions
from compressor.options import option
from compressor.passes_base import Exporter, ExportResult
from compressor.precision import PRECISIONS, TensorRTLowering, cast_names, get_precision, tensorrt_names
from compressor.registry import register_exporter
from compressor.store import atomic_write

log = logging.getLogger(__name__)

ONNX_NAME = "model.onnx"
ENGINE_NAME = "model.engine"
SIDECAR_NAME = "model.engine.json"
SCRIPT_NAME = "build_engine.sh"
TIMING_CACHE_NAME = "trt_timing.cache"
MIN_TRT_MAJOR = 10

INSTALL_HINT = ("tensorrt exporter: the tensorrt Python package is not installed; install it on the target "
                "(pip install 'compressor[gpu]' on x86-64 with CUDA, or JetPack's python3-libnvinfer on "
                "Jetson), or build on the device with the written build_engine.sh")
NO_GPU_HINT = ("tensorrt exporter: no CUDA GPU is visible (tensorrt {version} is installed); run on a "
               "machine with an NVIDIA GPU and its driver, or build on the device with the written "
               "build_engine.sh")


@dataclass(frozen=True)
class TensorRTOptions:
    min_batch: int = option(1, "smallest batch of the optimization profile", min=1)
    opt_batch: int = option(1, "batch the engine is tuned for", min=1)
    max_batch: int = option(8, "largest batch of the optimization profile", min=1)
    workspace_mb: int = option(1024, "workspace memory pool limit in MiB", min=1)
    optimization_level: int = option(3, "builder optimization level (higher: slower build, maybe faster engine)",
                                     min=0, max=5)
    timing_cache: str | None = option(None, "timing cache file; null: trt_timing.cache in the run directory, "
                                            "shared by every TensorRT build of that run")
    precision: Literal["auto", "fp32", "fp16", "int8"] = option(
        "auto", "engine precision; auto: the IR's precision; int8 needs an int8 IR (the int8 pass)")
    onnx: OnnxOptions = option(OnnxOptions(), "options of the ONNX export it builds on, e.g. {opset: 18}")

    def __post_init__(self) -> None:
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"batch sizes must satisfy min_batch <= opt_batch <= max_batch, got "
                             f"{self.min_batch} / {self.opt_batch} / {self.max_batch}")


# ---- pure helpers (no tensorrt needed) -----------------------------------------------------------

def trt_major(version: str) -> int:
    """`"10.3.0.26"` -> 10. Raises ExportError for anything that does not start with a number."""
    m = re.match(r"\s*(\d+)", str(version))
    if not m:
        raise ExportError(f"tensorrt exporter: cannot read the TensorRT version from {version!r}")
    return int(m.group(1))


def precision_for(ir: Any, asked: str) -> str:
    """The engine precision for `ir` and the `precision` option (auto: the IR's), or ExportError.

    A float IR (fp32, fp16) builds at any float precision (its ONNX graph is exported at it); an IR at a
    precision that is not a cast (int8: its QDQ graph carries the scales, nothing calibrates here) builds
    only at its own, and only that precision builds it. The precision's `check_tensorrt` has the last
    word (int8: signed symmetric int8 activations, not the uint8 the int8 pass writes for onnxruntime CPU).
    """
    target = ir.precision if asked == "auto" else asked
    want, have = get_precision(target), get_precision(ir.precision)
    if target != ir.precision:
        if want.module_dtype is None:
            raise ExportError(f"tensorrt exporter: precision {target} needs an {target} IR, this one is {ir.precision}; "
                              f"run the {want.produced_by} pass first ({want.no_cast_reason})")
        if have.module_dtype is None:
            raise ExportError(f"tensorrt exporter: precision {target} was asked for an {ir.precision} IR, whose "
                              f"{have.tensorrt_graph} is {ir.precision}; drop the {have.produced_by} pass to build "
                              f"{'/'.join(cast_names())}, or use precision: auto")
    want.check_tensorrt(ir)
    return target


def profile_shapes(ir: Any, min_batch: int, opt_batch: int, max_batch: int
                   ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """Per input name: (min, opt, max) shapes, the batch dimension (0) set to each batch size.

    Every other dimension must be fixed in the IR's input spec: TensorRT needs concrete profile shapes.
    """
    if not min_batch <= opt_batch <= max_batch:
        raise ExportError(f"batch sizes must satisfy min <= opt <= max, got {min_batch} / {opt_batch} / {max_batch}")
    out = {}
    for spec in ir.inputs:
        rest = tuple(spec.shape[1:])
        if any(d is None for d in rest):
            raise ExportError(f"input '{spec.name}' has a dynamic non-batch dimension in {list(spec.shape)}; "
                              f"only the batch dimension may be dynamic for a TensorRT profile")
        out[spec.name] = tuple((b, *rest) for b in (min_batch, opt_batch, max_batch))
    return out  # type: ignore[return-value]


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def trtexec_command(shapes: Mapping[str, tuple], onnx: str = ONNX_NAME, engine: str = ENGINE_NAME,
                    workspace_mb: int = 1024, optimization_level: int = 3, timing_cache: str | None = None,
                    extra: tuple[str, ...] | list[str] = (), trtexec: str = "trtexec") -> str:
    """The `trtexec` command line equivalent to the Python build (paths as given, shell-quoted)."""
    args = [trtexec, f"--onnx={onnx}", f"--saveEngine={engine}"]
    for i, flag in enumerate(("--minShapes", "--optShapes", "--maxShapes")):
        args.append(f"{flag}=" + ",".join(f"{name}:{_dims(s[i])}" for name, s in shapes.items()))
    args += [f"--memPoolSize=workspace:{workspace_mb}M", f"--builderOptimizationLevel={optimization_level}"]
    if timing_cache:
        args.append(f"--timingCacheFile={timing_cache}")
    args += list(extra)
    return " ".join(a if a.startswith(('"$', '$')) else shlex.quote(a) for a in args)


def lowering_for(name: str) -> TensorRTLowering:
    """The TensorRT lowering of precision `name` (its module in compressor/precisions), or ExportError."""
    if name not in tensorrt_names():
        raise ExportError(f"tensorrt exporter: precision must be one of {', '.join(tensorrt_names())}, got {name!r}")
    return PRECISIONS[name].tensorrt


def trtexec_precision_flags(precision: str, major: int) -> list[str]:
    """The trtexec precision flags for `precision` on TensorRT `major` (the sidecar's `trtexec`): TensorRT 10's;
    TensorRT >= 11 (strongly typed) takes none."""
    return list(lowering_for(precision).flags) if major < 11 else []


def build_script(shapes: Mapping[str, tuple], precision: str, workspace_mb: int, optimization_level: int,
                 timing_cache: str) -> str:
    """The text of build_engine.sh: runs trtexec in the script's folder (see the module docstring)."""
    lowering = lowering_for(precision)
    flagged = bool(lowering.flags)
    cmd = trtexec_command(shapes, workspace_mb=workspace_mb, optimization_level=optimization_level,
                          timing_cache=timing_cache,
                          extra=['${PRECISION_FLAGS[@]+"${PRECISION_FLAGS[@]}"}', '"$@"'] if flagged else ['"$@"'],
                          trtexec='"$TRTEXEC"')
    lines = [
        "#!/usr/bin/env bash",
        f"# Builds {ENGINE_NAME} ({precision}) from {ONNX_NAME} with trtexec. Run it on the device that will",
        "# run the engine: an engine only runs on the GPU model and TensorRT version it was built for.",
        "# TRTEXEC=/usr/src/tensorrt/bin/trtexec ./build_engine.sh  (JetPack's location); extra trtexec",
        "# arguments are passed through, e.g. ./build_engine.sh --verbose",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        'TRTEXEC="${TRTEXEC:-trtexec}"',
    ]
    if flagged:
        lines += [
            f"# {ONNX_NAME} is {lowering.graph}. TensorRT >= 11 is strongly typed and",
            "# takes the precision from the graph (no flag; --stronglyTyped is always on);",
            f"# TensorRT 10 (JetPack 6) {lowering.trt10_note}",
            "# Set TRT_MAJOR=10 or TRT_MAJOR=11 to skip the detection below.",
            'if [ -z "${TRT_MAJOR:-}" ]; then',
            "  TRT_MAJOR=\"$(python3 -c 'import tensorrt; print(tensorrt.__version__.split(\".\")[0])' 2>/dev/null || true)\"",
            "fi",
            'if [ -z "${TRT_MAJOR:-}" ]; then',
            "  # trtexec's banner: [TensorRT v100300] is 10.3.0, [TensorRT v110000] is 11.0.0",
            "  v=\"$(\"$TRTEXEC\" --help 2>&1 | grep -o 'TensorRT v[0-9]*' | head -n 1 | tr -dc '0-9' || true)\"",
            '  if [ -n "$v" ]; then TRT_MAJOR=$(( ${#v} >= 6 ? 10#$v / 10000 : 10#$v / 1000 )); fi',
            "fi",
            'if [ -z "${TRT_MAJOR:-}" ]; then',
            '  echo "build_engine.sh: cannot tell the TensorRT version; set TRT_MAJOR=10 or TRT_MAJOR=11" >&2',
            "  exit 2",
            "fi",
            "PRECISION_FLAGS=()",
            f'if [ "$TRT_MAJOR" -lt 11 ]; then PRECISION_FLAGS=({" ".join(lowering.flags)}); fi',
        ]
    lines += [f"exec {cmd}", ""]
    return "\n".join(lines)


def network_flags(trt: Any, major: int) -> int:
    """Network creation flags: STRONGLY_TYPED on TensorRT >= 11, explicit batch (where it exists) on 10."""
    flag_enum = trt.NetworkDefinitionCreationFlag
    if major >= 11:
        strongly = getattr(flag_enum, "STRONGLY_TYPED", None)
        return 1 << int(strongly) if strongly is not None else 0
    if major >= MIN_TRT_MAJOR:
        explicit = getattr(flag_enum, "EXPLICIT_BATCH", None)
        return 1 << int(explicit) if explicit is not None else 0
    raise ExportError(f"tensorrt exporter: TensorRT {major}.x is not supported; use TensorRT 10 (JetPack 6) "
                      f"or 11, or build on the device with the written build_engine.sh")


def configure_precision(config: Any, trt: Any, major: int, precision: str) -> list[str]:
    """Set the builder flags `precision` needs; returns their names (for the sidecar).

    TensorRT >= 11 has no precision flags (strongly typed: the ONNX graph's types and Q/DQ nodes
    decide), so nothing is set. TensorRT 10 gets BuilderFlag.FP16 for fp16, and BuilderFlag.INT8 plus
    BuilderFlag.FP16 for int8 (the unquantized layers may run fp16; see the module docstring); fp32
    needs no flag on either.
    """
    flags = lowering_for(precision).flags
    if major >= 11:
        return []
    names = [flag.lstrip("-").upper() for flag in flags]
    for name in names:
        config.set_flag(getattr(trt.BuilderFlag, name))
    return names


INTEGER_KERNELS = ("int8",)  # a layer with weights or inputs of these types runs integer kernels of that type
_PRECISION_PATTERNS = (  # checked in order: the first match wins
    ("fp16", re.compile(r"\bfp16\b|\bhalf\b|khalf", re.I)),
    ("bf16", re.compile(r"\bbf16\b|bfloat16", re.I)),
    ("fp8", re.compile(r"\bfp8\b|e4m3", re.I)),
    ("fp4", re.compile(r"\bfp4\b|e2m1", re.I)),
    ("int8", re.compile(r"\bint8|kint8", re.I)),  # "Int8", "INT8 format", "kINT8", "Int8(...)", "Int8x4"
    ("int4", re.compile(r"\bint4\b", re.I)),
    ("int64", re.compile(r"\bint64\b", re.I)),
    ("int32", re.compile(r"\bint32\b", re.I)),
    ("uint8", re.compile(r"\buint8\b", re.I)),
    ("bool", re.compile(r"\bbool\b", re.I)),
    ("fp32", re.compile(r"\bfp32\b|\bfloat\b|kfloat|\btf32\b", re.I)),
)


def _precision_of(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    for name, pattern in _PRECISION_PATTERNS:
        if pattern.search(text):
            return name
    return None


def _tensor_precision(tensor: Any) -> str | None:
    """The type of one tensor entry of a layer (TensorRT 10: "Format/Datatype": "Row major linear FP16
    format"; TensorRT 11: "DataType": "Half")."""
    if not isinstance(tensor, Mapping):
        return None
    for field in ("DataType", "Datatype", "Format/Datatype", "Format/DataType", "Format"):
        found = _precision_of(tensor.get(field))
        if found:
            return found
    return None


def _tensors(layer: Mapping[str, Any], key: str) -> list[Any]:
    tensors = layer.get(key)
    return tensors if isinstance(tensors, list) else []


def _layer_precision(layer: Mapping[str, Any]) -> str:
    """One layer's precision: its "Precision" field; else int8 where it computes in int8 (int8
    weights, "Weights": {"Type": "Int8"}, or an int8 input: a quantized convolution whose output is
    dequantized to float still runs int8 kernels); else the type of its first output, else of its
    first input."""
    found = _precision_of(layer.get("Precision"))
    if found:
        return found
    weights = layer.get("Weights")
    weight_type = _precision_of(weights.get("Type")) if isinstance(weights, Mapping) else None
    input_types = {_tensor_precision(t) for t in _tensors(layer, "Inputs")}
    for kind in INTEGER_KERNELS:
        if weight_type == kind or kind in input_types:
            return kind
    for key in ("Outputs", "Inputs"):
        for tensor in _tensors(layer, key):
            found = _tensor_precision(tensor)
            if found:
                return found
    return "unknown"


def summarize_layer_precisions(inspector_json: str | Mapping[str, Any] | list) -> dict[str, int]:
    """`{precision: layer count}` from IEngineInspector's JSON (`get_engine_information(JSON)`).

    Accepts the JSON text or the parsed object ({"Layers": [...]} or the list of layers). Layers given
    as plain names (ProfilingVerbosity below DETAILED) count as "unknown".
    """
    data: Any = inspector_json
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise ExportError(f"tensorrt exporter: the engine inspector's output is not JSON ({exc})") from None
    layers = data.get("Layers", []) if isinstance(data, Mapping) else data
    if not isinstance(layers, list):
        raise ExportError("tensorrt exporter: the engine inspector's JSON has no 'Layers' list")
    counts: dict[str, int] = {}
    for layer in layers:
        if isinstance(layer, str):  # layer names only
            try:
                layer = json.loads(layer)
            except ValueError:
                layer = {}
        name = _layer_precision(layer) if isinstance(layer, Mapping) else "unknown"
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def write_sidecar(path: str | os.PathLike[str], info: Mapping[str, Any]) -> Path:
    """Write `info` as indented JSON, atomically (temp file beside the target, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(info, indent=2, sort_keys=False, default=str) + "\n")
    return path


# ---- environment probes (monkeypatched in tests) ----------------------------------------------------

def _import_tensorrt() -> Any | None:
    try:
        import tensorrt  # noqa: PLC0415
    except ImportError:
        return None
    return tensorrt


def _cuda_device() -> tuple[str, str] | None:
    """(GPU name, compute capability "8.6") of CUDA device 0, or None without a usable GPU."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        major, minor = torch.cuda.get_device_capability(0)
        return torch.cuda.get_device_name(0), f"{major}.{minor}"
    except Exception:  # a broken driver reads as no GPU
        return None


# ---- the build --------------------------------------------------------------------------------------

def _enum_name(value: Any) -> str:
    name = getattr(value, "name", None)
    return str(name) if name else str(value).split(".")[-1]


def _load_timing_cache(config: Any, path: Path) -> tuple[Any, str]:
    blob = b""
    note = "new"
    if path.is_file():
        blob = path.read_bytes()
        note = "loaded"
    cache = config.create_timing_cache(blob)
    ok = config.set_timing_cache(cache, False)
    if ok is False and blob:  # written by another GPU or TensorRT version
        log.warning("tensorrt: the timing cache %s does not match this GPU/TensorRT; starting a new one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
        note = "rejected (another GPU or TensorRT version); replaced"
    return cache, note


def _save_timing_cache(config: Any, path: Path) -> None:
    cache = config.get_timing_cache()
    if cache is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, bytes(memoryview(cache.serialize())))
    except OSError as exc:  # a cache is an optimization: never fail the export for it
        log.warning("tensorrt: cannot save the timing cache %s (%s)", path, exc)


def build_engine(trt: Any, onnx_path: Path, shapes: Mapping[str, tuple], precision: str, workspace_mb: int,
                 optimization_level: int, timing_cache: Path) -> tuple[bytes, dict[str, Any]]:
    """Build and inspect an engine; returns (serialized engine, sidecar fields). Writes only the cache."""
    major = trt_major(trt.__version__)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, major))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"tensorrt exporter: TensorRT {trt.__version__} cannot parse {onnx_path.name}: "
                          f"{'; '.join(errors) or 'no error reported'}; try another opset (onnx: {{opset: 18}})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    config.builder_optimization_level = optimization_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    flags = configure_precision(config, trt, major, precision)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    _cache, cache_note = _load_timing_cache(config, timing_cache)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - t0
    if serialized is None:
        raise ExportError(f"tensorrt exporter: TensorRT {trt.__version__} failed to build the engine "
                          f"(see its log above); try a larger workspace_mb or optimization_level: 0")
    _save_timing_cache(config, timing_cache)
    blob = bytes(memoryview(serialized))

    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(blob)
    if engine is None:
        raise ExportError("tensorrt exporter: the engine just built does not deserialize")
    inspector = engine.create_engine_inspector()
    layer_json = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    layer_precisions = summarize_layer_precisions(layer_json)
    io = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        io.append({
            "name": name,
            "mode": "input" if mode == trt.TensorIOMode.INPUT else "output",
            "dtype": _enum_name(engine.get_tensor_dtype(name)).lower(),
            "shape": [int(d) for d in engine.get_tensor_shape(name)],
        })
    lowering = lowering_for(precision)
    if lowering.layer_type is not None and not layer_precisions.get(lowering.layer_type):
        raise ExportError(f"tensorrt exporter: an {precision} engine was asked for but TensorRT {trt.__version__} "
                          f"built no {lowering.layer_type} layer (layers: {layer_precisions}); {lowering.missing_hint}")
    info = {
        "tensorrt_version": str(trt.__version__),
        "tensorrt_major": major,
        "precision": precision,
        "builder_flags": flags,
        "strongly_typed": major >= 11,
        "io_tensors": io,
        "profile": {name: {"min": list(s[0]), "opt": list(s[1]), "max": list(s[2])} for name, s in shapes.items()},
        "workspace_mb": workspace_mb,
        "optimization_level": optimization_level,
        "timing_cache": str(timing_cache),
        "timing_cache_note": cache_note,
        "layer_precisions": layer_precisions,
        "layers": sum(layer_precisions.values()),
        "build_seconds": round(build_seconds, 3),
    }
    return blob, info


def default_timing_cache(out_dir: Path) -> Path:
    """`trt_timing.cache` in the parent of the stage folder: the run directory."""
    return Path(out_dir).resolve().parent / TIMING_CACHE_NAME


@register_exporter("tensorrt")
class TensorRTExporter(Exporter):
    """Writes model.onnx + build_engine.sh, and model.engine + model.engine.json where TensorRT and a GPU are."""

    Options = TensorRTOptions
    packages = ("torch", "onnx", "onnxscript", "onnxruntime", "onnxsim", "onnxconverter-common", "tensorrt")

    suffixes = (".engine",)
    latency_backends = backends_for(".engine")

    @classmethod
    def describe_artifact(cls, path: Path) -> str:
        """The engine's sidecar (TensorRT version, precision, per-layer precisions); the engine itself is
        not deserialized (that needs TensorRT and the GPU it was built for)."""
        sidecar = path.with_name(path.name + ".json")
        try:
            info = json.loads(sidecar.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: no readable sidecar {sidecar.name} beside it ({exc}); an engine is "
                              "described from the sidecar the tensorrt exporter writes") from None
        if not isinstance(info, Mapping):
            raise ConfigError(f"{sidecar}: expected a JSON object, got {type(info).__name__}")
        lines = [f"{path} ({path.stat().st_size / 1e6:.3f} MB), from {sidecar.name}:"]
        lines += [f"  {k}: {json.dumps(v, default=str)}" for k, v in info.items()]
        return "\n".join(lines)

    def evaluate(self, artifact: Path, loader: Any, ir: ModelIR, *, threads: int | None,
                 progress: bool) -> tuple[dict[str, Any], str | None]:
        """Task metrics of the engine (trt_runtime.evaluate_engine on numpy batches), or ({}, the reason)
        when tensorrt, cuda-python or a CUDA GPU is missing here."""
        from compressor.evaluate.latency import engine_unavailable
        from compressor.evaluate.metrics import split_batch

        try:
            from compressor.evaluate import trt_runtime
        except ImportError as exc:
            return {}, f"tensorrt: cannot load compressor.evaluate.trt_runtime ({exc})"

        def batches() -> Any:
            for batch in loader:
                x, y = split_batch(batch)
                yield x.float().numpy(), y.numpy()

        try:
            return trt_runtime.evaluate_engine(artifact, batches(), ir.task), None
        except ConfigError as exc:
            if not engine_unavailable(exc):  # a problem with this engine, not with this machine
                raise
            log.info("metrics of %s skipped: %s", artifact, exc)
            return {}, str(exc)

    def latency(self, artifact: Path, backend: str, opts: Any) -> Any:
        from compressor.evaluate.latency import latency_engine

        return latency_engine(artifact, batch=opts.batch, warmup=opts.warmup, iters=opts.iters)

    def export(self, ir: ModelIR, out_dir: Path, ctx: PassContext) -> ExportResult:
        import compressor.exporters.onnx as onnx_exporter  # looked up at call time (tests replace export_onnx)

        opts: TensorRTOptions = self.options
        target = precision_for(ir, opts.precision)
        shapes = profile_shapes(ir, opts.min_batch, opts.opt_batch, opts.max_batch)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)

        # 1. the ONNX graph, at the engine's precision (an int8 IR's: the QDQ graph)
        onnx_ir = ir if target == ir.precision else ir.replace(precision=target)
        onnx_result = onnx_exporter.export_onnx(onnx_ir, out_dir / ONNX_NAME, opts.onnx)
        onnx_path = onnx_result.primary
        if onnx_result.info.get("precision") != target:
            raise ExportError(f"tensorrt exporter: the ONNX exporter wrote a graph of precision "
                              f"{onnx_result.info.get('precision')} for an {target} IR, not the "
                              f"{get_precision(target).tensorrt_graph} an {target} engine is built from")

        # 2. the trtexec script
        if opts.timing_cache:
            cache_path = Path(opts.timing_cache).expanduser().resolve()
            script_cache = str(cache_path)
        else:
            cache_path = default_timing_cache(out_dir)
            script_cache = f"../{TIMING_CACHE_NAME}"
        script = out_dir / SCRIPT_NAME
        atomic_write(script, build_script(shapes, target, opts.workspace_mb, opts.optimization_level,
                                          script_cache), mode=0o755)

        # 3. the engine, where TensorRT and a GPU are
        trt = _import_tensorrt()
        if trt is None:
            raise ExportError(INSTALL_HINT)
        device = _cuda_device()
        if device is None:
            raise ExportError(NO_GPU_HINT.format(version=getattr(trt, "__version__", "?")))
        gpu_name, capability = device
        blob, build_info = build_engine(trt, onnx_path, shapes, target, opts.workspace_mb,
                                        opts.optimization_level, cache_path)
        engine_path = out_dir / ENGINE_NAME
        sidecar_path = out_dir / SIDECAR_NAME
        info = {
            "tensorrt_version": build_info.pop("tensorrt_version"),
            "gpu_name": gpu_name,
            "compute_capability": capability,
            **build_info,
            "engine_bytes": len(blob),
            "onnx": {k: onnx_result.info.get(k) for k in ("opset", "exporter", "precision", "max_abs_diff")},
            "trtexec": trtexec_command(shapes, workspace_mb=opts.workspace_mb,
                                       optimization_level=opts.optimization_level, timing_cache=script_cache,
                                       extra=trtexec_precision_flags(target, build_info["tensorrt_major"])),
        }
        atomic_write(engine_path, blob)
        write_sidecar(sidecar_path, info)
        log.info("tensorrt: wrote %s (%s, TensorRT %s, %s, layers %s, %.1fs)", engine_path, target,
                 info["tensorrt_version"], gpu_name, info["layer_precisions"], info["build_seconds"])
        return ExportResult(primary=engine_path, files=[engine_path, sidecar_path, script, onnx_path], info=info)
