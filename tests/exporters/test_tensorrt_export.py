"""The TensorRT exporter: pure helpers, the trtexec script, and the build against a fake `tensorrt`
module (TensorRT 10 and 11 object models that record every call). A real build is tested where
TensorRT and a CUDA GPU exist."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import types
from pathlib import Path

import pytest

from compressor.context import PassContext
from compressor.errors import ConfigError, ExportError
from compressor.exporters import onnx as onnx_exporter
from compressor.exporters import tensorrt as trt_exporter
from compressor.exporters.tensorrt import (
    TensorRTExporter, TensorRTOptions, build_script, configure_precision, network_flags, precision_for,
    profile_shapes, summarize_layer_precisions, trt_major, trtexec_command, write_sidecar,
)
from compressor.ir import InputSpec
from compressor.options import changed_options, parse_options
from compressor.passes_base import ExportResult
from compressor.registry import EXPORTERS

TRT_SKIP = "TensorRT is not installed here (its libraries come from NVIDIA's index)"


class _Inputs:
    def __init__(self, *specs: InputSpec) -> None:
        self.inputs = list(specs)


INSAR = _Inputs(InputSpec("input", (None, 2, 100, 100)))


# ---- a fake tensorrt ------------------------------------------------------------------------------

def _layers_json(precision_field: str = "FP16", fmt: str = "trt10", n: int = 3) -> str:
    layers = []
    for i in range(n):
        if fmt == "trt10":
            out = {"Name": f"t{i}", "Dimensions": [-1, 8, 100, 100],
                   "Format/Datatype": f"Row major linear {precision_field} format"}
        else:
            out = {"Name": f"t{i}", "Format": "Row major linear (kLINEAR)",
                   "DataType": {"FP16": "Half", "FP32": "Float", "INT8": "Int8"}[precision_field]}
        layers.append({"Name": f"layer{i}", "LayerType": "CaskConvolution", "Inputs": [], "Outputs": [out]})
    key = "Bindings" if fmt == "trt10" else "I/O Tensors"
    return json.dumps({"Layers": layers, key: []})


def make_fake_trt(version: str = "10.3.0", layers: str | None = None, cache_ok: bool = True,
                  build_fails: bool = False) -> types.ModuleType:
    """A `tensorrt` stand-in: the classes and enums the exporter uses; calls land in `trt.calls`."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    calls: list[tuple] = []
    trt.calls = calls
    major = int(version.split(".")[0])
    layers = layers if layers is not None else _layers_json("FP32")

    class Enum:
        def __init__(self, name: str, value: int) -> None:
            self.name, self.value = name, value

        def __int__(self) -> int:
            return self.value

        def __repr__(self) -> str:
            return f"Enum({self.name})"

    def enum(cls_name: str, *names: str) -> type:
        return type(cls_name, (), {n: Enum(n, i) for i, n in enumerate(names)})

    trt.NetworkDefinitionCreationFlag = (enum("NDCF", "STRONGLY_TYPED") if major >= 11 else
                                         type("NDCF", (), {"EXPLICIT_BATCH": Enum("EXPLICIT_BATCH", 0),
                                                           "STRONGLY_TYPED": Enum("STRONGLY_TYPED", 1)}))
    trt.MemoryPoolType = enum("MemoryPoolType", "WORKSPACE")
    trt.ProfilingVerbosity = enum("ProfilingVerbosity", "LAYER_NAMES_ONLY", "NONE", "DETAILED")
    trt.LayerInformationFormat = enum("LayerInformationFormat", "ONELINE", "JSON")
    trt.TensorIOMode = enum("TensorIOMode", "NONE", "INPUT", "OUTPUT")
    trt.DataType = enum("DataType", "FLOAT", "HALF", "INT8", "INT32")
    trt.BuilderFlag = enum("BuilderFlag", "FP16", "INT8") if major < 11 else enum("BuilderFlag", "DEBUG")

    class Logger:
        WARNING = "WARNING"

        def __init__(self, level: str) -> None:
            calls.append(("Logger", level))

    class Parser:
        num_errors = 0

        def __init__(self, network: object, logger: object) -> None:
            self.network = network

        def parse_from_file(self, path: str) -> bool:
            calls.append(("parse_from_file", Path(path).name))
            return Path(path).is_file()

        def get_error(self, i: int) -> str:
            return "boom"

    class Profile:
        def set_shape(self, name, lo, opt, hi) -> None:
            calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

    class Cache:
        def __init__(self, blob: bytes) -> None:
            self.blob = blob

        def serialize(self) -> bytes:
            return b"CACHE:" + self.blob

    class Config:
        def __init__(self) -> None:
            self._cache = None

        def __setattr__(self, name, value) -> None:
            if not name.startswith("_"):
                calls.append(("config." + name, value))
            object.__setattr__(self, name, value)

        def set_memory_pool_limit(self, pool, size) -> None:
            calls.append(("set_memory_pool_limit", pool.name, size))

        def set_flag(self, flag) -> None:
            calls.append(("set_flag", flag.name))

        def add_optimization_profile(self, profile) -> int:
            calls.append(("add_optimization_profile",))
            return 0

        def create_timing_cache(self, blob) -> Cache:
            calls.append(("create_timing_cache", bytes(blob)))
            return Cache(bytes(blob))

        def set_timing_cache(self, cache, ignore_mismatch) -> bool:
            calls.append(("set_timing_cache", cache.blob))
            ok = cache_ok or not cache.blob
            if ok:
                self._cache = cache
            return ok

        def get_timing_cache(self) -> Cache | None:
            return self._cache

    class Builder:
        def __init__(self, logger) -> None:
            calls.append(("Builder",))

        def create_network(self, flags: int = 0) -> object:
            calls.append(("create_network", flags))
            return object()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network, config) -> bytes | None:
            calls.append(("build_serialized_network",))
            return None if build_fails else b"ENGINE-BYTES"

    class Inspector:
        def get_engine_information(self, fmt) -> str:
            calls.append(("get_engine_information", fmt.name))
            return layers

    class Engine:
        num_io_tensors = 2
        _names = ["input", "logits"]

        def create_engine_inspector(self) -> Inspector:
            return Inspector()

        def get_tensor_name(self, i: int) -> str:
            return self._names[i]

        def get_tensor_mode(self, name: str):
            return trt.TensorIOMode.INPUT if name == "input" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str):
            return trt.DataType.FLOAT

        def get_tensor_shape(self, name: str) -> list[int]:
            return [-1, 2, 100, 100] if name == "input" else [-1, 1, 100, 100]

    class Runtime:
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, blob: bytes) -> Engine:
            calls.append(("deserialize_cuda_engine", blob))
            return Engine()

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, Parser, Runtime
    return trt


