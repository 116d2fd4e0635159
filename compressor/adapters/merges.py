"""Channel merges: layers that read k copies of one feature's C channels, concatenated (copy j holds
channel c at column j·C + c).

- Swin's patch merging: the 2×2 neighbours of a (B, H, W, C) map concatenated along channels →
  LayerNorm(4C) → Linear(4C → 2C), all inside one module whose input is the C-channel map.
- DINOv2's classifier: Linear(2C → n) on the CLS token concatenated with the mean of the patch tokens,
  the concatenation written in the model's own forward.

torch-pruning 1.6 traces such a concatenation on the autograd graph and maps its indices wrongly: it reads
a slice along H of a channels-last map as a slice of channels (Swin: LayerNorm(4C) loses the wrong count),
and it switches the index mapping of a concatenation off when a 3-D parameter such as a CLS token lies
upstream (DINOv2: one copy of the classifier's input is pruned, the other is not). The fix goes through
its documented `customized_pruners`: each merge becomes one torch-pruning layer with C input channels,
whose pruner removes input channel c from all k copies (`_MergePruner`). When the gather happens inside
a module whose input is the C-channel feature (Swin), that module is the layer, and while torch-pruning
traces it its output depends on its input through one op, so the gather inside is not traced at all;
otherwise (DINOv2) the consuming Linear is the layer, and `MergePruning.check` confirms on the built
graph that channel c of the feature reaches it as index c.

Found on module structure with a probe, never a class name: a Linear or LayerNorm whose input is a
concatenation of k pieces (k ≥ 2), k·C wide, fed through non-module ops only by one module with C ≥ 2
output channels (last dimension; the producer); adding 1 to channel c of the producer's output must change
exactly the columns {c + j·C} of its input.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch_pruning as tp

from compressor.analysis import ForwardRecord, first_tensor, walk
from compressor.adapters.blocks import call_order

_fn = tp.pruner.function


@dataclass
class Merge:
    path: str  # the module torch-pruning treats as one layer (the enclosing module, or the Linear itself)
    producer: str  # the module whose C channels are copied
    copies: int  # k
    linear: str
    pre: list[str] = field(default_factory=list)  # LayerNorms over the k·C concatenation, before the Linear
    post: list[str] = field(default_factory=list)  # LayerNorms over the Linear's outputs
    opaque: bool = False  # path encloses the gather: traced as one op


class MergeError(ValueError):
    """A concatenation of copied channels that no merge layout covers (the message names it)."""


def _concatenated(start: Any) -> int:
    """How many tensors the concatenation that makes `start` (after views and copies) joins; 0 if none."""
    fn = start
    while fn is not None and type(fn).__name__.rstrip("0123456789") in _VIEWS:
        fn = fn.next_functions[0][0] if fn.next_functions else None
    return len(fn.next_functions) if fn is not None and type(fn).__name__.startswith("CatBackward") else 0


_VIEWS = {"ViewBackward", "UnsafeViewBackward", "ReshapeAliasBackward", "CloneBackward"}


def _perturbed(channel: int) -> Any:
    def hook(_m: nn.Module, _i: Any, out: Any) -> Any:
        first = out[0] if isinstance(out, tuple) else out
        bumped = first.clone()
        bumped[..., channel] += 1.0
        return (bumped, *out[1:]) if isinstance(out, tuple) else bumped
    return hook


def _copies_channels(root: nn.Module, example: tuple[torch.Tensor, ...], producer: nn.Module, layer: nn.Module,
                     channels: int, copies: int) -> bool:
    """The probe of the module docstring, at the first, middle and last channel."""
    seen: list[torch.Tensor] = []
    grab = layer.register_forward_pre_hook(lambda _m, args: seen.append(first_tensor(args).detach().clone()))
    try:
        with torch.no_grad():
            root.eval()(*example)
            for c in sorted({0, channels // 2, channels - 1}):
                bump = producer.register_forward_hook(_perturbed(c))
                try:
                    root(*example)
                finally:
                    bump.remove()
                change = (seen[-1] - seen[0]).abs().reshape(-1, channels * copies).amax(0)
                changed = set((change > 1e-4).nonzero().flatten().tolist())
                if changed != {c + j * channels for j in range(copies)}:
                    return False
    finally:
        grab.remove()
    return True


def find_merges(root: nn.Module, example: tuple[torch.Tensor, ...]) -> list[Merge]:
    """The merges of `root` (see the module docstring). Raises MergeError for a concatenation of copied
    channels read by something other than a Linear (optionally between LayerNorms) that a module encloses
    with the gather, or a bare Linear."""
    rec = ForwardRecord(root, example)
    modules = dict(root.named_modules())
    by_output: dict[Any, str] = {}
    for name in rec.calls:  # the innermost module producing each tensor (hooks fire inner first)
        if rec.outputs.get(name) is not None:
            by_output.setdefault(rec.outputs[name], name)
    merges: list[Merge] = []
    order: list[str] | None = None
    for name, layer in modules.items():
        if not isinstance(layer, (nn.Linear, nn.LayerNorm)) or rec.calls.get(name) != 1 or \
                any(m.path == name or name.startswith(m.path + ".") for m in merges):
            continue
        width = (rec.shapes.get(name, (None, None))[0] or (0,))[-1]
        producers = walk([rec.inputs.get(name)], by_output)  # the modules feeding it through plain ops
        if len(producers) != 1:
            continue
        producer = next(iter(producers))
        producer_fn = rec.outputs[producer]
        channels = (rec.shapes.get(producer, (None, None))[1] or (0,))[-1]
        if rec.calls.get(producer) != 1 or channels < 2 or width % channels or width // channels < 2:
            continue
        copies = width // channels
        # a concatenation of k pieces, not a flatten (whose last dim is a spatial one, not channels)
        if _concatenated(rec.inputs.get(name)) != copies or \
                not _copies_channels(root, example, modules[producer], layer, channels, copies):
            continue
        enclosing = [p for p in _ancestors(name) if rec.inputs.get(p) is producer_fn and rec.calls.get(p) == 1]
        what = f"{name} reads {copies} concatenated copies of the {channels} channels of {producer}"
        if enclosing:
            order = call_order(root, example) if order is None else order
            merges.append(_enclosed(root, enclosing[0], rec, order, producer, copies, channels, what))
        elif isinstance(layer, nn.Linear):
            merges.append(Merge(name, producer, copies, name))
        else:
            raise MergeError(f"{what} outside any module that also holds the copying; only a Linear can read "
                             "them there")
    return merges


def _ancestors(path: str) -> list[str]:
    """The proper ancestors of a module path, innermost first ('' is the root)."""
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, -1, -1)]


def _enclosed(root: nn.Module, path: str, rec: ForwardRecord, order: list[str], producer: str, copies: int,
              channels: int, what: str) -> Merge:
    """The merge whose gather happens inside module `path`: its parametrized layers must be LayerNorm(k·C)*
    → Linear(k·C → D) → LayerNorm(D)*, and its output the last one's."""
    module = root.get_submodule(path)
    prefix = f"{path}." if path else ""
    inner = [n for n in order if n.startswith(prefix) and n != path
             and any(True for _ in root.get_submodule(n).parameters(recurse=False))]
    kinds = [root.get_submodule(n) for n in inner]
    linears = [i for i, m in enumerate(kinds) if isinstance(m, nn.Linear)]
    ok = len(linears) == 1 and not any(True for _ in module.parameters(recurse=False))
    if ok:
        i = linears[0]
        linear = kinds[i]
        ok = (linear.in_features == copies * channels
              and all(isinstance(m, nn.LayerNorm) and m.normalized_shape == (copies * channels,) for m in kinds[:i])
              and all(isinstance(m, nn.LayerNorm) and m.normalized_shape == (linear.out_features,)
                      for m in kinds[i + 1:])
              and rec.outputs.get(path) is rec.outputs.get(inner[-1]))
    if not ok:
        layers = ", ".join(f"{n} ({type(m).__name__})" for n, m in zip(inner, kinds)) or "none"
        raise MergeError(f"{what} inside {path or 'the model'}, whose layers are not LayerNorm → Linear → "
                         f"LayerNorm (found: {layers})")
    i = linears[0]
    return Merge(path, producer, copies, inner[i], inner[:i], inner[i + 1:], opaque=True)


