"""The IR-level quantization vocabulary: what quantization passes, precision modules and exporters share.

- **Scales**: `quant_params` turns a range into the (scale, zero point) onnxruntime computes for it;
  `weight_scales` gives per-output-channel (or per-tensor) symmetric int8 weight scales.
- **Fake quantization** (`fake_quant_act`, `fake_quant_weight`): quantize-dequantize in float, with the
  straight-through estimator (and LSQ-style range gradients) for QAT.
- **Quantized layers**: `QuantizedLayer` wraps a Conv1d/Conv2d/Linear (`inner`) and runs it fake-quantized;
  the model keeps float weights, and a quantized precision counts `inner.weight` at one byte per element
  (`quantized_state_bytes`). `Int8Layer` is the static one (calibrated activation ranges, buffers in the
  weights and data in the recipe); `wrap`/`unwrap` put Int8Layers in and take any quantized layer out
  (the ONNX export path exports the float layers, then quantizes the graph).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.edits import set_submodule

QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)
# activation type name -> symmetric: signed int8 with symmetric scales (TensorRT) or asymmetric uint8
ACTIVATION_SYMMETRIC = {"int8": True, "uint8": False}


def activation_type(symmetric: bool) -> str:
    return next(name for name, sym in ACTIVATION_SYMMETRIC.items() if sym == symmetric)


# ---- scales ---------------------------------------------------------------------------------------

def quant_params(lo: float, hi: float, symmetric: bool) -> tuple[float, int]:
    """(scale, zero_point) for the range [lo, hi], exactly as onnxruntime computes them.

    Symmetric int8: qmin -127, qmax 127, zero_point 0, scale = max(|lo|, |hi|) / 127. Asymmetric uint8:
    qmin 0, qmax 255, scale = (hi - lo) / 255, zero_point = round(-lo / scale) with round-half-to-even
    (numpy.round); it cannot leave [0, 255] because the range contains 0. The range is first widened to
    contain 0. lo and hi are taken as float32 (onnxruntime's calibrators keep ranges in float32), the
    scale is computed in float64 and returned rounded to float32. A zero-width range (scale below
    float32's smallest normal) gives scale 1.0 and zero_point 0, as onnxruntime does.
    """
    # Mirrors onnxruntime 1.32 quantization/quant_utils.py: get_qmin_qmax_for_qType (INT8 symmetric range
    # [-127, 127], UINT8 [0, 255]) and compute_scale_zp.
    qmin, qmax = (-127, 127) if symmetric else (0, 255)
    rmin, rmax = min(np.float32(lo), np.float32(0)), max(np.float32(hi), np.float32(0))
    if symmetric:
        rmax = max(abs(rmin), abs(rmax))
        rmin = -rmax
    scale = (np.float64(rmax) - np.float64(rmin)) / np.float64(qmax - qmin)
    if scale < np.finfo(np.float32).tiny:
        return 1.0, 0
    zero_point = 0 if symmetric else int(np.round(qmin - rmin / scale))
    return float(np.float32(scale)), zero_point


def scale_zero_point(rng: list[float], symmetric: bool) -> tuple[float, int]:
    """(scale, zero point) of a recorded range: what the exporter hands to onnxruntime."""
    return quant_params(float(rng[0]), float(rng[1]), symmetric)


def weight_scales(w: torch.Tensor, per_channel: bool = True) -> torch.Tensor:
    """Symmetric int8 scales of `w`: max|w| / 127 per output channel (dim 0), or one for the whole tensor;
    1 where a channel is all zeros (onnxruntime's convention for a zero range)."""
    flat = w.detach().abs().reshape(w.shape[0], -1) if per_channel else w.detach().abs().reshape(1, -1)
    scale = flat.amax(dim=1).double() / 127.0  # float64, then float32, as onnxruntime's compute_scale_zp
    return torch.where(scale >= torch.finfo(torch.float32).tiny, scale, torch.ones_like(scale)).to(w.dtype)


# ---- fake quantization ----------------------------------------------------------------------------

def _round_ste(v: torch.Tensor) -> torch.Tensor:
    """round() forward (half to even, as onnxruntime's QuantizeLinear), identity backward."""
    return v + (torch.round(v) - v).detach()


def fake_quant_act(x: torch.Tensor, rng: torch.Tensor, symmetric: bool) -> torch.Tensor:
    """Quantize-dequantize `x` with the range `rng` = (lo, hi): int8 symmetric (scale max(|lo|,|hi|)/127,
    zero point 0, [-127, 127]) or uint8 asymmetric (scale (hi-lo)/255, zero point round(-lo/scale),
    [0, 255]); the scale and zero point are exactly `quant_params`'s. `lo` and `hi` may be tensors that
    broadcast against `x` (per-channel ranges). Gradients: straight through inside the range, zero outside,
    and to the range itself (LSQ-style) for QAT."""
    # the scale in float64 from the float32 range, then rounded to float32: onnxruntime's compute_scale_zp
    lo, hi = rng[0].double(), rng[1].double()
    if symmetric:
        scale64 = torch.maximum(lo.abs(), hi.abs()) / 127.0
        qmin, qmax = -127.0, 127.0
    else:
        scale64 = (hi - lo) / 255.0
        qmin, qmax = 0.0, 255.0
    tiny = float(torch.finfo(torch.float32).tiny)
    valid = scale64 >= tiny
    scale64 = torch.where(valid, scale64, torch.ones_like(scale64))
    # in float32 whatever x is (fp16 under CUDA autocast in QAT would round x / scale coarsely)
    zp = torch.zeros((), dtype=torch.float32, device=x.device) if symmetric else \
        torch.where(valid, torch.round(-lo.detach() / scale64.detach()), torch.zeros_like(lo)).float()
    scale = scale64.float()
    q = torch.clamp(_round_ste(x.float() / scale) + zp, qmin, qmax)
    return ((q - zp) * scale).to(x.dtype)


def fake_quant_weight(w: torch.Tensor, per_channel: bool = True) -> torch.Tensor:
    """Symmetric int8 quantize-dequantize of a weight, per output channel (or per tensor)."""
    shape = (-1,) + (1,) * (w.dim() - 1) if per_channel else ()
    w32 = w.float()
    scale = weight_scales(w32, per_channel).reshape(shape)
    return (torch.clamp(_round_ste(w32 / scale), -127, 127) * scale).to(w.dtype)


# ---- quantized layers -----------------------------------------------------------------------------

class QuantizedLayer(nn.Module):
    """A Conv1d/Conv2d/Linear (`inner`, float weights) run fake-quantized by `quantized_forward`; with
    `enabled` off, the float layer (sensitivity analysis). Models read their layers' attributes (HF ViT:
    `projection.weight.dtype`, `in_channels`, `out_features`): those of the float layer."""

    int8_weight = True  # a quantized precision counts `inner.weight` at one byte per element

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.enabled = True

    @property
    def weight(self) -> torch.Tensor:
        return self.inner.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.inner.bias

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules")
            if name.startswith("__") or not modules or "inner" not in modules:
                raise
            return getattr(modules["inner"], name)  # in_channels, out_features, ...

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantized_forward(x) if self.enabled else self.inner(x)

    def quantized_forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement quantized_forward")

    def run_inner(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The float layer's operation with weight `w` (a fake-quantized copy of its own)."""
        if isinstance(self.inner, nn.Linear):
            return F.linear(x, w, self.inner.bias)
        return self.inner._conv_forward(x, w, self.inner.bias)


class Int8Layer(QuantizedLayer):
    """Static int8: fake quantization of its input (unless tied to the quantized output of the layer before
    it) with a calibrated range, its weight (per output channel) and, for convolutions, its output.
    `in_range`/`out_range` are (lo, hi) buffers (parameters during QAT)."""

    def __init__(self, inner: nn.Module, in_range: list[float] | None, out_range: list[float] | None,
                 symmetric: bool) -> None:
        super().__init__(inner)
        self.symmetric = symmetric
        self.quant_input = in_range is not None
        self.quant_output = out_range is not None
        self.register_buffer("in_range", torch.tensor(in_range if in_range is not None else [0.0, 0.0]))
        self.register_buffer("out_range", torch.tensor(out_range if out_range is not None else [0.0, 0.0]))

    def quantized_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quant_input:
            x = fake_quant_act(x, self.in_range, self.symmetric)
        y = self.run_inner(x, fake_quant_weight(self.inner.weight))
        if self.quant_output:
            y = fake_quant_act(y, self.out_range, self.symmetric)
        return y

    def extra_repr(self) -> str:
        return (f"{'symmetric int8' if self.symmetric else 'uint8'} activations, input "
                f"{'quantized' if self.quant_input else 'tied'}, output {'quantized' if self.quant_output else 'float'}")


def quantized_layers(module: nn.Module) -> dict[str, QuantizedLayer]:
    return {n: m for n, m in module.named_modules() if isinstance(m, QuantizedLayer)}


def int8_layers(module: nn.Module) -> dict[str, Int8Layer]:
    return {n: m for n, m in module.named_modules() if isinstance(m, Int8Layer)}


def unwrap(module: nn.Module) -> nn.Module:
    """`module` with every quantized layer replaced by its float layer (in place; the export path)."""
    for name, layer in list(quantized_layers(module).items()):
        module = set_submodule(module, name, layer.inner)
    return module


def wrap(module: nn.Module, layers: dict[str, dict[str, Any]], symmetric: bool) -> nn.Module:
    """`module` with each of `layers` ({path: {"in": range | None, "out": range | None}}) an Int8Layer."""
    for name, spec in layers.items():
        module = set_submodule(module, name, Int8Layer(module.get_submodule(name), spec.get("in"),
                                                       spec.get("out"), symmetric))
    return module


def retie(ranges: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Calibrated ranges ({layer: {"in", "out", "tied_to", "own_in"}}) where a tied layer whose producer is not
    quantized (left out by int8's `mixed`) quantizes its own input again, with the producer's calibrated
    output range (the same tensor)."""
    out = {}
    for n, r in ranges.items():
        r = dict(r)
        src = r.get("tied_to")
        if r["in"] is None and src not in ranges:
            r["in"] = list(r["own_in"]) if r.get("own_in") else None
        out[n] = r
    return out


def learned_ranges(module: nn.Module) -> dict[str, dict[str, Any]]:
    """{layer: {"in": [lo, hi] | None, "out": [lo, hi] | None}} of the module's Int8Layers (as trained)."""
    return {n: {"in": [float(v) for v in m.in_range] if m.quant_input else None,
                "out": [float(v) for v in m.out_range] if m.quant_output else None}
            for n, m in int8_layers(module).items()}


def quantized_state_bytes(module: nn.Module) -> int:
    """Bytes of the state_dict tensors, the weight of each quantized layer (`int8_weight`) at one byte."""
    int8 = {f"{n}.inner.weight" if n else "inner.weight" for n, m in module.named_modules()
            if getattr(m, "int8_weight", False)}
    return sum(t.numel() * (1 if k in int8 else t.element_size()) for k, t in module.state_dict().items())
