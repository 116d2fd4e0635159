"""The QDQ graph of an int8 IR: onnxruntime's quantization tools on the fp32 export, with our scales.

The ONNX exporter exports the IR's float layers (the `Int8Layer` wrappers removed) as for an fp32 IR,
then this module:

1. names each quantized layer's Conv/Gemm/MatMul node `int8/<layer path>` (from the dynamo exporter's
   name scopes, or the legacy exporter's node names) before simplification, so that the layer → node
   map survives onnxsim;
2. runs `onnxruntime.quantization.quantize_static` in QDQ format on exactly those nodes: per-channel
   symmetric int8 weights (computed by onnxruntime from the same float weights, with the same
   max|w|/127 rule as the torch fake quantization), int32 biases, and every activation scale and zero
   point handed over as `TensorQuantOverrides` from the IR's recorded ranges (calibrated or learned by
   QAT): the input of each layer, and the output of each convolution. Gemm/MatMul outputs are not
   quantized (the torch Linear's output includes its bias, the ONNX MatMul's does not). Activations are
   int8 symmetric (TensorRT) or uint8 asymmetric (onnxruntime CPU), as the int8 pass chose;
3. compacts the file (`compact`): drops the nodes' metadata (name scopes), the intermediate
   value_info and convolution attributes equal to their defaults, and gives the intermediate tensors and the Q/DQ nodes short names (`t12`, `n12`); the
   quantized layers' nodes keep their `int8/<layer>` names, the graph's inputs and outputs theirs. With
   int8 weights, the names onnxruntime's quantizer writes (`<tensor>_QuantizeLinear_Output`, ...) were
   a third of the file.

With `ir.meta["int8"]["format"] == "qoperator"` (the int8 pass measured it faster on onnxruntime CPU;
uint8 activations and convolutions only) the same scales go into onnxruntime's QOperator format
(QLinearConv) instead.

The result is a QDQ model that onnxruntime CPU runs (fusing DequantizeLinear → Conv → QuantizeLinear
into int8 kernels) and TensorRT builds from (explicit quantization).
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from compressor.errors import ExportError
from compressor.ir import ModelIR, TaskSpec

log = logging.getLogger(__name__)

QUANT_OPS = ("Conv", "Gemm", "MatMul")
PREFIX = "int8/"


def layer_specs(ir: ModelIR) -> tuple[dict[str, dict[str, Any]], bool]:
    """({layer: {"in": [lo, hi] | None, "out": [lo, hi] | None}}, symmetric) of an int8 IR, read from its
    module (so QAT-learned ranges are the ones used)."""
    from compressor.passes.int8 import int8_layers, learned_ranges

    layers = learned_ranges(ir.module)
    if not layers:
        raise ExportError("the IR's precision is int8 but its module has no int8 layer; re-run the int8 pass")
    symmetric = next(iter(int8_layers(ir.module).values())).symmetric
    return layers, symmetric


def tag_layer_nodes(model: onnx.ModelProto, layers: list[str]) -> dict[str, list[str]]:
    """Rename the Conv/Gemm/MatMul nodes each layer produced to `int8/<layer>` (`#k` for its k-th further
    node: a layer called twice); returns {layer: [node names]}."""
    from compressor.exporters.onnx import _node_scopes

    wanted = set(layers)
    found: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type not in QUANT_OPS:
            continue
        scopes = _node_scopes(node) + legacy_paths(node.name)
        owner = next((s for s in reversed(scopes) if s in wanted), None)
        if owner is None:
            continue
        names = found.setdefault(owner, [])
        node.name = PREFIX + owner + (f"#{len(names)}" if names else "")
        names.append(node.name)
    return found


def legacy_paths(name: str) -> list[str]:
    """The module paths in a legacy (TorchScript) exporter node name, outermost first. Its components are
    each module's name relative to its parent, a container's child written `<attr>.<index>`:
    `/cells.0/preprocess0/op/op.1/Conv` → cells.0, cells.0.preprocess0, cells.0.preprocess0.op,
    cells.0.preprocess0.op.1."""
    parts = [p for p in name.split("/") if p][:-1]
    out: list[str] = []
    path, last = "", ""
    for part in parts:
        if last and part.startswith(last + "."):
            path += part[len(last):]  # `op.1` under `op`: the child index
        else:
            path = f"{path}.{part}" if path else part
        last = part.split(".")[0]
        out.append(path)
    return out


def missing_layers(model: onnx.ModelProto, layers: list[str]) -> list[str]:
    """Layers none of whose nodes carries its `int8/` name any more (onnxsim merged or renamed them)."""
    have = {n.name[len(PREFIX):].split("#")[0] for n in model.graph.node if n.name.startswith(PREFIX)}
    return [layer for layer in layers if layer not in have]


class _Reader:
    """onnxruntime's CalibrationDataReader over a few example batches (every activation scale comes from
    the overrides; onnxruntime still runs its calibration pass once)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize(model: onnx.ModelProto, ir: ModelIR, input_names: list[str]) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The QDQ model of `model` (the simplified fp32 export whose layer nodes `tag_layer_nodes` named)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from compressor.passes.int8 import scale_zero_point

    specs, symmetric = layer_specs(ir)
    fmt = (ir.meta.get("int8") or {}).get("format", "qdq")
    nodes = {n.name: n for n in model.graph.node if n.name.startswith(PREFIX)}
    by_layer: dict[str, list[onnx.NodeProto]] = {}
    for name, node in nodes.items():
        by_layer.setdefault(name[len(PREFIX):].split("#")[0], []).append(node)
    missing = [layer for layer in specs if layer not in by_layer]
    if fmt == "qoperator" and (symmetric or any(n.op_type != "Conv" for n in nodes.values())):
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
                op_types_to_quantize=list(QUANT_OPS), nodes_to_quantize=list(nodes), per_channel=True,
                reduce_range=False, activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                               "TensorQuantOverrides": overrides,
                               "OpTypesToExcludeOutputQuantization": ["Gemm", "MatMul"],
                               "QDQDisableWeightAdjustForInt32Bias": True})
        except Exception as exc:
            from compressor.exporters.onnx import _first_line

            raise ExportError(f"onnxruntime's quantize_static failed on the int8 graph ({_first_line(exc)}); "
                              f"rerun with --debug") from exc
        out = onnx.load(str(dst))
    compact(out)
    q_nodes = sum(n.op_type in ("QuantizeLinear", "QLinearConv") for n in out.graph.node)
    info = {"quantized_layers": len(specs), "quantized_nodes": len(nodes), "quantize_nodes": q_nodes,
            "activations": "int8" if symmetric else "uint8", "format": "QOperator" if fmt == "qoperator" else "QDQ"}
    return out, info


