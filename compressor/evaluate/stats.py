"""Model statistics: parameters, MACs, per-module table, artifact bytes."""
from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

log = logging.getLogger(__name__)

__all__ = ["count_params", "count_macs", "module_table", "file_bytes"]


def count_params(module: torch.nn.Module) -> int:
    """Number of parameter elements; a parameter shared by several modules counts once."""
    return sum(p.numel() for p in module.parameters())


def count_macs(module: torch.nn.Module, example_inputs: tuple) -> int | None:
    """Multiply-accumulates of one forward pass on `example_inputs` (MACs = FLOPs // 2).

    Counted by torch's FlopCounterMode, which covers matmul, linear, convolution, bmm and
    attention; elementwise ops, pooling and normalization are not counted (the usual convention
    for MACs). Runs in eval mode under no_grad; the module's train/eval flags are restored. A
    half-precision module on CPU is counted on a float32 copy (the count does not depend on the
    dtype, and CPU half kernels are missing for some ops). Returns None, with a warning, when the
    forward pass fails.
    """
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    params = list(module.parameters())
    on_cpu = all(p.device.type == "cpu" for p in params)
    is_half = any(p.dtype in (torch.float16, torch.bfloat16) for p in params)
    target = module
    if is_half and on_cpu:
        target = copy.deepcopy(module).float()
        example_inputs = tuple(x.float() if torch.is_tensor(x) and x.is_floating_point() else x
                               for x in example_inputs)
    modes = {m: m.training for m in target.modules()}
    target.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            target(*example_inputs)
    except Exception as exc:  # any model-specific failure: MACs are informative, not essential
        log.warning("could not count MACs of %s: %s: %s", type(module).__name__, type(exc).__name__, exc)
        return None
    finally:
        for m, mode in modes.items():
            m.training = mode
    return int(counter.get_total_flops()) // 2


def module_table(module: torch.nn.Module) -> str:
    """A text table, one row per module that owns parameters (every leaf with parameters, and
    a container holding parameters directly such as a class token): name, type, params, bytes
    (numel * element_size), then a total row. Shared parameters count once, at first owner."""
    rows: list[tuple[str, str, int, int]] = []
    seen: set[int] = set()
    for name, mod in module.named_modules():
        own = [p for p in mod.parameters(recurse=False) if id(p) not in seen]
        if not own:
            continue
        seen.update(id(p) for p in own)
        rows.append((name or "(root)", type(mod).__name__,
                     sum(p.numel() for p in own), sum(p.numel() * p.element_size() for p in own)))
    total = ("total", "", sum(r[2] for r in rows), sum(r[3] for r in rows))
    header = ("module", "type", "params", "bytes")
    cells = [header] + [(n, t, f"{p:,}", f"{b:,}") for n, t, p, b in rows]
    footer = (total[0], total[1], f"{total[2]:,}", f"{total[3]:,}")
    widths = [max(len(r[i]) for r in cells + [footer]) for i in range(4)]

    def fmt(r: tuple[str, ...]) -> str:
        return (f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  "
                f"{r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}").rstrip()

    rule = "-" * len(fmt(tuple("-" * w for w in widths)))
    return "\n".join([fmt(header), rule, *(fmt(r) for r in cells[1:]), rule, fmt(footer)])


def file_bytes(*paths: str | os.PathLike[str]) -> int:
    """Total size in bytes of the given files; a directory counts every file under it.

    Pass every file a deployable artifact consists of (e.g. `model.onnx` and its `model.onnx.data`
    when the weights are external). A missing path raises FileNotFoundError.
    """
    total = 0
    for p in map(Path, paths):
        if p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        elif p.exists():
            total += p.stat().st_size
        else:
            raise FileNotFoundError(f"no file at {p}: cannot count its bytes")
    return total
