"""ONNX exporter: one verified `model.onnx` from an IR.

What `export` does, in order:

1. Deep-copies the IR's module, casts the copy to float32 on the CPU and puts it in eval mode (an fp16
   IR holds fp16 weights; the graph is always exported in fp32 and converted afterwards).
2. Exports with torch.onnx's dynamo exporter (`dynamic_shapes`: one `Dim("batch")` on dimension 0 of
   every input, example batch 2). If that raises, falls back to the legacy TorchScript exporter
   (`dynamo=False`, `dynamic_axes`); `info["exporter"]` says which one produced the file. The legacy
   exporter supports opsets up to 20: above that it exports at 20 and step 3 converts.
3. Reads the opset back from the produced graph. If it is not the requested one,
   `onnx.version_converter` converts it; if that fails the export fails naming both numbers.
4. Simplifies with onnxsim (optional). onnxsim reporting a failed check, or raising, keeps the
   unsimplified graph and says why in `info["simplify_note"]`.
5. int8 IRs (`exporters/onnx_int8.py`): the float layers are exported as for fp32 (their nodes named
   after the layers first), then onnxruntime's `quantize_static` writes the QDQ graph with the IR's
   recorded scales. Verification compares the predictions with the torch fake-quant model (share of
   agreeing mask pixels / classes ≥ `int8_min_agreement`, near-ties excluded: `onnx_int8.agreement`;
   elementwise tolerances do not apply to INT8) and, when the run has data, the task metric on the validation split with the fp32 graph's:
   a drop beyond `max_metric_drop` fails the stage.
5b. fp16 IRs: `onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)`: the
   initializers become float16, graph inputs and outputs stay float32, and the converter's default
   op block list keeps Resize (and its scales) in float32.
6. `onnx.checker.check_model(full_check=True)`, writes `<name>.tmp` beside the target, runs it in
   onnxruntime (CPU) against the float32 torch copy at each of `verify_batches` on deterministic
   inputs inside the declared value range, and only then renames it into place. A failed check
   raises ExportError and leaves no file behind (a file already at the target is left untouched).

The artifact is a single file: weights are stored inside the protobuf, which caps the model at 2 GB.
A model whose float32 weights reach 2 GB raises ExportError (external-data export is not supported).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnx
import torch

from compressor.context import PassContext
from compressor.errors import ExportError
from compressor.ir import ModelIR
from compressor.options import option, parse_options
from compressor.passes_base import Exporter, ExportResult
from compressor.registry import register_exporter

log = logging.getLogger(__name__)

MIN_OPSET = 18
MAX_OPSET = 23
LEGACY_MAX_OPSET = 20  # the TorchScript exporter's highest supported opset
MAX_SINGLE_FILE_BYTES = 2**31  # protobuf's limit on one serialized message
SIMPLIFY_CHECK_N = 1  # onnxsim's own random-input check; our verification runs afterwards anyway
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CHATTY_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo", "torch.fx",
                   "onnxscript", "onnx_ir", "onnxsim")


@dataclass(frozen=True)
class OnnxOptions:
    opset: int = option(20, "ONNX opset; read back from the exported file and converted if it differs",
                        min=MIN_OPSET, max=MAX_OPSET)
    simplify: bool = option(True, "simplify the graph with onnxsim (kept unsimplified if onnxsim fails)")
    verify: bool = option(True, "compare onnxruntime (CPU) with torch at verify_batches; fail the export on a mismatch")
    verify_batches: tuple[int, ...] = option((1, 2), "batch sizes of the numerics check")
    rtol: float = option(1e-3, "relative tolerance of the check for fp32 models", min=0)
    atol: float = option(1e-4, "absolute tolerance of the check for fp32 models", min=0)
    fp16_rtol: float = option(1e-2, "relative tolerance of the check for fp16 models (vs the fp32 torch model)", min=0)
    fp16_atol: float = option(1e-2, "absolute tolerance of the check for fp16 models (vs the fp32 torch model)", min=0)
    dynamo: bool = option(True, "use torch.onnx's dynamo exporter (falls back to the legacy exporter if it fails)")
    int8_min_agreement: float = option(0.98, "int8 IRs: least share of predictions (mask pixels or classes; near-ties "
                                             "excluded) the QDQ graph must share with the torch fake-quant model at "
                                             "verify_batches", min=0, max=1)
    max_metric_drop: float = option(1.0, "int8 IRs, when the run has data: the most the task metric (IoU or accuracy, "
                                         "points) may drop on the validation split against the fp32 graph", min=0)

    def __post_init__(self) -> None:
        if self.verify and not self.verify_batches:
            raise ValueError("verify_batches is empty; give at least one batch size (e.g. [1, 2]) "
                             "or set verify: false")
        bad = [b for b in self.verify_batches if isinstance(b, bool) or not isinstance(b, int) or b < 1]
        if bad:
            raise ValueError(f"verify_batches: {bad} are not batch sizes; use positive integers, e.g. [1, 2]")


# ---- small helpers -----------------------------------------------------------------------------

def _first_line(exc: BaseException) -> str:
    """`Type: first non-empty line`, plus the first line of its cause when there is one."""

    def one(e: BaseException) -> str:
        lines = [ln.strip() for ln in _ANSI.sub("", str(e)).splitlines() if ln.strip()]
        return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__

    text = one(exc)
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if cause is not None and cause is not exc:
        text += f" (caused by {one(cause)})"
    return text


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """Silence the exporters' stdout/stderr, warnings and log lines; what they printed goes to the debug log.

    (torch.export prints whole graphs to stderr when it fails; onnxsim prints its checks to stdout.)
    """
    buf = io.StringIO()
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if buf.getvalue().strip():
            log.debug("suppressed exporter output:\n%s", buf.getvalue())


def _default_opset(model: onnx.ModelProto) -> int | None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return None


def _flatten_outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)) and out and all(isinstance(t, torch.Tensor) for t in out):
        return list(out)
    raise ExportError(f"the model returns {type(out).__name__}, not a tensor or a tuple of tensors; "
                      f"ONNX export needs tensor outputs (return the logits tensor)")


def _output_names(n: int) -> list[str]:
    return ["logits"] + [f"output_{i}" for i in range(1, n)]


def _weight_bytes(module: torch.nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


def _fp32_copy(ir: ModelIR) -> torch.nn.Module:
    try:
        module = copy.deepcopy(ir.module)
    except Exception as exc:
        raise ExportError(f"could not copy the IR's module for export ({_first_line(exc)}); "
                          f"the module must be deep-copyable") from exc
    return module.to("cpu").float().eval()


def _verify_inputs(ir: ModelIR, batch: int, seed: int) -> list[torch.Tensor]:
    return [spec.example(batch, seed).float() for spec in ir.inputs]


def _run_torch(module: torch.nn.Module, inputs: list[torch.Tensor]) -> list[np.ndarray]:
    """The reference: the float32 torch copy on the CPU."""
    with torch.no_grad():
        outs = _flatten_outputs(module(*inputs))
    return [o.detach().float().cpu().numpy() for o in outs]


# ---- export steps ------------------------------------------------------------------------------

def _torch_export(module: torch.nn.Module, args: tuple[torch.Tensor, ...], input_names: list[str],
                  output_names: list[str], opset: int, use_dynamo: bool) -> tuple[onnx.ModelProto, str, str | None]:
    """Run torch.onnx.export; return (model, "dynamo"|"legacy", why dynamo was not used or None)."""
    dynamo_error: str | None = None
    if use_dynamo:
        try:
            batch = torch.export.Dim("batch")
            with _quiet():
                program = torch.onnx.export(
                    module, args, None,
                    input_names=input_names, output_names=output_names,
                    opset_version=opset, dynamo=True, external_data=False,
                    dynamic_shapes=tuple({0: batch} for _ in args),
                    verbose=False, report=False,
                )
                model = program.model_proto
            return model, "dynamo", None
        except Exception as exc:
            dynamo_error = _first_line(exc)
            log.warning("onnx: the dynamo exporter failed (%s); falling back to the legacy exporter", dynamo_error)
    legacy_opset = min(opset, LEGACY_MAX_OPSET)
    buf = io.BytesIO()
    try:
        with _quiet():
            torch.onnx.export(
                module, args, buf,
                input_names=input_names, output_names=output_names,
                opset_version=legacy_opset, dynamo=False,
                dynamic_axes={name: {0: "batch"} for name in input_names + output_names},
            )
        model = onnx.load_from_string(buf.getvalue())
    except Exception as exc:
        legacy_error = _first_line(exc)
        if dynamo_error is not None:
            raise ExportError(f"torch.onnx.export failed with both exporters: dynamo: {dynamo_error}; "
                              f"legacy: {legacy_error}; make the model traceable by torch.export "
                              f"(no data-dependent control flow) or rerun with --debug") from exc
        raise ExportError(f"torch.onnx.export (legacy exporter) failed: {legacy_error}; "
                          f"try dynamo: true or rerun with --debug") from exc
    return model, "legacy", dynamo_error if use_dynamo else "dynamo: false"


def _ensure_opset(model: onnx.ModelProto, want: int, exporter: str) -> tuple[onnx.ModelProto, int | None]:
    """Return the model at opset `want` and the opset it was converted from (None if unchanged)."""
    got = _default_opset(model)
    if got == want:
        return model, None
    if got is None:
        raise ExportError(f"the {exporter} exporter produced a graph without a default-domain opset "
                          f"(requested {want}); rerun with --debug")
    try:
        converted = onnx.version_converter.convert_version(model, want)
    except Exception as exc:
        raise ExportError(f"the {exporter} exporter produced opset {got}, not the requested {want}, and "
                          f"onnx.version_converter could not convert it ({_first_line(exc)}); "
                          f"set opset: {got}") from exc
    now = _default_opset(converted)
    if now != want:
        raise ExportError(f"the {exporter} exporter produced opset {got}, not the requested {want}, and "
                          f"onnx.version_converter gave opset {now}; set opset: {got}")
    log.info("onnx: converted opset %s -> %s", got, want)
    return converted, got


def _simplify(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool, str]:
    try:
        import onnxsim
    except ImportError as exc:
        note = f"onnxsim is not installed ({_first_line(exc)}); pip install onnxsim"
        log.warning("onnx: %s; keeping the unsimplified graph", note)
        return model, False, note
    try:
        with _quiet():
            simplified, ok = onnxsim.simplify(model, check_n=SIMPLIFY_CHECK_N)
    except Exception as exc:
        note = f"onnxsim failed ({_first_line(exc)}); kept the unsimplified graph"
        log.warning("onnx: %s", note)
        return model, False, note
    if not ok:
        note = "onnxsim's check of the simplified graph failed; kept the unsimplified graph"
        log.warning("onnx: %s", note)
        return model, False, note
    return simplified, True, "ok"


def _node_scopes(node: onnx.NodeProto) -> list[str]:
    """Module names a node came from: the dynamo exporter's `pkg.torch.onnx.name_scopes` metadata,
    or the legacy exporter's node name (`/stem/stem.0/Conv`)."""
    import ast

    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                return [str(x) for x in ast.literal_eval(prop.value)]
            except (ValueError, SyntaxError):
                break
    return [part for part in node.name.split("/") if part]


