"""prune-dario: differentiable, data-agnostic block and attention-head pruning (DARIO, seed 001 §6.1).

The pass runs in three phases on the IR's fx graph, each usable on its own from Python:

1. `prepare(gm)` finds the gateable structures and inserts gates.
   - Blocks: residual adds `x + f(x)` whose branch f can be dropped (every value computed in the
     branch is used only inside it), grouped into one block when consecutive adds have branches in the
     same module (a pre-norm ViT block's two residuals, `blocks.3`); a shape-preserving activation
     module of that block right after the last add (a ResNet basic block's post-add ReLU) belongs to
     it. A gate after the block computes eq. 6.1: H̃_m = σ(α)·H_m + (1 − σ(α))·H_{m−1}, where
     H_{m−1} is the block's input. Residuals with a projection shortcut (conv(x) + f(x)) are not
     gateable: dropping f would not give the identity.
   - Heads: attention modules that follow the protocol of `compressor.frontends.vision.Attention`
     (attributes `qkv`, `proj`, `num_heads`, `head_dim`, `head_gate`) get a `HeadGate`, which
     scales head h's attention probabilities by σ(α_h) (eq. 6.2).
   A gate with α = +inf is exactly the original model; α = −inf exactly the structure removed.
2. `search(...)` optimizes α (Algorithm 5) to minimize a proxy objective on a batch of ones with
   BatchNorm disabled (replaced by the identity in a private copy; dropout off):
   warm start = best of k samples α ~ N(0, 1); then per iteration the gated model runs on ones,
   R_SF = Σ outputs, θ̃ = θ − γ ∂R_SF/∂θ (a differentiable inner step: create_graph), s = S(θ̃),
   α ← AdamW step on ∂s/∂α (cosine schedule); θ itself is never changed (functional_call), so it is
   "restored" each step by construction. Modes:
   - `differentiable`: the paper's intent (θ̃ differentiable in α).
   - `reference-code`: what SunHaozhe/DARIO optimizes: θ̃ is computed without a graph, so α's
     gradient is ∂R_SF/∂α and S only scores the iterate.
   - `random`: the random-search baseline of figure 6.8, α ~ N(0, 1) for the same number of proxy
     evaluations (k + n), best kept.
   Every mode returns the best α it evaluated (lowest objective).
3. `convert(gm, structures, decisions)` rewrites the graph: a removed block's output is replaced by
   its input (dead nodes and modules are deleted); removed heads are sliced out of qkv and proj and
   `num_heads` is updated; never all heads of a module (the head with the highest σ stays).

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

import copy
import math
import operator
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.fx
import torch.nn as nn
from torch.func import functional_call

from compressor.context import PassContext
from compressor.errors import PassError
from compressor.ir import ModelIR
from compressor.options import option
from compressor.passes_base import Pass, PassResult
from compressor.registry import register_pass
from compressor.train import TrainOptions, fit

PROXIES = ("var", "l0", "l1", "l2", "synflow", "nsynflow", "l0-var", "l1-var", "l0-l1")
MINIMIZED = {"var"}  # negatively correlated with accuracy (thesis tables 6.2, 6.3); the rest are maximized
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.Identity, nn.Dropout)


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
    """σ(α_h) per head, multiplied into the attention probabilities (eq. 6.2); α starts at +inf."""

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((num_heads,), math.inf))

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.alpha)


def is_attention(m: nn.Module) -> bool:
    """The head-gating protocol (see compressor.frontends.vision.Attention)."""
    return (all(hasattr(m, a) for a in ("qkv", "proj", "num_heads", "head_dim", "head_gate"))
            and isinstance(m.qkv, nn.Linear) and isinstance(m.proj, nn.Linear)
            and m.qkv.out_features == 3 * m.num_heads * m.head_dim and m.proj.in_features == m.num_heads * m.head_dim)


@dataclass
class Structure:
    """One gateable structure: a block (input node → output node) or the heads of an attention module."""

    kind: Literal["block", "heads"]
    name: str  # block: its module prefix (or add node); heads: the attention module's path
    gate: str  # the gate module's path in the prepared GraphModule
    size: int  # 1 for a block, num_heads for heads
    input: str = ""  # block: input node name
    output: str = ""  # block: output node name (before the gate)
    block: str | None = None  # heads: the block containing the attention module, if any
    params: int = 0  # parameters inside the structure (a block's modules; heads: qkv + proj)
    modules: list[str] = field(default_factory=list)  # block: the modules called inside it


@dataclass
class Prepared:
    module: torch.fx.GraphModule
    structures: list[Structure]

    def gates(self) -> list[nn.Parameter]:
        return [self.module.get_submodule(s.gate).alpha for s in self.structures]

    def set_alpha(self, values: torch.Tensor) -> None:
        with torch.no_grad():
            i = 0
            for p in self.gates():
                n = p.numel()
                p.copy_(values[i:i + n].view_as(p))
                i += n

    def alpha(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.gates()])


# ---- finding blocks ---------------------------------------------------------------------------

def _is_add(n: torch.fx.Node) -> bool:
    if n.op == "call_function" and n.target in (operator.add, torch.add) and len(n.args) == 2 and not n.kwargs:
        return True
    return n.op == "call_method" and n.target == "add" and len(n.args) == 2 and not n.kwargs


def _closure(n: torch.fx.Node, up: bool) -> set[torch.fx.Node]:
    """All ancestors (up) or descendants (down) of `n`, without `n`."""
    seen: set[torch.fx.Node] = set()
    stack = list(n.all_input_nodes if up else n.users)
    while stack:
        m = stack.pop()
        if m not in seen:
            seen.add(m)
            stack.extend(m.all_input_nodes if up else m.users)
    return seen


def _shape(n: torch.fx.Node) -> tuple | None:
    tm = n.meta.get("tensor_meta")
    return tuple(tm.shape) if tm is not None and hasattr(tm, "shape") else None


def _prefix(targets: list[str]) -> str:
    """The deepest module path shared by `targets` (a lone module's parent)."""
    if not targets:
        return ""
    parts = [t.split(".") for t in targets]
    common = []
    for items in zip(*parts):
        if len(set(items)) != 1:
            break
        common.append(items[0])
    if len(common) == min(len(p) for p in parts):  # a target is the prefix itself: name its parent
        common = common[:-1]
    return ".".join(common)


def _contained(region: set[torch.fx.Node], output: torch.fx.Node) -> bool:
    return all(u in region or u is output for n in region for u in n.users)


def find_blocks(gm: torch.fx.GraphModule) -> list[tuple[str, torch.fx.Node, torch.fx.Node, set[torch.fx.Node]]]:
    """Residual blocks as (name, input node, output node, nodes strictly inside). Needs shape metadata
    (ShapeProp) on the nodes."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    residuals = []
    for n in gm.graph.nodes:
        if not _is_add(n) or not all(isinstance(a, torch.fx.Node) for a in n.args):
            continue
        a, b = n.args
        if _shape(a) is None or _shape(a) != _shape(b) or _shape(a) != _shape(n):
            continue
        for skip, branch in ((a, b), (b, a)):
            anc = _closure(branch, up=True)
            if skip not in anc:
                continue
            region = (anc & _closure(skip, up=False)) | {branch}
            if _contained(region, n):
                targets = [m.target for m in region if m.op == "call_module"]
                residuals.append((skip, n, region, _prefix(targets)))
                break
    blocks: list[list[Any]] = []
    for skip, add, region, prefix in sorted(residuals, key=lambda r: order[r[1]]):
        last = blocks[-1] if blocks else None
        if last is not None and prefix and last[0] == prefix and skip is last[2]:
            last[3] |= region | {last[2]}
            last[2] = add
        else:
            blocks.append([prefix, skip, add, set(region)])
    out = []
    for prefix, inp, outp, region in blocks:
        # a shape-preserving activation of the same block right after it (ResNet's post-add ReLU)
        while prefix and len(outp.users) == 1:
            u = next(iter(outp.users))
            if (u.op == "call_module" and str(u.target).startswith(prefix + ".")
                    and isinstance(gm.get_submodule(u.target), ACTIVATIONS) and _shape(u) == _shape(outp)):
                region.add(outp)
                outp = u
            else:
                break
        if _shape(inp) == _shape(outp) and _contained(region, outp):
            out.append((prefix or outp.name, inp, outp, region))
    return out


# ---- prepare / convert ------------------------------------------------------------------------

def _example(ir: ModelIR, batch: int = 2) -> tuple[torch.Tensor, ...]:
    return tuple(t.float() for t in ir.example_inputs(batch=batch))


def prepare(gm: torch.fx.GraphModule, example: tuple[torch.Tensor, ...],
            granularity: Literal["block", "head", "both"] = "block") -> Prepared:
    """Insert gates into `gm` (in place) and return it with its structures, in graph order."""
    from torch.fx.passes.shape_prop import ShapeProp

    was_training = gm.training
    gm.eval()
    with torch.no_grad():
        ShapeProp(gm).propagate(*example)
    gm.train(was_training)
    structures: list[Structure] = []
    blocks = find_blocks(gm) if granularity in ("block", "both") else []
    block_of: dict[str, str] = {}
    gated: dict[torch.fx.Node, torch.fx.Node] = {}  # a block's output -> its gate
    for i, (name, inp, outp, region) in enumerate(blocks):
        target = f"dario_block_{i}"
        gm.add_submodule(target, BlockGate())
        inp = gated.get(inp, inp)  # H_{m-1} of a block right after another is the gated previous output
        with gm.graph.inserting_after(outp):
            g = gm.graph.call_module(target, (outp, inp))
        outp.replace_all_uses_with(g, delete_user_cb=lambda u, g=g: u is not g)
        gated[outp] = g
        mods = {m.target for m in region | {outp} if m.op == "call_module"}
        for t in mods:
            block_of[t] = name
        params = sum(p.numel() for t in mods for p in gm.get_submodule(t).parameters())
        structures.append(Structure("block", name, target, 1, inp.name, outp.name, params=params,
                                    modules=sorted(mods)))
    if granularity in ("head", "both"):
        for n in gm.graph.nodes:
            if n.op != "call_module":
                continue
            m = gm.get_submodule(n.target)
            if is_attention(m):
                m.head_gate = HeadGate(m.num_heads)
                params = sum(p.numel() for p in (*m.qkv.parameters(), *m.proj.parameters()))
                structures.append(Structure("heads", n.target, f"{n.target}.head_gate", m.num_heads,
                                            block=block_of.get(n.target), params=params))
    gm.recompile()
    return Prepared(gm, structures)


def _slice_heads(m: nn.Module, keep: list[int]) -> None:
    h, d = m.num_heads, m.head_dim
    idx = torch.tensor(keep)
    qkv, proj = m.qkv, m.proj
    dim_in = qkv.in_features
    w = qkv.weight.detach().view(3, h, d, dim_in)[:, idx].reshape(3 * len(keep) * d, dim_in)
    new_qkv = nn.Linear(dim_in, w.shape[0], bias=qkv.bias is not None)
    new_qkv.weight = nn.Parameter(w.clone())
    if qkv.bias is not None:
        new_qkv.bias = nn.Parameter(qkv.bias.detach().view(3, h, d)[:, idx].reshape(-1).clone())
    pw = proj.weight.detach().view(proj.out_features, h, d)[:, idx].reshape(proj.out_features, len(keep) * d)
    new_proj = nn.Linear(len(keep) * d, proj.out_features, bias=proj.bias is not None)
    new_proj.weight = nn.Parameter(pw.clone())
    if proj.bias is not None:
        new_proj.bias = nn.Parameter(proj.bias.detach().clone())
    m.qkv, m.proj, m.num_heads = new_qkv, new_proj, len(keep)


def convert(prepared: Prepared, keep: dict[str, list[bool]]) -> dict[str, Any]:
    """Remove what `keep` marks False (per structure name: [block kept] or [head kept, ...]) and take
    every gate out of the graph. Returns what was removed."""
    gm = prepared.module
    gate_nodes = {n.target: n for n in gm.graph.nodes if n.op == "call_module" and str(n.target).startswith("dario_block_")}
    removed_blocks, removed_heads = [], {}
    for s in prepared.structures:
        if s.kind != "block":
            continue
        g = gate_nodes[s.gate]
        kept = keep.get(s.name, [True])[0]
        out, inp = g.args  # current values: an earlier removed gate has already been replaced
        g.replace_all_uses_with(out if kept else inp)
        gm.graph.erase_node(g)
        if not kept:
            removed_blocks.append(s.name)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    live = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    for s in prepared.structures:
        if s.kind != "heads" or s.name not in live:
            continue
        m = gm.get_submodule(s.name)
        mask = list(keep.get(s.name, [True] * m.num_heads))
        if not any(mask):
            raise PassError(f"prune-dario: convert would remove every head of {s.name}; keep at least one")
        m.head_gate = None
        if not all(mask):
            _slice_heads(m, [i for i, k in enumerate(mask) if k])
            removed_heads[s.name] = [i for i, k in enumerate(mask) if not k]
    gm.delete_all_unused_submodules()
    gm.recompile()
    gm.graph.lint()
    return {"removed_blocks": removed_blocks, "removed_heads": removed_heads}


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
    """Proxy objective of a gated model on ones, with BatchNorm disabled; θ is never modified."""

    def __init__(self, prepared: Prepared, input_shape: tuple[int, ...], batch: int, proxy_kind: str,
                 gamma: float, coefs: tuple[float, float, float]) -> None:
        model = copy.deepcopy(prepared.module)
        for name, m in list(model.named_modules()):
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
        self.model = model.eval()
        gates = set(Prepared(model, prepared.structures).gates())
        self.gate_names = [n for n, p in model.named_parameters() if any(p is g for g in gates)]
        self.gates = [dict(model.named_parameters())[n] for n in self.gate_names]
        self.names = [n for n, p in model.named_parameters() if not any(p is g for g in gates)]
        self.theta = [dict(model.named_parameters())[n].detach() for n in self.names]
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


def search(prepared: Prepared, input_shape: tuple[int, ...], *, mode: str = "differentiable",
           proxy_kind: str = "var", iterations: int = 500, warm_start: int = 100, lr: float = 0.1,
           weight_decay: float = 1e-2, gamma: float = 1e-3, batch: int = 1,
           coefs: tuple[float, float, float] = (1.0, 1.0, 1.0), seed: int = 0, progress: bool = False) -> SearchResult:
    """Algorithm 5 (see the module docstring). Returns the best α evaluated and the objective curve."""
    from tqdm.auto import tqdm

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
           min_blocks: int = 1) -> dict[str, list[bool]]:
    """Keep σ(α) ≥ threshold (or remove exactly the `remove_blocks` lowest-σ blocks); at least
    `min_blocks` blocks and one head per attention module stay."""
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
    return keep


# ---- the pass ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class DarioOptions:
    granularity: Literal["block", "head", "both"] = option("block", "what the gates address: whole residual blocks "
                                                          "(the thesis's choice), attention heads, or both")
    proxy: Literal["var", "l0", "l1", "l2", "synflow", "nsynflow", "l0-var", "l1-var", "l0-l1"] = option(
        "var", "performance proxy of table 6.1 (var: parameter variance, minimized; the others maximized)")
    mode: Literal["differentiable", "reference-code", "random"] = option(
        "differentiable", "differentiable: θ̃(α) differentiable (the paper); reference-code: α follows ∂ΣH/∂α "
        "(SunHaozhe/DARIO); random: random search over the same budget")
    iterations: int = option(500, "search iterations n", min=0)
    warm_start: int = option(100, "warm start: best of k random α ~ N(0, 1)", min=0)
    lr: float = option(0.1, "search learning rate λ (AdamW, cosine schedule)", min=0, min_exclusive=True)
    weight_decay: float = option(1e-2, "AdamW weight decay on α", min=0)
    gamma: float = option(1e-3, "model learning rate γ of the inner step θ̃ = θ − γ ∂R_SF/∂θ", min=0)
    batch_size: int = option(1, "size of the batch of ones (identical samples: the batch only scales R_SF, like γ)", min=1)
    c1: float = option(1.0, "coefficient of var in l0-var", min=0)
    c2: float = option(1.0, "coefficient of var in l1-var", min=0)
    c3: float = option(1.0, "coefficient of L1 in l0-l1", min=0)
    threshold: float = option(0.65, "remove structures with σ(α) below this (thesis: 0.65; reference code: 0.3)",
                              min=0, max=1, min_exclusive=True, max_exclusive=True)
    remove_blocks: int | None = option(None, "remove exactly this many blocks (lowest σ first) instead of "
                                             "thresholding blocks", min=0)
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

    def requires(self, ir: ModelIR, ctx: PassContext) -> None:
        if ir.precision != "fp32":
            raise PassError(f"prune-dario searches and fine-tunes in fp32 but the IR is {ir.precision}; "
                            "run it before fp16")
        if self.options.finetune_epochs > 0:
            ctx.require_data("prune-dario fine-tuning (finetune_epochs > 0)")

    def run(self, ir: ModelIR, ctx: PassContext) -> PassResult:
        o = self.options
        gm = ir.module
        if not isinstance(gm, torch.fx.GraphModule):
            raise PassError("prune-dario needs a traced IR (fx GraphModule); build it with a frontend")
        original = copy.deepcopy(gm) if o.distill_alpha > 0 else None
        params_before = sum(p.numel() for p in gm.parameters())
        prepared = prepare(gm, _example(ir), o.granularity)
        if not prepared.structures:
            what = {"block": "no residual block x + f(x) whose branch can be dropped",
                    "head": "no attention module with qkv, proj, num_heads, head_dim and head_gate",
                    "both": "no droppable residual block and no attention module"}[o.granularity]
            raise PassError(f"prune-dario: nothing to gate in {ir.meta.get('model', type(gm).__name__)}: {what}; "
                            "DARIO prunes ViT encoder blocks, ResNet basic blocks with identity shortcuts, "
                            "MobileNetV2 inverted residuals and compressor.frontends.vision.Attention heads "
                            "(zoo models vit, resnet, mobilenet-v2)")
        result = search(prepared, tuple(ir.inputs[0].shape[1:]), mode=o.mode, proxy_kind=o.proxy,
                        iterations=o.iterations, warm_start=o.warm_start, lr=o.lr, weight_decay=o.weight_decay,
                        gamma=o.gamma, batch=o.batch_size, coefs=(o.c1, o.c2, o.c3), seed=o.seed,
                        progress=ctx.progress)
        keep = decide(prepared.structures, result.alpha, o.threshold, o.remove_blocks, o.min_blocks)
        sig = torch.sigmoid(result.alpha)
        table, i = [], 0
        for s in prepared.structures:
            table.append({"kind": s.kind, "name": s.name, "sigma": [round(float(x), 4) for x in sig[i:i + s.size]],
                          "kept": keep[s.name], "params": s.params})
            i += s.size
        removed = convert(prepared, keep)
        last_block = next((s for s in reversed(prepared.structures) if s.kind == "block" and keep[s.name][0]), None)
        stats: dict[str, Any] = {
            "structures": table, **removed,
            "blocks": f"{sum(1 for s in table if s['kind'] == 'block' and s['kept'][0])}/"
                      f"{sum(1 for s in table if s['kind'] == 'block')} kept",
            "search": {"mode": o.mode, "proxy": o.proxy, "seconds": round(result.seconds, 2),
                       "evaluations": result.evaluations, "initial": result.initial, "warm_start": result.warm_start,
                       "best": result.best, "curve": [round(v, 8) for v in result.curve[:: max(1, len(result.curve) // 50)]]},
            "params_before": params_before, "params_after": sum(p.numel() for p in gm.parameters()),
        }
        if o.finetune_epochs > 0:
            stats["finetune"] = self._finetune(ir, ctx, last_block, original)
        gm.eval()
        ir.meta["dario"] = {"removed_blocks": removed["removed_blocks"], "removed_heads": removed["removed_heads"]}
        changed = bool(removed["removed_blocks"] or removed["removed_heads"])
        return PassResult(ir, changed=changed or o.finetune_epochs > 0, stats=stats)

    def _finetune(self, ir: ModelIR, ctx: PassContext, last_block: Structure | None, teacher: Any) -> dict[str, Any]:
        from compressor.data import make_loader

        o = self.options
        gm = ir.module
        scope = o.finetune_scope if last_block is not None else "all"  # no block kept: nothing to anchor on
        if scope == "last-block":
            trainable = _modules_from(gm, last_block)
            for name, p in gm.named_parameters():
                p.requires_grad_(any(name.startswith(t + ".") for t in trainable))
        n_train = sum(p.numel() for p in gm.parameters() if p.requires_grad)
        data = ctx.require_data("prune-dario fine-tuning")
        topts = TrainOptions(epochs=o.finetune_epochs, lr=o.finetune_lr, batch_size=o.finetune_batch_size)
        loss_fn = None
        if teacher is not None:
            loss_fn = _kd_loss(teacher.eval(), ir.task.kind, o.distill_alpha, o.temperature)
        ctx.seed_everything(len(ir.history))
        loader = make_loader(data.train, o.finetune_batch_size, shuffle=True, seed=ctx.seed + len(ir.history))
        ckpt_dir = ctx.scratch_dir("checkpoints")
        res = fit(gm, loader, ir.task, topts, device=ctx.device, loss_fn=loss_fn,
                  checkpoint=ckpt_dir / "dario-finetune.pt" if ckpt_dir else None, progress=ctx.progress,
                  desc="dario finetune")
        for p in gm.parameters():
            p.requires_grad_(True)
        gm.to("cpu").eval()
        return {"epochs": res.epochs_run, "scope": scope, "trainable_params": n_train,
                "final_loss": round(res.final_loss, 5), "distill_alpha": o.distill_alpha}


def _modules_from(gm: torch.fx.GraphModule, block: Structure) -> set[str]:
    """The modules of `block` and every module called after its output node."""
    mods = set(block.modules)
    after = False
    for n in gm.graph.nodes:
        if n.name == block.output:
            after = True
        elif after and n.op == "call_module":
            mods.add(str(n.target))
    return mods


def _kd_loss(teacher: nn.Module, kind: str, alpha: float, temperature: float) -> Any:
    from compressor.passes.distill import kd_loss

    def fn(logits: torch.Tensor, target: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = teacher.to(x.device)(x)
        return kd_loss(logits.float(), t.float(), target, kind, alpha, temperature)
    return fn
