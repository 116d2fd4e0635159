"""Graph views of an eager module, derived on demand from one forward pass.

The IR never traces its module, so analyses that need dataflow read it from autograd: forward hooks
record which module produced which tensor (by the tensor's `grad_fn`, the node autograd made for it),
and a walk over `grad_fn.next_functions` follows the data backwards. This works on any module that can
be trained, whatever Python its forward runs (data-dependent branches, `int()` of sizes, HF output
classes); Torch-Pruning builds its dependency graph the same way.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn as nn


def first_tensor(value: Any) -> torch.Tensor | None:
    """The first tensor in `value` (a tensor, nested tuples / lists / dicts, or an output object with
    `logits` or `last_hidden_state`), or None."""
    if torch.is_tensor(value):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            t = first_tensor(v)
            if t is not None:
                return t
    if isinstance(value, dict):
        for v in value.values():
            t = first_tensor(v)
            if t is not None:
                return t
    for attr in ("logits", "last_hidden_state"):
        if hasattr(value, attr) and torch.is_tensor(getattr(value, attr)):
            return getattr(value, attr)
    return None


def walk(start: Iterable[Any], stop: dict[Any, str]) -> set[str]:
    """Names in `stop` reached from the grad_fns `start`, without walking past a stop."""
    found: set[str] = set()
    seen: set[Any] = set()
    stack = [f for f in start if f is not None]
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        if fn in stop:
            found.add(stop[fn])
            continue
        stack.extend(nxt for nxt, _ in fn.next_functions if nxt is not None)
    return found


class ForwardRecord:
    """One forward pass of `module` on `example` with grad enabled, remembering for every module of
    `types` (all modules when None) the grad_fn of its first tensor input and output."""

    def __init__(self, module: nn.Module, example: tuple[torch.Tensor, ...],
                 types: tuple[type, ...] | None = None) -> None:
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        self.shapes: dict[str, tuple[tuple[int, ...] | None, tuple[int, ...] | None]] = {}
        self.calls: dict[str, int] = {}
        handles = []
        for name, m in module.named_modules():
            if types is None or isinstance(m, types):
                handles.append(m.register_forward_hook(self._hook(name), with_kwargs=True))
        was_training = module.training
        module.eval()
        try:
            # x·1 gives the input a grad_fn of its own, so the first module's input can be told apart
            xs = tuple(x.detach().float().requires_grad_(True) * 1.0 if x.is_floating_point() else x for x in example)
            with torch.enable_grad():
                self.output = first_tensor(module(*xs))
        finally:
            for h in handles:
                h.remove()
            module.train(was_training)

    def _hook(self, name: str) -> Any:
        def hook(_m: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            self.calls[name] = self.calls.get(name, 0) + 1
            inp = first_tensor(args) if args else first_tensor(kwargs)
            o = first_tensor(out)
            self.inputs[name] = inp.grad_fn if inp is not None else None
            self.outputs[name] = o.grad_fn if o is not None else None
            self.shapes[name] = (tuple(inp.shape) if inp is not None else None,
                                 tuple(o.shape) if o is not None else None)
        return hook


def output_layers(module: nn.Module, example: tuple[torch.Tensor, ...], types: tuple[type, ...]) -> set[str]:
    """The modules of `types` whose outputs reach the model output without passing through another such
    module: the layers that produce the logits."""
    rec = ForwardRecord(module, example, types)
    stop = {fn: name for name, fn in rec.outputs.items() if fn is not None}
    return walk([rec.output.grad_fn] if rec.output is not None else [], stop)


def penultimate_layers(module: nn.Module, example: tuple[torch.Tensor, ...], types: tuple[type, ...]) -> set[str]:
    """The modules of `types` that feed an output layer (its nearest producers of that kind)."""
    rec = ForwardRecord(module, example, types)
    stop = {fn: name for name, fn in rec.outputs.items() if fn is not None}
    outs = walk([rec.output.grad_fn] if rec.output is not None else [], stop)
    return walk([rec.inputs.get(n) for n in outs], stop) - outs


def is_residual(grad_in: Any, grad_out: Any, through: dict[Any, Any] | None = None) -> bool:
    """Whether the tensor made by `grad_out` adds the tensor made by `grad_in` directly (`x + f(x)`):
    an add node between them with `grad_in` as one operand. `through` maps the output grad_fn of a nested
    module to its input's: the walk steps over that module as one op, so a skip connection inside it
    does not count."""
    if grad_in is None or grad_out is None:
        return False
    seen: set[Any] = set()
    stack = [grad_out]
    while stack:
        fn = stack.pop()
        if fn in seen or fn is grad_in:
            continue
        seen.add(fn)
        if through and fn in through:
            stack.append(through[fn])
            continue
        nexts = [nxt for nxt, _ in fn.next_functions if nxt is not None]
        if type(fn).__name__.startswith("AddBackward") and any(n is grad_in for n in nexts):
            return True
        stack.extend(nexts)
    return False