FP32_TAG = "fp32/"  # the prefix tag_fp32_nodes gives an fp32 island's nodes (onnxsim drops the name scopes)


def fp32_node_names(model: onnx.ModelProto, modules: list[str]) -> list[str]:
    """Names of the nodes that belong to one of `modules` (or a submodule of one), or that tag_fp32_nodes
    tagged before simplification."""
    def inside(scope: str) -> bool:
        return any(scope == m or scope.startswith(m + ".") for m in modules)

    return [n.name for n in model.graph.node
            if n.name and (n.name.startswith(FP32_TAG) or any(inside(s) for s in _node_scopes(n)))]


def tag_fp32_nodes(model: onnx.ModelProto, modules: list[str]) -> int:
    """Prefix the names of the fp32 islands' nodes with FP32_TAG while the exporter's name scopes are still
    there: onnxsim drops node metadata, and the islands would silently become fp16. Returns the count."""
    names = set(fp32_node_names(model, modules))
    for node in model.graph.node:
        if node.name in names and not node.name.startswith(FP32_TAG):
            node.name = FP32_TAG + node.name
    return len(names)


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _repair_fp32_islands(before: onnx.ModelProto, model: onnx.ModelProto) -> onnx.ModelProto:
    """Two fixes to onnxconverter-common's handling of blocked nodes (1.16; node_block_list and its default
    op block list, e.g. Resize):
    - it stores a blocked node's weights as fp16 and casts them back up, which loses values beyond
      the fp16 range (the reason to keep a module in fp32): weights read only through such up-casts
      get their fp32 values back;
    - when the graph's last node is blocked, keep_io_types leaves an fp16 cast in front of the
      output: that cast becomes a cast to fp32, so the graph's I/O stays fp32."""
    fp32 = onnx.TensorProto.FLOAT
    fp16 = onnx.TensorProto.FLOAT16
    originals = {i.name: i for i in before.graph.initializer if i.data_type == fp32}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    restored = set()
    for init in model.graph.initializer:
        users = consumers.get(init.name, [])
        if (init.data_type == fp16 and init.name in originals and users
                and all(n.op_type == "Cast" and _cast_to(n) == fp32 for n in users)):
            init.CopyFrom(originals[init.name])
            restored.add(init.name)
    for info in model.graph.value_info:
        if info.name in restored:
            info.type.tensor_type.elem_type = fp32
    producers = {out: node for node in model.graph.node for out in node.output}
    for value in model.graph.output:
        if value.type.tensor_type.elem_type != fp16:
            continue
        node = producers.get(value.name)
        if node is not None and node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to":
                    attr.i = fp32
            value.type.tensor_type.elem_type = fp32
            for info in model.graph.value_info:
                if info.name == value.name:
                    info.type.tensor_type.elem_type = fp32
    return model


