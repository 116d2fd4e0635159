"""prune-l1: structured filter pruning ranked by L1 norm, on torch-pruning's dependency graph.

Filters (output channels of convs and linears) are ranked by the L1 norm of their weights and
the lowest `ratio` of each coupled group is removed, together with every channel that depends on
them (BatchNorm, the next layer's inputs, concat partners, depthwise convs fed by them).

Exclusions (seed 000, section 4.3): depthwise convs and layers with fewer than
`min_out_channels` output channels are excluded, and output layers (the ones producing the
logits) are always protected; `protect_penultimate` protects the layers feeding them as well (see
below). "Excluded" here is the literal reading (torch-pruning's
`ignored_layers`): an excluded layer freezes its whole coupled group, because removing a channel
anywhere in the group would change the excluded layer too. The record lists every group with the
decision taken (pruned / frozen) and why.

Ranking choice (documented, tested): `importance: filter` (default) ranks by the L1 norm of the
group's root filter only — the paper's "L1 norm of each filter"; `importance: group` ranks by
the mean L1 norm over all coupled parameters (torch-pruning's GroupMagnitudeImportance default).

Why `protect_penultimate` exists (measured, BENCHMARKS.md `seed-tables-cpu`): on the PC-DARTS
segmentation network trained on insar-synthetic (11% positive pixels), 6 of the 16 filters feeding the
1×1 head fire on the landslide (positive head weight) and 10 on background. The 6 have the 6 smallest
L1 norms (16.25–17.12 against 17.66–21.88 at 48×48; the same ranks in a 64×64 run), so L1 ranking
removes them first: at ratio 0.4 (7 of 16 removed) all are gone, and fine-tuning has to rebuild the
positive evidence from background channels. In 8 epochs it did at 0.4 and did not at 0.6 and 0.8
(IoU 0, every logit below 0). With the option on, prune 0.6 (follow) fine-tunes to IoU 78.88 instead
of 0 for 3.5% more parameters. Off by default: the paper does not protect them.
"""
from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.fx
import torch.nn as nn
import torch_pruning as tp

from compressor.context import PassContext
from compressor.errors import PassError
from compressor.ir import ModelIR
from compressor.options import option
from compressor.passes_base import Pass, PassResult
from compressor.registry import register_pass

log = logging.getLogger(__name__)

