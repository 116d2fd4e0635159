"""HPE-DARTS's schedule (seed 004, section 3.2, Algorithm 1): the pieces the search algorithm composes.

- `removal_counts`: the hard-pruning schedule Pop = [Pop_1, ..., Pop_S] (eq. 5) from the number of
  operations left on each edge after each stage (Table 3's best: 8 → 5 → 3 → 1, i.e. Pop = [3, 2, 2]),
  checked against eq. 6, Σ Pop_i = |O| − 1, so exactly one operation is left per edge;
- `soft_decay`: eq. 7, α_{o,i} = α_{o,i−1} · (1 − i / E_prune) for the unimportant operations, 0 ≤ i < E_prune;
- `least_important`: per edge, the k active operations with the smallest importance (the performance drop
  when the operation is removed: larger = more important);
- `importance_schedule`: which measure scores operations in each hybrid stage (`hpe.schedule`, one entry
  per stage). By default NetPerfProxy in every stage: the paper's setting in the DARTS space (section
  4.2.2, "consistently evaluated using our NetPerfProxy"). `hpe.importance` is a shorthand: one measure in
  every stage, or `hybrid`, validation accuracy in the first half of the stages and NetPerfProxy in the
  second (`importance_measure`; section 4.1.2, the NAS-Bench-201 setting; the default before the schedule).
- the measures (`MEASURES`): `accuracy` (`accuracy_importance`, VP-DARTS's validation-accuracy drop),
  and the training-free ones of `frontends/darts/proxy.py` (`proxy_importance`): `netperf`
  (NetPerfProxy with NASWOT's similarity kernel, see proxy.py for why), `netperf-literal` (eq. 8-10 as
  written: α-weighted Hamming distances off the diagonal, the code length on it) and `naswot` (Mellor et
  al. 2021's log det over every op output, α ignored: Table 4's comparison).

Choice (scoring batches): the paper does not say how many validation samples score the ops. Each scoring
round draws its own batch (seeded, so resumption repeats it) and every op of the round is scored on it:
the training-free measures on `hpe.batch` = 64 samples (the N of their N×N kernel; one forward in the
cached form), the accuracy drop on `hpe.accuracy_batch` = 32 (one forward per op: 2·14·8 + 1 = 225
forwards per round with 8 ops per edge), which bounds its cost; the loop records each round's seconds
(`score_s`).

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


# The op-importance measures a hybrid stage may use: the validation-accuracy drop (VP-DARTS's), and the drop of
# a training-free score, each as (proxy, kernel) of `proxy.op_importances`.
Measure = Literal["accuracy", "netperf", "netperf-literal", "naswot"]
MEASURES: tuple[str, ...] = ("accuracy", "netperf", "netperf-literal", "naswot")
PROXY_MEASURES = {"netperf": ("netperf", "similarity"), "netperf-literal": ("netperf", "paper-distance"),
                  "naswot": ("naswot", "similarity")}


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


def importance_measure(stage: int, n_stages: int, schedule: str = "hybrid") -> str:
    """The measure of hybrid stage `stage` (0-based) of `n_stages` under the shorthand `schedule`: with
    "hybrid", the first half of the stages (stage < S/2) use the validation-accuracy drop and the rest
    NetPerfProxy (section 4.1.2, the NAS-Bench-201 setting); a measure name (`MEASURES`) is used in every stage."""
    if not 0 <= stage < n_stages:
        raise ValueError(f"stage {stage} outside 0..{n_stages - 1}")
    if schedule == "hybrid":
        return "accuracy" if stage < n_stages / 2 else "netperf"
    if schedule in MEASURES:
        return schedule
    raise ValueError(f"importance schedule {schedule!r}; valid: hybrid, {', '.join(MEASURES)}")


def importance_schedule(opts: "HPEDartsOptions", n_stages: int) -> tuple[str, ...]:
    """The measure of each of the `n_stages` hybrid stages: `schedule` as given, else `importance` (the
    shorthand of `importance_measure`) in every stage, else NetPerfProxy in every stage (section 4.2.2:
    the paper's setting in the DARTS space). Raises ValueError (one line, how to fix it) for a schedule of
    the wrong length or both keys given."""
    if opts.schedule is not None and opts.importance is not None:
        raise ValueError(f"hpe: importance: {opts.importance} and schedule: {list(opts.schedule)} both set the "
                         "measures; keep one (importance is the same measure in every stage, or hybrid)")
    if opts.schedule is not None:
        if len(opts.schedule) != n_stages:
            example = ", ".join(["netperf"] * n_stages)
            raise ValueError(f"hpe.schedule has {len(opts.schedule)} entries {list(opts.schedule)} but "
                             f"ops_per_edge {list(opts.ops_per_edge)} makes {n_stages} hybrid stages; give one "
                             f"measure per stage, e.g. [{example}]")
        return tuple(opts.schedule)
    return tuple(importance_measure(s, n_stages, opts.importance or "netperf") for s in range(n_stages))


def accuracy_importance(model: Any, x: torch.Tensor, y: torch.Tensor,
                        max_samples: int = 256) -> dict[str, torch.Tensor]:
    """Per cell type, (edges × ops) the drop of the accuracy (`_accuracy`) on (x, y) when the op is removed
    from the edge: its α set to −inf (weight 0, the edge's other ops renormalized by the softmax); α is shared
    by the cells of a type, so the op leaves that edge in all of them. That is 2·14·n_ops + 1 variants of the
    supernet (the full one first) on the same batch. They run batched: up to `max_samples` samples per
    forward, `x` repeated once per variant, each copy with its variant's op weights (per-sample weights
    broadcast in the mixed ops). Eval mode (BatchNorm's running statistics, Dropout off), so the copies do
    not interact and each gets what a forward of that variant alone gives; no gradients; α and the modes
    are restored."""
    kinds = ("normal", "reduce")
    alphas = {k: getattr(model, f"alphas_{k}") for k in kinds}
    variants: list[tuple[str, int, int] | None] = [None]
    variants += [(k, e, j) for k in kinds for e in range(alphas[k].shape[0]) for j in range(alphas[k].shape[1])]
    weights = {k: [] for k in kinds}  # per variant, (edges × ops) op weights of each cell type
    with torch.no_grad():
        for v in variants:
            saved = None
            if v is not None:
                saved = alphas[v[0]][v[1], v[2]].item()
                alphas[v[0]][v[1], v[2]] = -math.inf  # weight 0: the op is removed from this edge
            try:
                wn, wr = model.op_weights()
                weights["normal"].append(wn.detach().clone())
                weights["reduce"].append(wr.detach().clone())
            finally:
                if v is not None:
                    alphas[v[0]][v[1], v[2]] = saved
    n = x.shape[0]
    per_forward = max(1, max_samples // n)
    accs: list[float] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(variants), per_forward):
                chunk = range(start, min(start + per_forward, len(variants)))
                cw = {}
                for k in kinds:  # (edges, ops, V·n, 1, 1, 1): one weight per sample
                    w = torch.stack([weights[k][i] for i in chunk]).repeat_interleave(n, dim=0)
                    cw[k] = w.permute(1, 2, 0)[..., None, None, None]
                cell_weights = [cw["reduce" if cell.reduction else "normal"] for cell in model.cells]
                logits = model(x.repeat(len(chunk), *([1] * (x.dim() - 1))), cell_weights=cell_weights)
                accs += [_accuracy(part, y) for part in logits.split(n)]
    finally:
        model.train(was_training)
    out = {k: torch.zeros(alphas[k].shape, dtype=torch.float64) for k in kinds}
    for v, acc in zip(variants[1:], accs[1:]):
        out[v[0]][v[1], v[2]] = accs[0] - acc
    return out


def proxy_importance(model: Any, x: torch.Tensor, measure: str, exact: bool = False) -> dict[str, torch.Tensor]:
    """Per cell type, (edges × ops) the drop of a training-free score when the op is removed
    (`proxy.op_importances`): `netperf` (NetPerfProxy with NASWOT's similarity kernel, the default form),
    `netperf-literal` (eq. 8-10 as written: α-weighted Hamming distances off the diagonal, the code length on
    it) or `naswot` (NASWOT: every op output's kernel with weight 1, α ignored). ±inf and NaN (a singular
    kernel) become ±1e30 and 0, so that the ranking stays defined."""
    from compressor.frontends.darts.proxy import op_importances

    proxy, kernel = PROXY_MEASURES[measure]
    scores = op_importances(model, x, proxy=proxy, kernel=kernel, exact=exact)
    return {k: torch.as_tensor(np.nan_to_num(v, nan=0.0, posinf=1e30, neginf=-1e30)) for k, v in scores.items()}


# ---- the algorithm --------------------------------------------------------------------------------
@dataclass(frozen=True)
class HPEDartsOptions:
    """The `hpe:` block of the search options."""

    ops_per_edge: tuple[int, ...] = option((8, 5, 3, 1), "ops left per edge after the warm-up and each hybrid "
                                                          "stage (eq. 6: from 8 down to 1)")
    schedule: tuple[Measure, ...] | None = option(
        None, "op-importance measure of each hybrid stage, one entry per stage: accuracy, netperf, "
              "netperf-literal or naswot (null: importance; neither: netperf in every stage, the paper's DARTS-space "
              "setting)")
    importance: Literal["hybrid", "accuracy", "netperf", "netperf-literal", "naswot"] | None = option(
        None, "shorthand for schedule: one measure in every stage, or hybrid (accuracy in the first half of the "
              "stages, netperf in the second: the paper's NAS-Bench-201 setting); null: schedule")
    decay: Literal["literal", "weight"] = option("literal", "eq. 7 on α as written (literal), or on exp(α) "
                                                            "(weight: always lowers the op's weight)")
    batch: int = option(64, "validation samples per scoring round for the training-free measures (the N of their "
                            "N×N kernel)", min=2, max=4096)
    accuracy_batch: int = option(32, "validation samples per scoring round for the accuracy measure (one forward "
                                     "per op on this batch)", min=1, max=4096)
    proxy: Literal["cached", "exact"] = option("cached", "training-free importances from one forward (cached) or "
                                                         "one forward per op (exact)")


# The hpe flat keys that searches by the other algorithms hash (`SearchAlgorithm.unselected_key_data`): the block's
# defaults before the schedule, warm-up and accuracy-batch options, so that their stage keys do not change.
_KEYED_BEFORE_SCHEDULES = {"ops_per_edge": [8, 5, 3, 1], "importance": "hybrid", "decay": "literal", "batch": 64,
                           "proxy": "cached"}


@register_search("hpe-darts")
class HPEDarts(SearchAlgorithm):
    """HPE-DARTS (seed 004, Algorithm 1) on the loop's stages: stage 0 is the warm-up (weights only, α
    fixed) of `warmup_epochs` epochs (E_warmup; null: `epochs`), stages 1..S the hybrid pruning stages of
    `epochs` epochs each (E_prune; the paper uses 5 and 5). At the start of each epoch i of hybrid stage s,
    every op on every edge is scored by stage s's measure (`hpe.schedule`: the drop in validation accuracy
    when it is removed, or in NetPerfProxy, its literal eq. 8-10 form, or NASWOT), and the Pop_s least
    important ops of each edge have their α decayed by eq. 7 (soft pruning); α and the weights then train
    as in DARTS. At the end of the stage the ops are scored again and the Pop_s least important removed (hard
    pruning): the next stage's supernet holds the others and inherits their weights and α (the weight
    optimizer's state and the cosine learning-rate schedule restart per stage). In the last stage `none` is
    removed first, so every edge ends with one real operation.

    Each scoring round (each epoch start, each stage end) draws one batch of validation samples, seeded by
    (seed, stage, round), and scores every op on it: `hpe.batch` samples for the training-free measures (one
    forward in the cached form), `hpe.accuracy_batch` for the accuracy drop (2·14·n_ops + 1 forwards, n_ops
    the ops left per edge). The loop records the time of the rounds as `score_s` (`search.py`)."""

    Options = HPEDartsOptions
    block = "hpe"
    default_arch_lr = 3e-4

    def __init__(self, opts: Any, loss_fn: Any) -> None:
        super().__init__(opts, loss_fn)
        self.pops = removal_counts(opts.hpe.ops_per_edge, len(PRIMITIVES))
        self.schedule = importance_schedule(opts.hpe, len(self.pops))
        self._stage = 0
        self._prev: Any = None
        self._val: Any = None

    @classmethod
    def check_options(cls, opts: Any) -> None:
        try:
            pops = removal_counts(opts.hpe.ops_per_edge, len(PRIMITIVES))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        importance_schedule(opts.hpe, len(pops))

    @classmethod
    def stages(cls, opts: Any) -> tuple[int, ...]:
        return (opts.layers,) * len(opts.hpe.ops_per_edge)  # the warm-up, then S = len − 1 hybrid stages

    @classmethod
    def stage_epochs(cls, opts: Any) -> tuple[int, ...]:
        """E_warmup (`warmup_epochs`, null: `epochs`; 0 skips the warm-up), then E_prune = `epochs` per hybrid
        stage."""
        warmup = opts.epochs if opts.warmup_epochs is None else opts.warmup_epochs
        return (warmup,) + (opts.epochs,) * (len(opts.hpe.ops_per_edge) - 1)

    @classmethod
    def alpha_free_epochs(cls, opts: Any) -> int:
        return 0  # the warm-up is a stage of its own (`arch_step`); the hybrid stages step α from their start

    @classmethod
    def unselected_key_data(cls) -> dict[str, Any]:
        return dict(_KEYED_BEFORE_SCHEDULES)

    def build_supernet(self, stage: int, data: Any, primitives_normal: Any, primitives_reduce: Any) -> Any:
        model = self.supernet(stage, data, primitives_normal, primitives_reduce)
        if self._prev is not None:
            inherit(self._prev, model)
            self._prev = None
        self._val = data.split("val")
        return model

    def scoring_batch(self, stage: int, round_: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` validation samples (all of them if fewer), drawn without replacement for scoring round
        `round_` of `stage` (the epoch, or `epochs` for the stage end), seeded by (seed, stage, round): the
        same on a resumed run."""
        from compressor.data import make_loader

        assert self._val is not None, "build_supernet sets the validation split"
        g = torch.Generator().manual_seed(self.opts.seed * 1_000_003 + stage * 1009 + round_)
        idx = torch.randperm(len(self._val), generator=g)[:n].tolist()
        x, y = next(iter(make_loader(torch.utils.data.Subset(self._val, idx), len(idx), shuffle=False)))
        return x.float(), y

    def epoch_start(self, model: Any, stage: int, epoch: int) -> dict[str, float]:
        self._stage = stage
        if stage == 0:
            return {"hpe_stage": 0.0}
        s = stage - 1
        imp = self.importance(model, stage, epoch)
        for kind in ("normal", "reduce"):
            alpha = getattr(model, f"alphas_{kind}")
            weak = least_important(imp[kind], torch.ones_like(imp[kind], dtype=torch.bool), self.pops[s])
            with torch.no_grad():
                alpha.copy_(soft_decay(alpha.detach(), weak.to(alpha.device), epoch, self.opts.epochs,
                                       self.opts.hpe.decay))
        measure = self.schedule[s]
        return {"hpe_stage": float(stage), "hpe_netperf": float(measure == "netperf"),
                "hpe_measure": float(MEASURES.index(measure))}

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
        imp = self.importance(model, stage, self.opts.epochs)
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
    def importance(self, model: Any, stage: int, round_: int) -> dict[str, torch.Tensor]:
        """Per cell type, (edges × ops) importance in hybrid stage `stage` (1..S) by its measure, on the
        scoring batch of round `round_`: the performance drop when the op is removed."""
        measure = self.schedule[stage - 1]
        device = next(model.parameters()).device
        n = self.opts.hpe.accuracy_batch if measure == "accuracy" else self.opts.hpe.batch
        x, y = (t.to(device) for t in self.scoring_batch(stage, round_, n))
        if measure == "accuracy":
            return accuracy_importance(model, x, y)
        return proxy_importance(model, x, measure, exact=self.opts.hpe.proxy == "exact")


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