def _to_fp16(model: onnx.ModelProto, keep_fp32: list[str] | None = None) -> onnx.ModelProto:
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise ExportError(f"fp16 ONNX export needs onnxconverter-common ({_first_line(exc)}); "
                          f"pip install onnxconverter-common") from exc
    try:
        with _quiet():
            if not keep_fp32:  # the default block list still keeps Resize in fp32: a graph ending in one
                # (Segformer's upsampled logits) needs the output cast repaired too
                return _repair_fp32_islands(model, float16.convert_float_to_float16(model, keep_io_types=True))
            blocked = fp32_node_names(model, keep_fp32)
            log.info("onnx: keeping %d nodes of %s in fp32", len(blocked), keep_fp32)
            converted = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=blocked)
            return _repair_fp32_islands(model, converted)
    except Exception as exc:
        raise ExportError(f"converting the ONNX graph to fp16 failed ({_first_line(exc)}); "
                          f"export the fp32 IR (drop the fp16 pass) or rerun with --debug") from exc


def _check_io_float32(model: onnx.ModelProto) -> None:
    values = [("input", v) for v in model.graph.input] + [("output", v) for v in model.graph.output]
    for kind, value in values:
        elem = value.type.tensor_type.elem_type
        if elem != onnx.TensorProto.FLOAT:
            raise ExportError(f"graph {kind} '{value.name}' has type {onnx.TensorProto.DataType.Name(elem)} "
                              f"after the fp16 conversion, expected FLOAT; rerun with --debug")


