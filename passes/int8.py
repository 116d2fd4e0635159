"""int8: calibrated post-training quantization (and QAT) of convolutions and linear layers.

What the pass does to the IR, in order:

1. **Folds BatchNorm into the convolution before it** (`fold_batchnorm`): a BatchNorm whose input is
   exactly a convolution's output becomes `Identity` and the convolution takes its scale and shift.
   The ONNX exporters fold these pairs anyway (torch.onnx's dynamo exporter, onnxsim); folding them
   here makes the torch model's convolution outputs the very tensors the ONNX graph quantizes, so
   the torch fake-quant model and the QDQ graph compute the same thing. Each fold is checked
   numerically (the model's outputs before and after on example inputs); a pair whose fold changes
   them (the convolution's output is also used elsewhere) is not folded. Replayable edit `fold-bn`.
2. **Calibrates** (`method`: minmax, percentile, entropy; `passes/int8_calib.py`) on `calib_batches`
   batches of the training split: the input of every quantized layer and the output of every
   quantized convolution (a linear layer's output is not quantized: exported as MatMul + Add, its
   ONNX output is not the module's). A layer whose input is exactly another quantized layer's output
   (a depthwise → pointwise pair) shares that quantizer ("tied").
3. **Wraps** each quantized layer in `Int8Layer` (`compressor.quant`): per-tensor fake quantization of its input and
   output, per-output-channel symmetric int8 fake quantization of its weight (scale = max|w| / 127,
   onnxruntime's and TensorRT's per-channel scheme), straight-through estimator. The ranges are
   data in the recipe (edit `int8`) and buffers in the weights (QAT learns them).

`backend` picks the activation scheme: `tensorrt` → signed int8 with symmetric scales (TensorRT's
explicit quantization needs it); `onnxruntime-cpu` → asymmetric uint8 activations, because
onnxruntime's x86 kernels (VNNI included) run u8 activations × s8 weights and measured s8
activations 0.3-0.6× the fp32 speed here (BENCHMARKS.md "INT8"). Weights are int8 either way.

The IR's precision becomes `int8`; the module keeps float weights (fake-quantized when it runs), its
size counts one byte per quantized weight (`ModelIR.state_bytes`), and the int8 precision's ONNX lowering
(`compressor/precisions/int8.py`) writes the QDQ graph with exactly these scales. Layers not quantized (excluded, or left out by `mixed`) stay fp32.
"""
from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from typing import Any, Iterable, Literal

import torch
import torch.nn as nn

from compressor.context import PassContext
from compressor.edits import register_edit, set_submodule, unmatched_patterns
from compressor.errors import PassError
from compressor.ir import ModelIR
from compressor.options import option
from compressor.passes.int8_calib import METHODS, RangeObserver
from compressor.passes_base import Pass, PassResult
from compressor.quant import (ACTIVATION_SYMMETRIC, QUANTIZABLE, activation_type, int8_layers, learned_ranges,
                              retie, wrap)
from compressor.registry import register_pass
from compressor.train import TrainOptions

log = logging.getLogger(__name__)

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
BACKENDS = ("tensorrt", "onnxruntime-cpu")
FOLD_RTOL = 1e-4


@register_edit("int8")
def _replay_int8(module: nn.Module, edit: dict[str, Any], example: tuple) -> nn.Module:
    return wrap(module, dict(edit["layers"]), ACTIVATION_SYMMETRIC[edit["activations"]])


# ---- BatchNorm folding ----------------------------------------------------------------------------

