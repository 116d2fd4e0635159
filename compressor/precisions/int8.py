"""int8: static quantization (the `int8` pass): calibrated activation ranges, per-channel int8 weights.

- IR: the module holds `Int8Layer`s (`compressor.quant`) around float layers, fake-quantized when it runs;
  one byte per quantized weight. `ir.meta["int8"]` says the activation type (int8 symmetric for TensorRT,
  uint8 asymmetric for onnxruntime CPU) and the ONNX format (qdq or qoperator).
- ONNX: the float layers are exported as for fp32, then this module writes the QDQ graph:
  1. names each quantized layer's Conv/Gemm/MatMul node `int8/<layer path>` (from the dynamo exporter's
     name scopes, or the legacy exporter's node names) before simplification, so that the layer → node
     map survives onnxsim (a simplification that merges them is refused: the unsimplified graph is kept);
  2. runs `onnxruntime.quantization.quantize_static` in QDQ format on exactly those nodes: per-channel
     symmetric int8 weights (computed by onnxruntime from the same float weights, with the same
     max|w|/127 rule as the torch fake quantization), int32 biases, and every activation scale and zero
     point handed over as `TensorQuantOverrides` from the IR's recorded ranges (calibrated or learned by
     QAT): the input of each layer, and the output of each convolution. Gemm/MatMul outputs are not
     quantized (the torch Linear's output includes its bias, the ONNX MatMul's does not);
  3. compacts the file (`compact`): drops the nodes' metadata (name scopes), the intermediate value_info
     and convolution attributes equal to their defaults, and gives the intermediate tensors and the Q/DQ
     nodes short names (`t12`, `n12`); the quantized layers' nodes keep their `int8/<layer>` names, the
     graph's inputs and outputs theirs. With int8 weights, the names onnxruntime's quantizer writes
     (`<tensor>_QuantizeLinear_Output`, ...) were a third of the file.
  With `ir.meta["int8"]["format"] == "qoperator"` (measured faster on onnxruntime CPU; uint8 activations
  and convolutions only) the same scales go into onnxruntime's QOperator format (QLinearConv) instead.
  Verification: the share of predictions the graph shares with the torch fake-quant model
  (`int8_min_agreement`; near-ties excluded) and, with data, the task metric against the fp32 graph.
- TensorRT: built from the QDQ graph (explicit quantization, signed symmetric int8 activations only);
  TensorRT 10 needs --int8 --fp16, TensorRT >= 11 nothing. An engine without an int8 layer is an error.
- bench: "int8 (QOperator)" with quantized operators, "int8 (QDQ)" with Q/DQ nodes.
- report: the mixed-precision per-layer table.
"""
from __future__ import annotations

import copy
import logging
import tempfile
from pathlib import Path
from typing import Any

from compressor.errors import ExportError, first_line
from compressor.precision import (Agreement, GraphSummary, OnnxLowering, Precision, ReportSection, Table,
                                  TensorRTLowering, register_precision)

log = logging.getLogger(__name__)

QUANT_OPS = ("Conv", "Gemm", "MatMul")
PREFIX = "int8/"
QOPERATOR_OPS = frozenset({"ConvInteger", "MatMulInteger", "QGemm", "QAttention", "DynamicQuantizeMatMul"})
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def layer_specs(ir: Any) -> tuple[dict[str, dict[str, Any]], bool]:
    """({layer: {"in": [lo, hi] | None, "out": [lo, hi] | None}}, symmetric) of an int8 IR, read from its
    module (so QAT-learned ranges are the ones used)."""
    from compressor.quant import int8_layers, learned_ranges

    layers = learned_ranges(ir.module)
    if not layers:
        raise ExportError("the IR's precision is int8 but its module has no int8 layer; re-run the int8 pass")
    symmetric = next(iter(int8_layers(ir.module).values())).symmetric
    return layers, symmetric