def _ort_session(path: Path) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ExportError("the ONNX numerics check needs onnxruntime; pip install onnxruntime "
                          "(or set verify: false)") from exc
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot load the exported model ({_first_line(exc)}); "
                          f"try another opset or dynamo: false") from exc


def _verify(path: Path, module: torch.nn.Module, ir: ModelIR, output_names: list[str],
            opts: OnnxOptions, seed: int) -> tuple[dict[int, float], dict[int, float]]:
    """onnxruntime vs torch at every batch; returns (max_abs_diff, sign_agreement) per batch. For int8
    the reference is the fake-quant torch model and the check is the share of agreeing predictions."""
    if ir.precision == "int8":
        return _verify_int8(path, module, ir, output_names, opts, seed)
    fp16 = ir.precision == "fp16"
    rtol, atol = (opts.fp16_rtol, opts.fp16_atol) if fp16 else (opts.rtol, opts.atol)
    knobs = "fp16_atol/fp16_rtol" if fp16 else "atol/rtol"
    sess = _ort_session(path)
    names = [i.name for i in sess.get_inputs()]
    max_diff: dict[int, float] = {}
    agreement: dict[int, float] = {}
    for batch in opts.verify_batches:
        inputs = _verify_inputs(ir, batch, seed)
        ref = _run_torch(module, inputs)
        try:
            got = sess.run(output_names, {n: x.numpy() for n, x in zip(names, inputs)})
        except Exception as exc:
            raise ExportError(f"onnxruntime could not run the exported model at batch {batch} "
                              f"({_first_line(exc)}); is the batch dimension dynamic? "
                              f"try dynamo: false, or verify: false to skip") from exc
        worst = 0.0
        for name, r, o in zip(output_names, ref, got):
            o = np.asarray(o, dtype=np.float32)
            if o.shape != r.shape:
                raise ExportError(f"ONNX numerics check failed at batch {batch}: output '{name}' has shape "
                                  f"{list(o.shape)}, torch gives {list(r.shape)}; set verify: false to skip")
            diff = np.abs(o.astype(np.float64) - r.astype(np.float64))
            diff = np.where(np.isnan(diff), np.inf, diff)
            bad = diff > atol + rtol * np.abs(r)
            d = float(diff.max()) if diff.size else 0.0
            worst = max(worst, d)
            if bad.any():
                raise ExportError(
                    f"ONNX numerics check failed at batch {batch}: max abs diff {d:.3g} > tolerance "
                    f"(atol {atol:g} + rtol {rtol:g}*|ref|) at {int(bad.sum())} of {bad.size} values of "
                    f"'{name}' ({ir.precision}); set verify: false to skip, loosen {knobs}, "
                    f"or try dynamo: false / simplify: false")
        max_diff[batch] = worst
        if ir.task.kind == "segmentation":  # mask pixels (binary) or argmax pixel classes (multi-class)
            from compressor.exporters.onnx_int8 import predictions

            agreement[batch] = float(np.mean(predictions(ir.task, np.asarray(got[0])) == predictions(ir.task, ref[0])))
    return max_diff, agreement


