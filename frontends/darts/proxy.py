"""Training-free architecture scores: NASWOT and HPE-DARTS's NetPerfProxy, and op importance from them.

NASWOT (Mellor et al. 2021, BayesWatch/nas-without-training; our own code): every ReLU turns a
mini-batch into binary codes c = (x > 0), one row per sample; the kernel K = c·cᵀ + (1−c)·(1−c)ᵀ
(= code length − Hamming distance) is summed over the ReLUs and the score is log det K. Two inputs
the network cannot tell apart give two equal rows, a singular K and a score of −inf.

NetPerfProxy (HPE-DARTS, eq. 8-10) scores a DARTS supernet, where each edge holds several candidate
ops: codes are taken at every op's OUTPUT (DARTS ops start with their ReLU, so a hook on the ReLU
would see the op's input), each op's kernel is weighted by its architecture weight, an edge's
kernel is the weighted sum over its ops, the network's kernel the sum over the edges of every cell,
and the score its log det.

Choices (and why):

- Kernel. The paper writes each edge matrix with the α-weighted Hamming DISTANCE off the diagonal
  and the code length L on it (eq. 9). Such a matrix is not positive semi-definite in general (the
  eight 3-bit codes give eigenvalues 15, 3 ×4, −1 ×3; the sixteen 4-bit codes a POSITIVE determinant
  with four eigenvalues of −4), so its log det is not the log-volume
  NASWOT reads as "how well the network separates the inputs", and a sign change makes it
  undefined. `kernel="similarity"` (the default) keeps NASWOT's kernel: each op's term is
  w_o·(L − Hamming_o), a non-negatively weighted sum of Gram matrices, PSD. `kernel="paper-distance"`
  implements eq. 8-9 literally for comparison (the diagonal L is counted once per edge, unweighted,
  as eq. 9 writes it).
- Op weights w_o: the coefficient with which op o's output enters its node in
  `search_space.SearchCell.forward`: softmax(α) over the edge's ops, times the PC-DARTS edge weight
  (softmax of β over the node's incoming edges, `node_softmax`) when the network has `edge_norm`.
  `weights="uniform"` sets every present op's weight to 1 (NASWOT on all op outputs, α ignored); an
  op whose forward weight is exactly 0 (removed) has weight 0 in both modes.
- The `none` op (`ops.Zero`) outputs zeros: all-zero codes, a kernel of L everywhere ("every pair
  identical"), whatever the input. It carries no information about the inputs, NASWOT never sees
  it (it has no ReLU), and counting it would add the rank-one w·L·11ᵀ, which can only raise log det:
  `none` would always look useful. So it is left out (`count_none=False`, the default) and, since
  removing it changes no activation either, its importance is exactly 0. In the paper-distance
  kernel its Hamming distances are 0 anyway, so there it never counts.
- Partial channels (PC-DARTS): the codes are the op's own output, the C/K channels it computes; the
  bypassed channels are not an op's output.
- Mode and side effects: the forward runs in train mode, as NASWOT's authors recommend (BatchNorm
  uses the batch's statistics), without gradients, with Dropout in eval mode (P-DARTS skip dropout
  would make the codes random) and EM-DARTS edge mutation off. Every module's mode, every buffer
  (BatchNorm running statistics) and `mutation_prob` are restored afterwards: scoring has no side
  effect on the network.
- Kernels are float64. Their entries are integers (times the weights), so sums are exact.

Op importance (HPE-DARTS 3.2.2-3.3, after VP-DARTS): the drop of the score when an op is removed
from an edge, score(full) − score(without). Removing op o from edge e means setting its forward
weight to 0 WITHOUT renormalising the other ops' weights (the op's term leaves the mixed sum and
nothing else changes). α is shared by every cell of a type, so the op leaves that edge in every
normal (or reduction) cell. An edge is named `(cell_type, index)`, e.g. ("normal", 3), in α row order
(`search_space.edge_inputs`).

Removing an op also changes the inputs of the nodes (and cells) after it. `op_importance` and
`op_importances(exact=True)` recompute the forward without the op (exact; one forward per op).
`op_importances(exact=False)` runs ONE forward, caches every op's kernel and only drops the removed
op's weighted term (first-order: later nodes keep the activations they had with the op present).
The two agree exactly when nothing hooked depends on the op's node (the last node of a network's
only cell), and for `none`.

Memory: the cache holds one N×N float64 kernel per (cell type, edge, op): 2·14·8·N² doubles, 29 MB
at N = 128.
"""
from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn as nn