class _Reader:
    """onnxruntime's CalibrationDataReader over a few example batches (every activation scale comes from
    the overrides; onnxruntime still runs its calibration pass once)."""

    def __init__(self, feeds: list[dict[str, Any]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._it, None)


def quantize(model: Any, ir: Any, input_names: list[str]) -> tuple[Any, dict[str, Any]]:
    """The QDQ model of `model` (the simplified fp32 export whose layer nodes `tag_layer_nodes` named)."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from compressor.onnx_graph import tagged_nodes
    from compressor.quant import scale_zero_point

    specs, symmetric = layer_specs(ir)
    fmt = (ir.meta.get("int8") or {}).get("format", "qdq")
    by_layer = tagged_nodes(model, PREFIX)
    nodes = [n for n in model.graph.node if n.name.startswith(PREFIX)]
    missing = [layer for layer in specs if layer not in by_layer]
    if fmt == "qoperator" and (symmetric or any(n.op_type != "Conv" for n in nodes)):
        raise ExportError("int8 export: the QOperator format is written only for uint8 activations (backend: "
                          "onnxruntime-cpu) and convolutions (a Linear's output has no calibrated range); "
                          "use format: qdq")
    if missing:
        raise ExportError(f"int8 export: no Conv/Gemm/MatMul node of the ONNX graph belongs to layer(s) {missing[:3]}"
                          f"{' and more' if len(missing) > 3 else ''}; exclude them in the int8 pass (exclude: [...]) "
                          f"or rerun with --debug")
    overrides: dict[str, list[dict[str, Any]]] = {}
    zp_type = np.int8 if symmetric else np.uint8

    def put(tensor: str, rng: list[float]) -> None:
        scale, zp = scale_zero_point(rng, symmetric)
        entry = [{"scale": np.array(scale, dtype=np.float32), "zero_point": np.array(zp, dtype=zp_type)}]
        if tensor in overrides and (float(overrides[tensor][0]["scale"]), int(overrides[tensor][0]["zero_point"])) != (
                float(entry[0]["scale"]), int(entry[0]["zero_point"])):
            log.info("int8 export: tensor %s has two ranges (two layers read it); keeping the first", tensor)
            return
        overrides[tensor] = entry

    for layer, spec in specs.items():
        for node in by_layer[layer]:
            if spec["out"] is not None and node.op_type == "Conv":
                put(node.output[0], spec["out"])
    for layer, spec in specs.items():
        for node in by_layer[layer]:
            if spec["in"] is not None:
                put(node.input[0], spec["in"])
    feeds = [{n: x.float().numpy() for n, x in zip(input_names, ir.example_inputs(batch=1))}]
    with tempfile.TemporaryDirectory(prefix="int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        try:
            quantize_static(
                str(src), str(dst), _Reader(feeds),
                quant_format=QuantFormat.QOperator if fmt == "qoperator" else QuantFormat.QDQ,
                op_types_to_quantize=list(QUANT_OPS), nodes_to_quantize=[n.name for n in nodes], per_channel=True,
                reduce_range=False, activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                               "TensorQuantOverrides": overrides,
                               "OpTypesToExcludeOutputQuantization": ["Gemm", "MatMul"],
                               "QDQDisableWeightAdjustForInt32Bias": True})
        except Exception as exc:
            raise ExportError(f"onnxruntime's quantize_static failed on the int8 graph ({first_line(exc)}); "
                              f"rerun with --debug") from exc
        out = onnx.load(str(dst))
    compact(out)
    q_nodes = sum(n.op_type in ("QuantizeLinear", "QLinearConv") for n in out.graph.node)
    info = {"quantized_layers": len(specs), "quantized_nodes": len(nodes), "quantize_nodes": q_nodes,
            "activations": "int8" if symmetric else "uint8", "format": "QOperator" if fmt == "qoperator" else "QDQ"}
    return out, info


# Conv-like operators' attribute defaults (ONNX spec: auto_pad NOTSET, group 1, dilations/strides 1, pads 0)
_DEFAULTS = ("Conv", "QLinearConv", "ConvInteger")


def _is_default(op_type: str, attr: Any) -> bool:
    if attr.name == "auto_pad":
        return attr.s == b"NOTSET"
    if attr.name == "group":
        return attr.i == 1
    if attr.name in ("dilations", "strides"):
        return all(v == 1 for v in attr.ints)
    if attr.name == "pads":
        return all(v == 0 for v in attr.ints)
    return False


def compact(model: Any) -> None:
    """Shorten the names of intermediate tensors, initializers and unnamed-by-us nodes; drop metadata (in place)."""
    g = model.graph
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    names: dict[str, str] = {}

    def short(name: str, prefix: str) -> str:
        if not name or name in keep:
            return name
        if name not in names:
            names[name] = f"{prefix}{len(names)}"
        return names[name]

    for init in g.initializer:
        init.name = short(init.name, "w")
    for i, node in enumerate(g.node):
        del node.metadata_props[:]
        node.doc_string = ""
        if node.op_type in _DEFAULTS:  # attributes equal to the operator's defaults (onnx spec) say nothing
            keep_attrs = [a for a in node.attribute if not _is_default(node.op_type, a)]
            del node.attribute[:]
            node.attribute.extend(keep_attrs)
        if not node.name.startswith(PREFIX):
            node.name = f"n{i}"
        node.input[:] = [short(x, "t") for x in node.input]
        node.output[:] = [short(x, "t") for x in node.output]
    del g.value_info[:]


class Int8Lowering(OnnxLowering):
    info_key = "int8"
    metric_hint = ("quantize fewer layers (int8 mixed: {max_drop: ...} or exclude: [...]), try method: entropy "
                   "or percentile, or add qat")

    def float_module(self, module: Any) -> Any:
        from compressor.quant import unwrap

        self.layers = list(layer_specs(self.ir)[0])
        return unwrap(module)

    def tag(self, model: Any) -> None:
        from compressor.onnx_graph import tag_layer_nodes

        tag_layer_nodes(model, self.layers, PREFIX, QUANT_OPS)

    def simplify_refused(self, model: Any) -> str | None:
        from compressor.onnx_graph import missing_layers

        lost = missing_layers(model, self.layers, PREFIX)
        if not lost:  # e.g. onnxsim merges the q/k/v MatMuls that read one input into one node
            return None
        return (f"onnxsim merged or renamed the nodes of quantized layer(s) {lost[:3]}; kept the unsimplified "
                f"graph so that each layer keeps its own scales")

    def lower(self, model: Any, input_names: list[str]) -> tuple[Any, dict[str, Any]]:
        return quantize(model, self.ir, input_names)

    def reference(self, module: Any) -> Any:
        """The IR's own fake-quantized module, fp32 on the CPU: what the QDQ graph must agree with."""
        return copy.deepcopy(self.ir.module).to("cpu").float().eval()

    def check(self) -> Agreement:
        return Agreement(self.opts.int8_min_agreement, "int8_min_agreement", "QDQ graph", "torch fake-quant model")


def mixed_section(record: dict[str, Any]) -> ReportSection:
    """report.md's section for an int8 stage with mixed precision: per layer kind, then per layer, what int8
    cost (metric drop and added logit error with only that layer quantized) and whether it paid."""
    rows, mixed = record["int8_layers"], record.get("int8_mixed") or {}
    text = (f"{mixed.get('quantized', sum(r['int8'] for r in rows))} of {len(rows)} layers in int8 "
            f"(objective {mixed.get('objective')}, max drop {mixed.get('max_drop')}, measured drop "
            f"{mixed.get('measured_drop')} points on the validation batches)")
    kinds = []
    for kind, g in (mixed.get("groups") or {}).items():
        n_int8 = sum(r["int8"] for r in rows if r["kind"] == kind)
        speed = f"{g['speedup']:.2f}×" if g.get("speedup") is not None else "not measured"
        kinds.append((kind, str(g["layers"]), str(n_int8), speed))
    layers = [(r["layer"], r["kind"], f"{r['params']:,}", f"{r['drop']:.3f}", f"{r['error']:.2e}",
               "yes" if r["int8"] else "no") for r in rows]
    return ReportSection(
        f"int8 mixed precision: stage {record.get('index')} {record.get('name', '')}", text,
        (Table(("layer kind", "layers", "int8", "speed-up quantized alone"), ("---", "---:", "---:", "---:"),
               tuple(kinds)),
         Table(("layer", "kind", "params", "metric drop (points)", "logit error", "int8"),
               ("---", "---", "---:", "---:", "---:", "---"), tuple(layers))))


@register_precision("int8")
class Int8(Precision):
    produced_by = "int8"
    graph_priority = 20
    onnx_lowering_class = Int8Lowering
    tensorrt = TensorRTLowering(
        flags=("--int8", "--fp16"), layer_type="int8",
        missing_hint="the GPU may lack int8 kernels, or the graph's Q/DQ nodes were not kept; drop the int8 pass "
                     "to build fp32/fp16",
        graph="the int8 QDQ graph (its Q/DQ nodes carry the scales)",
        trt10_note="needs --int8, and --fp16 so that the layers left unquantized may run fp16.")
    tensorrt_graph = "QDQ graph"
    no_cast_reason = "its QDQ graph carries the scales; this exporter does no calibration"

    def state_bytes(self, module: Any) -> int:
        from compressor.quant import quantized_state_bytes

        return quantized_state_bytes(module)

    def check_tensorrt(self, ir: Any) -> None:
        """TensorRT's explicit quantization takes signed symmetric int8 activations only."""
        from compressor.quant import ACTIVATION_SYMMETRIC

        activations = (ir.meta.get("int8") or {}).get("activations")
        if not ACTIVATION_SYMMETRIC.get(activations):
            raise ExportError(f"tensorrt exporter: TensorRT's explicit quantization needs signed symmetric int8 "
                              f"activations, this IR's are {activations!r}; run the int8 pass with backend: tensorrt")

    def recognize(self, graph: GraphSummary) -> str | None:
        if any(op.startswith("QLinear") or op in QOPERATOR_OPS for op in graph.ops):
            return "int8 (QOperator)"
        if graph.ops & QDQ_OPS:
            return "int8 (QDQ)"
        return None

    def stage_record(self, stats: dict[str, Any]) -> dict[str, Any]:
        if not stats.get("layers_table"):  # mixed precision: where int8 paid and where it did not
            return {}
        return {"int8_layers": stats["layers_table"], "int8_mixed": stats.get("mixed")}

    def report_sections(self, record: dict[str, Any]) -> list[ReportSection]:
        return [mixed_section(record)] if record.get("int8_layers") else []
