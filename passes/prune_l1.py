"""prune-l1: structured filter pruning ranked by L1 norm, on torch-pruning's dependency graph.

Filters (output channels of convs and linears) are ranked by the L1 norm of their weights and
the lowest `ratio` of each coupled group is removed, together with every channel that depends on
them (BatchNorm, the next layer's inputs, concat partners, depthwise convs fed by them).

Exclusions (seed 000, section 4.3): depthwise convs and layers with fewer than
`min_out_channels` output channels are excluded, and output layers (the ones producing the
logits) are always protected. "Excluded" here is the literal reading (torch-pruning's
`ignored_layers`): an excluded layer freezes its whole coupled group, because removing a channel
anywhere in the group would change the excluded layer too. The record lists every group with the
decision taken (pruned / frozen) and why.

Ranking choice (documented, tested): `importance: filter` (default) ranks by the L1 norm of the
group's root filter only — the paper's "L1 norm of each filter"; `importance: group` ranks by
the mean L1 norm over all coupled parameters (torch-pruning's GroupMagnitudeImportance default).
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
    importance: Literal["filter", "group"] = option("filter", "rank by the root filter's L1 norm or the whole group's")
    global_pruning: bool = option(False, "rank filters across all groups instead of within each group")
    round_to: int | None = option(None, "keep channel counts multiples of this (e.g. 8 for tensor cores)", min=1)


def is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels


def output_layers(gm: torch.fx.GraphModule) -> set[str]:
    """Names of the parametrized layers whose outputs reach the graph output without passing
    through another parametrized layer: the layers that produce the logits."""
    modules = dict(gm.named_modules())
    found: set[str] = set()
    seen: set[torch.fx.Node] = set()
    stack = [n for n in gm.graph.nodes if n.op == "output"]
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


def exclusions(gm: nn.Module, opts: PruneL1Options) -> dict[str, str]:
    """module name → why it is excluded."""
    out: dict[str, str] = {}
    fx_outputs = output_layers(gm) if isinstance(gm, torch.fx.GraphModule) else set()
    for name, m in gm.named_modules():
        if not isinstance(m, PRUNABLE):
            continue
        out_ch = m.out_features if isinstance(m, nn.Linear) else m.out_channels
        if name in fx_outputs:
            out[name] = "output layer (always protected)"
        elif opts.exclude_depthwise and is_depthwise(m):
            out[name] = "depthwise conv"
        elif out_ch < opts.min_out_channels:
            out[name] = f"{out_ch} output channels < min_out_channels={opts.min_out_channels}"
        elif any(fnmatch.fnmatch(name, pat) for pat in opts.ignore):
            out[name] = "matched ignore pattern"
    return out


def _group_members(group: Any, is_out_fn: Any) -> tuple[list[nn.Module], list[nn.Module]]:
    """(all layers touched by the group, the layers whose *output* channels it removes).

    Only the second kind can freeze a group: an excluded layer may still lose input channels
    (torch-pruning's semantics of ignored_layers)."""
    touched: list[nn.Module] = []
    outputs: list[nn.Module] = []
    for dep, _idxs in group:
        m = dep.target.module
        if isinstance(m, PRUNABLE) and m not in touched:
            touched.append(m)
        if is_out_fn(dep.handler) and m not in outputs:
            outputs.append(m)
    return touched, outputs


@register_pass("prune-l1")
class PruneL1(Pass):
    Options = PruneL1Options
    label_keys = ("ratio",)

    def requires(self, ir: ModelIR, ctx: PassContext) -> None:
        if ir.precision != "fp32":
            raise PassError(f"prune-l1 needs an fp32 IR but got {ir.precision}; run prune-l1 before fp16")

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
        ignored = [modules[n] for n in excluded]
        example = ir.example_inputs(batch=1)
        params_before = ir.parameter_count()

        importance = tp.importance.GroupMagnitudeImportance(
            p=1, group_reduction="first" if o.importance == "filter" else "mean")
        try:
            pruner = tp.pruner.BasePruner(
                gm, example, importance=importance, pruning_ratio=o.ratio, ignored_layers=ignored,
                global_pruning=o.global_pruning, round_to=o.round_to,
                root_module_types=[nn.Conv2d, nn.Conv1d, nn.Conv3d, nn.Linear])
        except Exception as exc:
            raise PassError(f"prune-l1: torch-pruning could not build the dependency graph: {exc}") from exc

        # Every coupled group, with the decision and the reason, before anything changes.
        groups: list[dict[str, Any]] = []
        by_root: dict[str, dict[str, Any]] = {}
        for group in pruner.DG.get_all_groups(ignored_layers=[], root_module_types=list(PRUNABLE)):
            root = group[0].dep.target.module
            root_name = names.get(root, "?")
            touched, outs = _group_members(group, pruner.DG.is_out_channel_pruning_fn)
            members = [names.get(m, "?") for m in touched]
            blockers = [f"{n} ({excluded[n]})" for n in (names.get(m, "?") for m in outs) if n in excluded]
            rec = {"root": root_name, "members": members, "channels": len(group[0].idxs),
                   "decision": "frozen" if blockers else "pruned", "pruned_channels": 0,
                   "reason": "excluded: " + "; ".join(blockers) if blockers else f"L1 ratio {o.ratio}"}
            groups.append(rec)
            by_root[root_name] = rec

        for group in pruner.step(interactive=True):
            root_name = names.get(group[0].dep.target.module, "?")
            rec = by_root.get(root_name)
            if rec is not None:
                rec["pruned_channels"] = len(group[0].idxs)
            group.prune()

        for rec in groups:
            if rec["decision"] == "pruned" and rec["pruned_channels"] == 0:
                rec["decision"] = "kept"
                rec["reason"] = "nothing to remove at this ratio/rounding"
        gm.recompile()
        with torch.no_grad():
            out = gm(*ir.example_inputs(batch=2))
        if ir.task.kind == "segmentation" and out.shape[1] != 1 or ir.task.kind == "classification" and out.shape[1] != ir.task.num_classes:
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
        for r in groups:
            log.debug("group %s: %s (%s) -%d", r["root"], r["decision"], r["reason"], r["pruned_channels"])
        return PassResult(ir.replace(module=gm), changed=params_after != params_before, stats=stats)