def _verify_int8(path: Path, module: torch.nn.Module, ir: ModelIR, output_names: list[str],
                 opts: OnnxOptions, seed: int) -> tuple[dict[int, float], dict[int, float]]:
    from compressor.exporters.onnx_int8 import agreement

    sess = _ort_session(path)
    names = [i.name for i in sess.get_inputs()]
    max_diff: dict[int, float] = {}
    agree: dict[int, float] = {}
    for batch in opts.verify_batches:
        inputs = _verify_inputs(ir, batch, seed)
        ref = _run_torch(module, inputs)
        got = sess.run(output_names[:1], {n: x.numpy() for n, x in zip(names, inputs)})[0]
        max_diff[batch] = float(np.abs(got.astype(np.float64) - ref[0]).max())
        agree[batch] = agreement(ir.task, got, ref[0])
        if agree[batch] < opts.int8_min_agreement:
            raise ExportError(f"int8 ONNX check failed at batch {batch}: the QDQ graph agrees with the torch fake-quant "
                              f"model on {agree[batch]:.1%} of predictions (< int8_min_agreement "
                              f"{opts.int8_min_agreement:.0%}; max abs diff {max_diff[batch]:.3g}); rerun with --debug, "
                              f"or lower int8_min_agreement")
    return max_diff, agree


