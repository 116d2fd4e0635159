"""nas: replace the current model by the network a frontend's architecture search finds on the pipeline's data.

    passes:
      - nas:
          frontend: hierarchical        # a frontend that searches (`compress search --help` lists them)
          search: {stage_channels: [16, 24, 40], objectives: [metric, macs, latency], epochs: 5}
          budget: 2                     # which budget's winner (1 = the smallest); null: the largest's
          init: supernet                # or scratch: fresh weights (the frontend's initialization)
          epochs: 10                    # then train the winner (the train options; 0: no training)
      - distill: {teacher: baseline}    # e.g. from the model the pipeline started with

What runs: the frontend's search (`Frontend.run_search` with the `search:` block, the same block `compress search`
reads) on the training data, in `<store>/.searches/<key>` (keyed by the frontend, the search options, the data and the
seed: stages that train the winner differently share one search, which a frontend's `run_search` reuses once it
finished; the genotype files and the search's log are copied into the stage's `search/`); the winner of `budget` (a search that writes one winner only
takes `budget: null`); the frontend builds it (`model:` adds that frontend's model options, e.g. `width_mult`,
next to the winner's `genotype`); with `init: supernet` it starts from the supernet's weights (a frontend whose
search result offers `inherit(module, batches)`, which loads the supernet's slices and re-estimates the BatchNorm
statistics on `bn_batches` training batches); then it is trained like `finetune` (the same train options). The result is a new IR with the
winner's recipe; the model the pipeline started with stays the `baseline` that later passes (distill) and the
report compare against. The latency table of a latency-aware search lives in the stage store (`<store>/.tables`)
unless the search block names `latency_store`, so that every run on the same machine and input size reuses it.

The stage caches like any other: its key holds these options and the data, so a second run reuses the trained
winner without searching again.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any, Literal

from compressor.context import PassContext
from compressor.errors import ConfigError, PassError
from compressor.frontend import search_frontend
from compressor.ir import ModelIR
from compressor.options import option, options_dict, parse_options
from compressor.passes_base import Pass, PassResult
from compressor.registry import register_pass
from compressor.steps import stable_hash
from compressor.train import TrainOptions, train_stage


@dataclass(frozen=True)
class NasOptions(TrainOptions):
    frontend: str = option("hierarchical", "the frontend whose search runs and whose network replaces the model")
    search: dict[str, Any] = option({}, "the search block (the frontend's search options, as in a search file)")
    budget: int | None = option(None, "which budget's winner to build (1 = the smallest budget; null: the "
                                      "largest budget's, the search's genotype.json)", min=1)
    init: Literal["scratch", "supernet"] = option("scratch", "the winner's initial weights: scratch (the frontend's "
                                                             "initialization) or supernet (inherited from the "
                                                             "search's weight-sharing supernet)")
    model: dict[str, Any] = option({}, "more options of the frontend's model block (besides genotype)")
    bn_batches: int = option(8, "training batches that re-estimate BatchNorm after init: supernet", min=1)

    def __post_init__(self) -> None:
        try:
            frontend = search_frontend(self.frontend, "nas: frontend")
            parse_options(frontend.search_options, self.search, "nas: search", "search option")
            if "genotype" in self.model:
                raise ConfigError("nas: model: genotype is the search's winner; remove it")
            parse_options(frontend.Options, self.model, "nas: model")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


@register_pass("nas")
class Nas(Pass):
    Options = NasOptions
    label_keys = ("frontend",)
    accepts = ("fp32",)

    def needs_data(self) -> bool:
        return True

    def builds_frontends(self) -> tuple[str, ...]:
        return (self.options.frontend,)

    def run(self, ir: ModelIR, ctx: PassContext) -> PassResult:
        o = self.options
        data = ctx.require_data("nas")
        frontend = search_frontend(o.frontend, "nas: frontend")
        search = parse_options(frontend.search_options, o.search, "nas: search", "search option")
        if ctx.run_dir is not None and hasattr(search, "latency_store") and search.latency_store is None:
            search = replace(search, latency_store=str(Path(ctx.run_dir).resolve().parent))  # the stage store
        out_dir = self._search_dir(search, ctx)
        ctx.seed_everything(len(ir.history))
        result = frontend.run_search(search, data, out_dir, device=ctx.device, progress=ctx.progress)
        path, winner = self._winner(result)
        model = frontend.from_mapping({**o.model, "genotype": str(path)}, f"nas: {o.frontend}")
        ctx.seed_everything(len(ir.history))
        new = model.build(data, ctx)  # type: ignore[attr-defined]
        found = ctx.scratch_dir("search")  # the winners and the search's log beside the stage's weights
        if found is not None:
            for f in sorted(out_dir.glob("*.json")):
                shutil.copy2(f, found / f.name)
        stats: dict[str, Any] = {"search_seconds": round(float(getattr(result, "seconds", 0.0)), 1),
                                 "search_dir": str(out_dir), "genotype": f"search/{Path(path).name}",
                                 "budget": o.budget, "init": o.init, "winner": winner}
        if o.init == "supernet":
            self._inherit(result, new, data, o, ctx)
        new.history = list(ir.history)
        trained = train_stage(ctx, new.module, new.task, o, offset=len(ir.history), name="nas",
                              desc="train the winner")
        stats.update(epochs=trained.epochs_run,
                     final_loss=round(trained.final_loss, 5) if trained.epochs_run else None)
        return PassResult(new, changed=True, stats=stats)

    def _search_dir(self, search: Any, ctx: PassContext) -> Path:
        """Where the search runs: `<store>/.searches/<key>`, keyed by the frontend, the search options, the data and
        the seed, so that a stage that only trains the winner differently (budget, init, epochs) reuses it."""
        if ctx.run_dir is None:
            return Path(tempfile.mkdtemp(prefix="nas-search-"))
        key = stable_hash({"frontend": self.options.frontend, "search": options_dict(search), "data": ctx.data_spec,
                           "seed": ctx.seed})
        out = Path(ctx.run_dir).resolve().parent / ".searches" / key  # beside .tables: not a stage of the store
        out.mkdir(parents=True, exist_ok=True)
        return out

    def _winner(self, result: Any) -> tuple[Path, dict[str, Any]]:
        """The winner's genotype file and what the search knows of it (its objectives)."""
        o = self.options
        if o.budget is None:
            if getattr(result, "genotype_path", None) is None:
                raise PassError("nas: the search found no candidate within its largest budget; raise the budgets "
                                "or widen the space")
            winners = getattr(result, "winners", None) or [{}]
            return Path(result.genotype_path), _plain(winners[-1])
        paths = getattr(result, "budget_paths", None)
        if paths is None:
            raise PassError(f"nas: the {o.frontend} search writes one winner, not one per budget; remove budget")
        if o.budget > len(paths):
            raise ConfigError(f"nas: budget {o.budget} but the search has {len(paths)} budgets; give 1..{len(paths)} "
                              f"or null (the largest)")
        path = paths[o.budget - 1]
        if path is None:
            raise PassError(f"nas: no candidate of the search fits budget {o.budget}; choose a larger budget or "
                            f"raise the search's budgets")
        return Path(path), _plain(result.winners[o.budget - 1])

    @staticmethod
    def _inherit(result: Any, ir: ModelIR, data: Any, o: NasOptions, ctx: PassContext) -> None:
        """The supernet's slices of the winner into `ir.module`, BatchNorm re-estimated on training batches."""
        inherit = getattr(result, "inherit", None)
        if inherit is None:
            raise PassError(f"nas: init: supernet needs a weight-sharing search; the {o.frontend} search has no "
                            f"supernet; use init: scratch")
        from compressor.data import make_loader

        loader = make_loader(data.train, o.batch_size, shuffle=True, seed=ctx.seed)
        inherit(ir.module, [x.to(ctx.device) for x, _ in islice(loader, o.bn_batches)])


def _plain(winner: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in winner.items() if k != "genotype"}


__all__ = ["Nas", "NasOptions"]
