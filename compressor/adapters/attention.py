"""Attention adapters: one per layout, matched on module structure, never on a class name.

A pass (DARIO, prune-l1) asks an adapter for the head count, a per-head gate, in-place head
removal and torch-pruning's `num_heads` map, so no pass knows where a layout keeps its heads.
Head h's context is the h-th head_dim-wide slice of the output projection's input; scaling it by s
equals scaling head h's attention probabilities by s (DARIO eq. 6.2), and s = 0 equals removing h.
Per-head tables next to the projections (Swin's relative-position bias, (2W−1)² × heads) are sliced
with the heads they belong to (`AttentionAdapter.head_tensors`).

Layouts (read from the transformers 5.24 sources and timm's `timm.layers.Attention`):
- `fused-qkv`: `qkv` (dim → 3·H·d laid out (3, H, d)), `proj`, `num_heads`, `head_dim` (timm, the zoo ViT).
- `hf-qkv`: `q_proj`/`k_proj`/`v_proj`/`o_proj`, `num_attention_heads` or `num_heads`, `head_dim`
  (transformers 5 ViT, Segformer; also `HeadPrunedMultiheadAttention`).
- `hf-query-key-value`: a parent with `attention.{query,key,value}` and `output.dense`
  (transformers 5 MobileViT, transformers 4 ViT family).
- `torch-mha`: `nn.MultiheadAttention`; removing heads replaces it by `HeadPrunedMultiheadAttention`.
"""
from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

Scale = Callable[[], torch.Tensor]


class Handle:
    """Undoes one `gate_heads` call; `remove()` is idempotent."""

    def __init__(self, remove: Callable[[], None]) -> None:
        self._remove: Callable[[], None] | None = remove

    def remove(self) -> None:
        if self._remove is not None:
            self._remove()
            self._remove = None


def _checked_scale(scale: Scale, num_heads: int) -> torch.Tensor:
    s = scale()
    if s.dim() != 1 or s.numel() != num_heads:
        raise ValueError(f"the head gate returned shape {tuple(s.shape)}; expected ({num_heads},), one factor per head")
    return s