@pytest.fixture
def fake_onnx(monkeypatch):
    """Replace the ONNX export (tested in test_onnx_export.py) by a stub that records the IR's precision."""
    seen: list[str] = []

    def export_onnx(ir, path, options):
        opts = changed_options(options)
        seen.append(ir.precision)
        seen.append(opts)
        Path(path).write_bytes(b"ONNX")
        return ExportResult(primary=Path(path), files=[Path(path)],
                            info={"opset": opts.get("opset", 20), "exporter": "stub", "precision": ir.precision})

    monkeypatch.setattr(onnx_exporter, "export_onnx", export_onnx)
    return seen


def as_int8(ir, activations: str | None = "int8"):
    """`ir` labelled as the int8 pass's output (its module stays float: the ONNX export is stubbed)."""
    meta = {**ir.meta, "int8": {"activations": activations}} if activations else dict(ir.meta)
    return ir.replace(precision="int8", meta=meta)


@pytest.fixture
def gpu(monkeypatch):
    monkeypatch.setattr(trt_exporter, "_cuda_device", lambda: ("Fake GPU", "8.7"))


def stage_dir(tmp_path: Path) -> Path:
    d = tmp_path / "run" / "05_tensorrt"
    d.mkdir(parents=True)
    return d


# ---- options and pure helpers -----------------------------------------------------------------------

def test_registered_and_defaults():
    assert EXPORTERS["tensorrt"] is TensorRTExporter
    o = TensorRTOptions()
    assert (o.min_batch, o.opt_batch, o.max_batch, o.workspace_mb, o.optimization_level) == (1, 1, 8, 1024, 3)
    assert o.timing_cache is None and o.precision == "auto" and o.onnx == onnx_exporter.OnnxOptions()


