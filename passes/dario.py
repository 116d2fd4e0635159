"""prune-dario: differentiable, data-agnostic block and attention-head pruning (DARIO, seed 001 §6.1).

The pass runs in three phases on the IR's eager module, each usable on its own from Python:

1. `prepare(module, example, granularity)` finds the gateable structures and gates them with hooks;
   nothing is traced, so it works on the models users bring (Hugging Face, torch.nn, their own).
   - Blocks (`compressor.adapters.blocks`): elements of a ModuleList / Sequential, or named sibling
     attributes (`block1`, `block2`, ...), that run once, keep their input's shape, add their input to
     what they compute (`x + f(x)`, read from the autograd graph) and can be removed: transformer
     layers, residual blocks with identity shortcuts, inverted residuals.
     A forward hook on the block computes eq. 6.1: H̃_m = σ(α)·H_m + (1 − σ(α))·H_{m−1}, H_{m−1} the
     block's input; the next block's input is then the gated output, so adjacent gates chain.
   - Heads (`compressor.adapters.attention`): every attention layout an adapter knows (fused qkv as in
     timm and the zoo, HF separate q/k/v, nn.MultiheadAttention); head h's context is scaled by
     σ(α_h) before the output projection, which equals scaling its attention probabilities (eq. 6.2).
   Gates live in `module.dario_gates` (so functional_call substitutes them); α starts at +inf, where
   σ(α) is exactly 1 and the prepared model is bit-identical to the original.
2. `search(...)` optimizes α (Algorithm 5) to minimize a proxy objective on a batch of ones with
   BatchNorm disabled (forward hooks return the BN input; dropout off), under the math SDPA backend
   (the fused CPU kernels have no double backward): warm start = best of k samples α ~ N(0, 1); then
   per iteration the gated model runs on ones, R_SF = Σ outputs, θ̃ = θ − γ ∂R_SF/∂θ (a differentiable
   inner step: create_graph), s = S(θ̃), α ← AdamW step on ∂s/∂α (cosine schedule); θ itself is never
   changed (functional_call), so it is "restored" each step by construction. Modes:
   - `differentiable`: the paper's intent (θ̃ differentiable in α).
   - `reference-code`: what SunHaozhe/DARIO optimizes: θ̃ is computed without a graph, so α's
     gradient is ∂R_SF/∂α and S only scores the iterate.
   - `random`: the random-search baseline of figure 6.8, α ~ N(0, 1) for the same number of proxy
     evaluations (k + n), best kept.
   Every mode returns the best α it evaluated (lowest objective).
3. `convert(prepared, keep)` removes the gates and what `keep` marks removed: a block becomes the
   identity, heads are sliced out through their adapter (never all heads of a module). The converted
   model must still run (a PassError names the module that fails otherwise). What was removed is
   recorded in the IR's recipe (edit `dario`) and replayed when the stage is loaded.

Proxies (table 6.1), over all parameter tensors θ̃_t (T tensors, N scalars) of the model:
L0 = mean_t ‖θ̃_t‖₀, L1 = mean_t ‖θ̃_t‖₁, L2 = mean_t ‖θ̃_t‖₂, synflow = Σ (∂ΣH^a/∂θ ⊙ θ̃^a) with H^a
the output on ones of the model with |θ̃|, normalized synflow = synflow / N, var = Bessel-corrected
variance of all N scalars, l0-var = L0 − c1·var, l1-var = L1 − c2·var, l0-l1 = L0 + c3·L1.
The thesis finds var negatively correlated with accuracy (tables 6.2/6.3), so `var` is minimized;
the others correlate positively on MAE-ViT, so the search minimizes their negation. L0 counts
nonzeros: it is piecewise constant and gives α no gradient (use it with `mode: random`).

After conversion the pass optionally fine-tunes (the thesis fine-tunes the last block and the head)
with the shared training loop, optionally distilling from the unpruned model.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

import torch
import torch.nn as nn
from torch.func import functional_call

from compressor.adapters.attention import adapter_named, find_attention
from compressor.adapters.blocks import BlockInfo, call_order, find_blocks, output_shape, remove_blocks, run_error
from compressor.context import PassContext
from compressor.edits import register_edit
from compressor.errors import PassError
from compressor.ir import ModelIR, TaskSpec
from compressor.options import Range, option
from compressor.passes_base import Pass, PassResult
from compressor.registry import register_pass
from compressor.train import TrainOptions, train_stage

PROXIES = ("var", "l0", "l1", "l2", "synflow", "nsynflow", "l0-var", "l1-var", "l0-l1")
MINIMIZED = {"var"}  # negatively correlated with accuracy (thesis tables 6.2, 6.3); the rest are maximized
GATES = "dario_gates"  # the root's submodule holding the gates while the model is prepared


# ---- gates ------------------------------------------------------------------------------------

class BlockGate(nn.Module):
    """σ(α)·out + (1 − σ(α))·inp (eq. 6.1). α starts at +inf: the gate is open, the model unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(math.inf))

    def forward(self, out: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.alpha)
        return s * out + (1 - s) * inp


