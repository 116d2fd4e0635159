"""pipeline.yaml → a typed, fully validated `Pipeline` (no model is built before validation ends).

```yaml
name: quickstart
seed: 0
data: {name: insar-synthetic, n_train: 768}
model:
  frontend: zoo
  model: seg-cnn          # the frontend's options sit beside `frontend`
  train: {epochs: 6}      # optional: train the baseline
passes:
  - prune-l1: {ratio: 0.6}
  - finetune: {epochs: 2}
  - fp16
export: [onnx]
evaluate: {split: val, latency: {iters: 30}}
```

`Pipeline.run` compiles it to a `compressor.manager.Sequential` (frontend, passes, exporters) and runs that
with the default instruments (`compressor.instruments`). Stages live in the content-addressed store
(`compressor.store`, default `.store` beside the run directory, e.g. `runs/.store/<key>/`); the run
directory is the human view:
```
runs/<name>/
  pipeline.txt             the pipeline, one line
  00_baseline -> ../.store/<key>/   ir.json  weights.safetensors  stage.json  metrics-<eval key>.json
  01_prune-l1 -> ../.store/<key>/
  03_onnx     -> ../.store/<key>/   model.onnx  stage.json  metrics-<eval key>.json
  report.json  report.md  report.png  timing.json
  reproduce/               only after a failed stage: replay it with `compress run --reproduce`
```
Each stage has a key: a hash of (previous stage's key, stage name, options, the stage's own code
version, the versions of the packages it uses); the first stage hashes the data and model spec. A
stage whose key is in the store, finished and intact (every file's sha256 as recorded), is loaded
instead of recomputed; a changed option changes that stage's key and every later key. Two runs sharing a
prefix of stages share those stages; concurrent runs compute a stage once (per-key lock). A kill in the
middle of a stage leaves it unfinished in the store, and the next run of that key resumes it from its
training checkpoints.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from compressor.context import PassContext
from compressor.config import LineDict, load_yaml, load_yaml_text
from compressor.errors import ConfigError
from compressor.evaluate.options import EvaluateOptions, LatencyOptions  # the evaluate: block (re-exported)
from compressor.instruments import default_instruments
from compressor.options import (format_options, option, options_dict, parse_options, prefix,
                                unknown_key_message)
from compressor.passes_base import Exporter, Pass, check_chain
from compressor.plugins import load_plugins
from compressor.registry import DATASETS, EXPORTERS, FRONTENDS, PASSES
from compressor.train import TrainOptions

TOP_KEYS = ["name", "seed", "device", "data", "model", "passes", "export", "evaluate"]
SEED_MAX = 2**32 - 1


@dataclass
class DataSpec:
    name: str
    options: Any

    def describe(self) -> str:
        return format_options(self.name, self.options)

    def as_data(self) -> dict:
        return {"name": self.name, **options_dict(self.options)}


@dataclass
class ModelSpec:
    frontend: Any  # a Frontend instance
    train: TrainOptions | None

    def describe(self) -> str:
        parts = [self.frontend.describe()]
        if self.train is not None:
            parts.append(format_options("train", self.train, always=("epochs",)))
        return " | ".join(parts)

    def as_data(self) -> dict:
        """What the model stage's key hashes (the frontend's `key_options`), and its report row."""
        data = {"frontend": self.frontend.name, "options": self.frontend.key_options(),
                "train": options_dict(self.train) if self.train else None}
        source = self.frontend.source_digest()
        if source is not None:  # files the frontend reads (a checkpoint): the stage key follows their content
            data["source"] = source
        return data


@dataclass
class Stage:
    kind: Literal["pass", "export"]
    obj: Any  # Pass or Exporter
    location: str = ""

    @property
    def name(self) -> str:
        return self.obj.name

    def describe(self) -> str:
        return self.obj.describe()


@dataclass
class Pipeline:
    name: str
    data: DataSpec | None
    model: ModelSpec
    passes: list[Stage] = field(default_factory=list)
    exports: list[Stage] = field(default_factory=list)
    evaluate: EvaluateOptions = field(default_factory=EvaluateOptions)
    seed: int = 0
    device: str = "cpu"
    source: str = ""
    device_location: str = ""  # "pipeline.yaml:3", for the error when that device is missing at run time

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> "Pipeline":
        return cls.from_dict(load_yaml(path, overrides), source=str(path))

    @classmethod
    def from_text(cls, text: str, source: str = "<text>") -> "Pipeline":
        return cls.from_dict(load_yaml_text(text, source), source=source)

    @classmethod
    def from_dict(cls, doc: Any, source: str = "<dict>") -> "Pipeline":
        load_plugins()
        _check_keys(doc, TOP_KEYS, source, "a pipeline")
        if "model" not in doc:
            raise ConfigError(f"{prefix(doc, '') or source}: missing 'model:' (e.g. model: {{frontend: zoo, "
                              f"model: seg-cnn}})")
        common = _parse_common(doc, source)
        name, seed, device = common["name"], common["seed"], common["device"]

        data = _parse_data(doc.get("data"), doc)
        model = _parse_model(doc["model"], doc)
        passes = _parse_stages(doc.get("passes"), doc, "passes", PASSES)
        exports = _parse_stages(doc.get("export"), doc, "export", EXPORTERS)
        evaluate = parse_options(EvaluateOptions, doc.get("evaluate"), "evaluate", "evaluate option")
        if data is None and model.train is not None:
            raise ConfigError(f"{source}: training needs data; add a data: block (e.g. data: {{name: insar-synthetic}})")
        check_chain(passes, has_data=data is not None)  # every pass's contract, before any work
        return cls(name=name, data=data, model=model, passes=passes, exports=exports, evaluate=evaluate,
                   seed=seed, device=device, source=source, device_location=prefix(doc, "device", "device"))

    # ---- display --------------------------------------------------------------------------
    def stages(self) -> list[tuple[str, str]]:
        """(stage name, one-line label) for the baseline, every pass and every exporter."""
        out = [("baseline", self.model.describe())]
        out += [(s.name, s.describe()) for s in self.passes]
        out += [(s.name, s.describe()) for s in self.exports]
        return out

    def to_line(self) -> str:
        return " | ".join(label for _name, label in self.stages())

    def __str__(self) -> str:
        return self.to_line()

    def run_dir(self, out: str | Path | None = None) -> Path:
        """Where `run(out)` writes: `out`, or runs/<name>."""
        return Path(out) if out is not None else Path("runs") / self.name

    def run(self, out: str | Path | None = None, progress: bool = True, force: bool = False,
            store: str | Path | None = None, dump_ir: bool = False) -> "Any":
        """Run into `out` (default runs/<name>); stages live in `store` (default `.store` beside `out`): the
        compiled chain with the default instruments (see the module docstring for what it writes)."""
        check_device(self.device, self.device_location or "device")
        run_dir = self.run_dir(out)
        check_run_dir(run_dir)
        instruments = default_instruments(run_dir, store=store, evaluate=self.evaluate, progress=progress,
                                          force=force, dump_ir=dump_ir)
        return self.compile().run(ctx=self.context(progress=progress), out=run_dir, instruments=instruments,
                                  progress=progress, title=f"{self.name}: {self.to_line()}", pipeline=self)

    # ---- compilation ----------------------------------------------------------------------
    def compile(self) -> "Any":
        """The pipeline as a pass-manager chain: the model step, the passes, the exporters."""
        from compressor.manager import ExportStep, ModelStep, PassStep, Sequential

        steps = [ModelStep(self.model, self.data.as_data() if self.data else None, self.seed)]
        steps += [PassStep(s.obj, s.location) for s in self.passes]
        steps += [ExportStep(s.obj, s.location) for s in self.exports]
        return Sequential(steps, name=self.name)

    def context(self, progress: bool = True) -> PassContext:
        """What the stages share: seed, device, the data (built here, from the data block)."""
        from compressor.data import build_data

        data = build_data(self.data.name, options_dict(self.data.options), seed=self.seed) \
            if self.data is not None else None
        return PassContext(seed=self.seed, device=self.device, data=data, progress=progress,
                           data_spec=self.data.as_data() if self.data else None)

    def to_dict(self) -> dict[str, Any]:
        """The resolved pipeline as plain data (every option, defaults included): `from_dict` reads it back
        to an equal pipeline."""
        model: dict[str, Any] = {"frontend": self.model.frontend.name, **self.model.frontend.options_dict()}
        if self.model.train is not None:
            model["train"] = options_dict(self.model.train)
        doc: dict[str, Any] = {"name": self.name, "seed": self.seed, "device": self.device}
        if self.data is not None:
            doc["data"] = self.data.as_data()
        doc["model"] = model
        doc["passes"] = [{s.name: s.obj.options_dict()} for s in self.passes]
        doc["export"] = [{s.name: s.obj.options_dict()} for s in self.exports]
        doc["evaluate"] = options_dict(self.evaluate)
        return doc


SEARCH_KEYS = ["name", "seed", "device", "data", "frontend", "search"]


@dataclass
class SearchJob:
    """`compress search search.yaml`: a data block and a search block for a frontend that searches (`frontend:`,
    default darts), nothing else."""

    name: str
    data: DataSpec
    options: Any  # the frontend's search_options
    seed: int = 0
    device: str = "cpu"
    source: str = ""
    device_location: str = ""
    frontend: str = "darts"

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> "SearchJob":
        from compressor.frontend import search_frontend

        load_plugins()
        doc = load_yaml(path, overrides, what="search", example="samples/pcdarts_search.yaml")
        source = str(path)
        _check_keys(doc, SEARCH_KEYS, source, "a search file")
        for key in ("data", "search"):
            if key not in doc:
                raise ConfigError(f"{prefix(doc, '') or source}: missing '{key}:' (see samples/pcdarts_search.yaml)")
        base = _parse_common(doc, source)
        name = doc.get("frontend", "darts")
        frontend = search_frontend(str(name), prefix(doc, "", "frontend") or source)
        data = _parse_data(doc["data"], doc)
        options = parse_options(frontend.search_options, doc["search"], "search", "search option")
        return cls(name=base["name"], data=data, options=options, seed=base["seed"], device=base["device"],
                   source=source, device_location=prefix(doc, "device", "device"), frontend=frontend.name)

    def run_dir(self, out: str | Path | None = None) -> Path:
        return Path(out) if out is not None else Path("runs") / self.name

    def run(self, out: str | Path | None = None, progress: bool = True) -> Any:
        from compressor.data import build_data

        check_device(self.device, self.device_location or "device")
        out_dir = self.run_dir(out)
        check_run_dir(out_dir)
        data = build_data(self.data.name, options_dict(self.data.options), seed=self.seed)
        return FRONTENDS[self.frontend].run_search(self.options, data, out_dir, device=self.device,
                                                   progress=progress)


def check_device(device: str, where: str) -> None:
    """Before any work: a cuda device must exist here (validation only checks the spelling, so that a
    GPU pipeline can be validated on a laptop)."""
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
        raise ConfigError(f"{where}: '{device}' but CUDA is not available here (torch {torch.__version__}, "
                          f"{build}); use device: cpu, or run on a machine with a CUDA GPU")
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"{where}: '{device}' but this machine has {count} CUDA device(s); "
                          f"valid: {', '.join(f'cuda:{i}' for i in range(count))}")


def check_run_dir(run_dir: Path) -> None:
    """Before any work: the run directory is a directory, or can be created, and is writable.
    Nothing is created here, so a refused run leaves nothing behind."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"cannot write {run_dir}: it is a file, not a directory; pass --out a directory "
                          f"(created when missing) or move the file")
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"cannot write {run_dir}: {existing} is a file, not a directory; pass --out a path "
                          f"under a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {run_dir}: {existing} is not writable (permission denied); pass --out "
                          f"a writable directory")