@pytest.mark.parametrize("raw, needle", [
    ({"min_batch": 4, "opt_batch": 2}, "min_batch <= opt_batch <= max_batch"),
    ({"opt_batch": 16}, "min_batch <= opt_batch <= max_batch"),
    ({"optimization_level": 6}, "out of range"),
    ({"precision": "int4"}, "choose one of"),
    ({"onnx": {"opset": 12}}, "out of range"),
    ({"onnx": {"opsett": 18}}, "did you mean 'opset'"),
    ({"workspace": 10}, "did you mean 'workspace_mb'"),
])
def test_invalid_options_are_config_errors(raw, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_options(TensorRTOptions, raw, "tensorrt")
    with pytest.raises(ConfigError):
        TensorRTExporter(**raw)


def test_trt_major():
    assert trt_major("10.3.0.26") == 10
    assert trt_major("11.0.0") == 11
    assert trt_major("8.6.2") == 8
    with pytest.raises(ExportError):
        trt_major("unknown")


def test_profile_shapes_replaces_the_batch_dimension():
    two = _Inputs(InputSpec("a", (None, 3, 8, 8)), InputSpec("b", (None, 4)))
    assert profile_shapes(two, 1, 2, 8) == {
        "a": ((1, 3, 8, 8), (2, 3, 8, 8), (8, 3, 8, 8)),
        "b": ((1, 4), (2, 4), (8, 4)),
    }
    with pytest.raises(ExportError, match="dynamic non-batch"):
        profile_shapes(_Inputs(InputSpec("x", (None, 3, None))), 1, 1, 1)
    with pytest.raises(ExportError):
        profile_shapes(INSAR, 4, 2, 8)


def test_trtexec_command():
    cmd = trtexec_command(profile_shapes(INSAR, 1, 1, 8), timing_cache="../trt_timing.cache")
    assert cmd == ("trtexec --onnx=model.onnx --saveEngine=model.engine --minShapes=input:1x2x100x100 "
                   "--optShapes=input:1x2x100x100 --maxShapes=input:8x2x100x100 "
                   "--memPoolSize=workspace:1024M --builderOptimizationLevel=3 "
                   "--timingCacheFile=../trt_timing.cache")
    two = trtexec_command(profile_shapes(_Inputs(InputSpec("a", (None, 3)), InputSpec("b", (None, 4))), 1, 2, 4),
                          workspace_mb=64, optimization_level=5, extra=["--fp16"])
    assert "--minShapes=a:1x3,b:1x4" in two and "--maxShapes=a:4x3,b:4x4" in two
    assert "--memPoolSize=workspace:64M" in two and "--builderOptimizationLevel=5" in two
    assert two.endswith("--fp16") and "--timingCacheFile" not in two


def _run_script(tmp_path: Path, text: str, env_extra: dict, banner: str = "") -> list[str]:
    """Run a build_engine.sh against a fake trtexec that records its arguments."""
    d = tmp_path / "stage"
    d.mkdir(exist_ok=True)
    script = d / "build_engine.sh"
    script.write_text(text)
    script.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "trtexec"
    fake.write_text("#!/usr/bin/env bash\n"
                    f"if [ \"${{1:-}}\" = --help ]; then echo '&&&& RUNNING TensorRT.trtexec [TensorRT {banner}]'; exit 0; fi\n"
                    "printf '%s\\n' \"$@\" > \"$(pwd)/args.txt\"\n")
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), **env_extra}
    subprocess.run(["bash", str(script), "--verbose"], check=True, env=env, cwd=tmp_path, timeout=30)
    return (d / "args.txt").read_text().split()


def test_build_script_fp16_flag_only_below_trt11(tmp_path):
    shapes = profile_shapes(INSAR, 1, 2, 8)
    text = build_script(shapes, "fp16", 512, 2, "../trt_timing.cache")
    assert text.startswith("#!/usr/bin/env bash") and "--stronglyTyped is always on" in text
    args10 = _run_script(tmp_path, text, {"TRT_MAJOR": "10"})
    assert args10[0] == "--onnx=model.onnx" and "--fp16" in args10 and args10[-1] == "--verbose"
    assert "--optShapes=input:2x2x100x100" in args10 and "--memPoolSize=workspace:512M" in args10
    args11 = _run_script(tmp_path, text, {"TRT_MAJOR": "11"})
    assert "--fp16" not in args11 and "--builderOptimizationLevel=2" in args11
    # no TRT_MAJOR, no python tensorrt: read from trtexec's banner (v100300 = 10.3.0, v110000 = 11.0.0)
    assert "--fp16" in _run_script(tmp_path, text, {}, banner="v100300")
    assert "--fp16" not in _run_script(tmp_path, text, {}, banner="v110000")


def test_build_script_int8_flags_only_below_trt11(tmp_path):
    text = build_script(profile_shapes(INSAR, 1, 1, 8), "int8", 1024, 3, "../trt_timing.cache")
    assert "int8 QDQ graph" in text and "--stronglyTyped is always on" in text
    assert 'if [ "$TRT_MAJOR" -lt 11 ]; then PRECISION_FLAGS=(--int8 --fp16); fi' in text
    args10 = _run_script(tmp_path, text, {"TRT_MAJOR": "10"})
    assert args10[-3:] == ["--int8", "--fp16", "--verbose"]
    args11 = _run_script(tmp_path, text, {"TRT_MAJOR": "11"})
    assert "--int8" not in args11 and "--fp16" not in args11 and args11[-1] == "--verbose"
    assert "--int8" in _run_script(tmp_path, text, {}, banner="v100300")
    assert "--int8" not in _run_script(tmp_path, text, {}, banner="v110000")