# Conv-like operators' attribute defaults (ONNX spec: auto_pad NOTSET, group 1, dilations/strides 1, pads 0)
_DEFAULTS = ("Conv", "QLinearConv", "ConvInteger")


def _is_default(op_type: str, attr: onnx.AttributeProto) -> bool:
    if attr.name == "auto_pad":
        return attr.s == b"NOTSET"
    if attr.name == "group":
        return attr.i == 1
    if attr.name in ("dilations", "strides"):
        return all(v == 1 for v in attr.ints)
    if attr.name == "pads":
        return all(v == 0 for v in attr.ints)
    return False


def compact(model: onnx.ModelProto) -> None:
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


BOUNDARY = 0.05  # predictions this close to the decision boundary (× the logits' std) may flip under int8


def _class_rows(task: TaskSpec | str, x: np.ndarray) -> np.ndarray:
    """Logits as one row of class scores per prediction: per sample (classification, (N, C)) or per pixel
    (multi-class segmentation, (N, C, H, W) → (N·H·W, C))."""
    if isinstance(task, TaskSpec) and task.multiclass_segmentation:
        return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])
    return x.reshape(x.shape[0], -1)


def predictions(task: TaskSpec | str, logits: np.ndarray) -> np.ndarray:
    """What the model predicts from its logits: the mask (logit > 0) of binary segmentation (a kind string
    "segmentation" means binary), else the argmax class of each sample or, for multi-class segmentation,
    of each pixel."""
    binary = task == "segmentation" if isinstance(task, str) else \
        task.kind == "segmentation" and not task.multiclass_segmentation
    if binary:
        return np.asarray(logits) > 0
    return _class_rows(task, np.asarray(logits)).argmax(axis=1)


def agreement(task: TaskSpec | str, got: np.ndarray, ref: np.ndarray) -> float:
    """Share of predictions (`predictions`: mask pixels, argmax classes or argmax pixel classes) the two outputs
    agree on, among those of `ref` farther than BOUNDARY × std(ref) from the decision boundary (logit 0, or the
    top-2 margin): onnxruntime's int8 kernels round intermediate tensors a step differently from the fake-quant
    model (int32 bias, requantization), which flips near-tie predictions on random inputs without being an
    error. The inputs are unlabelled, so every pixel counts (ignore_index exists only in labels; the metric
    check on the validation split leaves those pixels out)."""
    ref = np.asarray(ref, dtype=np.float64)
    band = BOUNDARY * float(ref.std())
    same = predictions(task, got) == predictions(task, ref)
    if same.shape == ref.shape:  # binary masks: the distance to logit 0
        sure = np.abs(ref) > band
    else:
        top2 = np.sort(_class_rows(task, ref), axis=1)[:, -2:]
        sure = (top2[:, 1] - top2[:, 0]) > band
    return float(same[sure].mean()) if sure.any() else 1.0


def fake_quant_reference(ir: ModelIR) -> torch.nn.Module:
    """The torch model the QDQ graph must agree with: the IR's own fake-quantized module, fp32 on the CPU."""
    import copy

    return copy.deepcopy(ir.module).to("cpu").float().eval()
