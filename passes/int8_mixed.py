"""Mixed precision for the int8 pass: quantize only the layers that pay, by sensitivity and measured cost.

`choose_layers` (called by the int8 pass with `mixed: {...}`):

1. **Sensitivity** of every calibrated layer, in torch on `batches` validation batches: the task metric
   (IoU, mIoU or accuracy, points) of the model with only that layer fake-quantized, against the float model,
   and the mean squared error that layer's quantization adds to the logits (relative to their variance).
   Single layers rarely move a metric measured on a few batches, so layers are ranked by metric drop
   first and output error second.
2. **Latency effect on the backend** (`onnxruntime-cpu`; as NVIDIA ModelOpt's ONNX autotune keeps a
   Q/DQ pair only where it is faster): one layer at a time is below this machine's timing noise, so the
   layers are grouped by kind (depthwise conv, pointwise conv, k×k conv, linear) and each group is
   exported quantized alone and timed against the float graph, interleaved, batch 1, median of
   `rounds`. TensorRT cannot run here: for `backend: tensorrt` every group counts as paying (TensorRT
   picks int8 kernels per layer itself) and the table says "not measured".
3. **Selection**: `objective: latency` starts from the layers of the groups measured faster in int8;
   `objective: size` from every layer. Then the most sensitive layers are left in fp32 until the sum of
   the remaining layers' metric drops is within `max_drop`, and the chosen set is evaluated together;
   while its measured drop exceeds `max_drop`, the next most sensitive layer is left out.

The per-layer table (kind, parameters, sensitivity, output error, group speed-up, quantized or not)
goes into the stage's stats and the report.
"""
from __future__ import annotations

import copy
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from compressor.context import PassContext
from compressor.ir import ModelIR

log = logging.getLogger(__name__)


def layer_kind(m: nn.Module) -> str:
    if isinstance(m, nn.Linear):
        return "linear"
    if m.groups > 1 and m.groups == m.in_channels:
        return "depthwise conv"
    if all(k == 1 for k in m.kernel_size):
        return "pointwise conv"
    return "conv kxk"


def _metric(module: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], ir: ModelIR) -> tuple[float, list]:
    from compressor.evaluate.metrics import TaskMetrics, main_metric

    metrics = TaskMetrics(ir.task)
    outs = []
    with torch.no_grad():
        for x, y in batches:
            out = module(x)
            outs.append(out)
            metrics.update(out.float(), y)
    return metrics.compute()[main_metric(ir.task)] * 100, outs


def sensitivities(wrapped: nn.Module, names: list[str], batches: list, ir: ModelIR,
                  progress: bool = False) -> dict[str, dict[str, float]]:
    """{layer: {"drop": metric points lost with only it quantized, "error": added logit MSE / logit variance}}."""
    from compressor.progress import progress_bar
    from compressor.quant import int8_layers

    layers = int8_layers(wrapped)
    for m in layers.values():
        m.enabled = False
    base, ref = _metric(wrapped, batches, ir)
    var = float(torch.cat([r.flatten() for r in ref]).var()) or 1.0
    out: dict[str, dict[str, float]] = {}
    for name in progress_bar(names, desc="int8 sensitivity", disable=not progress, leave=False):
        layers[name].enabled = True
        value, outs = _metric(wrapped, batches, ir)
        layers[name].enabled = False
        err = float(sum(((o - r) ** 2).mean() for o, r in zip(outs, ref)) / len(outs)) / var
        out[name] = {"drop": round(base - value, 4), "error": err}
    for m in layers.values():
        m.enabled = True
    return out


def _int8_ir(ir: ModelIR, module: nn.Module, ranges: dict[str, dict[str, Any]], keep: set[str],
             symmetric: bool) -> ModelIR:
    from compressor.quant import retie, wrap

    chosen = retie({n: r for n, r in ranges.items() if n in keep})
    wrapped = wrap(copy.deepcopy(module), {n: {"in": r["in"], "out": r["out"]} for n, r in chosen.items()}, symmetric)
    return ir.replace(module=wrapped, precision="int8" if chosen else "fp32", recipe=None)


def _latencies(paths: dict[str, Path], rounds: int, iters: int = 20) -> dict[str, float]:
    """Median ms per call of each ONNX file, batch 1, sessions side by side and timed in interleaved rounds."""
    from compressor.evaluate.latency import side_by_side_onnxruntime

    return dict(zip(paths, side_by_side_onnxruntime(list(paths.values()), rounds, iters)))