class _MergePruner(tp.pruner.function.BasePruningFunc):
    """torch-pruning's pruner of one merge: C input channels, each removed from all k copies."""

    def __init__(self, merge: Merge, root: nn.Module) -> None:
        super().__init__()
        self.copies = merge.copies
        self.linear = root.get_submodule(merge.linear)
        self.pre = [root.get_submodule(p) for p in merge.pre]
        self.post = [root.get_submodule(p) for p in merge.post]
        self.path = merge.path

    def get_in_channels(self, layer: nn.Module) -> int:
        return self.linear.in_features // self.copies

    def get_out_channels(self, layer: nn.Module) -> int:
        return self.linear.out_features

    def prune_in_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
        channels = self.get_in_channels(layer)
        if any(not 0 <= int(i) < channels for i in idxs):
            raise ValueError(f"{self.path}: torch-pruning asked to remove input channels {sorted(idxs)} of {channels}")
        columns = sorted(int(i) + j * channels for j in range(self.copies) for i in idxs)
        for norm in self.pre:
            _fn.prune_layernorm_in_channels(norm, columns)
        _fn.prune_linear_in_channels(self.linear, columns)
        return layer

    def prune_out_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
        _fn.prune_linear_out_channels(self.linear, idxs)
        for norm in self.post:
            _fn.prune_layernorm_out_channels(norm, idxs)
        return layer


