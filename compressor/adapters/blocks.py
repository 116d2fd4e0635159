"""Repeated shape-preserving blocks: finding them in an eager module and removing them.

A block is a module that (1) is an element of a `ModuleList` / `Sequential` (transformer layers,
residual stages), (2) runs once per forward, (3) returns a tensor of its input's shape, and (4) adds its
input to what it computes (`x + f(x)`, found on the autograd graph, `compressor.analysis`), so that
dropping it leaves the identity: what DARIO's block gate (eq. 6.1) interpolates towards. Blocks nested
in another block are not reported (the outer one is the block).

Removal replaces the block by `SkipBlock` (the identity, keeping the output structure: a tensor or a
tuple whose first element is the hidden state). `nn.TransformerEncoder` reads attributes of
`layers[0]` in its forward, so there removed layers are deleted from the list instead and
`num_layers` updated. Both are replayable from the recorded paths (see `remove_blocks`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from compressor.analysis import ForwardRecord, is_residual
from compressor.edits import set_submodule


@dataclass
class BlockInfo:
    name: str  # dotted module path
    tuple_len: int  # 0: the block returns a tensor; n: a tuple of n (hidden state first)
    params: int


class SkipBlock(nn.Module):
    """A removed block: returns its first tensor argument (the identity), in the block's output structure."""

    def __init__(self, tuple_len: int = 0) -> None:
        super().__init__()
        self.tuple_len = tuple_len

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        x = next(v for v in (*args, *kwargs.values()) if torch.is_tensor(v))
        return x if self.tuple_len == 0 else (x, *([None] * (self.tuple_len - 1)))

    def extra_repr(self) -> str:
        return f"tuple_len={self.tuple_len}" if self.tuple_len else ""


def _containers(root: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in root.named_modules() if isinstance(m, (nn.ModuleList, nn.Sequential))}


def find_blocks(root: nn.Module, example: tuple[torch.Tensor, ...]) -> list[BlockInfo]:
    """The blocks of `root` (see the module docstring), in execution order."""
    containers = _containers(root)
    candidates = {f"{c}.{k}" if c else k for c, m in containers.items() for k in m._modules}
    rec = ForwardRecord(root, example)
    found: list[str] = []
    for name in rec.calls:
        if name not in candidates or rec.calls.get(name) != 1:
            continue
        shape_in, shape_out = rec.shapes.get(name, (None, None))
        if shape_in is None or shape_in != shape_out:
            continue
        if is_residual(rec.inputs.get(name), rec.outputs.get(name)):
            found.append(name)
    outer = [n for n in found if not any(n.startswith(o + ".") for o in found if o != n)]
    starts = {n: i for i, n in enumerate(call_order(root, example))}
    outer.sort(key=lambda n: starts.get(n, 0))
    infos = []
    for name in outer:
        out = _block_output(root, name, example)
        infos.append(BlockInfo(name, len(out) if isinstance(out, tuple) else 0,
                               sum(p.numel() for p in root.get_submodule(name).parameters())))
    return infos


def call_order(root: nn.Module, example: tuple[torch.Tensor, ...]) -> list[str]:
    """Module paths in the order their forward starts (first call)."""
    order: list[str] = []
    handles = [m.register_forward_pre_hook(lambda _m, _a, n=n: order.append(n) if n not in order else None)
               for n, m in root.named_modules()]
    try:
        with torch.no_grad():
            root.eval()(*example)
    finally:
        for h in handles:
            h.remove()
    return order


def _block_output(root: nn.Module, name: str, example: tuple[torch.Tensor, ...]) -> Any:
    seen: list[Any] = []
    h = root.get_submodule(name).register_forward_hook(lambda _m, _i, o: seen.append(o))
    try:
        with torch.no_grad():
            root.eval()(*example)
    finally:
        h.remove()
    return seen[0]


def remove_blocks(root: nn.Module, blocks: list[dict[str, Any]]) -> nn.Module:
    """Remove the blocks `[{"name": path, "tuple_len": n}, ...]` from `root` in place (see the module
    docstring); the recorded form of a DARIO conversion, replayed as is on a fresh module."""
    deletions: dict[str, list[int]] = {}
    for b in blocks:
        parent_name, _, idx = b["name"].rpartition(".")
        owner_name = parent_name.rpartition(".")[0]
        owner = root.get_submodule(owner_name) if parent_name else None
        if isinstance(owner, nn.TransformerEncoder) and idx.isdigit():
            deletions.setdefault(parent_name, []).append(int(idx))
        else:
            set_submodule(root, b["name"], SkipBlock(int(b.get("tuple_len", 0))))
    for parent_name, idxs in deletions.items():
        layers = root.get_submodule(parent_name)
        if len(set(idxs)) >= len(layers):
            raise ValueError(f"cannot remove every layer of the nn.TransformerEncoder at '{parent_name}'; keep one "
                             "(min_blocks)")
        for i in sorted(idxs, reverse=True):
            del layers[i]
        owner = root.get_submodule(parent_name.rpartition(".")[0])
        owner.num_layers = len(layers)
    return root
