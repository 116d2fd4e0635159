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
5. The IR's precision (`compressor.precision`, looked up by `ir.precision`) lowers the graph: its
   `OnnxLowering` gives the float module to export (int8: the `Int8Layer` wrappers removed), tags nodes
   before simplification (fp16 islands, int8 layers) and may refuse a simplification that lost them, then
   converts the graph after it (fp16: float16 weights with float32 I/O; int8: the QDQ graph with the IR's
   recorded scales). It also picks the verification: elementwise tolerances (fp32: `rtol`/`atol`, fp16:
   `fp16_rtol`/`fp16_atol`, against the float32 torch model) or, for quantized graphs, the share of
   predictions (mask pixels, classes; near-ties excluded) shared with its torch reference
   (`int8_min_agreement`), plus, when the run has data, the task metric on the validation split against
   the fp32 model: a drop beyond `max_metric_drop` fails the stage.
6. `onnx.checker.check_model(full_check=True)`, writes a temp file beside the target (`compressor.store.atomic_path`), runs it in
   onnxruntime (CPU) against the float32 torch copy at each of `verify_batches` on deterministic
   inputs inside the declared value range, and only then renames it into place. A failed check
   raises ExportError and leaves no file behind (a file already at the target is left untouched).

The artifact is a single file: weights are stored inside the protobuf, which caps the model at 2 GB.
A model whose float32 weights reach 2 GB raises ExportError (external-data export is not supported).
"""
from __future__ import annotations

import copy
import io
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from compressor.context import PassContext
from compressor.errors import ExportError, first_line
from compressor.evaluate.backends import backends_for
from compressor.ir import ModelIR
from compressor.onnx_graph import default_opset, quiet
from compressor.options import option, parse_options
from compressor.passes_base import Exporter, ExportResult
from compressor.precision import Agreement, OnnxLowering, Tolerance, get_precision
from compressor.registry import register_exporter
from compressor.store import atomic_path

log = logging.getLogger(__name__)

MIN_OPSET = 18
MAX_OPSET = 23
LEGACY_MAX_OPSET = 20  # the TorchScript exporter's highest supported opset
MAX_SINGLE_FILE_BYTES = 2**31  # protobuf's limit on one serialized message
SIMPLIFY_CHECK_N = 1  # onnxsim's own random-input check; our verification runs afterwards anyway


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
    int8_min_agreement: float = option(0.98, "quantized (int8) IRs: least share of predictions (mask pixels or "
                                             "classes; near-ties excluded) the graph must share with the precision's "
                                             "torch reference at verify_batches", min=0, max=1)
    max_metric_drop: float = option(1.0, "quantized (int8) IRs, when the run has data: the most the task metric (IoU "
                                         "or accuracy, points) may drop on the validation split against the fp32 "
                                         "model", min=0)

    def __post_init__(self) -> None:
        if self.verify and not self.verify_batches:
            raise ValueError("verify_batches is empty; give at least one batch size (e.g. [1, 2]) "
                             "or set verify: false")
        bad = [b for b in self.verify_batches if isinstance(b, bool) or not isinstance(b, int) or b < 1]
        if bad:
            raise ValueError(f"verify_batches: {bad} are not batch sizes; use positive integers, e.g. [1, 2]")


# ---- small helpers -----------------------------------------------------------------------------

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
        raise ExportError(f"could not copy the IR's module for export ({first_line(exc)}); "
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
            with quiet():
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
            dynamo_error = first_line(exc)
            log.warning("onnx: the dynamo exporter failed (%s); falling back to the legacy exporter", dynamo_error)
    legacy_opset = min(opset, LEGACY_MAX_OPSET)
    buf = io.BytesIO()
    try:
        with quiet():
            torch.onnx.export(
                module, args, buf,
                input_names=input_names, output_names=output_names,
                opset_version=legacy_opset, dynamo=False,
                dynamic_axes={name: {0: "batch"} for name in input_names + output_names},
            )
        model = onnx.load_from_string(buf.getvalue())
    except Exception as exc:
        legacy_error = first_line(exc)
        if dynamo_error is not None:
            raise ExportError(f"torch.onnx.export failed with both exporters: dynamo: {dynamo_error}; "
                              f"legacy: {legacy_error}; make the model traceable by torch.export "
                              f"(no data-dependent control flow) or rerun with --debug") from exc
        raise ExportError(f"torch.onnx.export (legacy exporter) failed: {legacy_error}; "
                          f"try dynamo: true or rerun with --debug") from exc
    return model, "legacy", dynamo_error if use_dynamo else "dynamo: false"


def _ensure_opset(model: onnx.ModelProto, want: int, exporter: str) -> tuple[onnx.ModelProto, int | None]:
    """Return the model at opset `want` and the opset it was converted from (None if unchanged)."""
    got = default_opset(model)
    if got == want:
        return model, None
    if got is None:
        raise ExportError(f"the {exporter} exporter produced a graph without a default-domain opset "
                          f"(requested {want}); rerun with --debug")
    try:
        converted = onnx.version_converter.convert_version(model, want)
    except Exception as exc:
        raise ExportError(f"the {exporter} exporter produced opset {got}, not the requested {want}, and "
                          f"onnx.version_converter could not convert it ({first_line(exc)}); "
                          f"set opset: {got}") from exc
    now = default_opset(converted)
    if now != want:
        raise ExportError(f"the {exporter} exporter produced opset {got}, not the requested {want}, and "
                          f"onnx.version_converter gave opset {now}; set opset: {got}")
    log.info("onnx: converted opset %s -> %s", got, want)
    return converted, got


def _simplify(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool, str]:
    try:
        import onnxsim
    except ImportError as exc:
        note = f"onnxsim is not installed ({first_line(exc)}); pip install onnxsim"
        log.warning("onnx: %s; keeping the unsimplified graph", note)
        return model, False, note
    try:
        with quiet():
            simplified, ok = onnxsim.simplify(model, check_n=SIMPLIFY_CHECK_N)
    except Exception as exc:
        note = f"onnxsim failed ({first_line(exc)}); kept the unsimplified graph"
        log.warning("onnx: %s", note)
        return model, False, note
    if not ok:
        note = "onnxsim's check of the simplified graph failed; kept the unsimplified graph"
        log.warning("onnx: %s", note)
        return model, False, note
    return simplified, True, "ok"


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
        raise ExportError(f"onnxruntime cannot load the exported model ({first_line(exc)}); "
                          f"try another opset or dynamo: false") from exc


def _run_onnx(sess: Any, output_names: list[str], names: list[str], inputs: list[torch.Tensor],
              batch: int) -> list[Any]:
    try:
        return sess.run(output_names, {n: x.numpy() for n, x in zip(names, inputs)})
    except Exception as exc:
        raise ExportError(f"onnxruntime could not run the exported model at batch {batch} "
                          f"({first_line(exc)}); is the batch dimension dynamic? "
                          f"try dynamo: false, or verify: false to skip") from exc


def _verify(path: Path, module: torch.nn.Module, ir: ModelIR, output_names: list[str], check: Tolerance | Agreement,
            batches: tuple[int, ...], seed: int) -> tuple[dict[int, float], dict[int, float]]:
    """onnxruntime vs the torch reference at every batch, by the precision's check; returns (max_abs_diff,
    agreement) per batch: sign/class agreement for segmentation, the checked agreement for `Agreement`."""
    if isinstance(check, Agreement):
        return _verify_agreement(path, module, ir, output_names, check, batches, seed)
    rtol, atol = check.rtol, check.atol
    sess = _ort_session(path)
    names = [i.name for i in sess.get_inputs()]
    max_diff: dict[int, float] = {}
    agreement: dict[int, float] = {}
    for batch in batches:
        inputs = _verify_inputs(ir, batch, seed)
        ref = _run_torch(module, inputs)
        got = _run_onnx(sess, output_names, names, inputs, batch)
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
                    f"'{name}' ({ir.precision}); set verify: false to skip, loosen {check.knobs}, "
                    f"or try dynamo: false / simplify: false")
        max_diff[batch] = worst
        if ir.task.kind == "segmentation":  # mask pixels (binary) or argmax pixel classes (multi-class)
            from compressor.evaluate.agreement import predictions

            agreement[batch] = float(np.mean(predictions(ir.task, np.asarray(got[0])) == predictions(ir.task, ref[0])))
    return max_diff, agreement


def _verify_agreement(path: Path, module: torch.nn.Module, ir: ModelIR, output_names: list[str], check: Agreement,
                      batches: tuple[int, ...], seed: int) -> tuple[dict[int, float], dict[int, float]]:
    """The share of the first output's predictions the graph shares with the reference, at least check.minimum."""
    from compressor.evaluate.agreement import agreement

    sess = _ort_session(path)
    names = [i.name for i in sess.get_inputs()]
    max_diff: dict[int, float] = {}
    agree: dict[int, float] = {}
    for batch in batches:
        inputs = _verify_inputs(ir, batch, seed)
        ref = _run_torch(module, inputs)
        got = _run_onnx(sess, output_names[:1], names, inputs, batch)[0]
        max_diff[batch] = float(np.abs(got.astype(np.float64) - ref[0]).max())
        agree[batch] = agreement(ir.task, got, ref[0])
        if agree[batch] < check.minimum:
            raise ExportError(f"{ir.precision} ONNX check failed at batch {batch}: the {check.graph} agrees with the "
                              f"{check.reference} on {agree[batch]:.1%} of predictions (< {check.knob} "
                              f"{check.minimum:.0%}; max abs diff {max_diff[batch]:.3g}); rerun with --debug, "
                              f"or lower {check.knob}")
    return max_diff, agree


