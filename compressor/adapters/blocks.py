"""Repeated shape-preserving blocks: finding them in an eager module and removing them.

A block is a module that (1) is an element of a `ModuleList` / `Sequential` (transformer layers,
residual stages) or one of at least two such siblings held as named attributes of one parent
(`self.block1`, `self.block2`, ...), (2) runs once per forward, (3) returns a tensor of its input's
shape, (4) adds its input to what it computes (`x + f(x)`, found on the autograd graph,
`compressor.analysis`), so that dropping it leaves the identity: what DARIO's block gate (eq. 6.1)
interpolates towards, and (5) can be removed: the model still runs, with the same output shape, when it
is replaced as `remove_blocks` replaces it (tried once per block).

Nesting: a block inside another block is not reported when the outer one has a skip connection of its
own (the outer one is the block). When the outer one's only skip connections are those of the blocks it
runs (a stage that is a list of residual layers, as Swin's last stage), the inner ones are the blocks:
they are finer, and the stage keeps what its parent reads (its downsample).

Removal replaces the block by `SkipBlock` (the identity, keeping the output structure: a tensor or a
tuple whose first element is the hidden state, and the block's plain attributes, which the parent's
forward may read: Swin's encoder reads `stage.downsample`). `nn.TransformerEncoder` reads attributes of
`layers[0]` in its forward, so there removed layers are deleted from the list instead and `num_layers`
updated. Both are replayable from the recorded paths (see `remove_blocks`).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn as nn

from compressor.analysis import ForwardRecord, first_tensor, is_residual
from compressor.edits import set_submodule

log = logging.getLogger(__name__)


@dataclass
class BlockInfo:
    name: str  # dotted module path
    tuple_len: int  # 0: the block returns a tensor; n: a tuple of n (hidden state first)
    params: int


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, (tuple, list)) and all(_plain(v) for v in value)


def plain_attributes(module: nn.Module) -> dict[str, Any]:
    """The module's public attributes that are plain data (None, numbers, strings, tuples of them): what a
    parent may read from a child it runs (Swin: `stage.downsample is not None`). Deterministic for a
    module rebuilt from the same recipe, so a replayed removal gets the same ones."""
    return {k: v for k, v in vars(module).items() if not k.startswith("_") and k != "training" and _plain(v)}


class SkipBlock(nn.Module):
    """A removed block: returns its first tensor argument (the identity), in the block's output structure,
    and keeps the removed block's plain attributes (`plain_attributes`)."""

    def __init__(self, tuple_len: int = 0, attributes: dict[str, Any] | None = None) -> None:
        super().__init__()
        for name, value in (attributes or {}).items():
            setattr(self, name, value)
        self.tuple_len = tuple_len

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        x = next(v for v in (*args, *kwargs.values()) if torch.is_tensor(v))
        return x if self.tuple_len == 0 else (x, *([None] * (self.tuple_len - 1)))

    def extra_repr(self) -> str:
        return f"tuple_len={self.tuple_len}" if self.tuple_len else ""


def _listed(root: nn.Module) -> set[str]:
    """Paths of the elements of every ModuleList / Sequential."""
    return {f"{c}.{k}" if c else k for c, m in root.named_modules() if isinstance(m, (nn.ModuleList, nn.Sequential))
            for k in m._modules}


def _candidates(root: nn.Module, rec: ForwardRecord) -> list[str]:
    """Residual, shape-preserving modules run once: list elements, and named siblings when a parent has two
    or more of them (one alone is a wrapper, not a repeated block)."""
    def kept_shape(n: str) -> bool:
        shape_in, shape_out = rec.shapes.get(n, (None, None))
        return rec.calls.get(n) == 1 and shape_in is not None and shape_in == shape_out

    def residual(n: str) -> bool:
        return is_residual(rec.inputs.get(n), rec.outputs.get(n))

    listed = _listed(root)
    found = [n for n in rec.calls if n in listed and kept_shape(n) and residual(n)]
    siblings: dict[str, list[str]] = {}
    for n in rec.calls:
        if n and n not in listed and kept_shape(n):
            siblings.setdefault(n.rpartition(".")[0], []).append(n)
    for names in siblings.values():
        if len(names) >= 2:
            residuals = [n for n in names if residual(n)]
            found += residuals if len(residuals) >= 2 else []
    return found


def _outermost(found: list[str], rec: ForwardRecord) -> list[str]:
    """The blocks among nested candidates (see the module docstring)."""
    def chain(outer: str) -> bool:  # its only skip connections are those of the candidates inside it
        inner = sorted((n for n in found if n.startswith(outer + ".")), key=lambda n: -n.count("."))
        if not inner:
            return False
        through = {rec.outputs[n]: rec.inputs[n] for n in inner if rec.outputs.get(n) is not None}
        return not is_residual(rec.inputs.get(outer), rec.outputs.get(outer), through)

    chains = {n for n in found if chain(n)}
    blocks = [o for o in found if o not in chains]
    return [n for n in blocks if not any(n.startswith(o + ".") for o in blocks)]