def _conv_bn_pairs(module: nn.Module, example: tuple) -> list[tuple[str, str]]:
    """(conv, bn) where the BatchNorm's input is the very tensor the convolution returned (one call)."""
    made: dict[int, tuple[str, torch.Tensor]] = {}
    pairs: list[tuple[str, str]] = []
    calls: dict[str, int] = {}
    hooks = []

    def conv_hook(name: str):
        def fn(_m: nn.Module, _inp: Any, out: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            if torch.is_tensor(out):
                made[id(out)] = (name, out)  # keep the tensor alive so its id stays unique
        return fn

    def bn_hook(name: str):
        def fn(_m: nn.Module, inp: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            src = made.get(id(inp[0])) if inp and torch.is_tensor(inp[0]) else None
            if src is not None and src[1] is inp[0]:
                pairs.append((src[0], name))
        return fn

    for name, m in module.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            hooks.append(m.register_forward_hook(conv_hook(name)))
        elif isinstance(m, BATCHNORMS):
            hooks.append(m.register_forward_pre_hook(bn_hook(name)))
    try:
        with torch.no_grad():
            module(*example)
    finally:
        for h in hooks:
            h.remove()
    seen: set[str] = set()
    out = []
    for conv, bn in pairs:
        bn_mod = module.get_submodule(bn)
        conv_mod = module.get_submodule(conv)
        if (calls.get(conv) == 1 and calls.get(bn) == 1 and conv not in seen and bn not in seen
                and bn_mod.running_mean is not None and conv_mod.out_channels == bn_mod.num_features):
            out.append((conv, bn))
            seen.update((conv, bn))
    return out


def _fold_structure(module: nn.Module, conv: str, bn: str) -> nn.Module:
    """The structural half of a fold (what a replay does): the conv gains a bias, the BN becomes Identity."""
    c = module.get_submodule(conv)
    if c.bias is None:
        c.bias = nn.Parameter(torch.zeros(c.out_channels, dtype=c.weight.dtype))
    return set_submodule(module, bn, nn.Identity())


def _fold_pair(module: nn.Module, conv: str, bn: str) -> nn.Module:
    c, b = module.get_submodule(conv), module.get_submodule(bn)
    with torch.no_grad():
        std = torch.sqrt(b.running_var + b.eps)
        gamma = b.weight if b.weight is not None else torch.ones_like(std)
        beta = b.bias if b.bias is not None else torch.zeros_like(std)
        k = gamma / std
        bias = c.bias if c.bias is not None else torch.zeros_like(b.running_mean)
        new_bias = (bias - b.running_mean) * k + beta
        c.weight.mul_(k.reshape((-1,) + (1,) * (c.weight.dim() - 1)))
        module = _fold_structure(module, conv, bn)
        module.get_submodule(conv).bias.copy_(new_bias)
    return module


def _outputs(module: nn.Module, example: tuple) -> list[torch.Tensor]:
    with torch.no_grad():
        out = module(*example)
    return [o.detach().float() for o in (out if isinstance(out, (tuple, list)) else (out,)) if torch.is_tensor(o)]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(
        x.shape == y.shape and bool(((x - y).abs() <= FOLD_RTOL * (1 + y.abs().max())).all()) for x, y in zip(a, b))


def fold_batchnorm(module: nn.Module, example: tuple) -> tuple[nn.Module, list[list[str]]]:
    """Fold every BatchNorm fed directly by a convolution into it (eval-mode statistics); returns the
    module and the folded [conv, bn] pairs. Folds are checked on `example`: all at once, else one by one."""
    import copy

    module.eval()
    pairs = _conv_bn_pairs(module, example)
    if not pairs:
        return module, []
    ref = _outputs(module, example)
    trial = copy.deepcopy(module)
    for conv, bn in pairs:
        trial = _fold_pair(trial, conv, bn)
    if _same(_outputs(trial, example), ref):
        return trial, [list(p) for p in pairs]
    kept = []
    for conv, bn in pairs:
        trial = _fold_pair(copy.deepcopy(module), conv, bn)
        if _same(_outputs(trial, example), ref):
            module, _ = trial, kept.append([conv, bn])
        else:
            log.info("int8: not folding %s into %s: the model's outputs change (the conv output is used elsewhere)",
                     bn, conv)
    return module, kept


@register_edit("fold-bn")
def _replay_fold(module: nn.Module, edit: dict[str, Any], example: tuple) -> nn.Module:
    for conv, bn in edit["pairs"]:
        module = _fold_structure(module, conv, bn)
    return module


# ---- calibration ----------------------------------------------------------------------------------

def quantizable_layers(module: nn.Module, exclude: Iterable[str] = ()) -> list[str]:
    """Conv1d/Conv2d/Linear layers (by module path) not matching an `exclude` glob."""
    pats = list(exclude)
    return [n for n, m in module.named_modules()
            if n and isinstance(m, QUANTIZABLE) and not any(fnmatch.fnmatch(n, p) for p in pats)]


def float_layers(module: nn.Module) -> list[str]:
    """Quantizable layers left in float (not inside an Int8Layer)."""
    inside = {n + ".inner" for n in int8_layers(module)}
    return [n for n in quantizable_layers(module) if n not in inside]


def calibrate(module: nn.Module, layers: list[str], batches: list[torch.Tensor], method: str,
              percentile: float, symmetric: bool) -> dict[str, dict[str, Any]]:
    """Ranges of each layer's input (and convolutions' outputs) over `batches` of the float module;
    returns {layer: {"in": [lo, hi] | None, "out": [lo, hi] | None, "tied_to": producer | None}}."""
    obs_in = {n: RangeObserver(method, percentile) for n in layers}
    obs_out = {n: RangeObserver(method, percentile) for n in layers
               if not isinstance(module.get_submodule(n), nn.Linear)}
    produced: dict[int, tuple[str, torch.Tensor, int]] = {}
    tied: dict[str, str] = {}
    calls: dict[str, int] = {}
    first_calls: dict[str, int] = {}  # calls during the first batch: a layer called twice is never tied
    first = [True]

    def hook(name: str, second: bool):
        def fn(_m: nn.Module, inp: Any, out: Any) -> None:
            x = inp[0]
            if second:
                if obs_in[name].needs_histogram:
                    obs_in[name].observe_histogram(x)
                if name in obs_out and obs_out[name].needs_histogram:
                    obs_out[name].observe_histogram(out)
                return
            calls[name] = calls.get(name, 0) + 1
            if first[0]:
                first_calls[name] = first_calls.get(name, 0) + 1
                src = produced.get(id(x))
                # the very tensor the producer returned, unmodified since (an in-place ReLU bumps _version)
                if src is not None and src[1] is x and src[2] == x._version and src[0] in obs_out:
                    tied[name] = src[0]
            obs_in[name].observe(x)
            if name in obs_out:
                obs_out[name].observe(out)
                if first[0]:
                    produced[id(out)] = (name, out, out._version)
        return fn

    for second in (False, True):
        if second and not any(o.needs_histogram for o in [*obs_in.values(), *obs_out.values()]):
            break
        hooks = [module.get_submodule(n).register_forward_hook(hook(n, second)) for n in layers]
        try:
            with torch.no_grad():
                for i, x in enumerate(batches):
                    first[0] = i == 0 and not second
                    module(x)
                    produced.clear()
        finally:
            for h in hooks:
                h.remove()
    never = [n for n in layers if not calls.get(n)]
    if never:
        log.info("int8: %d layers never ran on the calibration data and stay fp32: %s", len(never), never[:5])
    # a layer called more than once (shared weights) may see inputs from several producers: never tied
    tied = {n: p for n, p in tied.items() if first_calls.get(n) == 1 and first_calls.get(p) == 1}
    out: dict[str, dict[str, Any]] = {}
    for n in layers:
        if not calls.get(n):
            continue
        lo_hi = [float(v) for v in obs_in[n].range(symmetric)]
        out_rng = [float(v) for v in obs_out[n].range(symmetric)] if n in obs_out else None
        out[n] = {"in": None if n in tied else lo_hi, "out": out_rng, "tied_to": tied.get(n), "own_in": lo_hi}
    return out


def calibration_batches(ctx: PassContext, n: int, batch_size: int) -> list[torch.Tensor]:
    from compressor.data import make_loader

    data = ctx.require_data("int8 calibration")
    loader = make_loader(data.train, batch_size, shuffle=True, seed=ctx.seed)
    xs = []
    for x, _y in loader:
        xs.append(x.float())
        if len(xs) >= n:
            break
    return xs


# ---- the pass -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MixedOptions:
    max_drop: float = option(1.0, "largest metric drop (points, on the validation split) the quantized layers may "
                                  "cost together", min=0)
    objective: Literal["latency", "size"] = option(
        "latency", "latency: quantize only layer groups measured faster in int8 on `backend`, then drop the most "
                   "sensitive layers until within max_drop; size: quantize every layer within max_drop")
    batches: int = option(4, "validation batches for the per-layer sensitivity", min=1)
    rounds: int = option(5, "interleaved latency rounds per candidate (onnxruntime CPU, batch 1)", min=1)


@dataclass(frozen=True)
class Int8Options:
    backend: Literal["tensorrt", "onnxruntime-cpu"] = option(
        "tensorrt", "the backend tuned for: tensorrt (signed symmetric int8 activations) or onnxruntime-cpu "
                    "(asymmetric uint8 activations, which onnxruntime's x86 kernels run fast)")
    method: Literal["minmax", "entropy", "percentile"] = option("minmax", "activation range calibration",
                                                                search=list(METHODS))
    percentile: float = option(99.99, "percentile of |x| kept by method: percentile", min=50, max=100)
    calib_batches: int = option(8, "training batches for calibration", min=1, max=100_000)
    batch_size: int = option(32, "calibration batch size", min=1)
    exclude: list[str] = option([], "layers (glob patterns of module paths) kept in fp32, e.g. 'head' or 'stem.*'")
    qat: TrainOptions | None = option(None, "quantization-aware fine-tuning after calibration, e.g. {epochs: 2, "
                                            "lr: 1e-4}: fake-quantized training that also learns the activation ranges")
    format: Literal["auto", "qdq", "qoperator"] = option(
        "auto", "ONNX int8 format: qdq (Q/DQ pairs; what TensorRT takes) or qoperator (onnxruntime's QLinearConv; "
                "uint8 activations and convolutions only); auto: qdq for tensorrt, for onnxruntime-cpu the one "
                "measured faster")
    mixed: MixedOptions | None = option(None, "mixed precision: quantize only the layers that pay, by per-layer "
                                              "sensitivity and measured latency (e.g. {max_drop: 1.0})")


@register_pass("int8")
class Int8(Pass):
    Options = Int8Options
    label_keys = ("backend",)
    version = 1
    packages = ("torch", "onnx", "onnxruntime")

    accepts = ("fp32",)
    produces = "int8"

    def needs_data(self) -> bool:
        return True

    def data_reason(self) -> str:
        return "calibrates on the training split"

    def run(self, ir: ModelIR, ctx: PassContext) -> PassResult:
        o = self.options
        symmetric = o.backend == "tensorrt"
        before = ir.state_bytes()
        unknown = unmatched_patterns(ir.module, o.exclude)
        if unknown:
            raise PassError(f"int8: exclude pattern(s) {unknown} match no module; quantizable layers look like "
                            f"{', '.join(quantizable_layers(ir.module)[:5])} (see compress inspect)")
        module = ir.module.float().eval()
        example = ir.example_inputs(batch=2)
        module, folded = fold_batchnorm(module, example)
        layers = quantizable_layers(module, o.exclude)
        if not layers:
            raise PassError("int8: the model has no Conv1d/Conv2d/Linear layer left to quantize (all excluded?); "
                            "remove the int8 pass or its exclude patterns")
        batches = calibration_batches(ctx, o.calib_batches, o.batch_size)
        ranges = calibrate(module, layers, batches, o.method, o.percentile, symmetric)
        stats: dict[str, Any] = {"bytes_before": before, "folded_bn": len(folded), "method": o.method,
                                 "calib_batches": len(batches), "activations": activation_type(symmetric)}
        if o.mixed is not None:
            from compressor.passes.int8_mixed import choose_layers

            keep, table, chosen = choose_layers(module, ir, ranges, symmetric, o, ctx)
            ranges = {n: r for n, r in ranges.items() if n in keep}
            stats["mixed"] = chosen
            stats["layers_table"] = table
            if not ranges:  # nothing pays: the stage is the float model, and says so
                stats["note"] = (f"int8 mixed: no layer ran faster in int8 on {o.backend} within max_drop "
                                 f"{o.mixed.max_drop}; the model stays fp32")
                ir = ir.replace(module=module)
                if folded:
                    ir = ir.with_edit("fold-bn", pairs=folded)
                return PassResult(ir, changed=bool(folded), stats=stats)
        ranges = retie(ranges)
        layer_specs = {n: {"in": r["in"], "out": r["out"]} for n, r in ranges.items()}
        module = wrap(module, layer_specs, symmetric)
        if o.qat is not None and o.qat.epochs > 0:
            stats["qat"] = run_qat(module, ir, ctx, o.qat)
            layer_specs = learned_ranges(module)
        meta = {**ir.meta, "int8": {"activations": activation_type(symmetric), "backend": o.backend,
                                    "method": o.method, "layers": len(layer_specs), "qat": o.qat is not None,
                                    "format": "qdq"}}
        ir = ir.replace(module=module, precision=self.produces, meta=meta)
        fmt, timings = self._format(ir, module)
        ir.meta["int8"]["format"] = fmt
        stats["format"] = fmt
        if timings:
            stats["format_latency_ms"] = timings
        if folded:
            ir = ir.with_edit("fold-bn", pairs=folded)
        ir = ir.with_edit("int8", activations=activation_type(symmetric), method=o.method, layers=layer_specs)
        stats.update({"bytes_after": ir.state_bytes(), "quantized_layers": len(layer_specs),
                      "fp32_layers": len(float_layers(module))})
        return PassResult(ir, changed=True, stats=stats)

    def _format(self, ir: ModelIR, module: nn.Module) -> tuple[str, dict[str, float] | None]:
        """The ONNX format (see the `format` option) and, when measured, each format's latency (ms)."""
        o = self.options
        convs_only = all(not isinstance(m.inner, nn.Linear) for m in int8_layers(module).values())
        if o.format == "qoperator" and (o.backend == "tensorrt" or not convs_only):
            raise PassError("int8: format qoperator needs backend: onnxruntime-cpu and a model whose quantized layers "
                            "are all convolutions (exclude the Linear layers); use format: qdq or auto")
        if o.format != "auto":
            return o.format, None
        if o.backend == "tensorrt" or not convs_only:
            return "qdq", None
        from compressor.passes.int8_mixed import format_latencies

        timings = format_latencies(ir, rounds=o.mixed.rounds if o.mixed is not None else 5)
        return min(("qdq", "qoperator"), key=lambda f: timings[f]), timings


# ---- QAT ------------------------------------------------------------------------------------------

def _ranges_as(module: nn.Module, parameter: bool) -> None:
    for layer in int8_layers(module).values():
        for key, active in (("in_range", layer.quant_input), ("out_range", layer.quant_output)):
            value = getattr(layer, key).detach().clone()
            if key in layer._parameters:
                del layer._parameters[key]
            if key in layer._buffers:
                del layer._buffers[key]
            if parameter and active:
                layer.register_parameter(key, nn.Parameter(value))
            else:
                layer.register_buffer(key, value)


def run_qat(module: nn.Module, ir: ModelIR, ctx: PassContext, opts: TrainOptions) -> dict[str, Any]:
    """Fake-quantized fine-tuning through the shared training helper; the activation ranges are trained
    with the weights (straight-through estimator), then become buffers again."""
    from compressor.train import train_stage

    _ranges_as(module, parameter=True)
    try:
        result = train_stage(ctx, module, ir.task, opts, offset=len(ir.history), name="int8-qat", desc="int8 qat")
    finally:
        _ranges_as(module, parameter=False)
    with torch.no_grad():  # make every trained range a valid one: lo <= 0 <= hi (symmetric: -a, a)
        for layer in int8_layers(module).values():
            for r in (layer.in_range, layer.out_range):
                if layer.symmetric:
                    a = r.abs().max()
                    r.copy_(torch.stack([-a, a]))
                else:
                    lo, hi = r.min(), r.max()
                    r.copy_(torch.stack([lo.clamp(max=0.0), hi.clamp(min=0.0)]))
    return {"epochs": result.epochs_run, "final_loss": round(result.final_loss, 5),
            "losses": [round(x, 5) for x in result.losses]}
