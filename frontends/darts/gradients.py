"""The gradients of the DARTS search: the α gradient (first order, and DARTS's unrolled second order) and
the weights' gradient with λ-DARTS's alignment term. `SearchAlgorithm`'s α and weight steps use them;
`compressor.frontends.darts.algorithms` describes each mechanism.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from compressor.frontends.darts.search_space import SearchNetwork

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ---- α gradients ----------------------------------------------------------------------------------
def arch_grads_first_order(model: SearchNetwork, loss_fn: LossFn, x_val: torch.Tensor,
                           y_val: torch.Tensor) -> tuple[list[torch.Tensor], float]:
    loss = loss_fn(model(x_val), y_val)
    grads = torch.autograd.grad(loss, model.arch_parameters())
    return list(grads), float(loss.detach())


def arch_grads_second_order(model: SearchNetwork, loss_fn: LossFn, x_train: torch.Tensor, y_train: torch.Tensor,
                            x_val: torch.Tensor, y_val: torch.Tensor, eta: float,
                            w_optimizer: torch.optim.Optimizer | None = None, momentum: float = 0.0,
                            weight_decay: float = 0.0, r: float = 1e-2) -> tuple[list[torch.Tensor], float]:
    """The DARTS unrolled α gradient (quark0/darts cnn/architect.py `_backward_step_unrolled`).

    The virtual model is a `torch.func.functional_call` with the stepped weights (and copies of the
    BN buffers, as the reference's fresh model copy), so the model itself is left untouched."""
    from torch.func import functional_call

    named = model.named_weight_parameters()
    names = [n for n, _ in named]
    w = [p for _, p in named]
    arch = model.arch_parameters()

    def call(weights: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        state = {n: b.clone() for n, b in model.named_buffers()}
        state.update(dict(zip(names, weights)))
        return functional_call(model, state, (x,))

    # virtual step w' = w − η (momentum·buf + ∇L_train + wd·w)
    loss_train = loss_fn(model(x_train), y_train)
    g_train = torch.autograd.grad(loss_train, w, allow_unused=True)
    w_virtual = []
    for p, g in zip(w, g_train):
        g = torch.zeros_like(p) if g is None else g
        d = g + weight_decay * p.detach()
        buf = w_optimizer.state.get(p, {}).get("momentum_buffer") if w_optimizer is not None else None
        if buf is not None:
            d = d + momentum * buf
        w_virtual.append((p.detach() - eta * d).requires_grad_(True))

    loss_val = loss_fn(call(w_virtual, x_val), y_val)
    g = torch.autograd.grad(loss_val, list(arch) + w_virtual, allow_unused=True)
    d_alpha = [torch.zeros_like(a) if gi is None else gi for a, gi in zip(arch, g[:len(arch)])]
    v = [torch.zeros_like(p) if gi is None else gi for p, gi in zip(w_virtual, g[len(arch):])]

    # finite-difference Hessian-vector product ∇²_{α,w} L_train · v
    R = r / torch.cat([x.reshape(-1) for x in v]).norm().clamp_min(1e-12)
    w_plus = [p.detach() + R * vi for p, vi in zip(w, v)]
    w_minus = [p.detach() - R * vi for p, vi in zip(w, v)]
    g_plus = torch.autograd.grad(loss_fn(call(w_plus, x_train), y_train), arch, allow_unused=True)
    g_minus = torch.autograd.grad(loss_fn(call(w_minus, x_train), y_train), arch, allow_unused=True)
    out = []
    for da, gp, gm, a in zip(d_alpha, g_plus, g_minus, arch):
        gp = torch.zeros_like(a) if gp is None else gp
        gm = torch.zeros_like(a) if gm is None else gm
        out.append(da - eta * (gp - gm) / (2 * R))
    return out, float(loss_val.detach())


# ---- weight gradients (λ-DARTS) -------------------------------------------------------------------
def lambda_perturbations(cell_grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """∂Λ/∂g_l for Λ = mean_{l<l'} cos(g_l, g_l'): (1/C(L,2))·(I − u_l u_lᵀ)·Σ_l' u_l' / ‖g_l‖."""
    L = len(cell_grads)
    if L < 2:
        return [torch.zeros_like(g) for g in cell_grads]
    flat = [g.reshape(-1) for g in cell_grads]
    norms = [f.norm().clamp_min(1e-12) for f in flat]
    u = [f / n for f, n in zip(flat, norms)]
    sum_u = sum(u)
    scale = 1.0 / (L * (L - 1) / 2)
    return [(scale * (sum_u - ul * torch.dot(ul, sum_u)) / n).reshape(g.shape)
            for ul, n, g in zip(u, norms, cell_grads)]


def lambda_alignment(cell_grads: Sequence[torch.Tensor]) -> float:
    """Λ: the mean pairwise cosine similarity of the per-cell α gradients (seed 000 eq. 3)."""
    flat = [g.reshape(-1) for g in cell_grads]
    sims = [float(F.cosine_similarity(flat[i], flat[j], dim=0))
            for i in range(len(flat)) for j in range(i + 1, len(flat))]
    return sum(sims) / len(sims) if sims else 0.0


def weight_gradients(model: SearchNetwork, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor,
                     lam: float = 0.0, eps0: float = 1e-4) -> dict[str, float]:
    """Fill .grad of the weights with ∇_w L_train, plus, with lam > 0, the λ-DARTS term
    lam·[∇_w L(ᾱ − εp) − ∇_w L(ᾱ + εp)] / 2ε (see the module docstring). Returns loss and Λ."""
    w = model.weight_parameters()
    for p in w:
        p.grad = None
    stats: dict[str, float] = {}
    if lam <= 0:
        loss = loss_fn(model(x, detach_arch=True), y)
        loss.backward()
        return {"loss": float(loss.detach())}
    wn, wr = (t.detach() for t in model.op_weights())
    leaves = [(wr if c.reduction else wn).clone().requires_grad_(True) for c in model.cells]
    loss = loss_fn(model(x, cell_weights=leaves, detach_arch=True), y)
    loss.backward()
    stats["loss"] = float(loss.detach())
    normal = [i for i, c in enumerate(model.cells) if not c.reduction]
    grads = [leaves[i].grad for i in normal]
    stats["alignment"] = lambda_alignment(grads)
    pert_normal = lambda_perturbations(grads)
    pert = [torch.zeros_like(l) for l in leaves]
    for i, p in zip(normal, pert_normal):
        pert[i] = p
    norm = torch.cat([p.reshape(-1) for p in pert]).norm()
    if float(norm) == 0.0:
        return stats
    eps = eps0 / float(norm)
    base = [l.detach() for l in leaves]
    f = torch.autograd.grad(loss_fn(model(x, cell_weights=[b - eps * p for b, p in zip(base, pert)],
                                          detach_arch=True), y), w, allow_unused=True)
    b = torch.autograd.grad(loss_fn(model(x, cell_weights=[b + eps * p for b, p in zip(base, pert)],
                                          detach_arch=True), y), w, allow_unused=True)
    for p, gf, gb in zip(w, f, b):
        if gf is None or gb is None:
            continue
        reg = (gf - gb) / (2 * eps)
        p.grad = reg * lam if p.grad is None else p.grad + lam * reg
    return stats