def _check_metric_drop(path: Path, float_module: torch.nn.Module, ir: ModelIR, data: Any,
                       opts: OnnxOptions) -> dict[str, Any]:
    """Task metric of the int8 graph vs the fp32 model on the validation split; raises past max_metric_drop."""
    from compressor.data import make_loader
    from compressor.evaluate.metrics import evaluate_module, evaluate_onnx
    from compressor.passes.int8 import main_metric

    loader = make_loader(data.val, 32)
    key = main_metric(ir.task)
    ref = evaluate_module(float_module, loader, ir.task)[key] * 100
    got = evaluate_onnx(path, loader, ir.task)[key] * 100
    drop = ref - got
    if drop > opts.max_metric_drop:
        raise ExportError(f"int8 export: {key} drops {drop:.2f} points on the validation split (fp32 {ref:.2f} -> int8 "
                          f"{got:.2f}), over max_metric_drop {opts.max_metric_drop:g}; quantize fewer layers (int8 "
                          f"mixed: {{max_drop: ...}} or exclude: [...]), try method: entropy or percentile, or add qat")
    return {"metric": key, "fp32": round(ref, 3), "int8": round(got, 3), "drop": round(drop, 3)}


def _versions() -> dict[str, str | None]:
    try:
        import onnxruntime as ort
        ort_version: str | None = ort.__version__
    except ImportError:
        ort_version = None
    return {"onnx_version": onnx.__version__, "onnxruntime_version": ort_version,
            "torch_version": torch.__version__}


