"""The DARTS search space: mixed ops, search cells and the supernets that hold α.

After quark0/darts cnn/model_search.py, yuhuixu1993/PC-DARTS model_search.py and chenxin061/pdarts
model_search.py (our own code). One supernet serves every algorithm in `search.py`:

- `MixedOp`: Σ_o w_o · o(x) over its primitives; pools are followed by BN(affine=False) and every op
  is affine=False. With `partial_k = K > 1` (PC-DARTS) the ops see only x[:, :C/K]; the other
  channels bypass (through MaxPool2d(2, 2) on reduction edges), are concatenated after the ops'
  output and the result is channel-shuffled with K groups. With `skip_dropout` (P-DARTS) the
  stride-1 skip_connect is followed by Dropout. `forward(x, weights, mutate=i)` returns op i alone
  (EM-DARTS edge mutation).
- `SearchCell`: 4 intermediate nodes fed by 14 edges (node i has inputs 0..i+1); node = Σ of its
  incoming edges, or, with edge normalization (PC-DARTS), Σ_j softmax(β_node)_j · edge_j; output =
  concat of the 4 nodes. `forward_path(s0, s1, pairs)` runs one discrete cell of a genotype through
  the supernet instead: node = the sum of its two chosen edges, each edge running only its chosen op
  (the MixedOp's single-op path), α unused (single-path weight sharing, `evolution.py`).
- `SearchNetwork`: classification (stem Conv3×3 → 3C + BN, reductions at layers//3 and 2·layers//3,
  global pool + linear) or segmentation (stride-1 stem on `in_channels`, the same two reductions, a
  decoder that upsamples with F.interpolate(size=skip.shape[-2:]) and concatenates the skips from the
  first reduction stage and the stem, then a 1×1 head to one logit per pixel: the search twin of
  `networks.NetworkSegmentation`).

Each edge may hold its own list of primitives (P-DARTS shrinks the space stage by stage); all edges
of a cell type hold the same number, so α is a (14, n_ops) tensor per cell type, initialised to
1e-3·randn as in the references.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.frontends.darts.genotypes import Genotype
from compressor.frontends.darts.ops import (OPS, PRIMITIVES, ChannelsLastCPU, DilConv, FactorizedReduce, Identity,
                                           ReLUConvBN, SepConv, fast_cpu_ops)

STEPS = 4
NUM_EDGES = sum(2 + i for i in range(STEPS))  # 14
CONCAT = tuple(range(2, 2 + STEPS))  # (2, 3, 4, 5)
PARAMETRIC = ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")

EdgePrimitives = Sequence[Sequence[str]]  # one list of op names per edge (14 lists)


def full_space() -> list[list[str]]:
    """Every edge holds every primitive (the DARTS space)."""
    return [list(PRIMITIVES) for _ in range(NUM_EDGES)]


def edge_inputs() -> list[tuple[int, int]]:
    """(node, input_index) of every edge, in α row order."""
    return [(i, j) for i in range(STEPS) for j in range(2 + i)]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle: view (N, g, C/g, H, W), swap the two channel axes, flatten.
    Output channel j·g + i is input channel i·(C/g) + j."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


def cat_shuffle(first: torch.Tensor, rest: torch.Tensor, groups: int) -> torch.Tensor:
    """`channel_shuffle(torch.cat([first, rest], 1), groups)` for `first` holding exactly C/groups
    channels, in one copy instead of two: channel j·g of the result is first[:, j] and channel
    j·g + i (i ≥ 1) is rest[:, (i−1)·C/g + j]."""
    n, c, h, w = first.shape
    interleaved = rest.view(n, groups - 1, c, h, w).transpose(1, 2)
    return torch.cat([first.unsqueeze(2), interleaved], dim=2).view(n, c * groups, h, w)


class MixedOp(nn.Module):
    def __init__(self, C: int, stride: int, primitives: Sequence[str], partial_k: int = 1,
                 skip_dropout: float = 0.0) -> None:
        super().__init__()
        if C % partial_k:
            raise ValueError(f"partial channels need C divisible by K; got C={C}, K={partial_k}")
        self.primitives = tuple(primitives)
        self.k = partial_k
        self.stride = stride
        c_op = C // partial_k
        self._ops = nn.ModuleList()
        for name in self.primitives:
            op = OPS[name](c_op, stride, False)
            if name == "max_pool_3x3" and stride == 1:
                op = ChannelsLastCPU(op)  # faster search steps on a CPU (see ops.py)
            if "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(c_op, affine=False))
            if isinstance(op, Identity) and skip_dropout > 0:
                op = nn.Sequential(op, nn.Dropout(skip_dropout))
            if isinstance(op, (SepConv, DilConv)):
                op.channels_last_convs = True  # faster search steps on a CPU (see ops.py)
            self._ops.append(op)
        self.bypass_pool = nn.MaxPool2d(2, 2) if partial_k > 1 and stride == 2 else None
        self.parametric = tuple(i for i, n in enumerate(self.primitives) if n in PARAMETRIC)

    def _shared_activation(self, x: torch.Tensor) -> torch.Tensor | None:
        """ReLU(x) once for the edge's separable and dilated convs, which all start with it (None if
        one of them starts with something else: a test may swap the activations)."""
        if all(type(self._ops[k].op[0]) is nn.ReLU for k in self.parametric):
            return F.relu(x)
        return None

    def _run(self, k: int, x: torch.Tensor, activated: torch.Tensor | None) -> torch.Tensor:
        if activated is not None and k in self.parametric:
            return self._ops[k](activated, activated=True)
        return self._ops[k](x)

    def set_skip_dropout(self, p: float) -> None:
        for op in self._ops:
            if isinstance(op, nn.Sequential) and isinstance(op[0], Identity):
                op[1].p = p

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None, mutate: int | None = None) -> torch.Tensor:
        if self.k > 1:
            c = x.shape[1] // self.k
            x_ops, x_rest = x[:, :c], x[:, c:]
        else:
            x_ops, x_rest = x, None
        if mutate is not None:
            out = self._run(mutate, x_ops, None)
        else:
            act = self._shared_activation(x_ops) if self.parametric and fast_cpu_ops() else None
            out = sum(w * self._run(k, x_ops, act) for k, w in enumerate(weights))
        if x_rest is None:
            return out
        if self.bypass_pool is not None:
            x_rest = self.bypass_pool(x_rest)
        return cat_shuffle(out, x_rest, self.k)


class SearchCell(nn.Module):
    def __init__(self, C_prev_prev: int, C_prev: int, C: int, reduction: bool, reduction_prev: bool,
                 primitives: EdgePrimitives, partial_k: int = 1, skip_dropout: float = 0.0) -> None:
        super().__init__()
        if len(primitives) != NUM_EDGES:
            raise ValueError(f"a search cell has {NUM_EDGES} edges; got primitives for {len(primitives)}")
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self._ops = nn.ModuleList()
        for e, (_node, j) in enumerate(edge_inputs()):
            stride = 2 if reduction and j < 2 else 1
            self._ops.append(MixedOp(C, stride, primitives[e], partial_k, skip_dropout))
        self.multiplier = STEPS

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
                edge_weights: torch.Tensor | None = None, mutation_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(STEPS):
            terms = []
            for j, h in enumerate(states):
                op: MixedOp = self._ops[offset + j]
                mutate = None
                # EM-DARTS edge mutation: with probability p the edge runs one parametric op alone.
                if mutation_prob > 0 and op.parametric and float(torch.rand(())) < mutation_prob:
                    mutate = op.parametric[int(torch.randint(len(op.parametric), ()))]
                out = op(h, weights[offset + j], mutate)
                if edge_weights is not None:
                    out = edge_weights[offset + j] * out
                terms.append(out)
            offset += len(states)
            states.append(sum(terms))
        return torch.cat(states[-self.multiplier:], dim=1)

    def forward_path(self, s0: torch.Tensor, s1: torch.Tensor, pairs: Sequence[tuple[str, int]]) -> torch.Tensor:
        """The cell of a discrete genotype (`pairs`: two (op, input) pairs per node) run on this cell's
        weights: node i = op_a(state[j_a]) + op_b(state[j_b]) in pair order, each op on edge (i, j) running
        alone through its MixedOp (no α, no other op), as `networks.Cell` computes a node; output = concat
        of the 4 nodes. Only the chosen edges' ops run, so only their weights get gradients."""
        if len(pairs) != 2 * STEPS:
            raise ValueError(f"a search cell has {STEPS} nodes, so a path needs {2 * STEPS} (op, input) pairs; "
                             f"got {len(pairs)}")
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for i in range(STEPS):
            terms = []
            for op_name, j in pairs[2 * i:2 * i + 2]:
                if not 0 <= j <= i + 1:
                    raise ValueError(f"node {i} may take inputs 0..{i + 1}; got ({op_name!r}, {j})")
                mixed: MixedOp = self._ops[offset + j]
                if op_name not in mixed.primitives:
                    raise ValueError(f"edge ({i}, {j}) holds {list(mixed.primitives)}, not {op_name!r}")
                terms.append(mixed(states[j], None, mixed.primitives.index(op_name)))
            offset += len(states)
            states.append(terms[0] + terms[1])
        return torch.cat(states[-self.multiplier:], dim=1)


