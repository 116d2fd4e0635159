"""sweep.yaml → a validated `SweepSpec`, checked in full before any trial runs.

```yaml
name: sweep-insar
base: pcdarts_base.yaml            # a pipeline file (relative to this file), or a pipeline mapping inline
space:                             # pipeline paths, as --set writes them
  passes.prune-l1.ratio: [0.4, 0.6, 0.8]                  # a list: categorical
  passes.finetune.lr: {low: 1.0e-4, high: 1.0e-2, log: true}   # a range (int bounds: an int range)
  passes.prune-l1.exclude_mode: declared                  # the option declaration's sweep space
  passes:                                                  # the pass list itself: named variants
    finetune: [prune-l1, finetune]
    distill: [prune-l1, distill]
objectives: {iou: maximize, latency_ms@onnxruntime-cpu: minimize, size_mb: minimize}
constraints: ["latency_ms@onnxruntime-cpu <= 5"]          # infeasible trials never make the front
budgets: {edge: ["size_mb <= 0.5", "latency_ms@onnxruntime-cpu <= 3"]}
sampler: {name: nsga2, seed: 0}    # a registered sampler: compress passes lists them with their options
trials: 20
executor: {local: {workers: 1}}    # a registered executor, e.g. {ray: {address: auto, cpus: 1}}
m_factor: {alpha: 1, accuracy: iou, p_min: trials}   # P_min: trials | space | a parameter count
```

A trial is the base pipeline with one value per space key; a key whose pass is not in the chosen
pass-list variant is inactive for that trial (sampled, so every sampler sees one fixed space, but not
applied). Figures a trial reports are read
from one report row (`stage:`, default the last stage): task metrics (accuracy, precision, recall, f1,
iou; top5 for classification with more than 5 classes; miou, pixel_accuracy for multi-class
segmentation; each checked against the base's task, `task_metrics`), params, macs, size_mb,
latency_ms / latency_p90_ms / latency_p99_ms on a backend (`@backend`, default the first configured
backend that measured the stage), latency_pred_ms (`@backend`: predicted by the per-block latency table, with
`evaluate: {latency: {predict: [backend]}}` in the base; reproducible where measured times are noisy), wall_s, and
the sweep-level m_factor and weighted (seed 002's eq. 2).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from compressor.config import load_yaml, set_path
from compressor.errors import ConfigError
from compressor.options import Range, closest, option, parse_options, prefix, search_space, unknown_key_message
from compressor.plugins import load_plugins
from compressor.registry import EXECUTORS, SAMPLERS, Registry

SWEEP_KEYS = ["name", "base", "space", "objectives", "constraints", "budgets", "sampler", "trials", "executor",
              "m_factor", "weighted", "stage"]
TASK_METRICS = ("accuracy", "precision", "recall", "f1", "iou", "top5", "miou", "pixel_accuracy")
LATENCY = {"latency_ms": "median_ms", "latency_p90_ms": "p90_ms", "latency_p99_ms": "p99_ms"}
PREDICTED = "latency_pred_ms"  # from the per-block latency table (evaluate: {latency: {predict: [backend]}})
PLAIN = ("params", "macs", "size_mb", "wall_s")
DERIVED = ("m_factor", "weighted")
DIRECTIONS = {"maximize": "maximize", "max": "maximize", "minimize": "minimize", "min": "minimize"}
LIST_BLOCKS = ("passes", "export")
DECLARED = ("declared", None)
_NAME = re.compile(r"[A-Za-z0-9_-]+")


def check_name(name: Any, where: str, what: str) -> str:
    """`name` if it is letters, digits, - and _ (what run names allow), else ConfigError. The sweep's name and
    each budget's name become one directory (`runs/<name>`, `budgets/<name>`): this refuses separators, `..`,
    absolute paths and empty names, which would write outside the sweep directory."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: {name!r} must be letters, digits, - and _ (it names the {what} directory; no "
                          f"'/', '..' or absolute path)")
    return name


