"""int8-dynamic: onnxruntime's dynamic quantization of the Linear layers (the usual CPU choice for transformers).

Dynamic quantization stores each Linear's weight in int8 (per output channel by default) and quantizes its
input at run time: `DynamicQuantizeLinear` computes one uint8 scale and zero point from the whole input
tensor's min and max on every call, `MatMulInteger` multiplies in integers, the result is rescaled to float
and the bias added in float. Nothing is calibrated, so the pass needs no data; convolutions stay fp32
(onnxruntime's ConvInteger is slower than its float convolution on CPU).

What the pass does to the IR: every `nn.Linear` (minus `exclude` globs) becomes a `DynamicInt8Layer` that
computes in torch what onnxruntime computes (fake quantization: its input with the range of the tensor it
gets, [min(x, 0), max(x, 0)] as uint8; its weight as int8 symmetric, max|w|/127, or uint8 asymmetric, per
output channel or per tensor), so the stage's torch metrics are the int8-dynamic model's, not the fp32
model's. The weights stay float in the IR (the recipe edit `int8-dynamic` lists the layers), and the IR's
size counts one byte per quantized weight. The precision becomes `int8-dynamic`; its ONNX lowering
(`compressor/precisions/int8_dynamic.py`) exports the float graph, then runs
`onnxruntime.quantization.quantize_dynamic` on it and verifies the predictions against the fp32 torch model.

A model without any Linear layer is left as it is (fp32, with a note): there is nothing to quantize
dynamically. Use the `int8` pass for convolutions (static ranges, onnxruntime CPU or TensorRT).
"""
from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn as nn

from compressor.context import PassContext
from compressor.edits import register_edit, set_submodule, unmatched_patterns
from compressor.errors import PassError
from compressor.ir import ModelIR
from compressor.options import option
from compressor.passes_base import Pass, PassResult
from compressor.quant import ACTIVATION_SYMMETRIC, QuantizedLayer, fake_quant_act, fake_quant_weight
from compressor.registry import register_pass

log = logging.getLogger(__name__)


class DynamicInt8Layer(QuantizedLayer):
    """A Linear run as onnxruntime's dynamic quantization runs it (DynamicQuantizeLinear + MatMulInteger): its
    input fake-quantized to uint8 with the range of the tensor it gets on this call, its weight to
    `weight_type` per output channel (or per tensor); the bias is added in float."""

    def __init__(self, inner: nn.Linear, per_channel: bool, weight_type: str) -> None:
        super().__init__(inner)
        self.per_channel = per_channel
        self.weight_type = weight_type

    def quantized_forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = x.detach()
        rng = torch.stack([seen.min().clamp(max=0.0), seen.max().clamp(min=0.0)]).float()
        return self.run_inner(fake_quant_act(x, rng, symmetric=False), self.quantized_weight())

    def quantized_weight(self) -> torch.Tensor:
        w = self.inner.weight
        if ACTIVATION_SYMMETRIC[self.weight_type]:  # int8: symmetric, max|w| / 127
            return fake_quant_weight(w, self.per_channel)
        # uint8: asymmetric, each channel's (or the tensor's) [min(w, 0), max(w, 0)] over 0..255
        flat = w.detach().float().reshape(w.shape[0] if self.per_channel else 1, -1)
        shape = (-1, 1) if self.per_channel else ()
        rng = torch.stack([flat.amin(dim=1).clamp(max=0.0).reshape(shape), flat.amax(dim=1).clamp(min=0.0).reshape(shape)])
        return fake_quant_act(w, rng, symmetric=False)

    def extra_repr(self) -> str:
        return (f"dynamic uint8 input, {self.weight_type} weight "
                f"{'per output channel' if self.per_channel else 'per tensor'}")


def wrap_dynamic(module: nn.Module, layers: list[str], per_channel: bool, weight_type: str) -> nn.Module:
    """`module` with each Linear of `layers` (module paths) a DynamicInt8Layer (in place)."""
    for name in layers:
        module = set_submodule(module, name, DynamicInt8Layer(module.get_submodule(name), per_channel, weight_type))
    return module


@register_edit("int8-dynamic")
def _replay_int8_dynamic(module: nn.Module, edit: dict[str, Any], example: tuple) -> nn.Module:
    return wrap_dynamic(module, list(edit["layers"]), bool(edit["per_channel"]), str(edit["weight_type"]))


@dataclass(frozen=True)
class Int8DynamicOptions:
    per_channel: bool = option(True, "int8 weights per output channel (one scale per row); false: one scale per "
                                     "weight tensor")
    weight_type: Literal["int8", "uint8"] = option(
        "int8", "weight type: int8 (symmetric; onnxruntime's u8s8 kernels, the fast ones on x86 with VNNI and on "
                "ARM) or uint8 (asymmetric; u8u8, for x86 CPUs without VNNI, where u8s8 can saturate)")
    exclude: list[str] = option([], "Linear layers (glob patterns of module paths) kept in fp32, e.g. 'classifier' "
                                    "or '*.attention.*'")


@register_pass("int8-dynamic")
class Int8Dynamic(Pass):
    """Marks the IR `int8-dynamic`: its Linear layers run dynamically quantized (see the module docstring)."""

    Options = Int8DynamicOptions
    label_keys = ("weight_type",)
    version = 1
    packages = ("torch", "onnx", "onnxruntime")

    accepts = ("fp32",)
    produces = "int8-dynamic"

    def run(self, ir: ModelIR, ctx: PassContext) -> PassResult:
        o = self.options
        linears = [n for n, m in ir.module.named_modules() if n and isinstance(m, nn.Linear)]
        unknown = unmatched_patterns(ir.module, o.exclude)
        if unknown:
            raise PassError(f"int8-dynamic: exclude pattern(s) {unknown} match no module; Linear layers look like "
                            f"{', '.join(linears[:5]) or '(none)'} (see compress inspect)")
        before = ir.state_bytes()
        if not linears:
            note = ("int8-dynamic: the model has no Linear layer (dynamic quantization covers Linear/MatMul weights); "
                    "it stays fp32: use the int8 pass for convolutions")
            log.warning(note)
            return PassResult(ir, changed=False, stats={"note": note, "quantized_layers": 0, "bytes_before": before,
                                                        "bytes_after": before})
        layers = [n for n in linears if not any(fnmatch.fnmatch(n, p) for p in o.exclude)]
        if not layers:
            raise PassError(f"int8-dynamic: exclude {list(o.exclude)} leaves none of the {len(linears)} Linear layers "
                            f"to quantize; remove the int8-dynamic pass or narrow its exclude patterns")
        module = wrap_dynamic(ir.module.float(), layers, o.per_channel, o.weight_type)
        meta = {**ir.meta, "int8_dynamic": {"per_channel": o.per_channel, "weight_type": o.weight_type,
                                            "layers": len(layers)}}
        ir = ir.replace(module=module, precision=self.produces, meta=meta)
        ir = ir.with_edit("int8-dynamic", layers=layers, per_channel=o.per_channel, weight_type=o.weight_type)
        stats = {"bytes_before": before, "bytes_after": ir.state_bytes(), "quantized_layers": len(layers),
                 "fp32_linear_layers": len(linears) - len(layers), "per_channel": o.per_channel,
                 "weight_type": o.weight_type}
        return PassResult(ir, changed=True, stats=stats)