class HeadGate(nn.Module):
    """σ(α_h) per head, multiplied into head h's context (eq. 6.2); α starts at +inf."""

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((num_heads,), math.inf))

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.alpha)


@dataclass
class Structure:
    """One gateable structure: a block or the heads of an attention module."""

    kind: Literal["block", "heads"]
    name: str  # the module's dotted path
    gate: str  # the gate's key in module.dario_gates
    size: int  # 1 for a block, the head count for heads
    block: str | None = None  # heads: the block containing the attention module, if any
    params: int = 0  # parameters inside the structure (heads: the attention module's)
    adapter: str = ""  # heads: the attention adapter's name
    tuple_len: int = 0  # block: 0 if it returns a tensor, else the length of its output tuple


@dataclass
class Prepared:
    module: nn.Module
    structures: list[Structure]
    handles: list[Any] = field(default_factory=list)
    example: tuple[torch.Tensor, ...] | None = None  # the inputs the conversion checks the model on

    def gate(self, s: Structure) -> nn.Module:
        return self.module.get_submodule(GATES)[s.gate]

    def gates(self) -> list[nn.Parameter]:
        return [self.gate(s).alpha for s in self.structures]

    def set_alpha(self, values: torch.Tensor) -> None:
        with torch.no_grad():
            i = 0
            for p in self.gates():
                n = p.numel()
                p.copy_(values[i:i + n].view_as(p))
                i += n

    def alpha(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.gates()])


# ---- prepare / convert ------------------------------------------------------------------------

def _example(ir: ModelIR, batch: int = 2) -> tuple[torch.Tensor, ...]:
    return tuple(t.float() for t in ir.example_inputs(batch=batch))


def _block_hook(gate: BlockGate) -> Any:
    def hook(_m: nn.Module, args: tuple, kwargs: dict, out: Any) -> Any:
        inp = next(v for v in (*args, *kwargs.values()) if torch.is_tensor(v))
        if isinstance(out, tuple):
            return (gate(out[0], inp), *out[1:])
        return gate(out, inp)
    return hook


def prepare(module: nn.Module, example: tuple[torch.Tensor, ...],
            granularity: Literal["block", "head", "both"] = "block") -> Prepared:
    """Gate `module` in place (hooks + `module.dario_gates`) and return it with its structures, blocks
    in execution order, then heads."""
    structures: list[Structure] = []
    gates = nn.ModuleDict()
    handles: list[Any] = []
    blocks: list[BlockInfo] = find_blocks(module, example) if granularity in ("block", "both") else []
    for i, b in enumerate(blocks):
        key = f"block_{i}"
        gates[key] = BlockGate()
        handles.append(module.get_submodule(b.name).register_forward_hook(_block_hook(gates[key]), with_kwargs=True))
        structures.append(Structure("block", b.name, key, 1, params=b.params, tuple_len=b.tuple_len))
    if granularity in ("head", "both"):
        for j, (path, adapter) in enumerate(find_attention(module)):
            attn = module.get_submodule(path)
            n = adapter.num_heads(attn)
            key = f"heads_{j}"
            gates[key] = HeadGate(n)
            handles.append(adapter.gate_heads(attn, gates[key]))
            owner = next((b.name for b in blocks if path.startswith(b.name + ".")), None)
            structures.append(Structure("heads", path, key, n, block=owner, adapter=adapter.name,
                                        params=sum(p.numel() for p in attn.parameters())))
    module.add_module(GATES, gates)
    return Prepared(module, structures, handles, example)