def test_build_script_fp32_has_no_precision_flag(tmp_path):
    text = build_script(profile_shapes(INSAR, 1, 1, 8), "fp32", 1024, 3, "../trt_timing.cache")
    assert "TRT_MAJOR" not in text
    args = _run_script(tmp_path, text, {"TRT_MAJOR": "10"})
    assert "--fp16" not in args and "--timingCacheFile=../trt_timing.cache" in args


def test_network_flags_dispatch():
    assert network_flags(make_fake_trt("11.0.0"), 11) == 1 << 0  # STRONGLY_TYPED
    assert network_flags(make_fake_trt("10.3.0"), 10) == 1 << 0  # EXPLICIT_BATCH, not STRONGLY_TYPED (1)
    no_explicit = make_fake_trt("10.8.0")
    no_explicit.NetworkDefinitionCreationFlag = type("NDCF", (), {})
    assert network_flags(no_explicit, 10) == 0
    with pytest.raises(ExportError, match="not supported"):
        network_flags(make_fake_trt("8.6.1"), 8)


def test_configure_precision_dispatch():
    trt10, trt11 = make_fake_trt("10.3.0"), make_fake_trt("11.0.0")
    flags: list[str] = []
    config = types.SimpleNamespace(set_flag=lambda f: flags.append(f.name))
    assert configure_precision(config, trt10, 10, "fp16") == ["FP16"] and flags == ["FP16"]
    assert configure_precision(config, trt10, 10, "fp32") == [] and flags == ["FP16"]
    assert configure_precision(config, trt11, 11, "fp16") == [] and flags == ["FP16"]  # no FP16 flag in 11
    flags.clear()
    assert configure_precision(config, trt10, 10, "int8") == ["INT8", "FP16"] and flags == ["INT8", "FP16"]
    assert configure_precision(config, trt11, 11, "int8") == [] and flags == ["INT8", "FP16"]  # Q/DQ nodes decide
    with pytest.raises(ExportError):
        configure_precision(config, trt10, 10, "auto")