def _check_metric_drop(path: Path, float_module: torch.nn.Module, ir: ModelIR, data: Any, opts: OnnxOptions,
                       hint: str) -> dict[str, Any]:
    """Task metric of the lowered graph vs the fp32 model on the validation split; raises past max_metric_drop."""
    from compressor.data import make_loader
    from compressor.evaluate.metrics import evaluate_module, evaluate_onnx, main_metric

    loader = make_loader(data.val, 32)
    key = main_metric(ir.task)
    ref = evaluate_module(float_module, loader, ir.task)[key] * 100
    got = evaluate_onnx(path, loader, ir.task)[key] * 100
    drop = ref - got
    if drop > opts.max_metric_drop:
        raise ExportError(f"{ir.precision} export: {key} drops {drop:.2f} points on the validation split (fp32 "
                          f"{ref:.2f} -> {ir.precision} {got:.2f}), over max_metric_drop {opts.max_metric_drop:g}; "
                          f"{hint}")
    return {"metric": key, "fp32": round(ref, 3), ir.precision: round(got, 3), "drop": round(drop, 3)}


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

    lowering: OnnxLowering = get_precision(ir.precision).onnx_lowering(ir, opts)
    check = lowering.check()
    module = lowering.float_module(_fp32_copy(ir))
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
        raise ExportError(f"the float32 model fails on its example input of batch 2 ({first_line(exc)}); "
                          f"check the IR's input spec") from exc
    output_names = _output_names(len(probe))

    t0 = time.perf_counter()
    model, exporter, fallback = _torch_export(module, args, input_names, output_names, opts.opset, opts.dynamo)
    export_s = time.perf_counter() - t0
    produced_opset = default_opset(model)
    model, converted_from = _ensure_opset(model, opts.opset, exporter)
    lowering.tag(model)

    simplified, note = False, "simplify: false"
    if opts.simplify:
        before = model
        model, simplified, note = _simplify(model)
        refused = lowering.simplify_refused(model) if simplified else None
        if refused:
            model, simplified, note = before, False, refused
            log.info("onnx: %s", note)
    model, lowered = lowering.lower(model, input_names)

    opset = default_opset(model)
    if opset != opts.opset:
        raise ExportError(f"the graph's opset changed to {opset} after simplification/fp16 conversion "
                          f"(requested {opts.opset}); set simplify: false")
    write_edge_metadata(model, ir)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ExportError(f"the exported graph fails onnx.checker ({first_line(exc)}); "
                          f"try simplify: false, dynamo: false or another opset") from exc
    size = model.ByteSize()
    if size >= MAX_SINGLE_FILE_BYTES:
        raise ExportError(f"the ONNX graph serializes to {size / 2**30:.2f} GiB, over the 2 GB single-file "
                          f"limit; compress the model further before exporting")

    target.parent.mkdir(parents=True, exist_ok=True)
    max_diff: dict[int, float] = {}
    agreement: dict[int, float] = {}
    verify_s = 0.0
    with atomic_path(target) as tmp:  # renamed onto the target only once verified
        try:
            tmp.write_bytes(model.SerializeToString())
        except OSError as exc:
            raise ExportError(f"cannot write {tmp} ({first_line(exc)}); check the output directory") from exc
        if opts.verify:
            t0 = time.perf_counter()
            max_diff, agreement = _verify(tmp, lowering.reference(module), ir, output_names, check,
                                          opts.verify_batches, seed)
            if lowering.metric_hint is not None and data is not None:
                lowered["metric_check"] = _check_metric_drop(tmp, module, ir, data, opts, lowering.metric_hint)
            verify_s = time.perf_counter() - t0

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
        "tolerance": check.as_info(),
        "max_abs_diff": max_diff,
        "inputs": input_names,
        "outputs": output_names,
        "bytes": target.stat().st_size,
        "export_seconds": round(export_s, 3),
        "verify_seconds": round(verify_s, 3),
        "seconds": round(time.perf_counter() - start, 3),
        **_versions(),
    }
    if ir.task.kind == "segmentation" or isinstance(check, Agreement):
        # binary masks agree in sign, classes (per pixel) in argmax
        binary = ir.task.kind == "segmentation" and not ir.task.multiclass_segmentation
        info["sign_agreement" if binary else "class_agreement"] = agreement
    if lowering.info_key is not None:
        info[lowering.info_key] = lowered
    log.info("onnx: wrote %s (%s exporter, opset %s, %s, %d bytes, max |diff| %s)", target, exporter,
             opset, ir.precision, info["bytes"], max_diff)
    return ExportResult(primary=target, files=[target], info=info)


# ---- public API --------------------------------------------------------------------------------

@register_exporter("onnx")
class OnnxExporter(Exporter):
    """Writes `out_dir/model.onnx`: opset-checked, optionally simplified, fp16 for fp16 IRs, verified."""

    Options = OnnxOptions
    packages = ("torch", "onnx", "onnxscript", "onnxruntime", "onnxsim", "onnxconverter-common")

    suffixes = (".onnx",)
    latency_backends = backends_for(".onnx")

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
        raise ExportError(f"{path} is not a readable ONNX file ({first_line(exc)})") from None
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
    opset = default_opset(model)
    return "\n".join([
        f"ONNX file: {path} ({path.stat().st_size:,} bytes, opset {opset}, producer {model.producer_name})",
        "inputs: " + ", ".join(value(v) for v in model.graph.input),
        "outputs: " + ", ".join(value(v) for v in model.graph.output),
        f"nodes: {len(model.graph.node)}: " + ", ".join(f"{k} {n}" for k, n in sorted(ops.items(), key=lambda kv: -kv[1])),
        "weights: " + (", ".join(f"{k} {b:,} bytes" for k, b in dtypes.items()) or "none"),
    ])
