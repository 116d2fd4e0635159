"""int8-dynamic: onnxruntime's dynamic quantization of the Linear layers (the `int8-dynamic` pass).

- IR: the module holds `DynamicInt8Layer`s (`compressor/passes/int8_dynamic.py`) around float Linear layers;
  one byte per quantized weight. `ir.meta["int8_dynamic"]` holds the pass's per_channel and weight_type.
- ONNX: the float graph is exported as for fp32, then `onnxruntime.quantization.quantize_dynamic` rewrites
  every MatMul (and Gemm, which it turns into MatMul + Add) with a constant weight into
  DynamicQuantizeLinear → MatMulInteger → rescale: int8 (or uint8) weights per output channel, activations
  quantized to uint8 at run time. The MatMul/Gemm nodes with a constant weight that belong to no quantized
  layer (an excluded Linear) are named `float/...` before simplification and excluded; if onnxsim merges
  or renames one of them, the unsimplified graph is kept. onnxsim may merge quantized layers that read the
  same input (q/k/v): per output channel that is the same quantization (per tensor it is not, so then the
  unsimplified graph is kept). The names are then compacted as for int8. Verified by the share of predictions (classes, mask pixels; near-ties excluded) the graph
  shares with the fp32 torch model (`int8_min_agreement`) and, when the run has data, the task metric
  against it (`max_metric_drop`).
- TensorRT: none (TensorRT does not run MatMulInteger/DynamicQuantizeLinear); use the int8 pass with
  `backend: tensorrt` for TensorRT.
- bench: a graph with DynamicQuantizeLinear (or onnxruntime's fused DynamicQuantizeMatMul) is "int8-dynamic".
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from compressor.errors import ExportError, first_line
from compressor.precision import Agreement, GraphSummary, OnnxLowering, Precision, register_precision

PREFIX = "int8-dynamic/"  # the quantized layers' nodes, named before simplification
KEEP = "float/"  # the constant-weight MatMul/Gemm nodes of no quantized layer: excluded from quantization
WEIGHT_OPS = ("MatMul", "Gemm")
DYNAMIC_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul"})


class Int8DynamicLowering(OnnxLowering):
    info_key = "int8_dynamic"
    metric_hint = ("keep the most sensitive Linear layers in fp32 (int8-dynamic exclude: [...]), or quantize "
                   "statically with calibrated ranges (the int8 pass, backend: onnxruntime-cpu)")

    def float_module(self, module: Any) -> Any:
        from compressor.quant import quantized_layers, unwrap

        self.layers = list(quantized_layers(module))
        if not self.layers:
            raise ExportError("the IR's precision is int8-dynamic but its module has no quantized Linear layer; "
                              "re-run the int8-dynamic pass")
        return unwrap(module)

    def tag(self, model: Any) -> None:
        from compressor.onnx_graph import tag_layer_nodes

        tag_layer_nodes(model, self.layers, PREFIX, WEIGHT_OPS)
        weights = {i.name for i in model.graph.initializer}
        self.kept: list[str] = []
        for node in model.graph.node:
            if node.op_type in WEIGHT_OPS and not node.name.startswith(PREFIX) and len(node.input) > 1 \
                    and node.input[1] in weights:
                node.name = KEEP + node.name
                self.kept.append(node.name)

    def simplify_refused(self, model: Any) -> str | None:
        from compressor.onnx_graph import missing_layers

        names = {n.name for n in model.graph.node}
        lost = [n for n in self.kept if n not in names]
        if lost:
            return (f"onnxsim merged or renamed the float MatMul/Gemm node(s) {lost[:3]} (layers int8-dynamic leaves "
                    f"in fp32); kept the unsimplified graph so that they stay fp32")
        merged = [] if self._per_channel() else missing_layers(model, self.layers, PREFIX)
        if merged:  # one scale per weight tensor: a merged weight would get one scale for several layers
            return (f"onnxsim merged the nodes of layer(s) {merged[:3]} and the weights are quantized per tensor; "
                    f"kept the unsimplified graph so that each layer keeps its own scale")
        return None

    def _per_channel(self) -> bool:
        return bool((self.ir.meta.get("int8_dynamic") or {}).get("per_channel", True))

    def lower(self, model: Any, input_names: list[str]) -> tuple[Any, dict[str, Any]]:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        from compressor.precisions.int8 import compact

        per_channel = self._per_channel()
        weight_type = str((self.ir.meta.get("int8_dynamic") or {}).get("weight_type", "int8"))
        # onnxruntime turns every Gemm into MatMul (+ Add) named `<gemm>_MatMul` before it quantizes
        excluded = [*self.kept, *(f"{n}_MatMul" for n in self.kept)]
        with tempfile.TemporaryDirectory(prefix="int8-dynamic-") as tmp:
            src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8_dynamic.onnx"
            onnx.save(model, str(src))
            try:
                quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul"], per_channel=per_channel,
                                 reduce_range=False,
                                 weight_type={"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[weight_type],
                                 nodes_to_exclude=excluded, extra_options={"MatMulConstBOnly": True})
            except Exception as exc:
                raise ExportError(f"onnxruntime's quantize_dynamic failed on the graph ({first_line(exc)}); "
                                  f"rerun with --debug") from exc
            out = onnx.load(str(dst))
        quantized = sum(n.op_type == "MatMulInteger" for n in out.graph.node)
        if not quantized:
            raise ExportError("int8-dynamic export: onnxruntime quantized no MatMul of the graph (no Linear layer "
                              "with a constant weight was found); export the fp32 IR (drop int8-dynamic)")
        compact(out)
        info = {"quantized_layers": len(self.layers), "matmul_integer_nodes": quantized,
                "dynamic_quantize_nodes": sum(n.op_type == "DynamicQuantizeLinear" for n in out.graph.node),
                "float_weight_nodes": len(self.kept), "per_channel": per_channel, "weight_type": weight_type}
        return out, info

    def check(self) -> Agreement:
        return Agreement(self.opts.int8_min_agreement, "int8_min_agreement", "dynamically quantized graph",
                         "fp32 torch model")


@register_precision("int8-dynamic")
class Int8Dynamic(Precision):
    produced_by = "int8-dynamic"
    graph_priority = 30  # before int8: its MatMulInteger nodes are int8's QOperator ops too
    onnx_lowering_class = Int8DynamicLowering
    tensorrt_graph = "dynamically quantized graph"

    def state_bytes(self, module: Any) -> int:
        from compressor.quant import quantized_state_bytes

        return quantized_state_bytes(module)

    def recognize(self, graph: GraphSummary) -> str | None:
        return self.name if graph.ops & DYNAMIC_OPS else None