def _opaque_forward(owner: "MergePruning", cls: type) -> Any:
    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if not owner.tracing:
            return cls.forward(self, *args, **kwargs)
        x = next(v for v in (*args, *kwargs.values()) if torch.is_tensor(v))
        with torch.no_grad():
            out = cls.forward(self, *args, **kwargs)
        # the output depends on the input through one reduction (an element-wise op to torch-pruning):
        # the merge's input channels are its input's, whatever the gather inside does
        return out + x.sum() * 0.0
    return forward


class MergePruning:
    """Inside the context, each merge's module is an instance of a subclass of its own class registered in
    `customized_pruners` (torch-pruning 1.6 looks customized pruners up by class); on exit every module has
    its class back. `tracing()` marks the span in which torch-pruning traces the model."""

    def __init__(self, root: nn.Module, merges: list[Merge]) -> None:
        self.root, self.merges = root, merges
        self.customized_pruners: dict[type, _MergePruner] = {}
        self.tracing = False
        self._classes: list[tuple[nn.Module, type]] = []

    def __enter__(self) -> "MergePruning":
        for merge in self.merges:
            module = self.root.get_submodule(merge.path)
            cls = type(module)
            body = {"forward": _opaque_forward(self, cls)} if merge.opaque else {}
            sub = type(cls.__name__, (cls,), {**body, "__module__": cls.__module__})
            self.customized_pruners[sub] = _MergePruner(merge, self.root)
            self._classes.append((module, cls))
            module.__class__ = sub
        return self

    def __exit__(self, *exc: Any) -> None:
        for module, cls in self._classes:
            module.__class__ = cls
        self._classes.clear()

    @contextlib.contextmanager
    def traced(self) -> Iterator[None]:
        self.tracing = True
        try:
            yield
        finally:
            self.tracing = False

    def check(self, graph: tp.DependencyGraph) -> None:
        """For a merge whose gather torch-pruning traces (no enclosing module), input channel 0 of the merge
        must reach its producer as channel 0; MergeError otherwise."""
        for merge, pruner in zip(self.merges, self.customized_pruners.values()):
            if merge.opaque:
                continue
            producer = self.root.get_submodule(merge.producer)
            group = graph.get_pruning_group(self.root.get_submodule(merge.path), pruner.prune_in_channels, [0])
            reached = [list(idxs) for dep, idxs in group if dep.target.module is producer]
            if reached != [[0]]:
                raise MergeError(f"{merge.path} reads {merge.copies} concatenated copies of the channels of "
                                 f"{merge.producer}, and torch-pruning maps its input channel 0 to {reached or 'none'} "
                                 "of them")