def _without(raw: Mapping, *keys: str) -> Mapping:
    """`raw` without `keys`, keeping its locations (file lines, --set overrides) when it has them."""
    if isinstance(raw, LineDict):
        return raw.without(*keys)
    return {k: v for k, v in raw.items() if k not in keys}


def _check_keys(doc: Any, valid: list[str], source: str, what: str) -> None:
    """The document is a mapping whose keys are all in `valid` (else: the closest, with file:line)."""
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source}: {what} is a mapping with keys {', '.join(valid)}; got {type(doc).__name__}")
    for key in doc:
        if key not in valid:
            raise ConfigError(f"{prefix(doc, '', key) or source}: {unknown_key_message(key, valid, 'key')}")


def _parse_common(doc: Mapping, source: str) -> dict[str, Any]:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(source).stem).strip("-")
    name = doc.get("name") or stem or "pipeline"
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"{prefix(doc, 'name', 'name')}: {name!r} must be letters, digits, - and _ "
                          f"(it names the run directory)")
    seed = doc.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{prefix(doc, 'seed', 'seed')}: expected a non-negative integer, got {seed!r}; "
                          f"valid: [0, {SEED_MAX}]")
    if seed > SEED_MAX:  # numpy seeds are 32-bit
        raise ConfigError(f"{prefix(doc, 'seed', 'seed')}: {seed} is out of range; valid: [0, {SEED_MAX}]")
    device = doc.get("device", "cpu")
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ConfigError(f"{prefix(doc, 'device', 'device')}: expected 'cpu' or 'cuda[:N]', got {device!r}")
    return {"name": name, "seed": seed, "device": device}


