"""fp16: the IR's weights and precision become half precision, optionally with fp32 islands.

The torch-side module is cast to float16 (weights and buffers), so the IR's serialized size halves
and torch evaluation runs in fp16. Modules named in `keep_fp32` (glob patterns), and with
`keep_overflow` every module whose weights would overflow fp16, stay in fp32: each becomes an
`Fp32Island` that runs its module in fp32 and casts the result back to the dtype it was given.
The fp16 precision (`compressor/precisions/fp16.py`) reads `ir.meta["fp32_modules"]`: its ONNX lowering
writes an fp16 graph with fp32 inputs and outputs and keeps those modules' nodes in fp32.
"""
from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from compressor.context import PassContext
from compressor.edits import register_edit, set_submodule, unmatched_patterns
from compressor.errors import PassError
from compressor.ir import ModelIR
from compressor.options import option
from compressor.passes_base import Pass, PassResult
from compressor.registry import register_pass

FP16_MAX = float(torch.finfo(torch.float16).max)


@dataclass(frozen=True)
class FP16Options:
    keep_fp32: list[str] = option([], "module names (glob patterns) kept in fp32, e.g. 'head' or 'dec1.*'")
    keep_overflow: bool = option(False, "keep modules whose weights overflow fp16 in fp32 instead of failing")


class Fp32Island(nn.Module):
    """Runs `inner` in fp32 inside an fp16 model: floating tensor arguments are cast to fp32, floating
    tensor results back to the dtype of the first floating argument (any call signature, tuple outputs)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner.float()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        floats = [a for a in (*args, *kwargs.values()) if torch.is_tensor(a) and a.is_floating_point()]
        dtype = floats[0].dtype if floats else torch.float32
        up = lambda v: v.float() if torch.is_tensor(v) and v.is_floating_point() else v  # noqa: E731
        out = self.inner(*map(up, args), **{k: up(v) for k, v in kwargs.items()})
        return _cast_floats(out, dtype)


def _cast_floats(out: Any, dtype: torch.dtype) -> Any:
    if torch.is_tensor(out):
        return out.to(dtype) if out.is_floating_point() else out
    if isinstance(out, tuple) and not hasattr(out, "_fields"):
        return tuple(_cast_floats(o, dtype) for o in out)
    return out


def islands_for(module: nn.Module, patterns: list[str]) -> list[str]:
    """The outermost modules whose path matches a pattern (glob): each becomes one fp32 island."""
    keep: list[str] = []
    for name, _ in module.named_modules():
        if name and any(fnmatch.fnmatch(name, p) for p in patterns) and \
                not any(name.startswith(k + ".") for k in keep):
            keep.append(name)
    return keep


def to_fp16(module: nn.Module, islands: list[str]) -> nn.Module:
    """Cast `module` to fp16 in place, with `islands` (module paths) kept fp32 as Fp32Island wrappers.
    The pass and the replay of its recipe edit both go through here."""
    # copy the kept modules before the cast: half() would turn overflowing weights into inf
    kept = {n: copy.deepcopy(module.get_submodule(n)) for n in islands}
    module.half()
    for name, sub in kept.items():
        set_submodule(module, name, Fp32Island(sub))
    return module


@register_edit("fp16")
def _replay_fp16(module: nn.Module, edit: dict[str, Any], example: tuple) -> nn.Module:
    return to_fp16(module, list(edit.get("fp32_modules", [])))


def _leaf_names(module: nn.Module) -> list[str]:
    return [n for n, m in module.named_modules() if n and not list(m.children())]


def _overflowing(module: nn.Module) -> list[str]:
    out = []
    for name, m in module.named_modules():
        own = list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))
        if any(t.is_floating_point() and t.numel() and t.abs().max().item() > FP16_MAX for t in own):
            out.append(name)
    return out


@register_pass("fp16")
class FP16(Pass):
    Options = FP16Options

    accepts = ("fp32",)
    produces = "fp16"

    def run(self, ir: ModelIR, ctx: PassContext) -> PassResult:
        o = self.options
        before = ir.state_bytes()
        unknown = unmatched_patterns(ir.module, o.keep_fp32)
        if unknown:
            raise PassError(f"fp16: keep_fp32 pattern(s) {unknown} match no module; module names look like "
                            f"{', '.join(_leaf_names(ir.module)[:5])} (see compress inspect)")
        overflow = _overflowing(ir.module)
        if overflow and not o.keep_overflow:
            raise PassError(f"fp16: weights in {overflow[:3]} overflow half precision; keep them in fp32 with "
                            f"keep_overflow: true (or keep_fp32: [...]), or keep this model in fp32")
        keep = islands_for(ir.module, list(o.keep_fp32) + list(overflow))
        to_fp16(ir.module, keep)
        meta = {**ir.meta, "fp32_modules": keep} if keep else ir.meta
        ir = ir.replace(precision=self.produces, meta=meta).with_edit("fp16", fp32_modules=keep)
        after = ir.state_bytes()
        return PassResult(ir, changed=True, stats={"bytes_before": before, "bytes_after": after, "fp32_modules": keep})