def test_summarize_layer_precisions_formats():
    assert summarize_layer_precisions(_layers_json("FP16", "trt10", 3)) == {"fp16": 3}
    assert summarize_layer_precisions(_layers_json("FP32", "trt11", 2)) == {"fp32": 2}
    mixed = {"Layers": [
        {"Name": "a", "Precision": "Half"},
        {"Name": "b", "Outputs": [{"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}]},
        {"Name": "c", "Outputs": [{"Format/Datatype": "Row major linear FP32"}]},
        {"Name": "d", "Outputs": [{"Format": "Row major linear (kLINEAR)", "DataType": "Float"}]},
        {"Name": "e", "Outputs": [{"Format/Datatype": "Four wide channel vectorized row major Int8 format"}]},
        {"Name": "f", "Inputs": [{"DataType": "Int32"}], "Outputs": []},
        "layer names only",
    ]}
    assert summarize_layer_precisions(mixed) == {"fp16": 2, "fp32": 2, "int32": 1, "int8": 1, "unknown": 1}
    assert summarize_layer_precisions([{"Name": "x", "Precision": "FP32"}]) == {"fp32": 1}
    with pytest.raises(ExportError, match="not JSON"):
        summarize_layer_precisions("{not json")


def test_summarize_layer_precisions_int8():
    assert summarize_layer_precisions(_layers_json("INT8", "trt10", 2)) == {"int8": 2}
    assert summarize_layer_precisions(_layers_json("INT8", "trt11", 3)) == {"int8": 3}
    layers = [
        {"Name": "a", "Outputs": [{"Format/Datatype": "Channel major INT8 format where channel % 32 == 0"}]},
        {"Name": "b", "Outputs": [{"Format": "kCHW32", "DataType": "kINT8"}]},
        {"Name": "c", "Outputs": [{"DataType": "Int8(scale 0.02)"}]},
        {"Name": "d", "Outputs": [{"Format/Datatype": "Row major Int8x4 vectorized"}]},
        # a quantized conv whose output is dequantized to float: int8 weights, or an int8 input
        {"Name": "e", "Weights": {"Type": "Int8", "Count": 72}, "Outputs": [{"DataType": "Float"}]},
        {"Name": "f", "Inputs": [{"DataType": "Int8"}], "Outputs": [{"DataType": "Half"}]},
        {"Name": "g", "Weights": {"Type": "Float", "Count": 72}, "Outputs": [{"DataType": "Float"}]},
        {"Name": "h", "Outputs": [{"DataType": "UInt8"}]},
    ]
    assert summarize_layer_precisions(layers) == {"fp32": 1, "int8": 6, "uint8": 1}


def test_write_sidecar_is_atomic(tmp_path, monkeypatch):
    p = write_sidecar(tmp_path / "model.engine.json", {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1}

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(trt_exporter.os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_sidecar(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 1}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["model.engine.json"]  # no temp file left


# ---- export without tensorrt / GPU -------------------------------------------------------------------

def test_missing_tensorrt_is_one_line_export_error(tmp_path, monkeypatch, seg_ir, fake_onnx):
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", None)  # import tensorrt -> ImportError
    out = stage_dir(tmp_path)
    with pytest.raises(ExportError) as info:
        TensorRTExporter().export(seg_ir, out, PassContext())
    msg = str(info.value)
    assert "\n" not in msg and "pip install 'compressor[gpu]'" in msg and "python3-libnvinfer" in msg
    assert "build_engine.sh" in msg
    # what was written is complete: the ONNX and an executable script; no engine, no sidecar, no temp file
    assert sorted(p.name for p in out.iterdir()) == ["build_engine.sh", "model.onnx"]
    assert os.stat(out / "build_engine.sh").st_mode & stat.S_IXUSR


def test_no_gpu_is_export_error(tmp_path, monkeypatch, seg_ir, fake_onnx):
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", make_fake_trt("10.3.0"))
    monkeypatch.setattr(trt_exporter, "_cuda_device", lambda: None)
    with pytest.raises(ExportError, match="no CUDA GPU is visible") as info:
        TensorRTExporter().export(seg_ir, stage_dir(tmp_path), PassContext())
    assert "\n" not in str(info.value)


def test_cli_exit_code_for_export_error():
    from compressor.errors import CompressError

    assert issubclass(ExportError, CompressError)  # the CLI maps CompressError to one line and exit 2


# ---- export with a fake tensorrt ---------------------------------------------------------------------

def _export(tmp_path, monkeypatch, ir, version, layers=None, **opts):
    trt = make_fake_trt(version, layers=layers)
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", trt)
    out = stage_dir(tmp_path) if not (tmp_path / "run" / "05_tensorrt").exists() else tmp_path / "run" / "05_tensorrt"
    result = TensorRTExporter(**opts).export(ir, out, PassContext())
    return trt, out, result


def test_fake_trt10_fp32_build(tmp_path, monkeypatch, seg_ir, fake_onnx, gpu):
    trt, out, result = _export(tmp_path, monkeypatch, seg_ir, "10.3.0", max_batch=4, workspace_mb=256,
                               optimization_level=2)
    calls = trt.calls
    assert ("create_network", 1 << 0) in calls  # explicit batch, not strongly typed
    assert not any(c[0] == "set_flag" for c in calls)  # fp32: no precision flag
    assert ("set_shape", "input", (1, 2, 32, 32), (1, 2, 32, 32), (4, 2, 32, 32)) in calls
    assert ("set_memory_pool_limit", "WORKSPACE", 256 << 20) in calls
    assert ("config.builder_optimization_level", 2) in calls
    assert ("config.profiling_verbosity", trt.ProfilingVerbosity.DETAILED) in calls
    assert ("get_engine_information", "JSON") in calls
    assert ("deserialize_cuda_engine", b"ENGINE-BYTES") in calls
    assert isinstance(result, ExportResult) and result.primary == out / "model.engine"
    assert [p.name for p in result.files] == ["model.engine", "model.engine.json", "build_engine.sh", "model.onnx"]
    assert (out / "model.engine").read_bytes() == b"ENGINE-BYTES"
    side = json.loads((out / "model.engine.json").read_text())
    assert side == result.info
    assert side["tensorrt_version"] == "10.3.0" and side["gpu_name"] == "Fake GPU"
    assert side["compute_capability"] == "8.7" and side["precision"] == "fp32"
    assert side["layer_precisions"] == {"fp32": 3} and side["workspace_mb"] == 256
    assert side["optimization_level"] == 2 and side["builder_flags"] == [] and side["strongly_typed"] is False
    assert side["profile"] == {"input": {"min": [1, 2, 32, 32], "opt": [1, 2, 32, 32], "max": [4, 2, 32, 32]}}
    assert side["io_tensors"] == [
        {"name": "input", "mode": "input", "dtype": "float", "shape": [-1, 2, 100, 100]},
        {"name": "logits", "mode": "output", "dtype": "float", "shape": [-1, 1, 100, 100]},
    ]
    assert isinstance(side["build_seconds"], float)
    assert side["trtexec"].startswith("trtexec --onnx=model.onnx") and "--maxShapes=input:4x2x32x32" in side["trtexec"]
    assert fake_onnx[0] == "fp32"
    assert sorted(p.name for p in out.iterdir()) == ["build_engine.sh", "model.engine", "model.engine.json",
                                                     "model.onnx"]


def test_fake_trt10_fp16_sets_builder_flag(tmp_path, monkeypatch, seg_ir, fake_onnx, gpu):
    trt, out, result = _export(tmp_path, monkeypatch, seg_ir, "10.3.0", layers=_layers_json("FP16"),
                               precision="fp16")
    assert ("set_flag", "FP16") in trt.calls and ("create_network", 1 << 0) in trt.calls
    assert fake_onnx[0] == "fp16"  # the ONNX is the fp16 graph even for an fp32 IR
    assert result.info["builder_flags"] == ["FP16"] and result.info["layer_precisions"] == {"fp16": 3}
    assert result.info["trtexec"].endswith("--fp16")


def test_fake_trt11_fp16_strongly_typed_no_flag(tmp_path, monkeypatch, seg_ir, fake_onnx, gpu):
    fp16_ir = seg_ir.replace(precision="fp16")
    trt, out, result = _export(tmp_path, monkeypatch, fp16_ir, "11.0.0", layers=_layers_json("FP16", "trt11"))
    assert ("create_network", 1 << 0) in trt.calls  # STRONGLY_TYPED
    assert not any(c[0] == "set_flag" for c in trt.calls)
    assert fake_onnx[0] == "fp16"  # auto: the IR's precision
    assert result.info["precision"] == "fp16" and result.info["strongly_typed"] is True
    assert "--fp16" not in result.info["trtexec"]


def test_fp16_engine_without_fp16_layers_fails(tmp_path, monkeypatch, seg_ir, fake_onnx, gpu):
    with pytest.raises(ExportError, match="no fp16 layer"):
        _export(tmp_path, monkeypatch, seg_ir, "11.0.0", layers=_layers_json("FP32", "trt11"), precision="fp16")
    out = tmp_path / "run" / "05_tensorrt"
    assert not (out / "model.engine").exists() and not (out / "model.engine.json").exists()


def test_fake_trt10_int8_sets_int8_and_fp16_flags(tmp_path, monkeypatch, seg_ir, fake_onnx, gpu):
    layers = json.dumps({"Layers": [*json.loads(_layers_json("INT8"))["Layers"],
                                    *json.loads(_layers_json("FP16", n=2))["Layers"]]})
    trt, out, result = _export(tmp_path, monkeypatch, as_int8(seg_ir), "10.3.0", layers=layers)
    assert [c[1] for c in trt.calls if c[0] == "set_flag"] == ["INT8", "FP16"]
    assert ("create_network", 1 << 0) in trt.calls  # explicit batch, not strongly typed
    assert fake_onnx[0] == "int8"  # auto: the IR's precision, the IR itself passed on
    side = json.loads((out / "model.engine.json").read_text())
    assert side["precision"] == "int8" and side["builder_flags"] == ["INT8", "FP16"]
    assert side["layer_precisions"] == {"fp16": 2, "int8": 3} and side["layers"] == 5
    assert side["trtexec"].endswith("--int8 --fp16") and side["onnx"]["precision"] == "int8"
    assert "PRECISION_FLAGS=(--int8 --fp16)" in (out / "build_engine.sh").read_text()


def test_fake_trt11_int8_strongly_typed_no_flag(tmp_path, monkeypatch, seg_ir, fake_onnx, gpu):
    trt, out, result = _export(tmp_path, monkeypatch, as_int8(seg_ir), "11.0.0",
                               layers=_layers_json("INT8", "trt11"), precision="int8")
    assert ("create_network", 1 << 0) in trt.calls  # STRONGLY_TYPED
    assert not any(c[0] == "set_flag" for c in trt.calls)
    assert result.info["builder_flags"] == [] and result.info["strongly_typed"] is True
    assert result.info["layer_precisions"] == {"int8": 3} and result.info["precision"] == "int8"
    assert "--int8" not in result.info["trtexec"] and "--fp16" not in result.info["trtexec"]


@pytest.mark.parametrize("version, fmt", [("10.3.0", "trt10"), ("11.0.0", "trt11")])
def test_int8_engine_without_int8_layers_fails(tmp_path, monkeypatch, seg_ir, fake_onnx, gpu, version, fmt):
    with pytest.raises(ExportError, match=r"no int8 layer \(layers: \{'fp16': 3\}\)") as info:
        _export(tmp_path, monkeypatch, as_int8(seg_ir), version, layers=_layers_json("FP16", fmt))
    assert "\n" not in str(info.value) and f"TensorRT {version}" in str(info.value)
    out = tmp_path / "run" / "05_tensorrt"
    assert not (out / "model.engine").exists() and not (out / "model.engine.json").exists()


def test_precision_for():
    fp32 = types.SimpleNamespace(precision="fp32", meta={})
    int8 = types.SimpleNamespace(precision="int8", meta={"int8": {"activations": "int8"}})
    assert precision_for(fp32, "auto") == "fp32" and precision_for(fp32, "fp16") == "fp16"
    assert precision_for(int8, "auto") == "int8" and precision_for(int8, "int8") == "int8"
    with pytest.raises(ExportError, match="run the int8 pass first"):
        precision_for(fp32, "int8")
    for asked in ("fp32", "fp16"):
        with pytest.raises(ExportError, match=f"precision {asked} was asked for an int8 IR.*drop the int8 pass"):
            precision_for(int8, asked)
    for meta in ({"int8": {"activations": "uint8"}}, {}):
        with pytest.raises(ExportError, match="signed symmetric int8 activations.*backend: tensorrt"):
            precision_for(types.SimpleNamespace(precision="int8", meta=meta), "auto")


@pytest.mark.parametrize("make_ir, opts, needle", [
    (lambda ir: ir, {"precision": "int8"},
     "precision int8 needs an int8 IR, this one is fp32; run the int8 pass first"),
    (as_int8, {"precision": "fp16"}, "drop the int8 pass to build fp32/fp16"),
    (as_int8, {"precision": "fp32"}, "drop the int8 pass to build fp32/fp16"),
    (lambda ir: as_int8(ir, "uint8"), {},
     "activations, this IR's are 'uint8'; run the int8 pass with backend: tensorrt"),
])
def test_int8_precision_errors_write_nothing(tmp_path, monkeypatch, seg_ir, fake_onnx, gpu, make_ir, opts, needle):
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", make_fake_trt("10.3.0", _layers_json("INT8")))
    out = tmp_path / "run" / "05_tensorrt"
    with pytest.raises(ExportError) as info:
        TensorRTExporter(**opts).export(make_ir(seg_ir), out, PassContext())
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert fake_onnx == [] and not out.exists()  # refused before the ONNX export


def test_int8_ir_needs_the_qdq_graph(tmp_path, monkeypatch, seg_ir, gpu):
    """An ONNX exporter that wrote a float graph for an int8 IR is an error, not a silently float engine."""
    def float_export(ir, path, options):
        Path(path).write_bytes(b"ONNX")
        return ExportResult(primary=Path(path), files=[Path(path)], info={"precision": "fp32"})

    monkeypatch.setattr(onnx_exporter, "export_onnx", float_export)
    with pytest.raises(ExportError, match="wrote a graph of precision fp32 for an int8 IR, not the QDQ graph"):
        _export(tmp_path, monkeypatch, as_int8(seg_ir), "10.3.0", layers=_layers_json("INT8"))


def test_build_failure_is_export_error(tmp_path, monkeypatch, seg_ir, fake_onnx, gpu):
    trt = make_fake_trt("10.3.0", build_fails=True)
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", trt)
    out = stage_dir(tmp_path)
    with pytest.raises(ExportError, match="failed to build"):
        TensorRTExporter().export(seg_ir, out, PassContext())
    assert not (out / "model.engine").exists()


def test_timing_cache_shared_in_run_dir(tmp_path, monkeypatch, seg_ir, fake_onnx, gpu):
    trt, out, _ = _export(tmp_path, monkeypatch, seg_ir, "10.3.0")
    cache = tmp_path / "run" / "trt_timing.cache"
    assert ("create_timing_cache", b"") in trt.calls  # none yet: a new cache
    assert cache.read_bytes() == b"CACHE:"
    trt2, _, result = _export(tmp_path, monkeypatch, seg_ir, "10.3.0")
    assert ("create_timing_cache", b"CACHE:") in trt2.calls  # the second build loads the first one's cache
    assert result.info["timing_cache"] == str(cache) and result.info["timing_cache_note"] == "loaded"
    assert "--timingCacheFile=../trt_timing.cache" in (out / "build_engine.sh").read_text()


def test_rejected_timing_cache_is_replaced(tmp_path, monkeypatch, seg_ir, fake_onnx, gpu):
    cache = tmp_path / "my.cache"
    cache.write_bytes(b"OTHER-GPU")
    trt_bad = make_fake_trt("10.3.0", cache_ok=False)
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", trt_bad)
    result = TensorRTExporter(timing_cache=str(cache)).export(seg_ir, stage_dir(tmp_path), PassContext())
    assert ("create_timing_cache", b"OTHER-GPU") in trt_bad.calls and ("create_timing_cache", b"") in trt_bad.calls
    assert result.info["timing_cache_note"].startswith("rejected")
    assert cache.read_bytes() == b"CACHE:"  # saved back atomically
    assert f"--timingCacheFile={cache.resolve()}" in (result.files[2]).read_text()


def test_onnx_options_pass_through(tmp_path, monkeypatch, seg_ir, fake_onnx, gpu):
    _, _, result = _export(tmp_path, monkeypatch, seg_ir, "10.3.0", onnx={"opset": 18, "simplify": False})
    assert fake_onnx[1] == {"opset": 18, "simplify": False}
    assert result.info["onnx"]["opset"] == 18


def test_real_onnx_export_fp16_graph(tmp_path, monkeypatch, cls_ir):
    """With the real ONNX exporter: precision fp16 writes the fp16 graph before any TensorRT step."""
    pytest.importorskip("onnxruntime")
    import onnx

    monkeypatch.setitem(__import__("sys").modules, "tensorrt", None)
    out = stage_dir(tmp_path)
    with pytest.raises(ExportError, match="not installed"):
        TensorRTExporter(precision="fp16", onnx={"verify_batches": [1]}).export(cls_ir, out, PassContext())
    model = onnx.load(str(out / "model.onnx"))
    dtypes = {init.data_type for init in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in dtypes
    script = (out / "build_engine.sh").read_text()
    assert "--minShapes=input:1x1x8x8" in script and "--maxShapes=input:8x1x8x8" in script


# ---- real TensorRT -------------------------------------------------------------------------------------

def _real_trt():
    trt = pytest.importorskip("tensorrt", reason=TRT_SKIP)
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: a TensorRT engine needs one")
    return trt


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_tensorrt_build(tmp_path, cls_ir, precision):
    _real_trt()
    out = stage_dir(tmp_path)
    result = TensorRTExporter(precision=precision, max_batch=4).export(cls_ir, out, PassContext())
    side = json.loads((out / "model.engine.json").read_text())
    assert result.primary.stat().st_size > 0 and side["precision"] == precision
    assert sum(side["layer_precisions"].values()) >= 1
    if precision == "fp16":
        assert side["layer_precisions"].get("fp16", 0) >= 1
    assert (tmp_path / "run" / "trt_timing.cache").stat().st_size > 0


def _qdq_onnx(ir, path: Path) -> None:
    """A QDQ graph of `ir` as the int8 pass + ONNX exporter write it for TensorRT (signed symmetric int8
    activations, per-channel int8 weights), made here with onnxruntime's quantize_static."""
    import numpy as np
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    float_path = path.with_name("float.onnx")
    name = ir.inputs[0].name
    torch.onnx.export(ir.module.eval(), ir.example_inputs(2), str(float_path), input_names=[name],
                      dynamic_axes={name: {0: "batch"}}, opset_version=17, dynamo=False)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{name: ir.example_inputs(4, seed=s)[0].numpy().astype(np.float32)} for s in range(2)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    quantize_static(str(float_path), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})


def test_real_tensorrt_int8_build(tmp_path, monkeypatch, cls_ir):
    """A QDQ graph builds an engine with int8 layers (TensorRT 10: INT8 + FP16 flags; 11: strongly typed)."""
    _real_trt()

    def export_qdq(ir, path, options):
        _qdq_onnx(ir, Path(path))
        return ExportResult(primary=Path(path), files=[Path(path)], info={"precision": "int8", "exporter": "test"})

    monkeypatch.setattr(onnx_exporter, "export_onnx", export_qdq)
    out = stage_dir(tmp_path)
    TensorRTExporter(max_batch=4).export(as_int8(cls_ir), out, PassContext())
    side = json.loads((out / "model.engine.json").read_text())
    assert side["precision"] == "int8" and side["layer_precisions"].get("int8", 0) >= 1, side["layer_precisions"]
    assert side["builder_flags"] == ([] if side["tensorrt_major"] >= 11 else ["INT8", "FP16"])