def unprepare(prepared: Prepared) -> None:
    """Take every gate out: hooks removed, `dario_gates` deleted; the module is the original again."""
    for h in prepared.handles:
        h.remove()
    prepared.handles.clear()
    if hasattr(prepared.module, GATES):
        delattr(prepared.module, GATES)


def apply_removal(root: nn.Module, removed_blocks: list[dict[str, Any]],
                  removed_heads: dict[str, dict[str, Any]]) -> nn.Module:
    """The structural part of a conversion (what the recipe edit replays): heads first (block paths may
    shift when layers are deleted), then blocks."""
    for path, spec in removed_heads.items():
        adapter_named(spec["adapter"]).remove_heads(root, path, list(spec["keep"]))
    return remove_blocks(root, removed_blocks)


@register_edit("dario")
def _replay_dario(module: nn.Module, edit: dict[str, Any], example: tuple) -> nn.Module:
    return apply_removal(module, edit["removed_blocks"], edit["removed_heads"])


def convert(prepared: Prepared, keep: dict[str, list[bool]]) -> dict[str, Any]:
    """Remove the gates, and what `keep` marks False (per structure name: [block kept] or
    [head kept, ...]). Returns what was removed, in the recipe edit's form."""
    unprepare(prepared)
    removed_blocks = [{"name": s.name, "tuple_len": s.tuple_len} for s in prepared.structures
                      if s.kind == "block" and not keep.get(s.name, [True])[0]]
    gone = {b["name"] for b in removed_blocks}
    removed_heads: dict[str, dict[str, Any]] = {}
    for s in prepared.structures:
        if s.kind != "heads" or (s.block in gone):
            continue
        mask = list(keep.get(s.name, [True] * s.size))
        if not any(mask):
            raise PassError(f"prune-dario: convert would remove every head of {s.name}; keep at least one")
        if not all(mask):
            removed_heads[s.name] = {"adapter": s.adapter, "keep": [i for i, k in enumerate(mask) if k]}
    shape = output_shape(prepared.module, prepared.example) if prepared.example is not None else None
    try:
        apply_removal(prepared.module, removed_blocks, removed_heads)
    except ValueError as exc:
        raise PassError(f"prune-dario: {exc}") from None
    broken = run_error(prepared.module, prepared.example, shape) if prepared.example is not None else None
    if broken:
        # a layout the adapters do not fully know (a per-head tensor they did not slice, an attribute the
        # parent reads from a removed block): say where, instead of returning a model that cannot run
        what = [b["name"] for b in removed_blocks] + [f"heads of {k} (keeping {v['keep']})"
                                                     for k, v in removed_heads.items()]
        raise PassError(f"prune-dario: after removing {', '.join(what)} the model does not run: {broken}; gate the "
                        "other granularity (block / head) or report this layout")
    return {"removed_blocks": [b["name"] for b in removed_blocks],
            "removed_heads": {k: [i for i in range(len(keep[k])) if not keep[k][i]] for k in removed_heads},
            "edit": {"removed_blocks": removed_blocks, "removed_heads": removed_heads}}


