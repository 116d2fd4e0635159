"""fp16: the IR's weights and precision become half precision, optionally with fp32 islands.

The torch-side module is cast to float16 (weights and buffers), so the IR's serialized size halves
and torch evaluation runs in fp16. Modules named in `keep_fp32` (glob patterns), and with
`keep_overflow` every module whose weights would overflow fp16, stay in fp32: each becomes an
`Fp32Island` that runs its module in fp32 and casts the result back to the dtype it was given.
Exporters honour `ir.precision` and `ir.meta["fp32_modules"]`: the ONNX exporter writes an fp16
graph with fp32 inputs and outputs and keeps those modules' nodes in fp32.
"""
from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass

import torch
import torch.nn as nn

from compressor.context import PassContext
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
    """Runs `inner` in fp32 inside an fp16 model; a no-op wrapper when everything is fp32."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.float()).to(x.dtype)


def _leaf_names(module: nn.Module) -> list[str]:
    return [n for n, m in module.named_modules() if n and not list(m.children())]


def _overflowing(module: nn.Module) -> list[str]:
    out = []
    for name, m in module.named_modules():
        own = list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))
        if any(t.is_floating_point() and t.numel() and t.abs().max().item() > FP16_MAX for t in own):
            out.append(name)
    return out


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


@register_pass("fp16")
class FP16(Pass):
    Options = FP16Options

    def requires(self, ir: ModelIR, ctx: PassContext) -> None:
        if ir.precision == "fp16":
            raise PassError("fp16: the IR is already fp16; remove the second fp16 from the pipeline")

    def run(self, ir: ModelIR, ctx: PassContext) -> PassResult:
        o = self.options
        before = ir.state_bytes()
        names = [n for n, _ in ir.module.named_modules() if n]
        unknown = [p for p in o.keep_fp32 if not any(fnmatch.fnmatch(n, p) for n in names)]
        if unknown:
            raise PassError(f"fp16: keep_fp32 pattern(s) {unknown} match no module; module names look like "
                            f"{', '.join(_leaf_names(ir.module)[:5])} (see compress inspect)")
        overflow = _overflowing(ir.module)
        if overflow and not o.keep_overflow:
            raise PassError(f"fp16: weights overflow half precision in {overflow[:3]}; keep them in fp32 with "
                            f"keep_overflow: true (or keep_fp32: [...]), or keep this model in fp32")
        # Islands wrap the modules the graph calls: a kept container (e.g. a Sequential flattened
        # by fx) keeps every called module inside it.
        patterns = list(o.keep_fp32) + list(overflow)
        keep = []
        for node in ir.module.graph.nodes:
            if node.op != "call_module":
                continue
            target = str(node.target)
            scopes = [".".join(target.split(".")[:i]) for i in range(1, target.count(".") + 2)]
            if any(fnmatch.fnmatch(sc, p) for sc in scopes for p in patterns) and target not in keep:
                keep.append(target)
        # copy the kept modules before the cast: half() would turn overflowing weights into inf
        islands = {n: copy.deepcopy(ir.module.get_submodule(n)) for n in keep}
        ir.module.half()
        for name, sub in islands.items():
            _replace(ir.module, name, Fp32Island(sub))
        if keep:
            ir.module.recompile()
        meta = {**ir.meta, "fp32_modules": keep} if keep else ir.meta
        ir = ir.replace(precision="fp16", meta=meta)
        after = ir.state_bytes()
        return PassResult(ir, changed=True, stats={"bytes_before": before, "bytes_after": after, "fp32_modules": keep})
