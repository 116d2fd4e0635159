"""fp32: the default precision. Its hooks are `Precision`'s defaults: the exported float graph as it is,
verified elementwise (`rtol`/`atol`); TensorRT builds it without a precision flag."""
from __future__ import annotations

from compressor.precision import GraphSummary, Precision, TensorRTLowering, register_precision


@register_precision("fp32")
class Fp32(Precision):
    module_dtype = "float32"
    graph_priority = 0
    tensorrt = TensorRTLowering(flags=())
    tensorrt_graph = "fp32 graph"

    def recognize(self, graph: GraphSummary) -> str | None:
        return self.name  # the last resort: a graph no other precision recognizes