def write_edge_metadata(model: onnx.ModelProto, ir: ModelIR) -> None:
    """Record in the model's metadata_props, as JSON, what the deployment side needs to feed it and read it:
    the task (kind, num_classes, ignore_index, class_names) and, when the data declared one, the
    preprocessing (`compressor.data.preprocess`). `compress bench` prints them without torch."""
    from compressor.bench import PREPROCESS_KEY, TASK_KEY

    task = ir.task
    props = {TASK_KEY: json.dumps({"kind": task.kind, "num_classes": task.num_classes,
                                   "ignore_index": task.ignore_index,
                                   "class_names": list(task.class_names) if task.class_names else None})}
    if ir.meta.get("preprocess"):
        props[PREPROCESS_KEY] = json.dumps(ir.meta["preprocess"])
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def _export(ir: ModelIR, target: Path, opts: OnnxOptions, seed: int = 0, data: Any = None) -> ExportResult:
    start = time.perf_counter()
    if not ir.inputs:
        raise ExportError("the IR declares no inputs; a frontend must set ir.inputs before export")
    fixed = [s.name for s in ir.inputs if s.shape[0] is not None]
    if fixed:
        raise ExportError(f"input(s) {fixed} have a fixed batch dimension; ONNX export makes the batch "
                          f"dynamic and needs InputSpec.shape[0] = None")
    input_names = [s.name for s in ir.inputs]
    if "logits" in input_names:
        raise ExportError("an input is named 'logits', the name of the exported output; rename the input")

    int8 = ir.precision == "int8"
    module = _fp32_copy(ir)
    if int8:
        from compressor.exporters.onnx_int8 import (fake_quant_reference, layer_specs, missing_layers, quantize,
                                                    tag_layer_nodes)
        from compressor.passes.int8 import unwrap

        int8_layers = list(layer_specs(ir)[0])
        module = unwrap(module)
    nbytes = _weight_bytes(module)
    if nbytes >= MAX_SINGLE_FILE_BYTES:
        raise ExportError(f"the model has {nbytes / 2**30:.2f} GiB of float32 weights; the single-file ONNX "
                          f"export is limited to 2 GB (protobuf) and external-data files are not supported; "
                          f"compress the model further (prune/distill) before exporting")

    args = tuple(x.float() for x in ir.example_inputs(batch=2))
    try:
        probe = _run_torch(module, list(args))
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"the float32 model fails on its example input of batch 2 ({_first_line(exc)}); "
                          f"check the IR's input spec") from exc
    output_names = _output_names(len(probe))

    t0 = time.perf_counter()
    model, exporter, fallback = _torch_export(module, args, input_names, output_names, opts.opset, opts.dynamo)
    export_s = time.perf_counter() - t0
    produced_opset = _default_opset(model)
    model, converted_from = _ensure_opset(model, opts.opset, exporter)
    if int8:
        tag_layer_nodes(model, int8_layers)
    if ir.precision == "fp16" and ir.meta.get("fp32_modules"):
        tag_fp32_nodes(model, list(ir.meta["fp32_modules"]))

    simplified, note = False, "simplify: false"
    if opts.simplify:
        before = model
        model, simplified, note = _simplify(model)
        lost = missing_layers(model, int8_layers) if int8 and simplified else []
        if lost:  # e.g. onnxsim merges the q/k/v MatMuls that read one input into one node
            model, simplified = before, False
            note = (f"onnxsim merged or renamed the nodes of quantized layer(s) {lost[:3]}; kept the unsimplified "
                    f"graph so that each layer keeps its own scales")
            log.info("onnx: %s", note)
    int8_info: dict[str, Any] = {}
    if int8:
        model, int8_info = quantize(model, ir, input_names)
    if ir.precision == "fp16":
        model = _to_fp16(model, ir.meta.get("fp32_modules"))
        _check_io_float32(model)

    opset = _default_opset(model)
    if opset != opts.opset:
        raise ExportError(f"the graph's opset changed to {opset} after simplification/fp16 conversion "
                          f"(requested {opts.opset}); set simplify: false")
    write_edge_metadata(model, ir)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ExportError(f"the exported graph fails onnx.checker ({_first_line(exc)}); "
                          f"try simplify: false, dynamo: false or another opset") from exc
    size = model.ByteSize()
    if size >= MAX_SINGLE_FILE_BYTES:
        raise ExportError(f"the ONNX graph serializes to {size / 2**30:.2f} GiB, over the 2 GB single-file "
                          f"limit; compress the model further before exporting")

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    max_diff: dict[int, float] = {}
    agreement: dict[int, float] = {}
    verify_s = 0.0
    try:
        try:
            tmp.write_bytes(model.SerializeToString())
        except OSError as exc:
            raise ExportError(f"cannot write {tmp} ({_first_line(exc)}); check the output directory") from exc
        if opts.verify:
            t0 = time.perf_counter()
            reference = fake_quant_reference(ir) if int8 else module
            max_diff, agreement = _verify(tmp, reference, ir, output_names, opts, seed)
            if int8 and data is not None:
                int8_info["metric_check"] = _check_metric_drop(tmp, module, ir, data, opts)
            verify_s = time.perf_counter() - t0
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()

    fp16 = ir.precision == "fp16"
    info: dict[str, Any] = {
        "opset": opset,
        "requested_opset": opts.opset,
        "produced_opset": produced_opset,
        "opset_converted_from": converted_from,
        "exporter": exporter,
        "fallback_reason": fallback,
        "simplified": simplified,
        "simplify_note": note,
        "precision": ir.precision,
        "verified": bool(opts.verify),
        "verify_batches": list(opts.verify_batches) if opts.verify else [],
        "tolerance": {"rtol": opts.fp16_rtol if fp16 else opts.rtol,
                      "atol": opts.fp16_atol if fp16 else opts.atol},
        "max_abs_diff": max_diff,
        "inputs": input_names,
        "outputs": output_names,
        "bytes": target.stat().st_size,
        "export_seconds": round(export_s, 3),
        "verify_seconds": round(verify_s, 3),
        "seconds": round(time.perf_counter() - start, 3),
        **_versions(),
    }
    if ir.task.kind == "segmentation" or int8:  # binary masks agree in sign, classes (per pixel) in argmax
        binary = ir.task.kind == "segmentation" and not ir.task.multiclass_segmentation
        info["sign_agreement" if binary else "class_agreement"] = agreement
    if int8:
        info["int8"] = int8_info
        info["tolerance"] = {"min_agreement": opts.int8_min_agreement}
    log.info("onnx: wrote %s (%s exporter, opset %s, %s, %d bytes, max |diff| %s)", target, exporter,
             opset, ir.precision, info["bytes"], max_diff)
    return ExportResult(primary=target, files=[target], info=info)


# ---- public API --------------------------------------------------------------------------------

