"""fp16: half-precision weights (the `fp16` pass), optionally with fp32 islands (`ir.meta["fp32_modules"]`).

- IR: the module holds float16 weights and takes float16 inputs; two bytes per weight.
- ONNX: the graph is exported in float32 and converted with onnxconverter-common
  (`convert_float_to_float16(keep_io_types=True)`): the initializers become float16, graph inputs and
  outputs stay float32, and the converter's default op block list keeps Resize (and its scales) in float32.
  The islands' nodes are tagged (`FP32_TAG`) before simplification, because onnxsim drops the name scopes
  that say which module a node came from, and are kept in float32. Verified elementwise against the float32
  torch model with `fp16_rtol`/`fp16_atol`.
- TensorRT: TensorRT >= 11 takes the precision from the fp16 graph; TensorRT 10 needs --fp16. An engine
  without an fp16 layer is an error.
- bench: a graph whose floating weights are mostly float16 is "fp16".
"""
from __future__ import annotations

import logging
from typing import Any

from compressor.errors import ExportError, first_line
from compressor.precision import (GraphSummary, OnnxLowering, Precision, TensorRTLowering, Tolerance,
                                  register_precision)

log = logging.getLogger(__name__)

FP32_TAG = "fp32/"  # the prefix tag_fp32_nodes gives an fp32 island's nodes (onnxsim drops the name scopes)


def fp32_node_names(model: Any, modules: list[str]) -> list[str]:
    """Names of the nodes that belong to one of `modules` (or a submodule of one), or that tag_fp32_nodes
    tagged before simplification."""
    from compressor.onnx_graph import node_scopes

    def inside(scope: str) -> bool:
        return any(scope == m or scope.startswith(m + ".") for m in modules)

    return [n.name for n in model.graph.node
            if n.name and (n.name.startswith(FP32_TAG) or any(inside(s) for s in node_scopes(n)))]


def tag_fp32_nodes(model: Any, modules: list[str]) -> int:
    """Prefix the names of the fp32 islands' nodes with FP32_TAG while the exporter's name scopes are still
    there: onnxsim drops node metadata, and the islands would silently become fp16. Returns the count."""
    names = set(fp32_node_names(model, modules))
    for node in model.graph.node:
        if node.name in names and not node.name.startswith(FP32_TAG):
            node.name = FP32_TAG + node.name
    return len(names)


def _cast_to(node: Any) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _repair_fp32_islands(before: Any, model: Any) -> Any:
    """Two fixes to onnxconverter-common's handling of blocked nodes (1.16; node_block_list and its default
    op block list, e.g. Resize):
    - it stores a blocked node's weights as fp16 and casts them back up, which loses values beyond
      the fp16 range (the reason to keep a module in fp32): weights read only through such up-casts
      get their fp32 values back;
    - when the graph's last node is blocked, keep_io_types leaves an fp16 cast in front of the
      output: that cast becomes a cast to fp32, so the graph's I/O stays fp32."""
    import onnx

    fp32 = onnx.TensorProto.FLOAT
    fp16 = onnx.TensorProto.FLOAT16
    originals = {i.name: i for i in before.graph.initializer if i.data_type == fp32}
    consumers: dict[str, list[Any]] = {}
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


def to_fp16_graph(model: Any, keep_fp32: list[str] | None = None) -> Any:
    """The fp16 graph of a float32 one, with float32 inputs and outputs and the nodes of `keep_fp32`
    (module paths) in float32."""
    from compressor.onnx_graph import quiet

    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise ExportError(f"fp16 ONNX export needs onnxconverter-common ({first_line(exc)}); "
                          f"pip install onnxconverter-common") from exc
    try:
        with quiet():
            if not keep_fp32:  # the default block list still keeps Resize in fp32: a graph ending in one
                # (Segformer's upsampled logits) needs the output cast repaired too
                return _repair_fp32_islands(model, float16.convert_float_to_float16(model, keep_io_types=True))
            blocked = fp32_node_names(model, keep_fp32)
            log.info("onnx: keeping %d nodes of %s in fp32", len(blocked), keep_fp32)
            converted = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=blocked)
            return _repair_fp32_islands(model, converted)
    except Exception as exc:
        raise ExportError(f"converting the ONNX graph to fp16 failed ({first_line(exc)}); "
                          f"export the fp32 IR (drop the fp16 pass) or rerun with --debug") from exc


def check_io_float32(model: Any) -> None:
    import onnx

    values = [("input", v) for v in model.graph.input] + [("output", v) for v in model.graph.output]
    for kind, value in values:
        elem = value.type.tensor_type.elem_type
        if elem != onnx.TensorProto.FLOAT:
            raise ExportError(f"graph {kind} '{value.name}' has type {onnx.TensorProto.DataType.Name(elem)} "
                              f"after the fp16 conversion, expected FLOAT; rerun with --debug")


class Fp16Lowering(OnnxLowering):
    def tag(self, model: Any) -> None:
        if self.ir.meta.get("fp32_modules"):
            tag_fp32_nodes(model, list(self.ir.meta["fp32_modules"]))

    def lower(self, model: Any, input_names: list[str]) -> tuple[Any, dict[str, Any]]:
        model = to_fp16_graph(model, self.ir.meta.get("fp32_modules"))
        check_io_float32(model)
        return model, {}

    def check(self) -> Tolerance:
        return Tolerance(self.opts.fp16_rtol, self.opts.fp16_atol, "fp16_atol/fp16_rtol")


@register_precision("fp16")
class Fp16(Precision):
    produced_by = "fp16"
    module_dtype = "float16"
    graph_priority = 10
    onnx_lowering_class = Fp16Lowering
    tensorrt = TensorRTLowering(
        flags=("--fp16",), layer_type="fp16", graph="the fp16 graph", trt10_note="needs --fp16.",
        missing_hint="the GPU may lack fast fp16, or the fp16 graph was not kept; use precision: fp32")
    tensorrt_graph = "fp16 graph"

    def recognize(self, graph: GraphSummary) -> str | None:
        return self.name if graph.float16_elements > graph.float32_elements else None
