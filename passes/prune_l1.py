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

Layouts torch-pruning's graph gets wrong are handled through the adapters: a layer reading concatenated
copies of one feature's channels (Swin's patch merging, DINOv2's [CLS, mean] classifier) becomes one
customized torch-pruning layer that removes a channel from every copy (`compressor.adapters.merges`);
per-head tables (Swin's relative-position bias) are left out of torch-pruning and sliced with the heads
whole-head pruning keeps; a pruned model that does not run is a PassError naming the failing module.

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
import torch.nn as nn
import torch_pruning as tp

from compressor.adapters.attention import AttentionAdapter, find_attention
from compressor.adapters.blocks import output_shape, run_error
from compressor.adapters.merges import MergeError, MergePruning, find_merges
from compressor.analysis import first_tensor, output_layers, penultimate_layers
from compressor.context import PassContext
from compressor.edits import register_edit
from compressor.errors import PassError
from compressor.ir import ModelIR
from compressor.options import option
from compressor.passes_base import Pass, PassResult
from compressor.registry import register_pass

log = logging.getLogger(__name__)

PRUNABLE = (nn.Conv2d, nn.Conv1d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class PruneL1Options:
    ratio: float = option(0.5, "fraction of filters removed from each prunable group", min=0, max=1, max_exclusive=True,
                          search=[0.3, 0.4, 0.5, 0.6, 0.7])
    exclude_depthwise: bool = option(True, "exclude depthwise convs (their coupled group is frozen)")
    min_out_channels: int = option(0, "exclude layers with fewer output channels than this", min=0)
    ignore: list[str] = option([], "module names (glob patterns) to exclude as well, e.g. 'dec1.*'")
    protect_penultimate: bool = option(
        False, "also protect the layers feeding the output layer: on an imbalanced task their small-L1 filters "
               "may carry the rare class (the seed grid's IoU collapse; see README)", search=[False, True])
    importance: Literal["filter", "group"] = option("filter", "rank by the root filter's L1 norm or the whole group's",
                                                    search=["filter", "group"])
    exclude_mode: Literal["freeze", "follow"] = option(
        "freeze", "freeze: an excluded layer freezes its whole coupled group (the literal reading); "
                  "follow: excluded layers are never ranked but shrink with the producer they depend on",
        search=["freeze", "follow"])
    global_pruning: bool = option(False, "rank filters across all groups instead of within each group",
                                 search=[False, True])
    round_to: int | None = option(None, "keep channel counts multiples of this (e.g. 8 for tensor cores)", min=1)
    iterative_steps: int = option(1, "reach the ratio in this many equal steps", min=1, max=100, search=[1, 2, 4])
    finetune_epochs: int = option(0, "fine-tune this many epochs after each step (needs data)", min=0)
    finetune_lr: float = option(1e-3, "learning rate of the fine-tuning between steps", min=0, min_exclusive=True)
    heads: Literal["dims", "whole"] = option(
        "dims", "attention (any layout compressor.adapters knows): dims: every head loses the same share of its "
                "dims (head count kept); whole: whole heads are removed at the ratio (head size kept). Channels of "
                "different heads are never mixed; head-count attributes are updated")


def _out_channels(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels


def protected_layers(module: nn.Module, opts: PruneL1Options, example: tuple[torch.Tensor, ...]) -> dict[str, str]:
    """module name → why it is protected: frozen in both exclusion meanings. The output layers (found on
    the autograd graph of one forward, `compressor.analysis`) always are; the layers feeding them with
    `protect_penultimate`."""
    outs = output_layers(module, example, PRUNABLE)
    out = {n: "feeds the output layer (protect_penultimate)" for n in penultimate_layers(module, example, PRUNABLE)} \
        if opts.protect_penultimate else {}
    out.update({n: "output layer (always protected)" for n in outs})
    return out


def exclusions(gm: nn.Module, opts: PruneL1Options, example: tuple[torch.Tensor, ...],
               protected: dict[str, str] | None = None) -> dict[str, str]:
    """module name → why it is excluded."""
    out: dict[str, str] = {}
    protected = protected_layers(gm, opts, example) if protected is None else protected
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
        # whether a pruning function removes output channels: the graph's own test once it is built (a
        # Linear that reads concatenated copies has a customized pruner, compressor.adapters.merges)
        self.is_out: Any = lambda fn: fn in (tp.pruner.function.prune_conv_out_channels,
                                             tp.pruner.function.prune_linear_out_channels)

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        n = len(group[0].idxs)
        total, count = None, 0
        for i, (dep, idxs) in enumerate(group):
            layer = dep.layer
            if layer in self.excluded or not isinstance(layer, PRUNABLE) or not self.is_out(dep.pruning_fn):
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
    packages = ("torch", "torch-pruning")

    accepts = ("fp32",)

    def needs_data(self) -> bool:
        return self.options.finetune_epochs > 0

    def run(self, ir: ModelIR, ctx: PassContext) -> PassResult:
        o = self.options
        gm = ir.module.eval()
        converted = convert_mha(gm)
        names = {m: n for n, m in gm.named_modules()}
        example = ir.example_inputs(batch=1)
        batch = ir.example_inputs(batch=2)
        shape = output_shape(gm, batch)  # what the pruned model must still return
        protected = protected_layers(gm, o, example)
        excluded = exclusions(gm, o, example, protected)
        unknown = [p for p in o.ignore if not any(fnmatch.fnmatch(n, p) for n in names.values())]
        if unknown:
            raise PassError(f"prune-l1: ignore pattern(s) {unknown} match no module; module names look like "
                            f"{', '.join(list(n for n in names.values() if n)[:5])} (see compress inspect)")
        modules = dict(gm.named_modules())
        # freeze: every excluded layer is ignored (its group freezes); follow: only the protected
        # layers (output, and penultimate when asked) are, the other excluded layers are merely never ranked.
        frozen_names = set(excluded) if o.exclude_mode == "freeze" else {n for n in excluded if n in protected}
        ignored: list[Any] = [modules[n] for n in frozen_names]
        params_before = ir.parameter_count()

        importance = FilterL1Importance({modules[n] for n in excluded}, o.importance)
        attention = find_attention(gm)
        num_heads: dict[nn.Module, int] = {}
        for path, adapter in attention:
            num_heads.update(adapter.pruning_num_heads(gm.get_submodule(path)))
        whole = o.heads == "whole"
        merges = _merges(gm, example)
        # per-head tables (Swin's relative-position bias) are not channels: torch-pruning leaves them alone,
        # and whole-head pruning slices them to the kept heads afterwards (the adapters' sync)
        tables = head_tables(gm, attention)
        with MergePruning(gm, merges) as merging:
            try:
                with merging.traced():
                    pruner = tp.pruner.BasePruner(
                        gm, example, importance=importance, pruning_ratio=o.ratio,
                        ignored_layers=ignored + tables, global_pruning=o.global_pruning, round_to=o.round_to,
                        iterative_steps=o.iterative_steps, root_module_types=list(PRUNABLE), num_heads=num_heads,
                        prune_num_heads=whole and bool(num_heads), prune_head_dims=not whole,
                        head_pruning_ratio=o.ratio if whole else 0.0, output_transform=_first_output,
                        customized_pruners=merging.customized_pruners)
                merging.check(pruner.DG)
            except MergeError as exc:
                raise _merge_error(exc) from None
            except Exception as exc:
                raise PassError(f"prune-l1: torch-pruning could not build the dependency graph: {exc}") from exc
            is_out = importance.is_out = pruner.DG.is_out_channel_pruning_fn
            groups, by_key = self._records(pruner, names, excluded, frozen_names)
            rows = _QRows(gm, attention) if whole else None
            losses: list[float] = []
            for step in range(o.iterative_steps):
                for group in pruner.step(interactive=True):
                    rec = by_key.get(frozenset(names.get(m, "?") for m in _out_layers(group, is_out)))
                    if rec is not None:
                        rec["pruned_channels"] += len(group[0].idxs)
                    if rows is not None:
                        rows.update(group, is_out)
                    group.prune()
                if o.finetune_epochs > 0:
                    losses += self._finetune(ir.replace(module=gm), ctx, step)
            history = [[str(n), bool(out_ch), [int(i) for i in idxs]] for n, out_ch, idxs in pruner.pruning_history()]
        for rec in groups:
            if rec["decision"] == "pruned" and rec["pruned_channels"] == 0:
                rec["decision"] = "kept"
                rec["reason"] = "nothing to remove at this ratio/rounding"
        synced: dict[str, dict[str, Any]] = {}
        for path, adapter in attention:
            m = gm.get_submodule(path)
            qkv = adapter.pruning_num_heads(m)
            heads = next((pruner.num_heads[q] for q in qkv if q in pruner.num_heads), None)
            try:
                values = adapter.sync_after_pruning(m, heads, rows.kept_heads(path) if rows is not None else None)
            except ValueError as exc:
                raise PassError(f"prune-l1: attention {path}: {exc}") from None
            synced[path] = {"adapter": adapter.name, "values": {k: _plain(x) for k, x in values.items()}}
        gm.eval()
        broken = run_error(gm, batch, shape)
        if broken:
            raise PassError(f"prune-l1: the pruned model does not run: {broken}; exclude that layer or the layers "
                            "feeding it with ignore (exclude_mode: freeze), or report the model")
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
        if merges:
            stats["merges"] = {m.path: f"{m.copies} copies of {m.producer}" for m in merges}
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
        if attention:
            stats["attention"] = {p: {"adapter": v["adapter"], **v["values"]} for p, v in synced.items()}
        edit = {"mha_converted": converted, "history": history, "attention": synced,
                "merges": [m.path for m in merges]}
        return PassResult(ir.replace(module=gm).with_edit("prune", **edit), changed=params_after != params_before,
                          stats=stats)

    def _records(self, pruner: Any, names: dict[nn.Module, str], excluded: dict[str, str],
                 frozen_names: set[str]) -> tuple[list[dict[str, Any]], dict[frozenset, dict[str, Any]]]:
        """Every coupled group, with the decision and the reason, before anything changes. Groups are
        keyed by the layers whose outputs they prune (stable across steps and visit orders)."""
        o = self.options
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
        return groups, by_key

    def _finetune(self, ir: ModelIR, ctx: PassContext, step: int) -> list[float]:
        from compressor.train import TrainOptions, train_stage

        opts = TrainOptions(epochs=self.options.finetune_epochs, lr=self.options.finetune_lr)
        result = train_stage(ctx, ir.module, ir.task, opts, offset=step, name=f"prune-step-{step}",
                             desc=f"prune step {step + 1}/{self.options.iterative_steps} finetune")
        return result.losses


def convert_mha(model: nn.Module) -> list[dict[str, Any]]:
    """Replace every nn.MultiheadAttention by the adapters' HeadPrunedMultiheadAttention with all its heads
    (the same function): torch-pruning's own MHA handling removes the same channel indices from the
    residual stream and from q/k/v and regroups what is left into the old head count, mixing heads; the
    replacement has separate q/k/v projections that it prunes head by head. Returns what was converted,
    for the recipe."""
    converted = []
    for path, adapter in find_attention(model):
        if adapter.name == "torch-mha" and path:
            heads = adapter.num_heads(model.get_submodule(path))
            adapter.remove_heads(model, path, list(range(heads)))
            converted.append({"path": path, "heads": heads})
    return converted


def _first_output(out: Any) -> torch.Tensor:
    """The tensor torch-pruning traces from (a model may return a tuple or an HF output)."""
    return first_tensor(out)


def _plain(value: Any) -> Any:
    """Attribute values as JSON data (head counts, sizes, scales, the kept heads' indices)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (int, float, bool, str)) or value is None else float(value)


def _merges(module: nn.Module, example: tuple[torch.Tensor, ...]) -> list[Any]:
    try:
        return find_merges(module, example)
    except MergeError as exc:
        raise _merge_error(exc) from None


def _merge_error(exc: MergeError) -> PassError:
    return PassError(f"prune-l1: {exc}; this layout cannot be pruned here: freeze the layers writing those "
                     "channels with ignore (exclude_mode: freeze)")


def head_tables(module: nn.Module, attention: list[tuple[str, AttentionAdapter]]) -> list[nn.Parameter]:
    """The per-head table parameters of every attention (`AttentionAdapter.head_tensors`)."""
    out = []
    for path, adapter in attention:
        attn = module.get_submodule(path)
        try:
            tensors = adapter.head_tensors(attn)
        except ValueError as exc:
            raise PassError(f"prune-l1: attention {path}: {exc}") from None
        params = dict(attn.named_parameters())
        out += [params[name] for name, _ in tensors if name in params]
    return out


class _QRows:
    """The original row indices still present in each attention's q projection, followed through
    torch-pruning's groups (which give indices into the current, already pruned layer): after whole-head
    pruning they tell which heads remain, for the per-head tables."""

    def __init__(self, module: nn.Module, attention: list[tuple[str, AttentionAdapter]]) -> None:
        self.module = module
        self.attention = dict(attention)
        self.q = {path: next(iter(a.pruning_num_heads(module.get_submodule(path))), None) for path, a in attention}
        self.rows = {q: list(range(q.out_features)) for q in self.q.values() if q is not None}

    def update(self, group: Any, is_out: Any) -> None:
        for dep, idxs in group:
            rows = self.rows.get(dep.target.module)
            if rows is not None and is_out(dep.handler):
                gone = {int(i) for i in idxs}
                self.rows[dep.target.module] = [r for i, r in enumerate(rows) if i not in gone]

    def kept_heads(self, path: str) -> list[int] | None:
        q = self.q.get(path)
        if q is None:
            return None
        return self.attention[path].kept_heads(self.module.get_submodule(path), self.rows[q])


@register_edit("prune")
def _replay_prune(module: nn.Module, edit: dict[str, Any], example: tuple[torch.Tensor, ...]) -> nn.Module:
    """Torch-Pruning's own replay: the dependency graph of the fresh module (with the same channel merges
    and untouched per-head tables as the pass), then the recorded pruning history (root layer, out/in
    channels, indices) group by group; then the attention attributes the pass set (head counts and sizes,
    the kept heads of per-head tables), through their adapters."""
    from compressor.adapters.attention import adapter_named

    for spec in edit.get("mha_converted", []):
        adapter_named("torch-mha").remove_heads(module, spec["path"], list(range(int(spec["heads"]))))
    # a recipe written before merges were handled has no "merges": its graph had none, replay it so
    merges = find_merges(module, example) if "merges" in edit else []
    if [m.path for m in merges] != list(edit.get("merges", [])):
        raise ValueError(f"the module's channel merges are {[m.path for m in merges]}, the recipe's "
                         f"{edit.get('merges', [])}")
    tables = head_tables(module, find_attention(module))
    with MergePruning(module, merges) as merging:
        with merging.traced():
            graph = tp.DependencyGraph().build_dependency(
                module, example_inputs=example, output_transform=_first_output,
                customized_pruners=merging.customized_pruners, ignored_params=tables)
        graph.load_pruning_history([tuple(h) for h in edit["history"]])
    for path, spec in edit.get("attention", {}).items():
        adapter_named(spec["adapter"]).replay_sync(module.get_submodule(path), spec["values"])
    return module