from compressor.errors import ConfigError
from compressor.frontends.darts.search_space import NUM_EDGES, SearchNetwork

logger = logging.getLogger(__name__)

KernelKind = Literal["similarity", "paper-distance"]
WeightMode = Literal["alpha-weighted", "uniform"]
Proxy = Literal["netperf", "naswot"]
KERNELS = ("similarity", "paper-distance")
WEIGHT_MODES = ("alpha-weighted", "uniform")
PROXIES = {"netperf": "alpha-weighted", "naswot": "uniform"}  # proxy -> op weights
CELL_TYPES = ("normal", "reduce")


# ---- NASWOT ---------------------------------------------------------------------------------------
def naswot_kernel(codes: torch.Tensor) -> torch.Tensor:
    """K = c·cᵀ + (1−c)·(1−c)ᵀ for N binary codes (N×D, 0/1 or bool; trailing dims are flattened):
    K_ij = D − Hamming(c_i, c_j), float64. Computed as (D + s·sᵀ)/2 with s = 2c − 1 (one matmul)."""
    if codes.dim() < 2:
        raise ValueError(f"codes must be N×D (one row per sample); got shape {tuple(codes.shape)}")
    c = codes.flatten(1)
    if c.dtype != torch.bool and not bool(((c == 0) | (c == 1)).all()):
        raise ValueError("codes must be binary (0/1 or bool); threshold the activations first, e.g. x > 0")
    s = c.to(torch.float64) * 2 - 1
    return (s @ s.T + c.shape[1]) / 2


def log_det(K: torch.Tensor) -> float:
    """log det K in float64; −inf when K is singular or not positive definite (never NaN, never raises)."""
    K = K.to(torch.float64)
    if K.dim() != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"the kernel must be a square matrix; got shape {tuple(K.shape)}")
    if not bool(torch.isfinite(K).all()):
        return -math.inf
    # Two equal rows (two inputs the network cannot tell apart) are exactly singular; LU may still
    # leave a rounding-sized pivot, so catch them exactly.
    if torch.unique(K, dim=0).shape[0] < K.shape[0]:
        return -math.inf
    sign, logabs = torch.linalg.slogdet(K)
    if float(sign) <= 0:
        return -math.inf
    # A positive determinant can still hide an even number of negative eigenvalues.
    _, info = torch.linalg.cholesky_ex(K)
    if int(info) != 0:
        return -math.inf
    return float(logabs)


def _relu_codes(out: torch.Tensor) -> torch.Tensor:
    return (out.detach() > 0).flatten(1)


@contextlib.contextmanager
def _scoring_mode(model: nn.Module) -> Iterator[None]:
    """Train mode (batch statistics) with Dropout off and no gradients; modes, buffers and EM-DARTS
    mutation restored on exit."""
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    mutation = getattr(model, "mutation_prob", None)
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    if mutation is not None:
        model.mutation_prob = 0.0
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        if mutation is not None:
            model.mutation_prob = mutation