def node_softmax(beta: torch.Tensor) -> torch.Tensor:
    """PC-DARTS edge normalization: softmax of β over each node's incoming edges, concatenated."""
    parts, start = [], 0
    for i in range(STEPS):
        parts.append(F.softmax(beta[start:start + 2 + i], dim=-1))
        start += 2 + i
    return torch.cat(parts)


def derive_cell(op_weights: np.ndarray, primitives: EdgePrimitives,
                edge_weights: np.ndarray | None = None) -> list[tuple[str, int]]:
    """DARTS derivation: per node keep the 2 incoming edges with the largest non-`none` weight, and
    on each the argmax non-`none` op. PC-DARTS first multiplies each edge's op weights by its edge
    weight. Edges whose ops are all `none` never win."""
    W = np.array(op_weights, dtype=np.float64, copy=True)
    if edge_weights is not None:
        W = W * np.asarray(edge_weights, dtype=np.float64)[:, None]
    gene: list[tuple[str, int]] = []
    start = 0
    for i in range(STEPS):
        n = 2 + i

        def best(e: int) -> tuple[float, int]:
            cands = [(W[e][k], k) for k, p in enumerate(primitives[e]) if p != "none"]
            return max(cands, key=lambda t: t[0]) if cands else (-np.inf, -1)

        edges = sorted(range(n), key=lambda j: -best(start + j)[0])[:2]
        for j in edges:
            k = best(start + j)[1]
            if k < 0:
                raise ValueError(f"node {i}: edge from input {j} holds only 'none'; cannot derive an op")
            gene.append((primitives[start + j][k], j))
        start += n
    return gene