@contextlib.contextmanager
def _search_mode(module: nn.Module) -> Iterator[None]:
    """BatchNorm off (each BN returns its input), eval mode, the math SDPA backend: the search's setting."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    handles = [m.register_forward_hook(lambda _m, args, _o: args[0]) for m in module.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training = module.training
    module.eval()
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)


# ---- proxies ----------------------------------------------------------------------------------

def proxy(kind: str, theta: list[torch.Tensor], synflow_fn: Any = None, c1: float = 1.0, c2: float = 1.0,
          c3: float = 1.0) -> torch.Tensor:
    """The table 6.1 proxy `kind` of the parameter tensors `theta` (see the module docstring).
    `synflow_fn(theta)` returns Σ (∂ΣH^a/∂θ ⊙ θ^a) for the synflow proxies."""
    T = len(theta)
    if kind == "l0":
        return sum((t != 0).sum().to(t.dtype) for t in theta) / T
    if kind == "l1":
        return sum(t.abs().sum() for t in theta) / T
    if kind == "l2":
        return sum(t.norm(2) for t in theta) / T
    if kind == "var":
        return torch.cat([t.reshape(-1) for t in theta]).var(unbiased=True)
    if kind == "synflow":
        return synflow_fn(theta)
    if kind == "nsynflow":
        return synflow_fn(theta) / sum(t.numel() for t in theta)
    if kind == "l0-var":
        return proxy("l0", theta) - c1 * proxy("var", theta)
    if kind == "l1-var":
        return proxy("l1", theta) - c2 * proxy("var", theta)
    if kind == "l0-l1":
        return proxy("l0", theta) + c3 * proxy("l1", theta)
    raise PassError(f"unknown proxy '{kind}'; valid: {', '.join(PROXIES)}")


# ---- search -----------------------------------------------------------------------------------

@dataclass
class SearchResult:
    alpha: torch.Tensor  # the best α evaluated
    best: float  # its objective value
    initial: float  # the objective of the open (unpruned) model
    curve: list[float] = field(default_factory=list)  # objective per iteration (after the warm start)
    warm_start: float = math.nan
    evaluations: int = 0
    seconds: float = 0.0
    last: torch.Tensor | None = None  # the final iterate (differentiable and reference-code modes)


class _Objective:
    """Proxy objective of a gated model on ones; θ is never modified. Call inside `_search_mode` (BatchNorm
    off: its parameters are not part of θ, as if each BN were the identity)."""

    def __init__(self, prepared: Prepared, input_shape: tuple[int, ...], batch: int, proxy_kind: str,
                 gamma: float, coefs: tuple[float, float, float]) -> None:
        model = prepared.module
        self.model = model
        gates = {id(g) for g in prepared.gates()}
        bn = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
              for p in m.parameters(recurse=False)}
        named = dict(model.named_parameters())
        self.gate_names = [n for n, p in named.items() if id(p) in gates]
        self.gates = [named[n] for n in self.gate_names]
        self.names = [n for n, p in named.items() if id(p) not in gates and id(p) not in bn]
        self.theta = [named[n].detach() for n in self.names]
        self.ones = torch.ones(batch, *input_shape)
        self.kind, self.gamma, self.coefs = proxy_kind, gamma, coefs
        self.sign = 1.0 if proxy_kind in MINIMIZED else -1.0

    def _forward(self, theta: list[torch.Tensor], alpha: list[torch.Tensor]) -> torch.Tensor:
        params = dict(zip(self.names, theta)) | dict(zip(self.gate_names, alpha))
        return functional_call(self.model, params, (self.ones,))

    def _synflow(self, alpha: list[torch.Tensor], create_graph: bool) -> Any:
        def fn(theta: list[torch.Tensor]) -> torch.Tensor:
            pa = [t.abs() for t in theta]
            if not create_graph:
                pa = [t.detach().requires_grad_(True) for t in pa]
            out = self._forward(pa, alpha).sum()
            grads = torch.autograd.grad(out, pa, create_graph=create_graph, allow_unused=True)
            return sum((g * p).sum() for g, p in zip(grads, pa) if g is not None)
        return fn

    def set_alpha_tensors(self, values: torch.Tensor) -> list[torch.Tensor]:
        out, i = [], 0
        for g in self.gates:
            out.append(values[i:i + g.numel()].view_as(g))
            i += g.numel()
        return out

    def inner_step(self, alpha: list[torch.Tensor], create_graph: bool) -> list[torch.Tensor]:
        """θ̃ = θ − γ ∂R_SF/∂θ with R_SF = Σ outputs on ones."""
        theta = [t.detach().requires_grad_(True) for t in self.theta]
        r = self._forward(theta, alpha).sum()
        grads = torch.autograd.grad(r, theta, create_graph=create_graph, allow_unused=True)
        return [t - self.gamma * g if g is not None else t for t, g in zip(theta, grads)]

    def value(self, alpha: list[torch.Tensor], create_graph: bool) -> torch.Tensor:
        theta_t = self.inner_step(alpha, create_graph)
        if not create_graph:
            theta_t = [t.detach() for t in theta_t]
        s = proxy(self.kind, theta_t, self._synflow(alpha, create_graph), *self.coefs)
        return self.sign * s

    def evaluate(self, values: torch.Tensor) -> float:
        with torch.enable_grad():
            return float(self.value(self.set_alpha_tensors(values.detach()), create_graph=False).detach())


def proxy_values(prepared: Prepared, input_shape: tuple[int, ...], alpha: torch.Tensor,
                 kinds: tuple[str, ...] = PROXIES, gamma: float = 1e-3, batch: int = 1,
                 coefs: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> dict[str, float]:
    """The raw value S(θ̃(α)) of each proxy in `kinds` (not the search's signed objective) for the gated
    model at gates `alpha`, in the search's setting; one inner step θ̃ = θ − γ ∂R_SF/∂θ serves them all.
    A model without gates (`Prepared(module, [])`, an empty `alpha`) gets its own proxies, e.g. a pruned one."""
    with _search_mode(prepared.module), torch.enable_grad():
        obj = _Objective(prepared, input_shape, batch, "var", gamma, coefs)
        parts = obj.set_alpha_tensors(alpha.detach())
        theta_t = [t.detach() for t in obj.inner_step(parts, create_graph=False)]
        syn: list[torch.Tensor] = []

        def synflow(theta: list[torch.Tensor]) -> torch.Tensor:  # computed once, shared by synflow and nsynflow
            if not syn:
                syn.append(obj._synflow(parts, create_graph=False)(theta).detach())
            return syn[0]
        return {k: float(proxy(k, theta_t, synflow, *coefs)) for k in kinds}


def search(prepared: Prepared, input_shape: tuple[int, ...], *, mode: str = "differentiable",
           proxy_kind: str = "var", iterations: int = 500, warm_start: int = 100, lr: float = 0.1,
           weight_decay: float = 1e-2, gamma: float = 1e-3, batch: int = 1,
           coefs: tuple[float, float, float] = (1.0, 1.0, 1.0), seed: int = 0, progress: bool = False) -> SearchResult:
    """Algorithm 5 (see the module docstring). Returns the best α evaluated and the objective curve."""
    with _search_mode(prepared.module):
        return _search(prepared, input_shape, mode=mode, proxy_kind=proxy_kind, iterations=iterations,
                       warm_start=warm_start, lr=lr, weight_decay=weight_decay, gamma=gamma, batch=batch,
                       coefs=coefs, seed=seed, progress=progress)


def _search(prepared: Prepared, input_shape: tuple[int, ...], *, mode: str, proxy_kind: str, iterations: int,
            warm_start: int, lr: float, weight_decay: float, gamma: float, batch: int,
            coefs: tuple[float, float, float], seed: int, progress: bool) -> SearchResult:
    from compressor.progress import progress_bar as tqdm  # one line per bar when stderr is not a terminal

    start = time.perf_counter()
    obj = _Objective(prepared, input_shape, batch, proxy_kind, gamma, coefs)
    n = sum(g.numel() for g in obj.gates)
    gen = torch.Generator().manual_seed(seed)
    initial = obj.evaluate(torch.full((n,), math.inf))
    evals = 1
    best_alpha, best = None, math.inf

    def consider(a: torch.Tensor, v: float) -> None:
        nonlocal best_alpha, best
        if v < best:
            best_alpha, best = a.detach().clone(), v

    curve: list[float] = []
    if mode == "random":
        for _ in tqdm(range(warm_start + iterations), desc="dario random search", disable=not progress, leave=False):
            a = torch.randn(n, generator=gen)
            v = obj.evaluate(a)
            evals += 1
            consider(a, v)
            curve.append(best)
        return SearchResult(best_alpha, best, initial, curve, curve[warm_start - 1] if warm_start else math.nan,
                            evals, time.perf_counter() - start)

    for _ in range(warm_start):
        a = torch.randn(n, generator=gen)
        consider(a, obj.evaluate(a))
        evals += 1
    warm = best
    alpha = (best_alpha.clone() if best_alpha is not None else torch.randn(n, generator=gen)).requires_grad_(True)
    opt = torch.optim.AdamW([alpha], lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(iterations, 1))
    for _ in tqdm(range(iterations), desc=f"dario search ({mode})", disable=not progress, leave=False):
        opt.zero_grad()
        parts = obj.set_alpha_tensors(alpha)
        if mode == "differentiable":
            s = obj.value(parts, create_graph=True)
            s.backward()
            v = float(s.detach())
        else:  # reference-code: α follows ∂R_SF/∂α; S(θ̃) only scores the iterate
            theta = [t.detach().requires_grad_(True) for t in obj.theta]
            r = obj._forward(theta, parts).sum()
            r.backward()
            with torch.no_grad():
                theta_t = [t - gamma * t.grad if t.grad is not None else t for t in theta]
            with torch.enable_grad():
                v = float(obj.sign * proxy(proxy_kind, [t.detach() for t in theta_t],
                                           obj._synflow([p.detach() for p in parts], False), *coefs))
        evals += 1
        consider(alpha, v)
        curve.append(v)
        opt.step()
        sched.step()
    final = obj.evaluate(alpha)
    evals += 1
    consider(alpha, final)
    return SearchResult(best_alpha, best, initial, curve, warm, evals, time.perf_counter() - start,
                        alpha.detach().clone())


# ---- decisions --------------------------------------------------------------------------------

def decide(structures: list[Structure], alpha: torch.Tensor, threshold: float, remove_blocks: int | None = None,
           min_blocks: int = 1, remove_heads: int | None = None) -> dict[str, list[bool]]:
    """Keep σ(α) ≥ threshold (or remove exactly the `remove_blocks` lowest-σ blocks, and / or the
    `remove_heads` lowest-σ heads over all attention modules); at least `min_blocks` blocks and one head
    per attention module stay."""
    sig = torch.sigmoid(alpha)
    keep: dict[str, list[bool]] = {}
    i = 0
    blocks = []
    for s in structures:
        v = sig[i:i + s.size]
        i += s.size
        if s.kind == "block":
            blocks.append((float(v[0]), s.name))
            keep[s.name] = [bool(v[0] >= threshold)]
        else:
            mask = [bool(x >= threshold) for x in v]
            if not any(mask):
                mask[int(v.argmax())] = True
            keep[s.name] = mask
    if blocks:
        ranked = sorted(blocks)  # lowest σ first
        if remove_blocks is not None:
            drop = {name for _, name in ranked[:min(remove_blocks, len(blocks) - min_blocks)]}
            for _, name in blocks:
                keep[name] = [name not in drop]
        kept = sum(keep[name][0] for _, name in blocks)
        for _, name in reversed(ranked):  # re-open the highest-σ blocks to reach min_blocks
            if kept >= min(min_blocks, len(blocks)):
                break
            if not keep[name][0]:
                keep[name] = [True]
                kept += 1
    if remove_heads is not None:
        heads, i = [], 0
        for s in structures:
            if s.kind == "heads":
                heads += [(float(sig[i + h]), s.name, h) for h in range(s.size)]
                keep[s.name] = [True] * s.size
            i += s.size
        dropped = 0
        for _, name, h in sorted(heads):  # lowest σ first, never the last head of a module
            if dropped >= remove_heads:
                break
            if sum(keep[name]) > 1:
                keep[name][h] = False
                dropped += 1
    return keep


# ---- the pass ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class DarioOptions:
    granularity: Literal["block", "head", "both"] = option("block", "what the gates address: whole residual blocks "
                                                          "(the thesis's choice), attention heads, or both")
    proxy: Literal["var", "l0", "l1", "l2", "synflow", "nsynflow", "l0-var", "l1-var", "l0-l1"] = option(
        "var", "performance proxy of table 6.1 (var: parameter variance, minimized; the others maximized)",
        search=["var", "l0", "l1", "l2", "synflow", "nsynflow", "l0-var", "l1-var", "l0-l1"])
    mode: Literal["differentiable", "reference-code", "random"] = option(
        "differentiable", "differentiable: θ̃(α) differentiable (the paper); reference-code: α follows ∂ΣH/∂α "
        "(SunHaozhe/DARIO); random: random search over the same budget",
        search=["differentiable", "reference-code", "random"])
    iterations: int = option(500, "search iterations n", min=0, search=[100, 250, 500, 1000])
    warm_start: int = option(100, "warm start: best of k random α ~ N(0, 1)", min=0)
    lr: float = option(0.1, "search learning rate λ (AdamW, cosine schedule)", min=0, min_exclusive=True,
                       search=Range(0.01, 1.0, log=True))
    weight_decay: float = option(1e-2, "AdamW weight decay on α", min=0)
    gamma: float = option(1e-3, "model learning rate γ of the inner step θ̃ = θ − γ ∂R_SF/∂θ", min=0)
    batch_size: int = option(1, "size of the batch of ones (identical samples: the batch only scales R_SF, like γ)", min=1)
    c1: float = option(1.0, "coefficient of var in l0-var", min=0)
    c2: float = option(1.0, "coefficient of var in l1-var", min=0)
    c3: float = option(1.0, "coefficient of L1 in l0-l1", min=0)
    threshold: float = option(0.65, "remove structures with σ(α) below this (thesis: 0.65; reference code: 0.3)",
                              min=0, max=1, min_exclusive=True, max_exclusive=True, search=[0.3, 0.5, 0.65, 0.8])
    remove_blocks: int | None = option(None, "remove exactly this many blocks (lowest σ first) instead of "
                                             "thresholding blocks", min=0)
    remove_heads: int | None = option(None, "remove exactly this many attention heads over the whole model (lowest "
                                            "σ first, one kept per module) instead of thresholding heads", min=0)
    min_blocks: int = option(1, "never keep fewer blocks than this", min=0)
    finetune_epochs: int = option(0, "fine-tune epochs after pruning (needs data)", min=0)
    finetune_lr: float = option(1e-3, "fine-tune learning rate", min=0, min_exclusive=True)
    finetune_batch_size: int = option(32, "fine-tune batch size", min=1)
    finetune_scope: Literal["last-block", "all"] = option(
        "last-block", "last-block: the last kept block and everything after it (the thesis); all: every parameter")
    distill_alpha: float = option(0.0, "> 0: fine-tune with α·soft + (1 − α)·hard from the unpruned model", min=0, max=1)
    temperature: float = option(4.0, "distillation temperature", min=0, min_exclusive=True)
    seed: int = option(0, "seed of the random α samples", min=0)


@register_pass("prune-dario")
class PruneDario(Pass):
    Options = DarioOptions
    label_keys = ("granularity",)

    accepts = ("fp32",)  # the search and the fine-tuning run in fp32

    def needs_data(self) -> bool:
        return self.options.finetune_epochs > 0

    def run(self, ir: ModelIR, ctx: PassContext) -> PassResult:
        o = self.options
        model = ir.module
        original = ir.clone().module if o.distill_alpha > 0 else None
        params_before = sum(p.numel() for p in model.parameters())
        example = _example(ir)
        prepared = prepare(model, example, o.granularity)
        if not prepared.structures:
            unprepare(prepared)
            what = {"block": "no residual block x + f(x) that can be removed, among the elements of a "
                              "ModuleList/Sequential or the repeated named attributes of one module",
                    "head": "no attention module of a known layout",
                    "both": "no residual block and no attention module"}[o.granularity]
            raise PassError(f"prune-dario: nothing to gate in {ir.meta.get('model', type(model).__name__)}: {what}; "
                            "DARIO prunes repeated residual blocks (transformer layers, ResNet basic blocks with "
                            "identity shortcuts, inverted residuals) and attention heads (fused qkv, HF q/k/v, "
                            "nn.MultiheadAttention)")
        result = search(prepared, tuple(ir.inputs[0].shape[1:]), mode=o.mode, proxy_kind=o.proxy,
                        iterations=o.iterations, warm_start=o.warm_start, lr=o.lr, weight_decay=o.weight_decay,
                        gamma=o.gamma, batch=o.batch_size, coefs=(o.c1, o.c2, o.c3), seed=o.seed,
                        progress=ctx.progress)
        keep = decide(prepared.structures, result.alpha, o.threshold, o.remove_blocks, o.min_blocks, o.remove_heads)
        sig = torch.sigmoid(result.alpha)
        table, i = [], 0
        for s in prepared.structures:
            table.append({"kind": s.kind, "name": s.name, "sigma": [round(float(x), 4) for x in sig[i:i + s.size]],
                          "kept": keep[s.name], "params": s.params})
            i += s.size
        removed = convert(prepared, keep)
        edit = removed.pop("edit")
        last_block = next((s for s in reversed(prepared.structures) if s.kind == "block" and keep[s.name][0]), None)
        n_blocks = sum(1 for s in table if s["kind"] == "block")
        stats: dict[str, Any] = {
            "structures": table, **removed,
            "blocks": f"{sum(1 for s in table if s['kind'] == 'block' and s['kept'][0])}/{n_blocks} kept",
            "search": {"mode": o.mode, "proxy": o.proxy, "seconds": round(result.seconds, 2),
                       "evaluations": result.evaluations, "initial": result.initial, "warm_start": result.warm_start,
                       "best": result.best, "curve": [round(v, 8) for v in result.curve[:: max(1, len(result.curve) // 50)]]},
            "params_before": params_before, "params_after": sum(p.numel() for p in model.parameters()),
        }
        if o.granularity == "both" and not any(s["kind"] == "heads" for s in table):
            stats["note"] = "granularity both: no attention module of a known layout, so only blocks were gated"
        if o.granularity == "both" and not n_blocks:
            stats["note"] = "granularity both: no residual block found, so only heads were gated"
        ir = ir.with_edit("dario", **edit)
        if o.finetune_epochs > 0:
            stats["finetune"] = self._finetune(ir, ctx, last_block, original)
        model.eval()
        ir.meta["dario"] = {"removed_blocks": removed["removed_blocks"], "removed_heads": removed["removed_heads"]}
        changed = bool(removed["removed_blocks"] or removed["removed_heads"])
        return PassResult(ir, changed=changed or o.finetune_epochs > 0, stats=stats)

    def _finetune(self, ir: ModelIR, ctx: PassContext, last_block: Structure | None, teacher: Any) -> dict[str, Any]:
        o = self.options
        model = ir.module
        scope = o.finetune_scope if last_block is not None else "all"  # no block kept: nothing to anchor on
        if scope == "last-block":
            trainable = _modules_from(model, last_block.name, _example(ir))
            for name, p in model.named_parameters():
                p.requires_grad_(any(name.startswith(t + ".") for t in trainable))
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        topts = TrainOptions(epochs=o.finetune_epochs, lr=o.finetune_lr, batch_size=o.finetune_batch_size)
        loss_fn = None
        if teacher is not None:
            loss_fn = _kd_loss(teacher.eval(), ir.task, o.distill_alpha, o.temperature)
        res = train_stage(ctx, model, ir.task, topts, offset=len(ir.history), name="dario-finetune",
                          desc="dario finetune", loss_fn=loss_fn)
        for p in model.parameters():
            p.requires_grad_(True)
        return {"epochs": res.epochs_run, "scope": scope, "trainable_params": n_train,
                "final_loss": round(res.final_loss, 5), "distill_alpha": o.distill_alpha}


def _modules_from(model: nn.Module, block: str, example: tuple[torch.Tensor, ...]) -> set[str]:
    """The block and every parametrized leaf module whose forward starts after the block's: the thesis's
    fine-tuning scope (the last kept block, the head)."""
    order = call_order(model, example)
    start = order.index(block) if block in order else 0
    leaves = {n for n, m in model.named_modules() if n and not list(m.children())}
    return {block} | {n for n in order[start:] if n in leaves}


def _kd_loss(teacher: nn.Module, task: TaskSpec, alpha: float, temperature: float) -> Any:
    from compressor.passes.distill import kd_loss

    def fn(logits: torch.Tensor, target: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = teacher.to(x.device)(x)
        return kd_loss(logits.float(), t.float(), target, task, alpha, temperature)
    return fn