def find_blocks(root: nn.Module, example: tuple[torch.Tensor, ...]) -> list[BlockInfo]:
    """The blocks of `root` (see the module docstring), in execution order."""
    rec = ForwardRecord(root, example)
    names = _outermost(_candidates(root, rec), rec)
    starts = {n: i for i, n in enumerate(call_order(root, example))}
    names.sort(key=lambda n: starts.get(n, 0))
    outputs = _outputs(root, names, example)
    shape = output_shape(root, example)
    infos = []
    for name in names:
        out = outputs[name]
        info = BlockInfo(name, len(out) if isinstance(out, tuple) else 0,
                         sum(p.numel() for p in root.get_submodule(name).parameters()))
        why = removal_error(root, [{"name": name, "tuple_len": info.tuple_len}], example, shape)
        if why is None:
            infos.append(info)
        else:
            log.info("%s is residual but not a removable block: without it %s", name, why)
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


def _outputs(root: nn.Module, names: list[str], example: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    """What each of `names` returns (first call), from one forward."""
    seen: dict[str, Any] = {}
    handles = [root.get_submodule(n).register_forward_hook(lambda _m, _i, o, n=n: seen.setdefault(n, o))
               for n in names]
    try:
        with torch.no_grad():
            root.eval()(*example)
    finally:
        for h in handles:
            h.remove()
    return seen


def run_error(root: nn.Module, example: tuple[torch.Tensor, ...], shape: tuple[int, ...] | None) -> str | None:
    """Why `root` does not run on `example` (None: it runs and its first output has `shape`, when given),
    naming the innermost module whose forward raised."""
    stack: list[str] = []  # the modules whose forward is running

    def enter(name: str) -> Any:
        return lambda *_a: stack.append(name)

    def leave(_m: nn.Module, _i: Any, _o: Any) -> None:
        stack.pop()

    handles = []
    for n, m in root.named_modules():
        handles += [m.register_forward_pre_hook(enter(n)), m.register_forward_hook(leave)]
    was_training = root.training
    try:
        with torch.no_grad():
            out = first_tensor(root.eval()(*example))
    except Exception as exc:  # any failure of the user's forward is the answer, not an error here
        where = next((n for n in reversed(stack) if n), "")
        owner = f"{where} ({type(root.get_submodule(where)).__name__})" if where else "the model's own forward"
        message = str(exc).splitlines()[0] if str(exc) else ""
        return f"{owner} fails with {type(exc).__name__}: {message}"
    finally:
        for h in handles:
            h.remove()
        root.train(was_training)
    if out is None or (shape is not None and tuple(out.shape) != tuple(shape)):
        return f"the output shape is {None if out is None else tuple(out.shape)} instead of {tuple(shape)}"
    return None


def output_shape(root: nn.Module, example: tuple[torch.Tensor, ...]) -> tuple[int, ...] | None:
    with torch.no_grad():
        out = first_tensor(root.eval()(*example))
    return None if out is None else tuple(out.shape)


def removal_error(root: nn.Module, blocks: list[dict[str, Any]], example: tuple[torch.Tensor, ...],
                  shape: tuple[int, ...] | None = None) -> str | None:
    """Why `root` with `blocks` removed does not run or changes its output shape (`shape`, or the one it
    has now) (None: it works); `root` is left as it was."""
    shape = output_shape(root, example) if shape is None else shape
    try:
        with _removed(root, blocks):
            return run_error(root, example, shape)
    except ValueError as exc:
        return str(exc)


@contextlib.contextmanager
def _removed(root: nn.Module, blocks: list[dict[str, Any]]) -> Iterator[None]:
    """`root` with `blocks` removed (by `remove_blocks`) inside the context, restored after it."""
    saved: list[tuple[nn.Module, dict[str, Any], dict[str, Any]]] = []
    for b in blocks:
        parent = root.get_submodule(b["name"].rpartition(".")[0])
        saved.append((parent, dict(parent._modules), {}))
        owner_name = b["name"].rpartition(".")[0].rpartition(".")[0]
        owner = root.get_submodule(owner_name) if "." in b["name"] else None
        if isinstance(owner, nn.TransformerEncoder):
            saved.append((owner, dict(owner._modules), {"num_layers": owner.num_layers}))
    try:
        remove_blocks(root, blocks)
        yield
    finally:
        for module, children, attrs in reversed(saved):
            module._modules.clear()
            module._modules.update(children)
            for k, v in attrs.items():
                setattr(module, k, v)


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
            attributes = plain_attributes(root.get_submodule(b["name"]))
            set_submodule(root, b["name"], SkipBlock(int(b.get("tuple_len", 0)), attributes))
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