def _gate_linear_input(linear: nn.Module, heads: int, scale: Scale) -> Handle:
    """Scales head slices of `linear`'s input; x * 1.0 is bitwise x, so ones leave outputs unchanged."""

    def hook(_module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        s = _checked_scale(scale, heads)
        return (x * s.to(x.dtype).repeat_interleave(x.shape[-1] // s.numel()),) + tuple(args[1:])

    hook.is_head_gate = True  # lets remove_heads refuse a gated module
    return Handle(linear.register_forward_pre_hook(hook).remove)


def _refuse_gated(path: str, linear: nn.Module) -> None:
    if parametrize.is_parametrized(linear) or any(getattr(h, "is_head_gate", False)
                                                  for h in linear._forward_pre_hooks.values()):
        raise ValueError(f"remove_heads({path!r}): the attention is gated; call Handle.remove() on its gate first")


def _slice_linear(linear: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> None:
    weight = linear.weight.detach()
    if rows is not None:
        weight = weight[rows]
        if linear.bias is not None:
            linear.bias = nn.Parameter(linear.bias.detach()[rows].clone(), linear.bias.requires_grad)
        linear.out_features = len(rows)
    if cols is not None:
        weight = weight[:, cols]
        linear.in_features = len(cols)
    linear.weight = nn.Parameter(weight.clone(), linear.weight.requires_grad)


def _head_rows(keep: list[int], head_dim: int, num_heads: int, parts: int = 1) -> torch.Tensor:
    """Row indices of heads `keep` in a projection laid out (parts, num_heads, head_dim)."""
    per_part = torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in keep])
    return torch.cat([per_part + p * num_heads * head_dim for p in range(parts)])


def _check_keep(path: str, keep: list[int], num_heads: int) -> None:
    if not keep or any(not isinstance(h, numbers.Integral) or not 0 <= h < num_heads for h in keep) \
            or list(keep) != sorted(set(keep)):
        raise ValueError(f"remove_heads({path!r}): keep={list(keep)} must be a non-empty, strictly increasing "
                         f"list of head indices in 0..{num_heads - 1} (the module has {num_heads} heads)")


KEEP_HEADS = "@keep_heads"  # key of a sync's values: the heads kept, for slicing per-head tables on replay

# Modules whose weights are never per-head tables, even when a dimension equals the head count.
_LAYERS = (nn.Linear, nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def _slice_tensor(module: nn.Module, name: str, dim: int, keep: list[int]) -> None:
    """Keep indices `keep` of dimension `dim` of the parameter or buffer `name` (dotted, under `module`),
    in place of the old tensor (same state_dict position)."""
    owner_name, _, attr = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    old = getattr(owner, attr)
    new = old.detach().index_select(dim, torch.as_tensor(keep, device=old.device)).clone()
    if attr in owner._parameters:
        owner._parameters[attr] = nn.Parameter(new, old.requires_grad)
    else:
        owner._buffers[attr] = new


def _divide(what: str, width: int, parts: int) -> int:
    if parts <= 0 or width % parts:
        raise ValueError(f"{what}: projection width {width} is not divisible by {parts}; torch-pruning must "
                         "remove whole heads or shrink every head equally")
    return width // parts


class AttentionAdapter(ABC):
    """One attention layout. Stateless: every method takes the module it acts on.

    Subclasses describe where the layout keeps q/k/v, the output projection and the head
    attributes; removal and torch-pruning sync are shared, since every layout here stores heads as
    contiguous head_dim-wide row blocks of q/k/v (fused qkv: `_parts` = 3 such stacks).
    """

    name: str = ""
    _parts: int = 1

    @abstractmethod
    def matches(self, module: nn.Module) -> bool:
        ...

    @abstractmethod
    def num_heads(self, module: nn.Module) -> int:
        ...

    @abstractmethod
    def head_dim(self, module: nn.Module) -> int:
        ...

    @abstractmethod
    def output_projection(self, module: nn.Module) -> nn.Module:
        ...

    @abstractmethod
    def _qkv_layers(self, module: nn.Module) -> list[nn.Module]:
        ...

    @abstractmethod
    def _attributes(self, module: nn.Module, heads: int, head_dim: int) -> dict[str, Any]:
        """The attribute values (dotted paths relative to `module`) its forward needs for this shape."""

    def gate_heads(self, module: nn.Module, scale: Scale) -> Handle:
        """From now on head h's context is multiplied by scale()[h], read at every forward call."""
        return _gate_linear_input(self.output_projection(module), self.num_heads(module), scale)

    def remove_heads(self, root: nn.Module, path: str, keep: list[int]) -> None:
        """Keeps only heads `keep` of the attention at `path` in `root`; deterministic, so replayable."""
        module = root.get_submodule(path)
        _check_keep(path, keep, self.num_heads(module))
        _refuse_gated(path, self.output_projection(module))
        self._remove(root, path, module, [int(h) for h in keep])

    def head_tensors(self, module: nn.Module) -> list[tuple[str, int]]:
        """Per-head tables besides the projections, as (dotted name under `module`, head dimension):
        floating parameters and buffers of at least 2 dimensions, exactly one of them the head count, held
        by a module that is not a Linear / conv / norm layer (Swin's `relative_position_bias_table`). A table
        with the head count in several dimensions is a ValueError: its head axis cannot be told."""
        heads = self.num_heads(module)
        found = []
        for owner_name, owner in module.named_modules():
            if isinstance(owner, _LAYERS):
                continue
            tensors = [*owner._parameters.items(), *owner._buffers.items()]
            for attr, t in tensors:
                if t is None or not t.is_floating_point() or t.dim() < 2:
                    continue
                dims = [i for i, n in enumerate(t.shape) if n == heads]
                name = f"{owner_name}.{attr}" if owner_name else attr
                if len(dims) > 1:
                    raise ValueError(f"{name} has shape {tuple(t.shape)}: the head count {heads} appears in dimensions "
                                     f"{dims}, so which heads it holds cannot be told")
                if dims:
                    found.append((name, dims[0]))
        return found

    def kept_heads(self, module: nn.Module, rows: list[int]) -> list[int]:
        """The heads whose rows of the q projection (original indices, `_parts` stacks of heads × head_dim)
        are among `rows`: what torch-pruning's whole-head pruning kept."""
        d = self.head_dim(module)
        width = self.num_heads(module) * d
        return sorted({(int(r) % width) // d for r in rows})

    def pruning_num_heads(self, module: nn.Module) -> dict[nn.Module, int]:
        """torch-pruning's `num_heads` entries for this attention."""
        heads = self.num_heads(module)
        return {layer: heads for layer in self._qkv_layers(module)}

    def sync_after_pruning(self, module: nn.Module, num_heads: int | None = None,
                           keep_heads: list[int] | None = None) -> dict[str, Any]:
        """Sets head count/size from the projections torch-pruning shrank; returns {attr: value} for replay.

        `num_heads` is the new head count (torch-pruning's `pruner.num_heads[q_layer]`) after whole-head
        pruning; None keeps the count and recomputes the head size. `keep_heads` (which heads remain,
        `kept_heads`) is needed when the count changed and the attention has per-head tables
        (`head_tensors`, which torch-pruning must leave alone): they are sliced to it. The attention scale
        stays the one the model was trained with. Attribute names are relative to `module` and may be
        dotted (`attention.num_attention_heads`): replay them with `replay_sync`.
        """
        heads = self.num_heads(module) if num_heads is None else num_heads
        values = self._sync(module, heads)
        if heads != self.num_heads(module) and self.head_tensors(module):
            if keep_heads is None or len(keep_heads) != heads:
                raise ValueError(f"{self.name}: {heads} heads remain but keep_heads={keep_heads}; the per-head tables "
                                 f"{[n for n, _ in self.head_tensors(module)]} need the kept heads' indices")
            values[KEEP_HEADS] = [int(h) for h in keep_heads]
        self.replay_sync(module, values)
        return values

    def replay_sync(self, module: nn.Module, values: dict[str, Any]) -> None:
        """Sets attributes recorded from `sync_after_pruning` on a rebuilt, identically pruned module (and
        slices its per-head tables to the kept heads, while its head count is still the old one)."""
        if KEEP_HEADS in values:
            self._slice_head_tensors(module, list(values[KEEP_HEADS]))
        for attr, value in values.items():
            if attr == KEEP_HEADS:
                continue
            owner, _, name = attr.rpartition(".")
            setattr(module.get_submodule(owner), name, value)

    def _slice_head_tensors(self, module: nn.Module, keep: list[int]) -> None:
        for name, dim in self.head_tensors(module):
            _slice_tensor(module, name, dim, keep)

    def _remove(self, root: nn.Module, path: str, module: nn.Module, keep: list[int]) -> None:
        heads, d = self.num_heads(module), self.head_dim(module)
        self._slice_head_tensors(module, keep)
        for layer in self._qkv_layers(module):
            _slice_linear(layer, rows=_head_rows(keep, d, heads, self._parts))
        _slice_linear(self.output_projection(module), cols=_head_rows(keep, d, heads))
        self.replay_sync(module, self._attributes(module, len(keep), d))

    def _sync(self, module: nn.Module, heads: int) -> dict[str, Any]:
        layers = self._qkv_layers(module)
        d = _divide(f"{self.name}: q", layers[0].out_features, self._parts * heads)
        widths = [m.out_features // self._parts for m in layers] + [self.output_projection(module).in_features]
        if any(w != heads * d for w in widths):
            raise ValueError(f"{self.name}: q/k/v and output projection widths {widths} differ after pruning; "
                             f"expected {heads} heads × {d}")
        return self._attributes(module, heads, d)


class FusedQKVAdapter(AttentionAdapter):
    """timm / zoo layout: one `qkv` Linear laid out (3, H, d) and a `proj` Linear."""

    name = "fused-qkv"
    _parts = 3

    def matches(self, module: nn.Module) -> bool:
        qkv, proj = getattr(module, "qkv", None), getattr(module, "proj", None)
        heads, dim = getattr(module, "num_heads", None), getattr(module, "head_dim", None)
        # timm's optional `norm` (scale_norm) mixes heads before `proj`: gating there is not per head.
        return (isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear) and isinstance(heads, int)
                and isinstance(dim, int) and qkv.out_features == 3 * heads * dim and proj.in_features == heads * dim
                and isinstance(getattr(module, "norm", None), (type(None), nn.Identity)))

    def num_heads(self, module: nn.Module) -> int:
        return module.num_heads

    def head_dim(self, module: nn.Module) -> int:
        return module.head_dim

    def output_projection(self, module: nn.Module) -> nn.Module:
        return module.proj

    def _qkv_layers(self, module: nn.Module) -> list[nn.Module]:
        return [module.qkv]

    def _attributes(self, module: nn.Module, heads: int, head_dim: int) -> dict[str, Any]:
        values: dict[str, Any] = {"num_heads": heads, "head_dim": head_dim}
        if hasattr(module, "attn_dim"):  # timm reshapes the context with it
            values["attn_dim"] = heads * head_dim
        if head_dim != module.head_dim and getattr(module, "fused_attn", False):
            # timm's fused path lets SDPA derive the scale from the new head size; its math path
            # uses the stored `scale`, which keeps the trained one.
            values["fused_attn"] = False
        return values


class HFQKVAdapter(AttentionAdapter):
    """transformers 5 layout: `q_proj`/`k_proj`/`v_proj`/`o_proj`; forward views with (-1, head_dim)."""

    name = "hf-qkv"

    def _heads_attrs(self, module: nn.Module) -> list[str]:
        return [a for a in ("num_attention_heads", "num_heads") if isinstance(getattr(module, a, None), int)]

    def matches(self, module: nn.Module) -> bool:
        layers = [getattr(module, n, None) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
        attrs, dim = self._heads_attrs(module), getattr(module, "head_dim", None)
        if not all(isinstance(m, nn.Linear) for m in layers) or not attrs or not isinstance(dim, int):
            return False
        width = getattr(module, attrs[0]) * dim
        # Equal q/k/v widths exclude grouped-query attention, whose k/v heads are shared.
        return all(m.out_features == width for m in layers[:3]) and layers[3].in_features == width

    def num_heads(self, module: nn.Module) -> int:
        return getattr(module, self._heads_attrs(module)[0])

    def head_dim(self, module: nn.Module) -> int:
        return module.head_dim

    def output_projection(self, module: nn.Module) -> nn.Module:
        return module.o_proj

    def _qkv_layers(self, module: nn.Module) -> list[nn.Module]:
        return [module.q_proj, module.k_proj, module.v_proj]

    def _attributes(self, module: nn.Module, heads: int, head_dim: int) -> dict[str, Any]:
        # Instance attributes only: the `config` shared by every layer stays untouched.
        return {**{a: heads for a in self._heads_attrs(module)}, "head_dim": head_dim}


class HFQueryKeyValueAdapter(AttentionAdapter):
    """Parent with `attention.{query,key,value}` and `output.dense` (MobileViT, transformers 4 ViT)."""

    name = "hf-query-key-value"

    def matches(self, module: nn.Module) -> bool:
        inner, output = getattr(module, "attention", None), getattr(module, "output", None)
        if inner is None or not isinstance(getattr(output, "dense", None), nn.Linear):
            return False
        layers = [getattr(inner, n, None) for n in ("query", "key", "value")]
        heads, size = getattr(inner, "num_attention_heads", None), getattr(inner, "attention_head_size", None)
        return (all(isinstance(m, nn.Linear) for m in layers) and isinstance(heads, int) and isinstance(size, int)
                and getattr(inner, "all_head_size", None) == heads * size
                and all(m.out_features == heads * size for m in layers) and output.dense.in_features == heads * size)

    def num_heads(self, module: nn.Module) -> int:
        return module.attention.num_attention_heads

    def head_dim(self, module: nn.Module) -> int:
        return module.attention.attention_head_size

    def output_projection(self, module: nn.Module) -> nn.Module:
        return module.output.dense

    def _qkv_layers(self, module: nn.Module) -> list[nn.Module]:
        return [module.attention.query, module.attention.key, module.attention.value]

    def _attributes(self, module: nn.Module, heads: int, head_dim: int) -> dict[str, Any]:
        # The forward views the context with all_head_size.
        return {"attention.num_attention_heads": heads, "attention.attention_head_size": head_dim,
                "attention.all_head_size": heads * head_dim}

    def _sync(self, module: nn.Module, heads: int) -> dict[str, Any]:
        values = super()._sync(module, heads)
        inner, d = module.attention, values["attention.attention_head_size"]
        if d != inner.attention_head_size:
            # The forward divides scores by sqrt(attention_head_size), which must also be the view
            # size; folding sqrt(d_new/d_old) into the query keeps the trained scale exactly.
            factor = math.sqrt(d / inner.attention_head_size)
            with torch.no_grad():
                inner.query.weight.mul_(factor)
                if inner.query.bias is not None:
                    inner.query.bias.mul_(factor)
        return values


class TorchMHAAdapter(AttentionAdapter):
    """`nn.MultiheadAttention`: q/k/v in `in_proj_weight` laid out (3, H, d); `out_proj` used functionally."""

    name = "torch-mha"

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, nn.MultiheadAttention)

    def num_heads(self, module: nn.Module) -> int:
        return module.num_heads

    def head_dim(self, module: nn.Module) -> int:
        return module.head_dim

    def gate_heads(self, module: nn.Module, scale: Scale) -> Handle:
        # No hook fires on out_proj (MHA reads its weight), so scale the weight's head columns instead.
        out_proj = module.out_proj
        if parametrize.is_parametrized(out_proj, "weight"):
            raise ValueError("this nn.MultiheadAttention is already gated (out_proj.weight is parametrized); "
                             "remove the existing gate first")
        order = list(out_proj._parameters)
        parametrize.register_parametrization(out_proj, "weight", _HeadColumnScale(scale, module.num_heads))

        def remove() -> None:
            parametrize.remove_parametrizations(out_proj, "weight", leave_parametrized=False)
            for name in order:  # re-registration appended `weight`: restore the state_dict key order
                out_proj._parameters[name] = out_proj._parameters.pop(name)

        return Handle(remove)

    def output_projection(self, module: nn.Module) -> nn.Module:
        return module.out_proj

    def head_tensors(self, module: nn.Module) -> list[tuple[str, int]]:
        return []  # every tensor of nn.MultiheadAttention is a projection (in_proj_weight is (3E, E))

    def _qkv_layers(self, module: nn.Module) -> list[nn.Module]:
        return []  # no num_heads map: torch-pruning's own MHA pruner shrinks embed_dim, num_heads fixed

    def _remove(self, root: nn.Module, path: str, module: nn.Module, keep: list[int]) -> None:
        if not path:
            raise ValueError("remove_heads(''): an nn.MultiheadAttention root cannot be replaced in place; "
                             "wrap it in a parent module")
        if not module._qkv_same_embed_dim or module.bias_k is not None or module.add_zero_attn:
            raise ValueError(f"remove_heads({path!r}): only nn.MultiheadAttention with kdim == vdim == embed_dim, "
                             "add_bias_kv=False and add_zero_attn=False is supported")
        heads, d, e = module.num_heads, module.head_dim, module.embed_dim
        bias = module.in_proj_bias is not None
        new = HeadPrunedMultiheadAttention(e, len(keep), d, bias=bias, batch_first=module.batch_first,
                                           dropout=module.dropout, scaling=d ** -0.5)
        new.to(module.in_proj_weight.device, module.in_proj_weight.dtype)
        rows = _head_rows(keep, d, heads)
        with torch.no_grad():
            for i, layer in enumerate((new.q_proj, new.k_proj, new.v_proj)):
                layer.weight.copy_(module.in_proj_weight[i * e:(i + 1) * e][rows])
                if bias:
                    layer.bias.copy_(module.in_proj_bias[i * e:(i + 1) * e][rows])
            new.o_proj.weight.copy_(module.out_proj.weight[:, rows])
            if bias:
                new.o_proj.bias.copy_(module.out_proj.bias)
        new.train(module.training)
        root.set_submodule(path, new)
        # An nn.TransformerEncoder decides at construction to pack padded batches into nested
        # tensors; only the fused MHA kernel accepts those, so switch it off above the replacement.
        parts = path.split(".")
        for i in range(len(parts)):
            owner = root.get_submodule(".".join(parts[:i]))
            if getattr(owner, "use_nested_tensor", False):
                owner.use_nested_tensor = False

    def _attributes(self, module: nn.Module, heads: int, head_dim: int) -> dict[str, Any]:
        e = heads * head_dim
        return {"embed_dim": e, "kdim": e, "vdim": e, "head_dim": head_dim}

    def _sync(self, module: nn.Module, heads: int) -> dict[str, Any]:
        if heads != module.num_heads:
            raise ValueError(f"torch-pruning keeps nn.MultiheadAttention's num_heads ({module.num_heads}); got "
                             f"num_heads={heads}")
        return self._attributes(module, heads, _divide(f"{self.name}: in_proj_weight", module.in_proj_weight.shape[1],
                                                       heads))


class _HeadColumnScale(nn.Module):
    """Parametrization W → W · diag(scale per head column block), evaluated at every access."""

    def __init__(self, scale: Scale, heads: int) -> None:
        super().__init__()
        # A plain attribute, not a submodule: a gate module must not join out_proj's state_dict.
        object.__setattr__(self, "scale", scale)
        self.heads = heads

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        s = _checked_scale(self.scale, self.heads)
        return weight * s.to(weight.dtype).repeat_interleave(weight.shape[1] // s.numel())


def _additive_mask(attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None, is_causal: bool,
                   shape: tuple[int, int, int, int], like: torch.Tensor) -> torch.Tensor | None:
    """Float mask broadcastable to shape (N, heads, L, S), -inf where nn.MultiheadAttention masks."""
    n, heads, tgt, src = shape

    def additive(mask: torch.Tensor) -> torch.Tensor:
        if mask.dtype == torch.bool:
            return torch.zeros(mask.shape, dtype=like.dtype, device=like.device).masked_fill(mask, float("-inf"))
        return mask.to(like.dtype)

    if attn_mask is None and is_causal:  # nn.MultiheadAttention treats is_causal as a hint only
        attn_mask = torch.ones(tgt, src, dtype=torch.bool, device=like.device).triu(1)
    bias = None
    if attn_mask is not None:
        bias = additive(attn_mask)
        bias = bias.view(1, 1, tgt, src) if bias.dim() == 2 else bias.view(n, heads, tgt, src)
    if key_padding_mask is not None:
        pad = additive(key_padding_mask).view(n, 1, 1, src)
        bias = pad if bias is None else bias + pad
    return bias


class HeadPrunedMultiheadAttention(nn.Module):
    """`nn.MultiheadAttention` with some heads removed (its assert ties embed_dim to num_heads · head_dim).

    Same call signature and return as `nn.MultiheadAttention` (self-attention and cross-attention,
    masks, batch_first); constructor arguments are plain numbers so it can be rebuilt from JSON
    (`init_kwargs()`). `_qkv_same_embed_dim = False` and `in_proj_bias = None` send
    `nn.TransformerEncoderLayer` down its slow path, which calls this module.
    """

    _qkv_same_embed_dim = False

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, scaling: float | None = None) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.batch_first, self.dropout = num_heads, head_dim, batch_first, dropout
        self.scaling = head_dim ** -0.5 if scaling is None else scaling
        self.q_proj = nn.Linear(embed_dim, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(embed_dim, num_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(embed_dim, num_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * head_dim, embed_dim, bias=bias)
        self.register_parameter("in_proj_weight", None)
        self.register_parameter("in_proj_bias", None)

    @property
    def embed_dim(self) -> int:
        return self.q_proj.in_features

    @property
    def out_proj(self) -> nn.Linear:
        return self.o_proj

    def init_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of the current shape (after any further head removal or pruning)."""
        return {"embed_dim": self.embed_dim, "num_heads": self.num_heads, "head_dim": self.head_dim,
                "bias": self.q_proj.bias is not None, "batch_first": self.batch_first,
                "dropout": self.dropout, "scaling": self.scaling}

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        n, tgt, src = query.shape[0], query.shape[1], key.shape[1]
        q = self.q_proj(query).view(n, tgt, -1, self.head_dim).transpose(1, 2)
        k = self.k_proj(key).view(n, src, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(value).view(n, src, -1, self.head_dim).transpose(1, 2)
        bias = _additive_mask(attn_mask, key_padding_mask, is_causal, (n, q.shape[1], tgt, src), q)
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            weights = torch.softmax((q * self.scaling) @ k.transpose(-2, -1) + (0 if bias is None else bias), dim=-1)
            weights = F.dropout(weights, p) if p > 0 else weights
            out = weights @ v
            weights = weights.mean(dim=1) if average_attn_weights else weights
            weights = weights.squeeze(0) if unbatched else weights
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p, scale=self.scaling)
        out = self.o_proj(out.transpose(1, 2).reshape(n, tgt, -1))
        if unbatched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights


ADAPTERS: list[AttentionAdapter] = []


def register_adapter(adapter: AttentionAdapter) -> AttentionAdapter:
    """Adds an adapter after the existing ones (so earlier, more specific layouts win)."""
    if any(a.name == adapter.name for a in ADAPTERS):
        raise ValueError(f"an attention adapter named {adapter.name!r} is already registered; "
                         f"registered: {[a.name for a in ADAPTERS]}")
    ADAPTERS.append(adapter)
    return adapter


for _adapter in (TorchMHAAdapter(), HFQueryKeyValueAdapter(), FusedQKVAdapter(), HFQKVAdapter()):
    register_adapter(_adapter)


def adapter_for(module: nn.Module) -> AttentionAdapter | None:
    """The first registered adapter whose layout `module` has, or None."""
    return next((a for a in ADAPTERS if a.matches(module)), None)


def adapter_named(name: str) -> AttentionAdapter:
    """The adapter registered as `name` (as recorded in a pass's architecture state)."""
    for adapter in ADAPTERS:
        if adapter.name == name:
            return adapter
    raise KeyError(f"no attention adapter named {name!r}; valid names: {[a.name for a in ADAPTERS]}")


def find_attention(root: nn.Module) -> list[tuple[str, AttentionAdapter]]:
    """(dotted path, adapter) of every attention in `root`, outermost match only, in named_modules order."""
    found: list[tuple[str, AttentionAdapter]] = []
    for path, module in root.named_modules():
        if any(p == "" or path.startswith(p + ".") for p, _ in found):
            continue
        adapter = adapter_for(module)
        if adapter is not None:
            found.append((path, adapter))
    return found