def naswot_score(model: nn.Module, x: torch.Tensor) -> float:
    """NASWOT on a plain network: codes at every `nn.ReLU` module (functional relu is not seen), K
    summed over them, log det. Train mode during the forward, no gradients, state restored."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ConfigError(f"naswot_score needs nn.ReLU modules to hook; {type(model).__name__} has none "
                          "(functional relu calls are invisible to hooks)")
    total: list[torch.Tensor] = []

    def hook(_m: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        K = naswot_kernel(_relu_codes(out))
        if total:
            total[0] += K
        else:
            total.append(K)

    handles = [m.register_forward_hook(hook) for m in relus]
    try:
        with _scoring_mode(model):
            model(x)
    finally:
        for h in handles:
            h.remove()
    if not total:
        raise ConfigError(f"no nn.ReLU of {type(model).__name__} ran in the forward; nothing to score")
    return log_det(total[0])


# ---- NetPerfProxy ---------------------------------------------------------------------------------
@dataclass
class OpKernels:
    """Per-op NASWOT kernels of one supernet forward, summed over the cells of each type.

    `sim[t]`: (14, n_ops, N, N) float64, Σ over cells of type t of op o's similarity kernel on edge e
    (unweighted); `length[t]`: (14,) Σ over those cells of the code length on edge e; `op_weights[t]`:
    (14, n_ops) the forward weights used (softmax α, or the override); `edge_weights[t]`: (14,) the
    PC-DARTS edge weights or None; `primitives[t]`: the op names per edge."""

    sim: dict[str, torch.Tensor]
    length: dict[str, torch.Tensor]
    op_weights: dict[str, torch.Tensor]
    edge_weights: dict[str, torch.Tensor | None]
    primitives: dict[str, list[list[str]]]

    def coefficients(self, weights: WeightMode = "alpha-weighted", count_none: bool = False) -> dict[str, torch.Tensor]:
        """The weight w_o of every op's kernel, per cell type (14, n_ops), float64 (see the module
        docstring)."""
        _check("weights", weights, WEIGHT_MODES)
        out = {}
        for t in CELL_TYPES:
            w = self.op_weights[t].to(torch.float64)
            if weights == "uniform":
                coef = (w != 0).to(torch.float64)
            else:
                coef = w.clone()
                if self.edge_weights[t] is not None:
                    coef = coef * self.edge_weights[t].to(torch.float64)[:, None]
            if not count_none:
                none = torch.tensor([[p == "none" for p in ops] for ops in self.primitives[t]], device=coef.device)
                coef = coef.masked_fill(none, 0.0)
            out[t] = coef
        return out

    def kernel(self, coefficients: dict[str, torch.Tensor], kernel: KernelKind = "similarity") -> torch.Tensor:
        """The network kernel Σ_edges Σ_ops w_o·K_o (or the paper's distance form) for the given
        coefficients."""
        sims = torch.cat([self.sim[t].flatten(0, 1) for t in CELL_TYPES])
        lengths = torch.cat([self.length[t].repeat_interleave(self.sim[t].shape[1]) for t in CELL_TYPES])
        coefs = torch.cat([coefficients[t].flatten() for t in CELL_TYPES])
        diag = sum(float(self.length[t].sum()) for t in CELL_TYPES)
        return _combine(sims, lengths, coefs, diag, kernel)


def _check(name: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ConfigError(f"{name}={value!r} is not valid; choose one of {', '.join(map(repr, valid))}")


def _combine(sims: torch.Tensor, lengths: torch.Tensor, coefs: torch.Tensor, diag: float,
             kernel: KernelKind) -> torch.Tensor:
    """Σ_m w_m·K_m over stacked similarity kernels (M, N, N), or the paper's form: off the diagonal
    Σ_m w_m·Hamming_m (Hamming = L − K), on it `diag` (L summed over the edges, unweighted)."""
    _check("kernel", kernel, KERNELS)
    coefs = coefs.to(device=sims.device, dtype=torch.float64)
    if kernel == "similarity":
        return torch.einsum("m,mij->ij", coefs, sims)
    hamming = lengths.to(device=sims.device, dtype=torch.float64)[:, None, None] - sims
    K = torch.einsum("m,mij->ij", coefs, hamming)
    K.fill_diagonal_(diag)
    return K


def edge_kernel(codes: Sequence[torch.Tensor], weights: Sequence[float] | torch.Tensor,
                kernel: KernelKind = "similarity") -> torch.Tensor:
    """One edge's kernel from its ops' codes (one N×D binary tensor per op, same D) and weights w_o:
    Σ_o w_o·(D − Hamming_o) (`similarity`), or eq. 8-9's Σ_o w_o·Hamming_o off the diagonal and D
    on it (`paper-distance`). Sum edges' kernels for eq. 10."""
    if len(codes) != len(weights) or not codes:
        raise ValueError(f"one weight per op: got {len(codes)} code tensors and {len(weights)} weights")
    sims = torch.stack([naswot_kernel(c) for c in codes])
    D = codes[0].flatten(1).shape[1]
    if any(c.flatten(1).shape[1] != D for c in codes):
        raise ValueError("the ops of one edge produce codes of one length")
    lengths = torch.full((len(codes),), float(D), dtype=torch.float64)
    return _combine(sims, lengths, torch.as_tensor(weights, dtype=torch.float64), float(D), kernel)


def collect_op_kernels(network: SearchNetwork, x: torch.Tensor,
                       op_weights: dict[str, torch.Tensor] | None = None) -> OpKernels:
    """One forward of the supernet (train mode, no gradients, state restored) with a hook on every
    candidate op of every edge of every cell: the op's output codes (> 0, per sample) → its NASWOT
    kernel, summed per (cell type, edge, op). `op_weights` {"normal", "reduce"}: (14, n_ops) forward
    weights replacing softmax(α) (e.g. with an op's weight zeroed to remove it)."""
    with torch.no_grad():
        wn, wr = network.op_weights()
        en, er = network.edge_weights()
    weights = {"normal": wn.detach(), "reduce": wr.detach()}
    if op_weights is not None:
        for t in CELL_TYPES:
            if t in op_weights:
                w = torch.as_tensor(op_weights[t]).to(weights[t])
                if w.shape != weights[t].shape:
                    raise ConfigError(f"op_weights[{t!r}] must have shape {tuple(weights[t].shape)}; "
                                      f"got {tuple(w.shape)}")
                weights[t] = w
    prims = {"normal": network.primitives_normal, "reduce": network.primitives_reduce}
    n = x.shape[0]
    sim = {t: torch.zeros(NUM_EDGES, weights[t].shape[1], n, n, dtype=torch.float64, device=x.device)
           for t in CELL_TYPES}
    length = {t: torch.zeros(NUM_EDGES, dtype=torch.float64, device=x.device) for t in CELL_TYPES}

    def make_hook(t: str, e: int, k: int, count_length: bool):
        def hook(_m: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
            codes = _relu_codes(out)
            sim[t][e, k] += naswot_kernel(codes).to(sim[t].device)
            if count_length:
                length[t][e] += codes.shape[1]
        return hook

    handles = []
    for cell in network.cells:
        t = "reduce" if cell.reduction else "normal"
        for e, mixed in enumerate(cell._ops):
            for k, op in enumerate(mixed._ops):
                handles.append(op.register_forward_hook(make_hook(t, e, k, k == 0)))
    cell_weights = [weights["reduce" if cell.reduction else "normal"] for cell in network.cells]
    try:
        with _scoring_mode(network):
            network(x, cell_weights=cell_weights)
    finally:
        for h in handles:
            h.remove()
    edge_w = {"normal": None if en is None else en.detach(), "reduce": None if er is None else er.detach()}
    return OpKernels(sim, length, weights, edge_w, prims)


def net_perf_kernel(network: SearchNetwork, x: torch.Tensor, weights: WeightMode = "alpha-weighted",
                    kernel: KernelKind = "similarity", count_none: bool = False) -> torch.Tensor:
    """NetPerfProxy's N×N network kernel (eq. 10's argument); see the module docstring for the
    choices."""
    _check("weights", weights, WEIGHT_MODES)
    _check("kernel", kernel, KERNELS)
    ok = collect_op_kernels(network, x)
    return ok.kernel(ok.coefficients(weights, count_none), kernel)


def net_perf_proxy(network: SearchNetwork, x: torch.Tensor, weights: WeightMode = "alpha-weighted",
                   kernel: KernelKind = "similarity", count_none: bool = False) -> float:
    """HPE-DARTS's NetPerfProxy score of a supernet on one mini-batch: log det of the α-weighted sum
    of the per-op NASWOT kernels (codes at op outputs) over every edge of every cell."""
    return log_det(net_perf_kernel(network, x, weights, kernel, count_none))


# ---- op importance -------------------------------------------------------------------------------
def _op_index(network: SearchNetwork, edge: tuple[str, int], op: int | str) -> tuple[str, int, int]:
    if not (isinstance(edge, tuple) and len(edge) == 2):
        raise ConfigError(f"edge must be (cell_type, index), e.g. ('normal', 3); got {edge!r}")
    t, e = edge
    _check("cell type", t, CELL_TYPES)
    if not 0 <= int(e) < NUM_EDGES:
        raise ConfigError(f"edge index must be in 0..{NUM_EDGES - 1}; got {e}")
    ops = (network.primitives_normal if t == "normal" else network.primitives_reduce)[e]
    if isinstance(op, str):
        if op not in ops:
            raise ConfigError(f"op {op!r} is not on edge {edge}; it holds {', '.join(ops)}")
        return t, int(e), ops.index(op)
    if not 0 <= int(op) < len(ops):
        raise ConfigError(f"op index must be in 0..{len(ops) - 1} on edge {edge}; got {op}")
    return t, int(e), int(op)


def _drop(full: float, without: float) -> float:
    return 0.0 if full == without else full - without  # −inf − (−inf) is 0 here, not NaN


def _score(ok: OpKernels, weights: WeightMode, count_none: bool, kernel: KernelKind) -> float:
    return log_det(ok.kernel(ok.coefficients(weights, count_none), kernel))


def _without(ok: OpKernels, t: str, e: int, k: int) -> dict[str, torch.Tensor]:
    w = {s: ok.op_weights[s].clone() for s in CELL_TYPES}
    w[t][e, k] = 0.0
    return w


def op_importance(network: SearchNetwork, x: torch.Tensor, edge: tuple[str, int], op: int | str,
                  proxy: Proxy = "netperf", kernel: KernelKind = "similarity", count_none: bool = False) -> float:
    """The score drop when `op` (index or name) is removed from `edge` = (cell_type, index):
    score(full) − score(without op), the forward recomputed without the op (exact). Positive: the op
    helps the proxy. `proxy`: "netperf" (α-weighted op kernels) or "naswot" (every op output with
    weight 1, α ignored: `weights="uniform"`)."""
    _check("proxy", proxy, tuple(PROXIES))
    _check("kernel", kernel, KERNELS)
    t, e, k = _op_index(network, edge, op)
    full = collect_op_kernels(network, x)
    without = collect_op_kernels(network, x, _without(full, t, e, k))
    mode = PROXIES[proxy]
    return _drop(_score(full, mode, count_none, kernel), _score(without, mode, count_none, kernel))


def op_importances(network: SearchNetwork, x: torch.Tensor, proxy: Proxy = "netperf",
                   kernel: KernelKind = "similarity", count_none: bool = False,
                   exact: bool = True) -> dict[str, np.ndarray]:
    """`op_importance` of every (edge, op): {"normal", "reduce"} → (14, n_ops) float64 arrays.
    `exact=True` runs one forward per op (plus one); `exact=False` one forward in all, dropping only
    the op's cached term (first order: later nodes keep their activations)."""
    _check("proxy", proxy, tuple(PROXIES))
    _check("kernel", kernel, KERNELS)
    full = collect_op_kernels(network, x)
    present = {"reduce" if cell.reduction else "normal" for cell in network.cells}
    if not exact:
        return importances_from_kernels(full, proxy, kernel, count_none, present)
    mode = PROXIES[proxy]
    base = _score(full, mode, count_none, kernel)
    out = {}
    for t in CELL_TYPES:
        n_edges, n_ops = full.op_weights[t].shape
        imp = np.zeros((n_edges, n_ops), dtype=np.float64)
        if t in present:  # no cell of this type: removing its ops changes nothing
            for e in range(n_edges):
                for k in range(n_ops):
                    without = collect_op_kernels(network, x, _without(full, t, e, k))
                    imp[e, k] = _drop(base, _score(without, mode, count_none, kernel))
        out[t] = imp
        logger.debug("op importance (%s, %s, exact): %s", t, proxy, imp)
    return out


def importances_from_kernels(full: OpKernels, proxy: Proxy = "netperf", kernel: KernelKind = "similarity",
                             count_none: bool = False, present: Sequence[str] = CELL_TYPES) -> dict[str, np.ndarray]:
    """The cached form of `op_importances` from one forward's kernels `full`: for every (edge, op) of the
    cell types in `present`, log det of the kernel with all coefficients minus log det with that op's
    coefficient set to 0 (its term leaves the sum; nothing else changes); 0 for the types not present."""
    _check("proxy", proxy, tuple(PROXIES))
    _check("kernel", kernel, KERNELS)
    coefs = full.coefficients(PROXIES[proxy], count_none)
    K = full.kernel(coefs, kernel)
    base = log_det(K)
    diag = K.diagonal().clone()
    out = {}
    for t in CELL_TYPES:
        n_edges, n_ops = full.op_weights[t].shape
        imp = np.zeros((n_edges, n_ops), dtype=np.float64)
        if t in present:
            for e in range(n_edges):
                for k in range(n_ops):
                    w = float(coefs[t][e, k])
                    if w == 0.0:  # the op adds nothing: removing it leaves the kernel as it is
                        continue
                    # the kernel is linear in the coefficients: drop the op's term (the paper form's
                    # diagonal, the code length, does not depend on them)
                    term = full.sim[t][e, k] if kernel == "similarity" else full.length[t][e] - full.sim[t][e, k]
                    without = K - w * term
                    if kernel != "similarity":
                        without.diagonal().copy_(diag)
                    imp[e, k] = _drop(base, log_det(without))
        out[t] = imp
        logger.debug("op importance (%s, %s, cached): %s", t, proxy, imp)
    return out
