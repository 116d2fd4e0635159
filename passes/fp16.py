"""fp16: the IR's weights and precision become half precision.

The torch-side module is cast to float16 (weights and buffers), so the IR's serialized size halves
and torch evaluation runs in fp16. Exporters honour `ir.precision`: the ONNX exporter writes an
fp16 graph with fp32 inputs and outputs, and its metrics are measured through onnxruntime.
"""
from __future__ import annotations

import torch

from compressor.context import PassContext
from compressor.errors import PassError
from compressor.ir import ModelIR
from compressor.passes_base import NoOptions, Pass, PassResult
from compressor.registry import register_pass


@register_pass("fp16")
class FP16(Pass):
    Options = NoOptions

    def requires(self, ir: ModelIR, ctx: PassContext) -> None:
        if ir.precision == "fp16":
            raise PassError("fp16: the IR is already fp16; remove the second fp16 from the pipeline")

    def run(self, ir: ModelIR, ctx: PassContext) -> PassResult:
        before = ir.state_bytes()
        ir.module.half()
        overflow = [n for n, p in ir.module.state_dict().items()
                    if p.is_floating_point() and not torch.isfinite(p).all()]
        if overflow:
            raise PassError(f"fp16: values overflow half precision in {overflow[:3]}; keep this model in fp32")
        ir = ir.replace(precision="fp16")
        after = ir.state_bytes()
        return PassResult(ir, changed=True, stats={"bytes_before": before, "bytes_after": after})