@register_exporter("onnx")
class OnnxExporter(Exporter):
    """Writes `out_dir/model.onnx`: opset-checked, optionally simplified, fp16 for fp16 IRs, verified."""

    Options = OnnxOptions
    packages = ("torch", "onnx", "onnxscript", "onnxruntime", "onnxsim", "onnxconverter-common")

    latency_backends = ("onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt")
    suffixes = (".onnx",)

    @classmethod
    def describe_artifact(cls, path: Path) -> str:
        return describe_onnx(path)

    def export(self, ir: ModelIR, out_dir: Path, ctx: PassContext) -> ExportResult:
        return _export(ir, Path(out_dir) / "model.onnx", self.options, seed=ctx.seed, data=ctx.data)

    def evaluate(self, artifact: Path, loader: Any, ir: ModelIR, *, threads: int | None,
                 progress: bool) -> tuple[dict[str, Any], str | None]:
        from compressor.evaluate.metrics import evaluate_onnx

        return evaluate_onnx(artifact, loader, ir.task, threads=threads, progress=progress), None

    def latency(self, artifact: Path, backend: str, opts: Any) -> Any:
        from compressor.evaluate.latency import latency_onnxruntime

        return latency_onnxruntime(artifact, batch=opts.batch, threads=opts.threads, warmup=opts.warmup,
                                   iters=opts.iters, min_seconds=opts.min_seconds, backend=backend)


def export_onnx(ir: ModelIR, path: str | os.PathLike[str], options: OnnxOptions | None = None,
                **kwargs: Any) -> ExportResult:
    """Export `ir` to `path` (a directory gets `model.onnx` inside it).

    Options come either as an `OnnxOptions` or as keywords validated like the YAML form:
    `export_onnx(ir, "model.onnx", opset=18, simplify=False)`.
    """
    if options is not None and kwargs:
        raise TypeError("give either an OnnxOptions or keyword options, not both")
    if options is None:
        options = parse_options(OnnxOptions, kwargs, "onnx")
    elif not isinstance(options, OnnxOptions):
        raise TypeError(f"options must be OnnxOptions, got {type(options).__name__}")
    target = Path(path)
    if target.is_dir():
        target = target / "model.onnx"
    return _export(ir, target, options)


export = export_onnx  # `from compressor.exporters import onnx; onnx.export(ir, "model.onnx")`


def describe_onnx(path: str | os.PathLike[str]) -> str:
    """`compress inspect model.onnx`: inputs, outputs, opset, operator counts and weight bytes (a protobuf
    read: no code runs). An empty file, a graph with no nodes or outputs, a tensor type ONNX does not define
    or an initializer whose data does not match its shape is refused in one line (`compressor.bench`'s
    checks, which `compress bench` applies too)."""
    from compressor.bench import check_onnx_graph, refuse_empty, tensor_nbytes

    path = Path(path)
    refuse_empty(path)  # protobuf reads 0 bytes as an empty model
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ExportError(f"{path} is not a readable ONNX file ({_first_line(exc)})") from None
    check_onnx_graph(model, path)

    def value(v: Any) -> str:
        t = v.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in t.shape.dim]
        return f"{v.name}{dims} {onnx.TensorProto.DataType.Name(t.elem_type).lower()}"

    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    dtypes: dict[str, int] = {}
    for init in model.graph.initializer:
        name = onnx.TensorProto.DataType.Name(init.data_type).lower()
        # from the shape, not by decoding the weights (strings: their bytes)
        nbytes = tensor_nbytes(init)
        dtypes[name] = dtypes.get(name, 0) + (nbytes if nbytes is not None else sum(map(len, init.string_data)))
    opset = _default_opset(model)
    return "\n".join([
        f"ONNX file: {path} ({path.stat().st_size:,} bytes, opset {opset}, producer {model.producer_name})",
        "inputs: " + ", ".join(value(v) for v in model.graph.input),
        "outputs: " + ", ".join(value(v) for v in model.graph.output),
        f"nodes: {len(model.graph.node)}: " + ", ".join(f"{k} {n}" for k, n in sorted(ops.items(), key=lambda kv: -kv[1])),
        "weights: " + (", ".join(f"{k} {b:,} bytes" for k, b in dtypes.items()) or "none"),
    ])