def _parse_data(raw: Any, doc: Mapping) -> DataSpec | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = LineDict({"name": raw}, source=getattr(doc, "source", ""), line=getattr(doc, "key_lines", {}).get("data"))
    if not isinstance(raw, Mapping) or "name" not in raw:
        raise ConfigError(f"{prefix(doc, 'data', 'data')}: data needs a name: one of {', '.join(DATASETS.names())}")
    name = raw["name"]
    entry = DATASETS.get_or_error(str(name), prefix(raw, "data", "name"))
    opts_raw = _without(raw, "name")
    return DataSpec(name, parse_options(entry.Options, opts_raw, f"data {name}", "data option"))


def _parse_model(raw: Any, doc: Mapping) -> ModelSpec:
    if not isinstance(raw, Mapping) or "frontend" not in raw:
        raise ConfigError(f"{prefix(doc, 'model', 'model')}: model needs a frontend: one of "
                          f"{', '.join(FRONTENDS.names())}")
    fname = str(raw["frontend"])
    cls = FRONTENDS.get_or_error(fname, prefix(raw, "model", "frontend"))
    opts_raw = _without(raw, "frontend", "train")
    frontend = cls(parse_options(cls.Options, opts_raw, f"model ({fname})", f"{fname} option"))
    train = None
    if raw.get("train") is not None:
        train = parse_options(TrainOptions, raw["train"], "model.train", "train option")
    return ModelSpec(frontend, train)


def _parse_stages(raw: Any, doc: Mapping, key: str, registry: Any) -> list[Stage]:
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise ConfigError(f"{prefix(doc, key, key)}: expected a list, e.g. {key}: [{registry.names()[0]}]")
    stages = []
    for i, entry in enumerate(raw):
        loc = raw.location(i) if hasattr(raw, "location") else ""
        where = f"{loc}: {key}[{i}]" if loc else f"{key}[{i}]"
        if isinstance(entry, str):
            name, opts = entry, None
        elif isinstance(entry, Mapping) and len(entry) == 1:
            name, opts = next(iter(entry.items()))
        else:
            raise ConfigError(f"{where}: each entry is a name or {{name: {{options}}}}, got {entry!r}")
        cls = registry.get_or_error(str(name), where)
        obj = cls(parse_options(cls.Options, opts, f"{key}[{i}] {name}", f"{name} option"))
        stages.append(Stage("pass" if key == "passes" else "export", obj, loc))
    return stages


__all__ = ["DataSpec", "EvaluateOptions", "LatencyOptions", "ModelSpec", "Pipeline", "Stage", "Pass", "Exporter"]
