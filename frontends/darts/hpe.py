"""HPE-DARTS's schedule (seed 004, section 3.2, Algorithm 1): the pieces the search algorithm composes.

- `removal_counts`: the hard-pruning schedule Pop = [Pop_1, ..., Pop_S] (eq. 5) from the number of
  operations left on each edge after each stage (Table 3's best: 8 → 5 → 3 → 1, i.e. Pop = [3, 2, 2]),
  checked against eq. 6, Σ Pop_i = |O| − 1, so exactly one operation is left per edge;
- `soft_decay`: eq. 7, α_{o,i} = α_{o,i−1} · (1 − i / E_prune) for the unimportant operations, 0 ≤ i < E_prune;
- `least_important`: per edge, the k active operations with the smallest importance (the performance drop
  when the operation is removed: larger = more important);
- `importance_measure`: which measure scores operations in stage s of S: validation accuracy in the first
  half of the stages, NetPerfProxy (`frontends/darts/proxy.py`) in the second half (section 4.1.2), or
  one of them throughout (section 4.2 uses NetPerfProxy throughout on the DARTS space).

Choice (eq. 7 and negative α): DARTS initializes α as 1e-3·N(0, 1), so about half the α are negative, and
multiplying a negative α by (1 − i/E) moves it towards 0, which raises its softmax weight instead of
lowering it. `mode="literal"` is eq. 7 as written (the default, faithful to the formula);
`mode="weight"` applies the factor to the operation's unnormalized weight exp(α), α ← α + log(1 − i/E),
which down-weights it whatever its sign (the stated intent: "gradually decayed ... decreasing influence").
At i = 0 both leave α unchanged.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import torch

from compressor.errors import ConfigError
from compressor.frontends.darts.ops import PRIMITIVES
from compressor.frontends.darts.search_base import SearchAlgorithm, register_search
from compressor.options import option


def removal_counts(ops_per_edge: Sequence[int], n_ops: int) -> list[int]:
    """Pop (eq. 5) from the operations left per edge: [n_ops, ..., 1], strictly decreasing, so that
    Σ Pop_i = |O| − 1 (eq. 6). Anything else is a one-line ConfigError naming what is valid."""
    counts = list(ops_per_edge)
    if any(isinstance(c, bool) or not isinstance(c, int) for c in counts) or len(counts) < 2:
        raise ConfigError(f"hpe ops_per_edge: expected a list of integers from {n_ops} down to 1, e.g. "
                          f"[{n_ops}, 5, 3, 1], got {counts!r}")
    if counts[0] != n_ops:
        raise ConfigError(f"hpe ops_per_edge {counts}: must start at the {n_ops} candidate operations of the search "
                          f"space, e.g. [{n_ops}, 5, 3, 1]")
    if counts[-1] != 1:
        raise ConfigError(f"hpe ops_per_edge {counts}: removals sum to {n_ops - counts[-1]}, but eq. 6 needs "
                          f"Σ Pop = |O| − 1 = {n_ops - 1} (one operation left per edge); end the list at 1")
    pops = [a - b for a, b in zip(counts, counts[1:])]
    if any(p <= 0 for p in pops):
        raise ConfigError(f"hpe ops_per_edge {counts}: every stage must remove at least one operation (strictly "
                          f"decreasing), e.g. [{n_ops}, 5, 3, 1]")
    assert sum(pops) == n_ops - 1  # eq. 6
    return pops


def soft_decay(alpha: torch.Tensor, unimportant: torch.Tensor, i: int, e_prune: int,
               mode: Literal["literal", "weight"] = "literal") -> torch.Tensor:
    """Eq. 7 on the entries of `alpha` (edges × ops) where `unimportant` is True, at pruning epoch i
    (0 ≤ i < e_prune); the others are unchanged. Returns a new tensor."""
    if not 0 <= i < e_prune:
        raise ValueError(f"soft pruning epoch i={i} outside 0 ≤ i < E_prune={e_prune}")
    factor = 1.0 - i / e_prune
    if mode == "literal":
        decayed = alpha * factor
    elif mode == "weight":
        decayed = alpha + math.log(factor)
    else:
        raise ValueError(f"soft_decay mode {mode!r}; valid: literal, weight")
    return torch.where(unimportant, decayed, alpha)


def least_important(importance: torch.Tensor, active: torch.Tensor, k: int) -> torch.Tensor:
    """Per edge (row), a mask of the k active operations with the smallest importance (ties: the later
    operation goes first, so the primitive order of the search space breaks them deterministically)."""
    if importance.shape != active.shape:
        raise ValueError(f"importance {tuple(importance.shape)} and active {tuple(active.shape)} differ")
    left = active.sum(dim=1)
    if k < 0 or bool((left <= k).any()):
        raise ValueError(f"cannot remove {k} operations from an edge with {int(left.min())} active ones (one must stay)")
    n = importance.shape[1]
    # inactive entries sort last; a stable sort of the column-reversed keys puts, among equal importances,
    # the larger original index first
    key = torch.where(active, importance.double(), torch.full(importance.shape, math.inf, dtype=torch.double))
    ranks = n - 1 - torch.argsort(key.flip(1), dim=1, stable=True)[:, :k]
    mask = torch.zeros_like(active, dtype=torch.bool)
    mask.scatter_(1, ranks, True)
    return mask & active


def importance_measure(stage: int, n_stages: int,
                       schedule: Literal["hybrid", "accuracy", "netperf"] = "hybrid") -> str:
    """"accuracy" or "netperf" for hybrid stage `stage` (0-based) of `n_stages`: with "hybrid", the first half
    of the stages (stage < S/2) use the validation-accuracy drop and the rest NetPerfProxy (section 4.1.2)."""
    if not 0 <= stage < n_stages:
        raise ValueError(f"stage {stage} outside 0..{n_stages - 1}")
    if schedule == "hybrid":
        return "accuracy" if stage < n_stages / 2 else "netperf"
    if schedule in ("accuracy", "netperf"):
        return schedule
    raise ValueError(f"importance schedule {schedule!r}; valid: hybrid, accuracy, netperf")


# ---- the algorithm --------------------------------------------------------------------------------
@dataclass(frozen=True)
class HPEDartsOptions:
    """The `hpe:` block of the search options."""

    ops_per_edge: tuple[int, ...] = option((8, 5, 3, 1), "ops left per edge after the warm-up and each hybrid "
                                                          "stage (eq. 6: from 8 down to 1)")
    importance: Literal["hybrid", "accuracy", "netperf"] = option(
        "hybrid", "op importance: validation-accuracy drop in the first half of the stages and NetPerfProxy in "
                  "the second (hybrid), or one of them throughout")
    decay: Literal["literal", "weight"] = option("literal", "eq. 7 on α as written (literal), or on exp(α) "
                                                            "(weight: always lowers the op's weight)")
    batch: int = option(64, "validation samples that score the ops", min=2, max=4096)
    proxy: Literal["cached", "exact"] = option("cached", "NetPerfProxy importances from one forward (cached) or one "
                                                         "forward per op (exact)")


@register_search("hpe-darts")
class HPEDarts(SearchAlgorithm):
    """HPE-DARTS (seed 004, Algorithm 1) on the loop's stages: stage 0 is the warm-up (weights only, α
    fixed), stages 1..S the hybrid pruning stages, each `epochs` epochs (so E_warmup = E_prune =
    `epochs`; the paper uses 5 and 5). At the start of each epoch i of hybrid stage s, every op on every
    edge is scored (`hpe.importance`: the drop in validation accuracy when it is removed, or in
    NetPerfProxy), and the Pop_s least important ops of each edge have their α decayed by eq. 7 (soft
    pruning); α and the weights then train as in DARTS. At the end of the stage the Pop_s least
    important ops are removed (hard pruning): the next stage's supernet holds the others and inherits
    their weights and α (the weight optimizer's state and the cosine learning-rate schedule restart per
    stage). In the last stage `none` is removed first, so every edge ends with one real operation."""

    Options = HPEDartsOptions
    block = "hpe"
    default_arch_lr = 3e-4

    def __init__(self, opts: Any, loss_fn: Any) -> None:
        super().__init__(opts, loss_fn)
        self.pops = removal_counts(opts.hpe.ops_per_edge, len(PRIMITIVES))
        self._stage = 0
        self._prev: Any = None
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def check_options(cls, opts: Any) -> None:
        try:
            removal_counts(opts.hpe.ops_per_edge, len(PRIMITIVES))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @classmethod
    def stages(cls, opts: Any) -> tuple[int, ...]:
        return (opts.layers,) * len(opts.hpe.ops_per_edge)  # the warm-up, then S = len − 1 hybrid stages

    def build_supernet(self, stage: int, data: Any, primitives_normal: Any, primitives_reduce: Any) -> Any:
        from compressor.data import make_loader

        model = self.supernet(stage, data, primitives_normal, primitives_reduce)
        if self._prev is not None:
            inherit(self._prev, model)
            self._prev = None
        x, y = next(iter(make_loader(data.split("val"), self.opts.hpe.batch, shuffle=False)))
        self._batch = (x.float(), y)
        return model

    def epoch_start(self, model: Any, stage: int, epoch: int) -> dict[str, float]:
        self._stage = stage
        if stage == 0:
            return {"hpe_stage": 0.0}
        s = stage - 1
        imp = self.importance(model, s)
        for kind in ("normal", "reduce"):
            alpha = getattr(model, f"alphas_{kind}")
            weak = least_important(imp[kind], torch.ones_like(imp[kind], dtype=torch.bool), self.pops[s])
            with torch.no_grad():
                alpha.copy_(soft_decay(alpha.detach(), weak.to(alpha.device), epoch, self.opts.epochs,
                                       self.opts.hpe.decay))
        measure = importance_measure(s, len(self.pops), self.opts.hpe.importance)
        return {"hpe_stage": float(stage), "hpe_netperf": float(measure == "netperf")}

    def arch_step(self, st: Any, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
                  lr: float) -> float:
        if self._stage == 0:  # warm-up: α fixed; record the α-split loss only
            with torch.no_grad():
                return float(self.loss_fn(st.model(x_val), y_val))
        return super().arch_step(st, x, y, x_val, y_val, lr)

    def stage_end(self, model: Any, stage: int) -> tuple[Any, Any]:
        self._prev = model
        if stage == 0:
            return model.primitives_normal, model.primitives_reduce
        s = stage - 1
        imp = self.importance(model, s)
        out = []
        for kind in ("normal", "reduce"):
            prims = getattr(model, f"primitives_{kind}")
            scores = imp[kind].clone()
            if s == len(self.pops) - 1:  # the last stage: `none` goes first
                for e, edge in enumerate(prims):
                    if "none" in edge:
                        scores[e, edge.index("none")] = -math.inf
            drop = least_important(scores, torch.ones_like(scores, dtype=torch.bool), self.pops[s])
            out.append([[p for j, p in enumerate(edge) if not drop[e, j]] for e, edge in enumerate(prims)])
        return out[0], out[1]

    def derive(self, model: Any) -> Any:
        """The last stage's hard pruning (Pop_S, `none` first) leaves one op per edge; each node then keeps
        the 2 incoming edges whose surviving op weighs most in the last stage's softmax(α)."""
        from compressor.frontends.darts.genotypes import Genotype
        from compressor.frontends.darts.search_space import CONCAT, derive_cell

        last = len(self.pops) - 1
        kept = self.stage_end(model, last + 1)
        self._prev = None
        cells = []
        for kind, survivors in zip(("normal", "reduce"), kept):
            prims = getattr(model, f"primitives_{kind}")
            weights = torch.softmax(getattr(model, f"alphas_{kind}").detach().double(), dim=-1).cpu().numpy()
            masked = np.array([[w if p in survivors[e] else 0.0 for w, p in zip(weights[e], prims[e])]
                               for e in range(len(prims))])
            cells.append(derive_cell(masked, prims))
        return Genotype(normal=cells[0], normal_concat=CONCAT, reduce=cells[1], reduce_concat=CONCAT)

    # ---- importance --------------------------------------------------------------------------
    def importance(self, model: Any, s: int) -> dict[str, torch.Tensor]:
        """Per cell type, (edges × ops) importance: the performance drop when the op is removed."""
        assert self._batch is not None
        x, y = (t.to(next(model.parameters()).device) for t in self._batch)
        if importance_measure(s, len(self.pops), self.opts.hpe.importance) == "netperf":
            from compressor.frontends.darts.proxy import op_importances

            scores = op_importances(model, x, exact=self.opts.hpe.proxy == "exact")
            return {k: torch.as_tensor(np.nan_to_num(v, nan=0.0, posinf=1e30, neginf=-1e30))
                    for k, v in scores.items()}
        return self._accuracy_importance(model, x, y)

    def _accuracy_importance(self, model: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                base = _accuracy(model(x), y)
                out = {}
                for kind in ("normal", "reduce"):
                    alpha = getattr(model, f"alphas_{kind}")
                    imp = torch.zeros(alpha.shape, dtype=torch.float64)
                    for e in range(alpha.shape[0]):
                        for j in range(alpha.shape[1]):
                            saved = alpha[e, j].item()
                            alpha[e, j] = -math.inf  # weight 0: the op is removed from this edge
                            imp[e, j] = base - _accuracy(model(x), y)
                            alpha[e, j] = saved
                    out[kind] = imp
        finally:
            model.train(was_training)
        return out

def inherit(old: Any, new: Any) -> None:
    """Copy into `new` (the pruned supernet) the weights and α of the ops it kept from `old`."""
    pattern = re.compile(r"cells\.(\d+)\._ops\.(\d+)\._ops\.(\d+)\.(.*)")
    old_sd, new_sd = old.state_dict(), new.state_dict()
    for key in new_sd:
        m = pattern.fullmatch(key)
        src = key
        if m:
            c, e, j, rest = int(m[1]), int(m[2]), int(m[3]), m[4]
            name = new.cells[c]._ops[e].primitives[j]
            src = f"cells.{c}._ops.{e}._ops.{old.cells[c]._ops[e].primitives.index(name)}.{rest}"
        elif key in ("alphas_normal", "alphas_reduce"):
            kind = key.split("_")[1]
            old_prims, new_prims = getattr(old, f"primitives_{kind}"), getattr(new, f"primitives_{kind}")
            new_sd[key] = torch.stack([old_sd[key][e, [old_prims[e].index(p) for p in edge]]
                                       for e, edge in enumerate(new_prims)])
            continue
        new_sd[key] = old_sd[src].clone()
    new.load_state_dict(new_sd)


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy (classification) or pixel accuracy (one logit per pixel, segmentation)."""
    if logits.shape[1] == 1 and logits.dim() == 4:
        return float(((logits > 0).float() == (y > 0.5).float().reshape(logits.shape)).float().mean())
    return float((logits.argmax(1) == y).float().mean())
