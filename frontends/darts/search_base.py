"""What the search loop (`search.py`) and the search algorithms share: the `search:` block's options
(`SearchOptions`), the hooks an algorithm implements (`SearchAlgorithm`, plain DARTS), the supernet and
optimizers the hooks receive (`Stage`), and the registry of algorithms (`SEARCHES`, `@register_search`).

The built-in algorithms register from `algorithms.py` (darts, pc-darts, p-darts, lambda-darts, em-darts),
`hpe.py`, `ddarts.py` and `evolution.py`, imported by the package (`compressor.frontends.darts`); a plugin
package registers its own the same way (the registry is `compressor.registry.SEARCHES`). Each algorithm
declares its own options block (`Options`, named `block` in YAML: pc, pdarts, lambda, em, hpe, evolution,
ddarts; the algorithm's name is accepted too). `algorithms.py` documents the hooks and each algorithm.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
import torch.nn as nn

from compressor.config import LineDict
from compressor.errors import ConfigError
from compressor.frontends.darts.genotypes import Genotype
from compressor.frontends.darts.gradients import (LossFn, arch_grads_first_order, arch_grads_second_order,
                                                  weight_gradients)
from compressor.frontends.darts.search_space import EdgePrimitives, SearchNetwork
from compressor.options import (Range, build_options, option, options_dict, options_dict_value, parse_options,
                                parse_values, prefix, unknown_key_message)
from compressor.registry import SEARCHES, register_search

if TYPE_CHECKING:
    from pathlib import Path

    from compressor.data.base import DataBundle

log = logging.getLogger(__name__)

# The built-in algorithms: the sweep space of `algorithm` (the names a config may give are the registry's).
BUILTIN_ALGORITHMS = ("darts", "pc-darts", "p-darts", "lambda-darts", "em-darts", "hpe-darts", "evolution", "d-darts")
Objective = Literal["metric", "macs", "memory", "latency"]

# The flat keys of the options before each algorithm had its own block (`hpe_ops_per_edge` is now
# `hpe: {ops_per_edge: ...}`): the prefix of each built-in algorithm's keys. They are read, with one
# deprecation warning per key, until the next version; the stage keys keep hashing this flat form
# (`SearchOptions.key_data`), so stages and search folders made before the blocks keep their keys.
LEGACY_PREFIXES = {"pc-darts": "pc_", "p-darts": "pdarts_", "lambda-darts": "lambda_", "em-darts": "em_",
                   "hpe-darts": "hpe_", "evolution": "evo_", "d-darts": "dd_"}
_warned: set[str] = set()


def search_algorithm(name: str, where: str = "search.algorithm") -> type[SearchAlgorithm]:
    """The class registered as `name`; a ConfigError naming the closest registered name if none is."""
    if name in SEARCHES:  # a registered name loads no plugins
        return SEARCHES[name]
    return SEARCHES.get_or_error(name, where)


# ---- the options --------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoSearchOptions:
    """The block of an algorithm without options of its own."""


@dataclass(frozen=True)
class SearchOptions:
    """The search block: the options every algorithm shares, and the selected algorithm's own block
    (`block`, its `Options`), given in YAML under the algorithm's block name, e.g.
    `search: {algorithm: hpe-darts, epochs: 8, hpe: {ops_per_edge: [8, 5, 3, 1]}}`. Algorithm code reads
    its block by that name (`opts.hpe.ops_per_edge`) or as `opts.block`."""

    algorithm: str = option("pc-darts", "search algorithm: a registered name (compress search --help lists them "
                                        "with their blocks)", search=list(BUILTIN_ALGORITHMS))
    order: Literal[1, 2] = option(1, "1: α step at the current w; 2: DARTS unrolled (second-order) α gradient",
                                  search=[1, 2])
    epochs: int = option(50, "search epochs (p-darts: per stage)", min=1, search=[10, 25, 50])
    batch_size: int = option(64, "samples per step (for w and for α)", min=1)
    init_channels: int = option(16, "channels of the first cells (C)", min=1, max=1024)
    layers: int = option(8, "cells of the supernet (p-darts uses pdarts.stages)", min=3, max=64)
    w_lr: float = option(0.025, "initial SGD learning rate of the weights", min=0, min_exclusive=True,
                         search=Range(0.005, 0.1, log=True))
    w_lr_min: float = option(0.001, "final learning rate of the cosine schedule", min=0)
    w_momentum: float = option(0.9, "SGD momentum", min=0, max=1)
    w_wd: float = option(3e-4, "weight decay of the weights", min=0)
    a_lr: float | None = option(None, "Adam learning rate of α (null: 6e-4 for pc-darts and p-darts, else 3e-4)",
                                min=0, min_exclusive=True, search=Range(1e-4, 1e-3, log=True))
    a_wd: float = option(1e-3, "weight decay of α", min=0)
    grad_clip: float = option(5.0, "clip the weights' gradient norm (0 = off)", min=0)
    train_portion: float = option(0.5, "fraction of the train split for the weights; the rest trains α "
                                       "(evolution: unused, the weights train on the whole split)",
                                  min=0, max=1, min_exclusive=True, max_exclusive=True)
    warmup_epochs: int | None = option(None, "epochs of weights-only training before α updates (null: 30% for "
                                             "pc-darts, 40% of each stage for p-darts, else 0; hpe-darts: its "
                                             "warm-up stage's epochs E_warmup, null: epochs)", min=0)
    stop_stable_epochs: int = option(0, "end a stage once its derived genotype has not changed for this many "
                                        "consecutive epochs (0 = off; D-DARTS §4.2.4 uses 5)", min=0)
    stop_min_epochs: int = option(10, "no such early end before this many epochs of the stage (D-DARTS: 10)",
                                  min=1)
    max_steps: int = option(0, "stop each epoch after this many steps (0 = the whole split)", min=0)
    seed: int = option(0, "seed of α and weight initialization, shuffling and mutation", min=0)
    block: Any = option(None, "the algorithm's own options (its Options; null: their defaults)", hidden=True)

    def __post_init__(self) -> None:
        cls = self.algorithm_class
        if self.block is None:
            object.__setattr__(self, "block", cls.Options())
        elif not isinstance(self.block, cls.Options):
            raise TypeError(f"the options block of {self.algorithm} is {cls.Options.__name__}, got "
                            f"{type(self.block).__name__}")
        cls.check_options(self)

    def __getattr__(self, name: str) -> Any:
        """`opts.hpe`: the selected algorithm's block by its block name (or the algorithm's name)."""
        if name.startswith("__") or name in ("algorithm", "block"):
            raise AttributeError(name)
        cls = self.algorithm_class
        if name in (cls.block_name(), self.algorithm):
            return self.block
        raise AttributeError(f"search options have no '{name}': algorithm {self.algorithm}'s block is "
                             f"'{cls.block_name()}'")

    @property
    def algorithm_class(self) -> type[SearchAlgorithm]:
        return search_algorithm(self.algorithm)

    # ---- YAML, one-line form, stage keys -------------------------------------------------------
    @classmethod
    def of(cls, **options: Any) -> "SearchOptions":
        """The options from keywords as the YAML block gives them, blocks as mappings:
        `SearchOptions.of(algorithm="hpe-darts", epochs=4, hpe={"batch": 32})`."""
        return parse_options(cls, options, "search", "search option")

    @classmethod
    def __parse_options__(cls, raw: Mapping[str, Any], context: str, what: str) -> "SearchOptions":
        """The common keys, the selected algorithm's block under its block name (or the algorithm's name),
        and for one version the flat keys of the built-in algorithms' blocks (`hpe_batch`), each warned about
        once. A block of another algorithm, or a flat key given with its block key, is an error."""
        name = raw.get("algorithm", "pc-darts")
        where = prefix(raw, context, "algorithm")
        if not isinstance(name, str):
            raise ConfigError(f"{where}: algorithm: expected a name, got {name!r}; valid: {', '.join(SEARCHES.names())}")
        algo = search_algorithm(name, f"{where}: algorithm")
        block_keys = {algo.block_name(), name}
        common = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("hidden")]
        owners = _block_owners()
        block_raw: Any = None
        block_key = ""
        flat: dict[str, str] = {}  # block field -> the flat key that gave it
        for key in raw:
            if key in common:
                continue
            if key in block_keys:
                if block_raw is not None:
                    raise ConfigError(f"{prefix(raw, context, key)}: {block_key} and {key} are the same block "
                                      f"({name}'s options); give it once, as {algo.block_name()}")
                block_raw, block_key = raw[key], key
                continue
            owner = owners.get(key) or _legacy_owner(str(key))
            if owner is not None and owner[0] != name:
                what_it_is = f"{key} is an option of" if owner[1] else f"the {key} block holds the options of"
                raise ConfigError(f"{prefix(raw, context, key)}: {what_it_is} the {owner[0]} algorithm, but "
                                  f"algorithm is {name}; remove it or set algorithm: {owner[0]}")
            if owner is not None:
                flat[owner[1]] = str(key)
                continue
            valid = common + sorted(block_keys)
            raise ConfigError(f"{prefix(raw, context, key)}: {unknown_key_message(key, valid, what)}")
        if block_raw is not None and not isinstance(block_raw, Mapping):
            raise ConfigError(f"{prefix(raw, context, block_key)}: {block_key}: expected a mapping of {name}'s "
                              f"options, got {block_raw!r}")
        if flat:
            block_raw = _merge_flat(raw, context, algo, flat, block_raw, block_key)
        block = parse_options(algo.Options, block_raw, f"{context}: {block_key or algo.block_name()}",
                              f"{algo.block_name()} option")
        common_raw = raw.without(*[k for k in raw if k not in common]) if isinstance(raw, LineDict) else \
            {k: v for k, v in raw.items() if k in common}
        values = parse_values(cls, common_raw, context, what)
        return build_options(cls, {**values, "block": block}, raw, context)

    def __option_items__(self) -> list[tuple[str, Any, Any]]:
        """The common options, then the algorithm's block under its block name (none for an algorithm without
        options): what `options_dict` and the one-line form show, and what YAML reads back."""
        items = [(f.name, getattr(self, f.name), _field_default(f)) for f in dataclasses.fields(self)
                 if not f.metadata.get("hidden")]
        cls = self.algorithm_class
        if dataclasses.fields(cls.Options):
            items.append((cls.block_name(), self.block, cls.Options()))
        return items

    def key_data(self, complete: bool = False) -> dict[str, Any]:
        """The options as stage keys and search folders hash them: the flat form from before the blocks
        (every built-in block's keys with their prefix, the unselected ones at their defaults), so that keys
        made before the blocks stay valid; the block of an algorithm without flat keys nests under its name.
        A block option its algorithm lists in `key_when_changed` (added after the keys were pinned) is left
        out at its default, so that runs which leave it there keep their keys; `complete` keeps it (the
        defaults a stored run is compared against)."""
        out = {f.name: options_dict_value(getattr(self, f.name)) for f in dataclasses.fields(self)
               if not f.metadata.get("hidden")}
        for name, flat_prefix in LEGACY_PREFIXES.items():
            algo = search_algorithm(name)
            block = options_dict(self.block) if name == self.algorithm else algo.unselected_key_data()
            defaults = options_dict(algo.Options())
            out.update({flat_prefix + k: v for k, v in block.items()
                        if complete or k not in algo.key_when_changed or v != defaults.get(k)})
        if self.algorithm not in LEGACY_PREFIXES and dataclasses.fields(self.block):
            out[self.algorithm_class.block_name()] = options_dict(self.block)
        return out

    # ---- per-algorithm defaults ----------------------------------------------------------------
    @property
    def arch_lr(self) -> float:
        return self.a_lr if self.a_lr is not None else self.algorithm_class.default_arch_lr

    @property
    def warmup(self) -> int:
        """Epochs at the start of each stage without α steps (`SearchAlgorithm.alpha_free_epochs`)."""
        return self.algorithm_class.alpha_free_epochs(self)

    @property
    def stages(self) -> tuple[int, ...]:
        return self.algorithm_class.stages(self)

    @property
    def stage_epochs(self) -> tuple[int, ...]:
        """Epochs of each stage (`SearchAlgorithm.stage_epochs`; `epochs` each unless the algorithm says)."""
        return self.algorithm_class.stage_epochs(self)


def _field_default(f: dataclasses.Field) -> Any:
    return f.default if f.default_factory is dataclasses.MISSING else f.default_factory()


def _block_owners() -> dict[str, tuple[str, str]]:
    """Each registered algorithm's block names -> (algorithm, "")."""
    out: dict[str, tuple[str, str]] = {}
    for name in SEARCHES.names():
        for key in (SEARCHES[name].block_name(), name):
            out.setdefault(key, (name, ""))
    return out


def _legacy_owner(key: str) -> tuple[str, str] | None:
    """(algorithm, block field) of a flat key from before the blocks (`hpe_batch` -> ("hpe-darts", "batch"))."""
    for name, flat_prefix in LEGACY_PREFIXES.items():
        if key.startswith(flat_prefix):
            field = key[len(flat_prefix):]
            if field in {f.name for f in dataclasses.fields(search_algorithm(name).Options)}:
                return name, field
    return None


def _merge_flat(raw: Mapping[str, Any], context: str, algo: type[SearchAlgorithm], flat: dict[str, str],
                block_raw: Mapping[str, Any] | None, block_key: str) -> Mapping[str, Any]:
    """The block with the flat keys moved in (each warned about once, at its file:line), kept at their
    file:line so that a bad value's error still points at the flat key."""
    block = algo.block_name()
    for field, key in flat.items():
        if block_raw is not None and field in block_raw:
            raise ConfigError(f"{prefix(raw, context, key)}: {key} and {block_key}: {{{field}}} give the same "
                              f"option twice; keep only {block}: {{{field}: ...}}")
        if key not in _warned:
            _warned.add(key)
            loc = prefix(raw, "", key)
            log.warning("%ssearch.%s is deprecated: write search: {%s: {%s: ...}} (the flat key will be removed in "
                        "the next version)", f"{loc}: " if loc else "", key, block, field)
    merged = LineDict(dict(block_raw or {}), source=getattr(raw, "source", ""), line=getattr(raw, "line", None),
                      key_lines=dict(getattr(block_raw, "key_lines", {}) or {}))
    merged.overrides = dict(getattr(block_raw, "overrides", {}) or {})
    for field, key in flat.items():
        merged[field] = raw[key]
        if isinstance(raw, LineDict):
            if key in raw.key_lines:
                merged.key_lines[field] = raw.key_lines[key]
            if key in raw.overrides:
                merged.overrides[field] = raw.overrides[key]
    return merged


# ---- the hooks ------------------------------------------------------------------------------------
class SearchAlgorithm:
    """Plain DARTS (first or second order, `opts.order`). Subclasses override what differs."""

    name: str  # set by @register_search
    # the algorithm's own options: a frozen dataclass declared with `compressor.options.option`, given in YAML as
    # the block `block` (default: the algorithm's name) beside the common options, read as `opts.<block>`
    Options: ClassVar[type] = NoSearchOptions
    block: ClassVar[str] = ""
    default_arch_lr: float = 3e-4
    default_warmup: float = 0.0  # fraction of each stage's epochs trained without α steps
    clip_arch_grads: bool = False  # clip α's gradient norm at `grad_clip` before its step
    split_train: bool = True  # cut the train split into a weight part and an α part (`train_portion`)
    supernet_class: type[SearchNetwork] = SearchNetwork  # what `supernet` builds
    # block options added after the stage keys were pinned: hashed only when they differ from their default
    # (`SearchOptions.key_data`), so that a search leaving them there keeps its key and its folder
    key_when_changed: ClassVar[tuple[str, ...]] = ()

    def __init__(self, opts: SearchOptions, loss_fn: LossFn) -> None:
        self.opts, self.loss_fn = opts, loss_fn

    # ---- class level: read by SearchOptions ------------------------------------------------------
    @classmethod
    def block_name(cls) -> str:
        """The key of this algorithm's options block in the search block."""
        return cls.block or cls.name

    @classmethod
    def check_options(cls, opts: SearchOptions) -> None:
        """Raise ValueError, saying how to fix it, for options this algorithm cannot run with."""

    @classmethod
    def stages(cls, opts: SearchOptions) -> tuple[int, ...]:
        """Cells of each stage's supernet; each stage trains for `stage_epochs` epochs."""
        return (opts.layers,)

    @classmethod
    def stage_epochs(cls, opts: SearchOptions) -> tuple[int, ...]:
        """Epochs of each stage (one entry per `stages` entry): `opts.epochs` each. An algorithm whose
        stages differ in length (hpe-darts: its warm-up stage) overrides it; each stage's cosine schedule
        spans its own epochs."""
        return (opts.epochs,) * len(cls.stages(opts))

    @classmethod
    def alpha_free_epochs(cls, opts: SearchOptions) -> int:
        """Epochs at the start of each stage in which the loop takes no α step: `warmup_epochs`, or
        `default_warmup` × `epochs` when it is null."""
        if opts.warmup_epochs is not None:
            return opts.warmup_epochs
        return int(round(cls.default_warmup * opts.epochs))

    @classmethod
    def unselected_key_data(cls) -> dict[str, Any]:
        """What this algorithm's block adds to the stage keys of a search by ANOTHER algorithm
        (`SearchOptions.key_data`, built-in algorithms only): its defaults. Such a block changes nothing in
        that search, so an algorithm that later adds or re-defaults an option returns its earlier form here,
        and the keys of the other algorithms' pipelines do not change."""
        return options_dict(cls.Options())

    # ---- supernet --------------------------------------------------------------------------------
    def build_supernet(self, stage: int, data: DataBundle, primitives_normal: EdgePrimitives | None,
                       primitives_reduce: EdgePrimitives | None) -> SearchNetwork:
        """Stage `stage`'s supernet (ops per edge: the full space at stage 0, else `stage_end`'s)."""
        return self.supernet(stage, data, primitives_normal, primitives_reduce)

    def supernet(self, stage: int, data: DataBundle, primitives_normal: EdgePrimitives | None,
                 primitives_reduce: EdgePrimitives | None, **extra: object) -> SearchNetwork:
        """The SearchNetwork of the options and data; `extra`: its algorithm-specific arguments."""
        return self.supernet_class(self.opts.init_channels, data.task.num_classes, self.stages(self.opts)[stage],
                             task=data.task.kind, in_channels=data.input_shape[0], primitives_normal=primitives_normal,
                             primitives_reduce=primitives_reduce, **extra)

    # ---- per epoch and per step ------------------------------------------------------------------
    def epoch_start(self, model: SearchNetwork, stage: int, epoch: int) -> dict[str, float]:
        """Set this epoch's schedules (`epoch` counts within the stage); return the values to record
        in the α history."""
        return {}

    def arch_step(self, st: Stage, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
                  lr: float) -> float:
        """One α update on the α batch (x_val, y_val); returns its loss. (x, y) is the step's weight
        batch and `lr` the weights' learning rate η, both for the second-order virtual step."""
        model, opts = st.model, self.opts
        if opts.order == 2:
            grads, vloss = arch_grads_second_order(model, self.loss_fn, x, y, x_val, y_val, lr, st.w_opt,
                                                   opts.w_momentum, opts.w_wd)
        else:
            grads, vloss = arch_grads_first_order(model, self.loss_fn, x_val, y_val)
        st.a_opt.zero_grad(set_to_none=True)
        for a, g in zip(model.arch_parameters(), grads):
            a.grad = g
        if self.clip_arch_grads and opts.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.arch_parameters(), opts.grad_clip)
        st.a_opt.step()
        return vloss

    def weight_step(self, st: Stage, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """One update of the weights on (x, y); returns statistics to average over the epoch."""
        stats = weight_gradients(st.model, self.loss_fn, x, y)
        step_weights(st, self.opts.grad_clip)
        return stats

    def stage_end(self, model: SearchNetwork, stage: int) -> tuple[EdgePrimitives, EdgePrimitives]:
        """The ops per edge (normal, reduce) of the next stage's supernet, after stage `stage`."""
        return model.primitives_normal, model.primitives_reduce

    def derive(self, model: SearchNetwork) -> Genotype:
        """The searched genotype, from the last stage's supernet."""
        return model.genotype()

    def finish(self, model: SearchNetwork, data: DataBundle, out_dir: Path, device: str,
               progress: bool = False) -> Genotype:
        """The searched genotype, once the last stage's epochs are done: `derive(model)` unless an
        algorithm needs the data, the device or the search's folder `out_dir` (where the loop then
        writes genotype.json) to derive it."""
        return self.derive(model)


def step_weights(st: Stage, grad_clip: float) -> None:
    """Clip the weights' gradient norm (0 = off) and take the SGD step."""
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(st.model.weight_parameters(), grad_clip)
    st.w_opt.step()


# ---- what the hooks receive ----------------------------------------------------------------------
class Stage:
    """A supernet (`model`) with its two optimizers (`w_opt`, `a_opt`) and its schedule; the
    algorithm's hooks receive it."""

    def __init__(self, algo: SearchAlgorithm, data: DataBundle, stage: int, prims_normal: EdgePrimitives | None,
                 prims_reduce: EdgePrimitives | None, device: str) -> None:
        opts = algo.opts
        torch.manual_seed(opts.seed + 1000 * stage)
        self.model = algo.build_supernet(stage, data, prims_normal, prims_reduce).to(device)
        self.w_opt = torch.optim.SGD(self.model.weight_parameters(), opts.w_lr, momentum=opts.w_momentum,
                                     weight_decay=opts.w_wd)
        self.a_opt = torch.optim.Adam(self.model.arch_parameters(), lr=opts.arch_lr, betas=(0.5, 0.999),
                                      weight_decay=opts.a_wd)
        self.stage = stage
        self.epoch = 0  # the schedule's state: epochs finished in this stage

    def set_lr(self, opts: SearchOptions) -> float:
        """Cosine from w_lr (epoch 0) towards w_lr_min over the stage's epochs, in closed form so that a
        resumed run with a larger `epochs` follows the new schedule exactly."""
        epochs = opts.stage_epochs[self.stage]
        lr = opts.w_lr_min + 0.5 * (opts.w_lr - opts.w_lr_min) * (1 + math.cos(math.pi * self.epoch / epochs))
        for group in self.w_opt.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(),
                "sched": {"epoch": self.epoch}, "primitives_normal": self.model.primitives_normal,
                "primitives_reduce": self.model.primitives_reduce}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.epoch = state["sched"]["epoch"]