def finite_number(x: Any) -> bool:
    """An int or float (not a bool) that is finite as a float: 1e999, nan and ints past float's range are not."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # an int too large for a float
        return False


# ---- figures ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    """A figure of a trial: `iou`, `params`, `latency_ms@onnxruntime-cpu`, `m_factor`, ..."""

    text: str
    name: str
    backend: str | None = None

    @classmethod
    def parse(cls, text: Any, where: str) -> "Metric":
        if not isinstance(text, str):
            raise ConfigError(f"{where}: expected a figure name, got {text!r}; valid: {', '.join(FIGURES)}")
        name, _, backend = text.strip().partition("@")
        if name not in FIGURES:
            raise ConfigError(f"{where}: {unknown_key_message(name, FIGURES, 'figure')}")
        if backend and name not in LATENCY and name != PREDICTED:
            raise ConfigError(f"{where}: '@{backend}' applies to latency figures only "
                              f"({', '.join([*LATENCY, PREDICTED])})")
        return cls(text.strip(), name, backend or None)


FIGURES = [*TASK_METRICS, *PLAIN, *LATENCY, PREDICTED, *DERIVED]


def task_metrics(kind: str | None, num_classes: int | None = None) -> tuple[str, ...]:
    """The task metrics a stage of this task measures (`compressor.evaluate.metrics.TaskMetrics`'s keys), the
    main one first: classification accuracy, precision, recall, f1 and top5 (more than 5 classes); binary
    segmentation (1 class) iou and the rest; multi-class segmentation miou and pixel_accuracy. An unknown kind
    allows them all; an unknown class count allows top5, and means binary for segmentation."""
    if kind == "classification":
        return ("accuracy", "precision", "recall", "f1") + (("top5",) if num_classes is None or num_classes > 5 else ())
    if kind == "segmentation":
        if (num_classes or 1) >= 2:
            return ("miou", "pixel_accuracy")
        return ("iou", "accuracy", "precision", "recall", "f1")
    return TASK_METRICS


def data_task(name: str, options: Any) -> tuple[str | None, int | None]:
    """(kind, classes) of a dataset, known before building it: its options' `task` and `num_classes` fields where
    it has them (the options decide), else its builder's `task_kind` and `num_classes` attributes; None where
    neither says."""
    from compressor.registry import DATASETS

    builder = DATASETS.get(name)
    kind = getattr(options, "task", None)
    kind = kind if kind in ("classification", "segmentation") else getattr(builder, "task_kind", None)
    classes = getattr(options, "num_classes", None)
    classes = classes if isinstance(classes, int) else getattr(builder, "num_classes", None)
    return kind, classes


def row_figures(row: Mapping[str, Any]) -> dict[str, float]:
    """Every raw figure of a report row: task metrics, params, macs, size_mb and each backend's latency
    (`latency_ms@backend`, ...; the first measured backend also without the suffix)."""
    out: dict[str, float] = {}
    for k, v in (row.get("metrics") or {}).items():
        if isinstance(v, (int, float)):
            out[k] = float(v)
    for k in ("params", "macs"):
        if isinstance(row.get(k), (int, float)):
            out[k] = float(row[k])
    if isinstance(row.get("size_bytes"), (int, float)):
        out["size_mb"] = row["size_bytes"] / 1e6
    for i, (backend, ms) in enumerate((row.get("latency_pred") or {}).items()):
        if isinstance(ms, (int, float)):
            out[f"{PREDICTED}@{backend}"] = float(ms)
            if i == 0:
                out[PREDICTED] = float(ms)
    for i, (backend, stats) in enumerate((row.get("latency") or {}).items()):
        for name, key in LATENCY.items():
            if isinstance(stats, Mapping) and isinstance(stats.get(key), (int, float)):
                out[f"{name}@{backend}"] = float(stats[key])
                if i == 0:
                    out[name] = float(stats[key])
    return out


# ---- the space --------------------------------------------------------------------------------------

@dataclass
class Param:
    """One dimension of the space: a pipeline path and its distribution (optuna's)."""

    key: str
    path: list[str]
    distribution: Any
    labels: dict[str, Any] = field(default_factory=dict)  # label -> value, for choices that are not scalars
    where: str = ""

    @property
    def is_variant(self) -> bool:
        return len(self.path) == 1 and self.path[0] in LIST_BLOCKS

    def value(self, raw: Any) -> Any:
        return copy.deepcopy(self.labels[raw]) if self.labels else raw

    def choices(self) -> list[Any]:
        """Every value (categorical), or the two bounds (range): what validation tries."""
        from optuna.distributions import CategoricalDistribution

        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return [self.value(c) for c in d.choices]
        return [d.low, d.high]

    def applies(self, doc: Mapping[str, Any]) -> bool:
        """Whether the path exists in `doc`: a pass's option applies only when that pass is in the list."""
        if self.is_variant or self.path[0] not in LIST_BLOCKS or len(self.path) < 2:
            return True
        if re.fullmatch(r"-?\d+", self.path[1]):
            return True
        entries = doc.get(self.path[0]) or []
        entries = [entries] if isinstance(entries, str) else entries
        names = [e if isinstance(e, str) else next(iter(e)) if isinstance(e, Mapping) and len(e) == 1 else None
                 for e in entries]
        return self.path[1] in names


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _label(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"), default=str)


def _distribution(key: str, raw: Any, where: str) -> tuple[Any, dict[str, Any]]:
    """(optuna distribution, labels) of one space value: a list, a {low, high, log, step} range, a Range,
    or, for a pass-list key, a mapping of named variants."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(raw, Range):
        raw = {"low": raw.low, "high": raw.high, "log": raw.log, "step": raw.step}
    if key in LIST_BLOCKS:
        if isinstance(raw, Mapping):
            variants = dict(raw)
        elif isinstance(raw, list) and raw and all(isinstance(v, list) for v in raw):
            variants = {f"v{i}": v for i, v in enumerate(raw)}
        else:
            raise ConfigError(f"{where}: '{key}' takes named variants, each a list of {key}, e.g. "
                              f"{key}: {{plain: [prune-l1, finetune], kd: [prune-l1, distill]}}")
        if not variants or not all(isinstance(v, list) for v in variants.values()):
            raise ConfigError(f"{where}: each variant of '{key}' is a list of {key}")
        labels = {str(k): v for k, v in variants.items()}
        return CategoricalDistribution(list(labels)), labels
    if isinstance(raw, list):
        if not raw:
            raise ConfigError(f"{where}: an empty list; give at least one value")
        if all(_scalar(v) for v in raw):
            if len({_label(v) for v in raw}) != len(raw):
                raise ConfigError(f"{where}: {raw!r} repeats a value")
            return CategoricalDistribution(list(raw)), {}
        labels = {_label(v): v for v in raw}
        if len(labels) != len(raw):
            raise ConfigError(f"{where}: {raw!r} repeats a value")
        return CategoricalDistribution(list(labels)), labels
    if isinstance(raw, Mapping):
        unknown = [k for k in raw if k not in ("low", "high", "log", "step")]
        if unknown or "low" not in raw or "high" not in raw:
            raise ConfigError(f"{where}: a range is {{low, high}} with optional log: true or step; got {dict(raw)!r}")
        low, high, log, step = raw["low"], raw["high"], raw.get("log", False), raw.get("step")
        nums = [low, high] + ([step] if step is not None else [])
        if not all(finite_number(x) for x in nums) or not isinstance(log, bool):
            raise ConfigError(f"{where}: low, high and step must be finite numbers (write 1.0e-4, not 1e-4) and log "
                              f"true or false, got {dict(raw)!r}")
        if step is not None and low <= high and step > high - low:  # optuna would shrink the range to {low}
            raise ConfigError(f"{where}: step {step} is larger than the range [{low}, {high}]; give a step of at most "
                              f"{high - low}, or a list of values")
        try:
            if all(isinstance(x, int) for x in nums):
                return IntDistribution(low, high, log=log, step=step or 1), {}
            return FloatDistribution(float(low), float(high), log=log,
                                     step=float(step) if step is not None else None), {}
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    raise ConfigError(f"{where}: expected a list of values, a range {{low, high}}, or 'declared'; got {raw!r}")


def declared_space(doc: Mapping[str, Any], path: list[str], where: str) -> Any:
    """The sweep space the option at `path` declares (`option(..., search=...)`)."""
    from compressor.pipeline import EvaluateOptions
    from compressor.registry import DATASETS, EXPORTERS, FRONTENDS, PASSES
    from compressor.train import TrainOptions

    head, rest = path[0], path[1:]
    cls: Any = None
    if head in LIST_BLOCKS and len(rest) >= 2:
        name = rest[0]
        if re.fullmatch(r"-?\d+", name):
            entries = doc.get(head) or []
            entry = entries[int(name)] if -len(entries) <= int(name) < len(entries) else None
            name = entry if isinstance(entry, str) else next(iter(entry)) if isinstance(entry, Mapping) else ""
        registry = PASSES if head == "passes" else EXPORTERS
        cls, rest = registry.get_or_error(str(name), where).Options, rest[1:]
    elif head == "model" and rest[:1] == ["train"]:
        cls, rest = TrainOptions, rest[1:]
    elif head == "model" and rest:
        front = (doc.get("model") or {}).get("frontend")
        cls = FRONTENDS.get_or_error(str(front), where).Options
    elif head == "data" and rest:
        cls = DATASETS.get_or_error(str((doc.get("data") or {}).get("name")), where).Options
    elif head == "evaluate" and rest:
        cls = EvaluateOptions
    if cls is None:
        raise ConfigError(f"{where}: 'declared' needs an option path such as passes.prune-l1.ratio")
    spaces = search_space(cls)
    dotted = ".".join(rest)
    if dotted not in spaces:
        have = ", ".join(spaces) or "none"
        raise ConfigError(f"{where}: option '{dotted}' declares no sweep space; options with one: {have}; "
                          "give the values here instead")
    return spaces[dotted]


# ---- objectives, constraints, samplers, executors -----------------------------------------------------

@dataclass(frozen=True)
class Objective:
    metric: Metric
    direction: Literal["maximize", "minimize"]


_CONSTRAINT = re.compile(r"^\s*([A-Za-z0-9_@.\-]+)\s*(<=|>=|<|>)\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*$")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass(frozen=True)
class Constraint:
    """`figure <= bound` (or >=, <, >): a budget. `slack` is optuna's convention: feasible when <= 0."""

    metric: Metric
    op: str
    bound: float
    text: str

    @classmethod
    def parse(cls, text: Any, where: str) -> "Constraint":
        m = _CONSTRAINT.match(text) if isinstance(text, str) else None
        if m is None:
            raise ConfigError(f"{where}: expected 'figure <= number' (or >=), e.g. 'latency_ms <= 5', got {text!r}")
        bound = m.group(3)
        if not _NUMBER.fullmatch(bound) or not math.isfinite(float(bound)):  # '1.2.3', '.', '1e999'
            raise ConfigError(f"{where}: {text.strip()!r}: the bound {bound!r} is not a finite number; write e.g. "
                              f"'latency_ms <= 5' or 'size_mb <= 2.5e-1'")
        return cls(Metric.parse(m.group(1), where), m.group(2), float(bound), text.strip())

    def slack(self, figures: Mapping[str, float]) -> float:
        value = figures.get(self.metric.text)
        if value is None or not math.isfinite(value):
            return math.inf
        return value - self.bound if self.op in ("<=", "<") else self.bound - value

    def holds(self, figures: Mapping[str, float]) -> bool:
        s = self.slack(figures)
        return s < 0 if self.op in ("<", ">") else s <= 0


P_MIN_WORDS = ("trials", "space")
P_MIN_VALID = ("write trials (the smallest model among the finished trials), space (the smallest network of the "
               "sweep's space) or a positive whole parameter count such as 272474")
P_MIN_INSTEAD = "write p_min: trials (the smallest model among the finished trials) or a parameter count"


def p_min_valid(value: Any) -> bool:
    """`trials`, `space`, or a positive whole parameter count (not a bool, not a float)."""
    if isinstance(value, str):
        return value in P_MIN_WORDS
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 10**15


@dataclass(frozen=True)
class MFactorOptions:
    alpha: float = option(1.0, "weight of size against accuracy (seed 003 eq. 8): 1 balanced, >1 favours small "
                               "models", min=0)
    accuracy: str = option("accuracy", "task metric used as A (in [0, 1]): accuracy, f1, iou, miou, ... (default "
                                       "accuracy; miou where the task has no accuracy: multi-class segmentation)")
    p_min: str | int = option("trials", "P_min of S' = P_min/P: trials (the smallest model among the finished "
                                        "trials; moves as trials arrive), space (the smallest network of the "
                                        "sweep's space, built once: seed 003's definition) or a parameter count; "
                                        "a trial smaller than P_min gets S' = 1")

    def __post_init__(self) -> None:
        if not p_min_valid(self.p_min):
            raise ValueError(f"p_min {self.p_min!r} is not valid; {P_MIN_VALID}")


# ---- the spec -----------------------------------------------------------------------------------------

@dataclass
class SweepSpec:
    name: str
    source: str
    base: dict[str, Any]
    params: list[Param]
    objectives: list[Objective]
    constraints: list[Constraint] = field(default_factory=list)
    budgets: dict[str, list[Constraint]] = field(default_factory=dict)
    sampler: str = "tpe"
    sampler_options: Any = None
    trials: int = 20
    executor: str = "local"
    executor_options: Any = None
    m_factor: MFactorOptions = field(default_factory=MFactorOptions)
    weights: dict[str, float] = field(default_factory=dict)
    stage: str | None = None
    document: dict[str, Any] = field(default_factory=dict)  # the sweep as plain data, base inlined
    # m_factor.p_min resolved to a number (`compressor.sweep.smallest.fixed_p_min`; None: not yet, or `trials`)
    resolved_p_min: Any = None

    # ---- loading ----------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> "SweepSpec":
        doc = load_yaml(path, overrides, what="sweep", example="samples/sweep_mfactor.yaml")
        if not isinstance(doc, Mapping):
            raise ConfigError(f"{path}: a sweep is a mapping with keys {', '.join(SWEEP_KEYS)}")
        return cls.from_dict(doc, source=str(path))

    @classmethod
    def from_dict(cls, doc: Any, source: str = "<dict>") -> "SweepSpec":
        from compressor.pipeline import Pipeline

        load_plugins()
        if not isinstance(doc, Mapping):
            raise ConfigError(f"{source}: a sweep is a mapping with keys {', '.join(SWEEP_KEYS)}")
        for key in doc:
            if key not in SWEEP_KEYS:
                raise ConfigError(f"{prefix(doc, '', key) or source}: {unknown_key_message(key, SWEEP_KEYS, 'key')}")
        for key in ("base", "space", "objectives"):
            if key not in doc:
                raise ConfigError(f"{prefix(doc, '') or source}: missing '{key}:' (see samples/sweep_mfactor.yaml)")
        base_raw = doc["base"]
        if isinstance(base_raw, str):
            base_path = Path(base_raw)
            if not base_path.is_absolute():
                base_path = Path(source).parent / base_path
            base_doc = load_yaml(base_path)
            base_where = str(base_path)
        elif isinstance(base_raw, Mapping):
            base_doc, base_where = base_raw, prefix(doc, "base", "base")
        else:
            raise ConfigError(f"{prefix(doc, 'base', 'base')}: expected a pipeline file or an inline pipeline mapping")
        base_pipeline = Pipeline.from_dict(base_doc, source=base_where)  # the base alone must be valid
        base = plain(base_doc)
        name = check_name(doc.get("name") or Path(source).stem, prefix(doc, "name", "name"), "sweep")

        params = _parse_space(doc["space"], base, prefix(doc, "space", "space") or source)
        objectives = _parse_objectives(doc["objectives"], prefix(doc, "objectives", "objectives") or source)
        constraints = [Constraint.parse(c, prefix(doc, "constraints", "constraints") or source)
                       for c in _as_list(doc.get("constraints"), prefix(doc, "constraints", "constraints"))]
        budgets_raw = doc.get("budgets") or {}
        if not isinstance(budgets_raw, Mapping):
            raise ConfigError(f"{prefix(doc, 'budgets', 'budgets')}: expected name: [constraints], e.g. "
                              "budgets: {edge: ['latency_ms <= 5']}")
        budgets = {check_name(k, prefix(budgets_raw, "budgets", k), "budget"):
                   [Constraint.parse(c, f"{prefix(budgets_raw, 'budgets', k)}: {k}")
                    for c in _as_list(v, prefix(budgets_raw, "budgets", k))]
                   for k, v in budgets_raw.items()}
        sampler, sampler_options = _parse_choice(doc.get("sampler", "tpe"), SAMPLERS, "sampler",
                                                 prefix(doc, "sampler", "sampler") or source)
        executor, executor_options = _parse_choice(doc.get("executor", "local"), EXECUTORS, "executor",
                                                   prefix(doc, "executor", "executor") or source)
        trials = doc.get("trials", 20)
        if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= 100_000:
            raise ConfigError(f"{prefix(doc, 'trials', 'trials')}: expected an integer in [1, 100000], got {trials!r}")
        mf_raw = doc.get("m_factor")
        if isinstance(mf_raw, Mapping) and "p_min" in mf_raw and not p_min_valid(mf_raw["p_min"]):
            raise ConfigError(f"{prefix(mf_raw, 'm_factor', 'p_min') or 'm_factor'}: p_min {mf_raw['p_min']!r} is "
                              f"not valid; {P_MIN_VALID}")
        mf = parse_options(MFactorOptions, mf_raw, prefix(doc, "m_factor", "m_factor") or "m_factor")
        if mf.accuracy not in TASK_METRICS:
            raise ConfigError(f"{prefix(doc, 'm_factor', 'm_factor')}: m_factor.accuracy must be a task metric in "
                              f"[0, 1]; valid: {', '.join(TASK_METRICS)}")
        weights = _parse_weights(doc.get("weighted"), prefix(doc, "weighted", "weighted") or source)
        stage = doc.get("stage")
        stages = [n for n, _ in base_pipeline.stages()]
        if stage is not None and stage not in stages:
            raise ConfigError(f"{prefix(doc, 'stage', 'stage')}: {unknown_key_message(str(stage), stages, 'stage')}")
        spec = cls(name=name, source=source, base=base, params=params, objectives=objectives,
                   constraints=constraints, budgets=budgets, sampler=sampler, sampler_options=sampler_options,
                   trials=trials, executor=executor, executor_options=executor_options, m_factor=mf,
                   weights=weights, stage=stage)
        accuracy_given = isinstance(doc.get("m_factor"), Mapping) and "accuracy" in doc["m_factor"]
        spec._check_figures(base_pipeline, prefix(doc, "objectives", "objectives") or source,
                            default_accuracy=not accuracy_given)
        spec._check_sampler(prefix(doc, "sampler", "sampler") or source)
        spec._check_space()
        spec._check_p_min(base_pipeline, prefix(doc, "m_factor", "m_factor") or source)
        spec.document = {**plain(doc), "base": base, "name": name}
        return spec

    # ---- trials ---------------------------------------------------------------------------------------
    def trial_doc(self, values: Mapping[str, Any], name: str) -> dict[str, Any]:
        """The base pipeline with `values` (space key -> value) set, named `name`."""
        doc = copy.deepcopy(self.base)
        for p in sorted(self.params, key=lambda q: not q.is_variant):  # variants first
            if p.key in values:
                set_path(doc, p.path, copy.deepcopy(values[p.key]), f"{p.key}={values[p.key]!r}", "space key")
        doc["name"] = name
        return doc

    def fingerprint(self) -> str:
        """What a resumed sweep must share with the one it continues (the base, space and objectives)."""
        keep = {k: self.document.get(k) for k in ("base", "space", "objectives", "constraints", "m_factor",
                                                   "weighted", "stage")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def figure_names(self) -> list[str]:
        """Every figure the sweep reads (objectives, constraints, budgets, m_factor's)."""
        names = [o.metric.text for o in self.objectives]
        names += [c.metric.text for c in self.constraints]
        names += [c.metric.text for cs in self.budgets.values() for c in cs]
        names += [self.m_factor.accuracy, "params", "size_mb", "macs"]
        return list(dict.fromkeys(names))

    def network_params(self) -> list[Param]:
        """The space keys that can shape the network the base's frontend builds: its model options (not
        `model.train`, how it is trained) and data options (the data gives the network its channels, classes
        and input size). The others (seed, evaluate, passes, export, model.train) leave that network as it is."""
        return [p for p in self.params
                if (p.path[0] == "model" and p.path[1:2] != ["train"]) or p.path[0] == "data"]

    # ---- validation -------------------------------------------------------------------------------
    def _check_p_min(self, base: Any, where: str) -> None:
        """`p_min: space` needs a space whose smallest network can be built without running a trial
        (`compressor.sweep.smallest`): refused here, before anything is built, when the network comes out
        of an architecture search, when the sweep reads params after passes (pruning, distillation: their
        effect on size is known only by running them), or when a key that shapes the network has values
        that are not numbers (a choice of models, genotypes, frontends: no size order). Whether each
        numeric key's effect on size is monotone is checked when the network is built, at the sweep's start."""
        if self.m_factor.p_min != "space":
            return

        def refuse(why: str, at: str = where) -> None:
            raise ConfigError(f"{at}: m_factor.p_min: space: {why}, so the space defines no smallest network; "
                              f"{P_MIN_INSTEAD}")

        if getattr(base.model.frontend.options, "search", None) is not None:
            refuse("the base's network comes out of an architecture search (model.search) and is known only once "
                   "the search has run")
        if self.stage != "baseline":
            lists = [self.base.get("passes") or []]  # the base's pass list and every pass-list variant
            lists += [v for p in self.params if p.is_variant and p.path == ["passes"] for v in p.labels.values()]
            names = list(dict.fromkeys(_entry_name(e) for entries in lists
                                       for e in ([entries] if isinstance(entries, str) else entries)))
            if names:
                read = f"stage '{self.stage}'" if self.stage else "the last stage"
                refuse(f"the sweep reads params at {read}, after passes ({', '.join(names)}) that can change the "
                       f"network's size (stage: baseline reads the built network)")
        from optuna.distributions import CategoricalDistribution

        for p in self.network_params():
            if isinstance(p.distribution, CategoricalDistribution) and not all(
                    finite_number(p.value(c)) for c in p.distribution.choices):
                shown = ", ".join(str(p.value(c)) for c in p.distribution.choices)
                refuse(f"{p.key} chooses among [{shown}], values that are not numbers and have no size order",
                       p.where)

    def _check_figures(self, base: Any, where: str, default_accuracy: bool = False) -> None:
        """Every figure the sweep reads can be measured by the base pipeline's task and latency backends. With
        `default_accuracy` (m_factor.accuracy not given), a task that does not measure `accuracy` (multi-class
        segmentation) gets its main metric as M-factor's A."""
        measured = task_metrics(*data_task(base.data.name, base.data.options)) if base.data is not None \
            else TASK_METRICS
        measurable = set(measured)
        if default_accuracy and self.m_factor.accuracy not in measurable:
            self.m_factor = replace(self.m_factor, accuracy=measured[0])
        backends = list(base.evaluate.latency_options().backends) if base.evaluate.latency_options().enabled else []
        metrics = [o.metric for o in self.objectives] + [c.metric for c in self.constraints]
        metrics += [c.metric for cs in self.budgets.values() for c in cs]
        for m in metrics:
            if m.name in TASK_METRICS and m.name not in measurable:
                raise ConfigError(f"{where}: '{m.name}' is not measured for this task; valid: "
                                  f"{', '.join(sorted(measurable))}")
            if m.name in LATENCY:
                if not backends:
                    raise ConfigError(f"{where}: '{m.text}' needs latency, but the base pipeline measures none; set "
                                      "evaluate.latency.backends in the base")
                if m.backend is not None and m.backend not in backends:
                    raise ConfigError(f"{where}: '{m.text}': backend '{m.backend}' is not measured by the base; "
                                      f"valid: {', '.join(backends)}")
            if m.name == PREDICTED:
                predicted = list(base.evaluate.latency_options().predict)
                if not predicted or (m.backend is not None and m.backend not in predicted):
                    raise ConfigError(f"{where}: '{m.text}' needs a predicted latency; set evaluate: {{latency: "
                                      f"{{predict: [{m.backend or 'onnxruntime-cpu'}]}}}} in the base")
            if m.name == "weighted" and not self.weights:
                raise ConfigError(f"{where}: 'weighted' needs weighted: {{weights: {{figure: λ}}}} (seed 002 eq. 2)")
        if self.m_factor.accuracy not in measurable:
            raise ConfigError(f"{where}: m_factor.accuracy '{self.m_factor.accuracy}' is not measured for this task; "
                              f"valid: {', '.join(sorted(measurable))}")

    def _check_sampler(self, where: str) -> None:
        from optuna.distributions import FloatDistribution

        fitness = getattr(self.sampler_options, "fitness", None)
        if fitness is not None:  # evolution / rl: default the first objective
            Metric.parse(fitness, f"{where}: fitness")
        if getattr(self.sampler_options, "finite_space", False):  # the sampler enumerates each key's values
            for p in self.params:
                d = p.distribution
                if isinstance(d, FloatDistribution) and d.step is None:
                    raise ConfigError(f"{p.where}: the {self.sampler} sampler needs finite values; give a list or "
                                      f"a step")

    def _check_space(self) -> None:
        """Every value of every key gives a valid pipeline (on each pass-list variant the key applies to)."""
        from compressor.pipeline import Pipeline

        variants = [p for p in self.params if p.is_variant]
        bases = [self.base]
        for v in variants:
            bases = [self._with(doc, v, value) for doc in bases for value in v.choices()]
        for v in variants:
            for value in v.choices():
                _validate(lambda: Pipeline.from_dict(self._with(self.base, v, value)), v, value)
        for p in self.params:
            if p.is_variant:
                continue
            docs = [d for d in bases if p.applies(d)]
            if not docs:
                raise ConfigError(f"{p.where}: no pass list of the sweep has '{p.path[1]}'; add it to the base or to a "
                                  "variant")
            for value in p.choices():
                for d in docs:
                    _validate(lambda: Pipeline.from_dict(self._with(d, p, value)), p, value)

    @staticmethod
    def _with(doc: dict[str, Any], p: Param, value: Any) -> dict[str, Any]:
        out = copy.deepcopy(doc)
        set_path(out, p.path, copy.deepcopy(value), f"{p.key}={value!r}", "space key")
        return out


def _entry_name(entry: Any) -> str:
    """A pass-list entry's pass name: `prune-l1` or `{prune-l1: {...}}`."""
    if isinstance(entry, Mapping) and len(entry) == 1:
        return str(next(iter(entry)))
    return str(entry)


def _validate(build: Any, p: Param, value: Any) -> None:
    try:
        build()
    except ConfigError as exc:
        raise ConfigError(f"{p.where}: {p.key} = {value!r} gives an invalid pipeline: {exc}") from None


def plain(obj: Any) -> Any:
    """A loaded YAML document as plain dicts and lists (no line bookkeeping)."""
    if isinstance(obj, Mapping):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def _as_list(raw: Any, where: str) -> list[Any]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a list of constraints such as 'latency_ms <= 5'")
    return list(raw)


def _parse_space(raw: Any, base: Mapping[str, Any], where: str) -> list[Param]:
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{where}: 'space' maps pipeline paths to values, e.g. space: {{passes.prune-l1.ratio: "
                          "[0.4, 0.6]}}")
    params = []
    for key, value in raw.items():
        at = prefix(raw, "space", key) or where
        at = f"{at}: {key}" if prefix(raw, "", key) else at
        path = [s for s in re.sub(r"\[(-?\d+)\]", r".\1", key).split(".") if s] if isinstance(key, str) else []
        if not path:  # also '.', '..': dots only
            raise ConfigError(f"{at}: {key!r} is not a pipeline path; a space key is one such as passes.prune-l1.ratio")
        if path[0] not in ("data", "model", "passes", "export", "evaluate", "seed"):
            valid = ["data", "model", "passes", "export", "evaluate", "seed"]
            guess = closest(path[0], valid)
            hint = f"did you mean '{guess}'? " if guess else ""
            raise ConfigError(f"{at}: a space key starts with a pipeline block; {hint}valid: {', '.join(valid)}")
        if value in DECLARED:
            value = declared_space(base, path, at)
        distribution, labels = _distribution(key if len(path) == 1 else "", value, at)
        params.append(Param(key, path, distribution, labels, at))
    return params


def _parse_objectives(raw: Any, where: str) -> list[Objective]:
    items: list[tuple[Any, Any]]
    if isinstance(raw, Mapping):
        items = list(raw.items())
    elif isinstance(raw, list) and all(isinstance(x, Mapping) and len(x) == 1 for x in raw):
        items = [next(iter(x.items())) for x in raw]
    else:
        raise ConfigError(f"{where}: objectives map figures to directions, e.g. {{iou: maximize, params: minimize}}")
    if not items:
        raise ConfigError(f"{where}: give at least one objective")
    out = []
    for name, direction in items:
        metric = Metric.parse(name, where)
        if not isinstance(direction, str) or direction not in DIRECTIONS:
            raise ConfigError(f"{where}: {name}: direction {direction!r} is not valid; choose maximize or minimize")
        out.append(Objective(metric, DIRECTIONS[direction]))  # type: ignore[arg-type]
    if len({o.metric.text for o in out}) != len(out):
        raise ConfigError(f"{where}: an objective is listed twice")
    return out


def _parse_choice(raw: Any, registry: Registry, what: str, where: str) -> tuple[str, Any]:
    """`name`, `{name: {options}}` or `{name: name, ...options}` against a registry of Factory entries."""
    table = registry.names()
    if isinstance(raw, str):
        name, opts = raw, {}
    elif isinstance(raw, Mapping) and "name" in raw:
        name, opts = raw["name"], {k: v for k, v in raw.items() if k != "name"}
    elif isinstance(raw, Mapping) and len(raw) == 1:
        name, opts = next(iter(raw.items()))
        opts = opts or {}
    else:
        raise ConfigError(f"{where}: expected a {what} name or {{{what}: {{options}}}}; valid: {', '.join(table)}")
    if not isinstance(name, str) or name not in table:
        raise ConfigError(f"{where}: {unknown_key_message(str(name), list(table), what)}")
    return str(name), parse_options(registry[name].Options, opts, f"{what} {name}", f"{name} option")


def _parse_weights(raw: Any, where: str) -> dict[str, float]:
    if raw is None:
        return {}
    weights = raw.get("weights") if isinstance(raw, Mapping) else None
    if not isinstance(weights, Mapping) or not weights:
        raise ConfigError(f"{where}: expected weighted: {{weights: {{accuracy: 1.0, macs: 1.0e-9}}}}")
    out = {}
    for k, v in weights.items():
        m = Metric.parse(k, where)
        if m.name in DERIVED:
            raise ConfigError(f"{where}: the weighted sum is over measured figures, not {m.name}")
        if not finite_number(v) or v < 0:
            raise ConfigError(f"{where}: weight of {k} must be a finite number >= 0, got {v!r}")
        out[m.text] = float(v)
    return out


__all__ = ["Constraint", "Metric", "Objective", "Param", "SweepSpec", "plain", "row_figures"]