class SearchNetwork(nn.Module):
    """The supernet. α (and β with `edge_norm`) are nn.Parameters of this module so that they move,
    save and load with it; `weight_parameters()` and `arch_parameters()` split the two sets."""

    def __init__(self, C: int, num_classes: int, layers: int, task: str = "classification", in_channels: int = 3,
                 primitives_normal: EdgePrimitives | None = None, primitives_reduce: EdgePrimitives | None = None,
                 partial_k: int = 1, edge_norm: bool = False, skip_dropout: float = 0.0,
                 reductions: int = 2) -> None:
        super().__init__()
        if task not in ("classification", "segmentation"):
            raise ValueError(f"task must be classification or segmentation, got {task!r}")
        if layers < 3:
            raise ValueError(f"layers must be at least 3 (reductions at layers//3 and 2*layers//3), got {layers}")
        self.task = task
        self.C, self.num_classes, self.layers, self.in_channels = C, num_classes, layers, in_channels
        self.partial_k, self.edge_norm = partial_k, edge_norm
        self.primitives_normal = [list(p) for p in (primitives_normal or full_space())]
        self.primitives_reduce = [list(p) for p in (primitives_reduce or full_space())]
        for name, prims in (("normal", self.primitives_normal), ("reduce", self.primitives_reduce)):
            counts = {len(p) for p in prims}
            if len(prims) != NUM_EDGES or len(counts) != 1:
                raise ValueError(f"{name}: every one of the {NUM_EDGES} edges must hold the same number of ops")
        self.mutation_prob = 0.0
        self.reductions = 2 if task == "classification" else reductions
        reduce_at = (layers // 3, 2 * layers // 3)[:self.reductions]

        C_stem = 3 * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False), nn.BatchNorm2d(C_stem))
        self.cells = nn.ModuleList()
        out_channels = []
        C_pp, C_p, C_curr = C_stem, C_stem, C
        reduction_prev = False
        for i in range(layers):
            reduction = i in reduce_at
            if reduction:
                C_curr *= 2
            prims = self.primitives_reduce if reduction else self.primitives_normal
            cell = SearchCell(C_pp, C_p, C_curr, reduction, reduction_prev, prims, partial_k, skip_dropout)
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, cell.multiplier * C_curr
            out_channels.append(C_p)

        if task == "classification":
            self.global_pooling = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(C_p, num_classes)
        else:
            # Skips: the stem (level 0), then the last cell before the second reduction (level 1).
            self._skip_cells = tuple(r - 1 for r in reduce_at[1:])
            skip_channels = [C_stem] + [out_channels[i] for i in self._skip_cells]
            self.decoder = nn.ModuleList()
            C_dec = C_p
            for level in (reversed(range(self.reductions)) if self.reductions else [0]):
                width = C * 2 ** level
                self.decoder.append(nn.Sequential(
                    nn.Conv2d(C_dec + skip_channels[level], width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width), nn.ReLU(inplace=False)))
                C_dec = width
            self.head = nn.Conv2d(C_dec, num_classes, 1)

        n_normal, n_reduce = len(self.primitives_normal[0]), len(self.primitives_reduce[0])
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(NUM_EDGES, n_normal))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(NUM_EDGES, n_reduce))
        if edge_norm:
            self.betas_normal = nn.Parameter(1e-3 * torch.randn(NUM_EDGES))
            self.betas_reduce = nn.Parameter(1e-3 * torch.randn(NUM_EDGES))

    # ---- parameter sets ---------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        ps = [self.alphas_normal, self.alphas_reduce]
        if self.edge_norm:
            ps += [self.betas_normal, self.betas_reduce]
        return ps

    def arch_names(self) -> set[str]:
        return {"alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce"}

    def named_weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if n not in self.arch_names()]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_weight_parameters()]

    def set_skip_dropout(self, p: float) -> None:
        for cell in self.cells:
            for op in cell._ops:
                op.set_skip_dropout(p)

    # ---- weights ------------------------------------------------------------------------------
    def op_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        return F.softmax(self.alphas_normal, dim=-1), F.softmax(self.alphas_reduce, dim=-1)

    def edge_weights(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.edge_norm:
            return None, None
        return node_softmax(self.betas_normal), node_softmax(self.betas_reduce)

    def forward(self, x: torch.Tensor, cell_weights: Sequence[torch.Tensor] | None = None,
                detach_arch: bool = False, genotype: Genotype | None = None) -> torch.Tensor:
        """`cell_weights[i]` replaces softmax(α) for cell i (λ-DARTS); `detach_arch` keeps α out of
        the graph (weight steps do not need its gradient). With `genotype`, every cell runs that
        discrete path instead (`SearchCell.forward_path`; α is not used): the cells of the network
        the genotype lowers to, with the supernet's shared weights and ops (BN without affine
        parameters; pools followed by a BN)."""
        if genotype is not None:
            if getattr(genotype, "variable", False):
                raise ValueError("the supernet's discrete path runs 2 (op, input) pairs per node; this genotype has "
                                 "a variable number per node (node sizes): build its network instead")
            if tuple(genotype.normal_concat) != CONCAT or tuple(genotype.reduce_concat) != CONCAT:
                raise ValueError(f"the supernet concatenates nodes {list(CONCAT)}; the genotype concatenates "
                                 f"{list(genotype.normal_concat)} / {list(genotype.reduce_concat)}")
        else:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not detach_arch):
                wn, wr = self.op_weights()
                en, er = self.edge_weights()
            mutation = self.mutation_prob if self.training else 0.0
        s0 = s1 = stem = self.stem(x)
        skips = [stem]
        for i, cell in enumerate(self.cells):
            if genotype is not None:
                s0, s1 = s1, cell.forward_path(s0, s1, genotype.reduce if cell.reduction else genotype.normal)
            else:
                w = cell_weights[i] if cell_weights is not None else (wr if cell.reduction else wn)
                s0, s1 = s1, cell(s0, s1, w, er if cell.reduction else en, mutation)
            if self.task == "segmentation" and i in self._skip_cells:
                skips.append(s1)
        if self.task == "classification":
            out = self.global_pooling(s1)
            return self.classifier(out.flatten(1))
        out = s1
        levels = list(reversed(range(self.reductions))) if self.reductions else [0]
        for block, level in zip(self.decoder, levels):
            skip = skips[level]
            if self.reductions:
                out = F.interpolate(out, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            out = block(torch.cat([out, skip], dim=1))
        return self.head(out)

    # ---- derivation ---------------------------------------------------------------------------
    @torch.no_grad()
    def arch_weights(self) -> dict[str, np.ndarray]:
        """softmax(α) (and the per-node softmax(β) with edge normalization) as numpy arrays."""
        wn, wr = self.op_weights()
        out = {"normal": wn.detach().cpu().double().numpy(), "reduce": wr.detach().cpu().double().numpy()}
        en, er = self.edge_weights()
        if en is not None:
            out["edge_normal"] = en.detach().cpu().double().numpy()
            out["edge_reduce"] = er.detach().cpu().double().numpy()
        return out

    def genotype(self) -> Genotype:
        w = self.arch_weights()
        normal = derive_cell(w["normal"], self.primitives_normal, w.get("edge_normal"))
        reduce = derive_cell(w["reduce"], self.primitives_reduce, w.get("edge_reduce"))
        return Genotype(normal=normal, normal_concat=CONCAT, reduce=reduce, reduce_concat=CONCAT)