PRUNABLE = (nn.Conv2d, nn.Conv1d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class PruneL1Options:
    ratio: float = option(0.5, "fraction of filters removed from each prunable group", min=0, max=1, max_exclusive=True)
    exclude_depthwise: bool = option(True, "exclude depthwise convs (their coupled group is frozen)")
    min_out_channels: int = option(0, "exclude layers with fewer output channels than this", min=0)
    ignore: list[str] = option([], "module names (glob patterns) to exclude as well, e.g. 'dec1.*'")
    protect_penultimate: bool = option(
        False, "also protect the layers feeding the output layer: on an imbalanced task their small-L1 filters "
               "may carry the rare class (the seed grid's IoU collapse; see README)")
    importance: Literal["filter", "group"] = option("filter", "rank by the root filter's L1 norm or the whole group's")
    exclude_mode: Literal["freeze", "follow"] = option(
        "freeze", "freeze: an excluded layer freezes its whole coupled group (the literal reading); "
                  "follow: excluded layers are never ranked but shrink with the producer they depend on")
    global_pruning: bool = option(False, "rank filters across all groups instead of within each group")
    round_to: int | None = option(None, "keep channel counts multiples of this (e.g. 8 for tensor cores)", min=1)
    iterative_steps: int = option(1, "reach the ratio in this many equal steps", min=1, max=100)
    finetune_epochs: int = option(0, "fine-tune this many epochs after each step (needs data)", min=0)
    finetune_lr: float = option(1e-3, "learning rate of the fine-tuning between steps", min=0, min_exclusive=True)


def _out_channels(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels


def _nearest_layers(gm: torch.fx.GraphModule, start: list[torch.fx.Node]) -> set[str]:
    """Names of the parametrized layers reached walking backwards from `start` without passing
    through another parametrized layer."""
    modules = dict(gm.named_modules())
    found: set[str] = set()
    seen: set[torch.fx.Node] = set()
    stack = list(start)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "call_module" and isinstance(modules.get(str(node.target)), PRUNABLE):
            found.add(str(node.target))
            continue
        stack.extend(n for n in node.all_input_nodes)
    return found


def output_layers(gm: torch.fx.GraphModule) -> set[str]:
    """The parametrized layers whose outputs reach the graph output without passing through another
    parametrized layer: the layers that produce the logits."""
    return _nearest_layers(gm, [n for n in gm.graph.nodes if n.op == "output"])


def penultimate_layers(gm: torch.fx.GraphModule) -> set[str]:
    """The parametrized layers whose outputs feed an output layer (its nearest producers)."""
    outs = output_layers(gm)
    feeds = [i for n in gm.graph.nodes if n.op == "call_module" and str(n.target) in outs for i in n.all_input_nodes]
    return _nearest_layers(gm, feeds) - outs


def protected_layers(gm: nn.Module, opts: PruneL1Options) -> dict[str, str]:
    """module name → why it is protected: frozen in both exclusion meanings (fx graphs only)."""
    if not isinstance(gm, torch.fx.GraphModule):
        return {}
    out = {n: "feeds the output layer (protect_penultimate)" for n in penultimate_layers(gm)} \
        if opts.protect_penultimate else {}
    out.update({n: "output layer (always protected)" for n in output_layers(gm)})
    return out


def exclusions(gm: nn.Module, opts: PruneL1Options) -> dict[str, str]:
    """module name → why it is excluded."""
    out: dict[str, str] = {}
    protected = protected_layers(gm, opts)
    for name, m in gm.named_modules():
        if not isinstance(m, PRUNABLE):
            continue
        out_ch = _out_channels(m)
        if name in protected:
            out[name] = protected[name]
        elif opts.exclude_depthwise and is_depthwise(m):
            out[name] = "depthwise conv"
        elif out_ch < opts.min_out_channels:
            out[name] = f"{out_ch} output channels < min_out_channels={opts.min_out_channels}"
        elif any(fnmatch.fnmatch(name, pat) for pat in opts.ignore):
            out[name] = "matched ignore pattern"
    return out


def _out_layers(group: Any, is_out_fn: Any) -> list[nn.Module]:
    """The layers whose *output* channels the group removes. Only these can freeze a group: an
    excluded layer may still lose input channels (torch-pruning's semantics of ignored_layers)."""
    outs: list[nn.Module] = []
    for dep, _idxs in group:
        m = dep.target.module
        if isinstance(m, PRUNABLE) and is_out_fn(dep.handler) and m not in outs:
            outs.append(m)
    return outs


class FilterL1Importance(tp.importance.Importance):
    """Per-channel L1 norm of the filters of a group, skipping excluded layers.

    scope "filter": the first rankable filter of the group (its root, the paper's "L1 norm of each
    filter"); scope "group": the mean over every rankable filter coupled in the group. A group with
    no rankable filter (all its producers excluded) gets no score, so it is not pruned.
    """

    def __init__(self, excluded: set[nn.Module], scope: str) -> None:
        self.excluded = excluded
        self.scope = scope

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        out_fns = (tp.pruner.function.prune_conv_out_channels, tp.pruner.function.prune_linear_out_channels)
        n = len(group[0].idxs)
        total, count = None, 0
        for i, (dep, idxs) in enumerate(group):
            layer = dep.layer
            if layer in self.excluded or not isinstance(layer, PRUNABLE) or dep.pruning_fn not in out_fns:
                continue
            w = layer.weight.data
            w = w.transpose(0, 1) if getattr(layer, "transposed", False) else w
            local = w[idxs].flatten(1).abs().sum(1)
            vec = torch.zeros(n, dtype=local.dtype, device=local.device)
            vec.scatter_add_(0, torch.as_tensor(group[i].root_idxs, device=local.device), local)
            if self.scope == "filter":
                return vec
            total = vec if total is None else total + vec
            count += 1
        return None if total is None else total / count


@register_pass("prune-l1")
class PruneL1(Pass):
    Options = PruneL1Options
    label_keys = ("ratio",)

    def requires(self, ir: ModelIR, ctx: PassContext) -> None:
        if ir.precision != "fp32":
            raise PassError(f"prune-l1 needs an fp32 IR but got {ir.precision}; run prune-l1 before fp16")
        if self.options.finetune_epochs > 0:
            ctx.require_data("prune-l1 (finetune_epochs > 0)")

    def run(self, ir: ModelIR, ctx: PassContext) -> PassResult:
        o = self.options
        gm = ir.module.eval()
        names = {m: n for n, m in gm.named_modules()}
        excluded = exclusions(gm, o)
        unknown = [p for p in o.ignore if not any(fnmatch.fnmatch(n, p) for n in names.values())]
        if unknown:
            raise PassError(f"prune-l1: ignore pattern(s) {unknown} match no module; module names look like "
                            f"{', '.join(list(n for n in names.values() if n)[:5])} (see compress inspect)")
        modules = dict(gm.named_modules())
        protected = protected_layers(gm, o)
        # freeze: every excluded layer is ignored (its group freezes); follow: only the protected
        # layers (output, and penultimate when asked) are, the other excluded layers are merely never ranked.
        frozen_names = set(excluded) if o.exclude_mode == "freeze" else {n for n in excluded if n in protected}
        ignored = [modules[n] for n in frozen_names]
        params_before = ir.parameter_count()

        importance = FilterL1Importance({modules[n] for n in excluded}, o.importance)
        try:
            pruner = tp.pruner.BasePruner(
                gm, ir.example_inputs(batch=1), importance=importance, pruning_ratio=o.ratio,
                ignored_layers=ignored, global_pruning=o.global_pruning, round_to=o.round_to,
                iterative_steps=o.iterative_steps, root_module_types=list(PRUNABLE))
        except Exception as exc:
            raise PassError(f"prune-l1: torch-pruning could not build the dependency graph: {exc}") from exc

        # Every coupled group, with the decision and the reason, before anything changes. Groups are
        # keyed by the layers whose outputs they prune (stable across steps and visit orders).
        is_out = pruner.DG.is_out_channel_pruning_fn
        groups: list[dict[str, Any]] = []
        by_key: dict[frozenset, dict[str, Any]] = {}
        for group in pruner.DG.get_all_groups(ignored_layers=[], root_module_types=list(PRUNABLE)):
            outs = [names.get(m, "?") for m in _out_layers(group, is_out)]
            blockers = [f"{n} ({excluded[n]})" for n in outs if n in frozen_names]
            followers = [f"{n} ({excluded[n]})" for n in outs if n in excluded and n not in frozen_names]
            rankable = [n for n in outs if n not in excluded]
            if blockers:
                decision, reason = "frozen", "excluded: " + "; ".join(blockers)
            elif not rankable:
                decision, reason = "kept", "no rankable filter: " + "; ".join(followers)
            else:
                decision = "pruned"
                reason = f"L1 ratio {o.ratio}, ranked on {rankable[0] if o.importance == 'filter' else ', '.join(rankable)}"
                if followers:
                    reason += "; following: " + "; ".join(followers)
            rec = {"root": outs[0] if outs else "?", "members": outs, "channels": len(group[0].idxs),
                   "decision": decision, "pruned_channels": 0, "reason": reason}
            groups.append(rec)
            by_key[frozenset(outs)] = rec

        losses: list[float] = []
        for step in range(o.iterative_steps):
            for group in pruner.step(interactive=True):
                rec = by_key.get(frozenset(names.get(m, "?") for m in _out_layers(group, is_out)))
                if rec is not None:
                    rec["pruned_channels"] += len(group[0].idxs)
                group.prune()
            if o.finetune_epochs > 0:
                losses += self._finetune(ir.replace(module=gm), ctx, step)
        for rec in groups:
            if rec["decision"] == "pruned" and rec["pruned_channels"] == 0:
                rec["decision"] = "kept"
                rec["reason"] = "nothing to remove at this ratio/rounding"
        gm.recompile()
        gm.eval()
        with torch.no_grad():
            out = gm(*ir.example_inputs(batch=2))
        want = 1 if ir.task.kind == "segmentation" else ir.task.num_classes
        if out.shape[1] != want:
            raise PassError(f"prune-l1 changed the output shape to {tuple(out.shape)}; this is a bug: please report it")
        params_after = sum(p.numel() for p in gm.parameters())
        stats = {
            "params_before": params_before,
            "params_after": params_after,
            "params_removed_pct": round(100 * (1 - params_after / max(params_before, 1)), 2),
            "groups_pruned": sum(r["decision"] == "pruned" for r in groups),
            "groups_frozen": sum(r["decision"] == "frozen" for r in groups),
            "channels_removed": sum(r["pruned_channels"] for r in groups),
            "groups": groups,
        }
        if losses:
            stats["finetune_losses"] = [round(x, 5) for x in losses]
        # channel counts that are not multiples of 8 run far slower on onnxruntime CPU (and tensor cores):
        # BENCHMARKS.md `channel-alignment-cpu`, prune 0.4 follow 0.80× unaligned vs 2.18× with round_to 8
        changed = {r["root"] for r in groups if r["pruned_channels"] > 0}
        misaligned = sorted(n for n in changed if n in modules and _out_channels(modules[n]) % 8)
        stats["misaligned_layers"] = len(misaligned)
        if misaligned and o.round_to is None:
            log.info("prune-l1: %d pruned layers have channel counts that are not multiples of 8 (e.g. %s); "
                     "set round_to: 8 when pruning for latency", len(misaligned), ", ".join(misaligned[:3]))
        for r in groups:
            log.debug("group %s: %s (%s) -%d", r["root"], r["decision"], r["reason"], r["pruned_channels"])
        return PassResult(ir.replace(module=gm), changed=params_after != params_before, stats=stats)

    def _finetune(self, ir: ModelIR, ctx: PassContext, step: int) -> list[float]:
        from compressor.data import make_loader
        from compressor.train import TrainOptions, fit

        data = ctx.require_data("prune-l1 (finetune_epochs > 0)")
        opts = TrainOptions(epochs=self.options.finetune_epochs, lr=self.options.finetune_lr)
        loader = make_loader(data.train, opts.batch_size, shuffle=True, seed=ctx.seed + step)
        result = fit(ir.module, loader, ir.task, opts, device=ctx.device, progress=ctx.progress,
                     desc=f"prune step {step + 1}/{self.options.iterative_steps} finetune")
        ir.module.to("cpu").eval()
        return result.losses