def group_speedups(ir: ModelIR, module: nn.Module, ranges: dict[str, dict[str, Any]], groups: dict[str, list[str]],
                   symmetric: bool, rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """(fp32 ms / int8 ms per group, the latencies) on onnxruntime CPU: each group quantized alone."""
    from compressor.exporters.onnx import OnnxOptions, export_onnx

    opts = OnnxOptions(verify=False)
    with tempfile.TemporaryDirectory(prefix="int8-mixed-") as tmp:
        paths = {"fp32": Path(tmp) / "fp32.onnx"}
        export_onnx(_int8_ir(ir, module, ranges, set(), symmetric), paths["fp32"], opts)
        for g, names in groups.items():
            paths[g] = Path(tmp) / f"{g.replace(' ', '_')}.onnx"
            export_onnx(_int8_ir(ir, module, ranges, set(names), symmetric), paths[g], opts)
        lat = _latencies(paths, rounds)
    return {g: lat["fp32"] / lat[g] for g in groups}, lat


def format_latencies(ir: ModelIR, rounds: int) -> dict[str, float]:
    """Median ms per call (onnxruntime CPU, batch 1, interleaved) of the int8 IR exported in each format."""
    from compressor.exporters.onnx import OnnxOptions, export_onnx

    opts = OnnxOptions(verify=False)
    with tempfile.TemporaryDirectory(prefix="int8-format-") as tmp:
        paths = {}
        for fmt in ("qdq", "qoperator"):
            paths[fmt] = Path(tmp) / f"{fmt}.onnx"
            export_onnx(ir.replace(meta={**ir.meta, "int8": {**ir.meta["int8"], "format": fmt}}), paths[fmt], opts)
        return {k: round(v, 4) for k, v in _latencies(paths, rounds).items()}


def choose_layers(module: nn.Module, ir: ModelIR, ranges: dict[str, dict[str, Any]], symmetric: bool, o: Any,
                  ctx: PassContext) -> tuple[set[str], list[dict[str, Any]], dict[str, Any]]:
    """(layers to quantize, the per-layer table, a summary) for the int8 pass's `mixed` options."""
    from compressor.data import make_loader
    from compressor.quant import wrap

    m = o.mixed
    data = ctx.require_data("int8 mixed precision")
    loader = make_loader(data.val, o.batch_size)
    batches = []
    for x, y in loader:
        batches.append((x.float(), y))
        if len(batches) >= m.batches:
            break
    names = list(ranges)
    wrapped = wrap(copy.deepcopy(module), {n: {"in": r["own_in"], "out": r["out"]} for n, r in ranges.items()},
                   symmetric)
    sens = sensitivities(wrapped, names, batches, ir, progress=ctx.progress)
    kinds = {n: layer_kind(module.get_submodule(n)) for n in names}
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(kinds[n], []).append(n)

    measured = o.backend == "onnxruntime-cpu" and m.objective == "latency"
    speed: dict[str, float] = {}
    lat: dict[str, float] = {}
    if measured:
        speed, lat = group_speedups(ir, module, ranges, groups, symmetric, m.rounds)
        start = [n for n in names if speed[kinds[n]] > 1.0]
    else:
        start = list(names)

    order = sorted(start, key=lambda n: (sens[n]["drop"], sens[n]["error"]), reverse=True)
    keep = list(order)
    while keep and sum(max(0.0, sens[n]["drop"]) for n in keep) > m.max_drop:
        keep.pop(0)
    base, _ = _metric(_int8_ir(ir, module, ranges, set(), symmetric).module, batches, ir)
    while keep:
        got, _ = _metric(_int8_ir(ir, module, ranges, set(keep), symmetric).module, batches, ir)
        if base - got <= m.max_drop:
            break
        keep.pop(0)
    final_drop = base - (_metric(_int8_ir(ir, module, ranges, set(keep), symmetric).module, batches, ir)[0]
                         if keep else base)
    chosen = set(keep)
    table = [{"layer": n, "kind": kinds[n], "params": sum(p.numel() for p in module.get_submodule(n).parameters()),
              "drop": sens[n]["drop"], "error": round(sens[n]["error"], 6),
              "group_speedup": round(speed[kinds[n]], 3) if measured else None, "int8": n in chosen}
             for n in names]
    summary = {"objective": m.objective, "max_drop": m.max_drop, "quantized": len(chosen), "of": len(names),
               "measured_drop": round(final_drop, 3), "float_metric": round(base, 3),
               "groups": {g: {"layers": len(v), "speedup": round(speed[g], 3) if measured else None}
                          for g, v in groups.items()},
               "latency_ms": {k: round(v, 3) for k, v in lat.items()} if measured else None}
    log.info("int8 mixed: %d of %d layers quantized (%s)", len(chosen), len(names), summary["groups"])
    return chosen, table, summary
