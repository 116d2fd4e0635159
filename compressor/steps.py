"""What a chain is made of, and what a run of it looks like to its instruments.

A step (`ModelStep`, `InputStep`, `PassStep`, `ExportStep`) knows its key, how to compute, save and load its
output and which runtime measures it (`Runtime`: torch for an IR, the exporter itself for an artifact).
`Run` and `StageRun` are the records the instruments read and fill in; `Instrument` is their hooks.
`compressor.manager.Sequential` runs the steps with the instruments of `compressor.instruments` (its defaults
unless the caller gives others); the instruments see the run through this module only, never the manager.
"""
from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Protocol

from compressor.context import PassContext
from compressor.errors import FrontendError
from compressor.ir import IR_JSON, WEIGHTS, ModelIR

log = logging.getLogger(__name__)


def versions(packages: tuple[str, ...] = ("torch",)) -> dict[str, str]:
    """Installed versions of compressor and `packages` (what a step declares it uses)."""
    out = {}
    for pkg in ("compressor", *packages):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def ir_content_hash(ir: ModelIR) -> str:
    """What an IR computes: its input and task specs, precision, recipe and weights, bit for bit (not its
    history or meta, which hold wall times)."""
    import torch

    doc = {k: v for k, v in ir.to_document().items() if k not in ("history", "meta")}
    h = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode())
    for name, t in sorted(ir.module.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# ---- what a step produces --------------------------------------------------------------------------

@dataclass
class StepOutput:
    """The IR after a step (an exporter's is its input, unchanged) and, for an exporter, its artifact."""

    ir: ModelIR
    artifact: Path | None = None
    files: list[str] = field(default_factory=list)  # names in the step's directory, each sha256-listed
    info: dict[str, Any] = field(default_factory=dict)  # kept in the step's stage.json


class Runtime(Protocol):
    """How a stage is measured: task metrics over labelled batches, and latency on named backends."""

    latency_backends: tuple[str, ...]

    def evaluate(self, artifact: Path, loader: Any, ir: ModelIR, *, threads: int | None,
                 progress: bool) -> tuple[dict[str, Any], str | None]: ...

    def latency(self, artifact: Path, backend: str, opts: Any) -> Any: ...


# ---- steps -----------------------------------------------------------------------------------------

class Step(abc.ABC):
    """One stage of a chain. Subclasses say how to compute (abstract), save and load their output."""

    kind: ClassVar[str] = "pass"
    name: str
    obj: Any  # the Configurable it runs (frontend, pass, exporter): version, packages, options
    location: str = ""

    @property
    def label(self) -> str:
        return self.obj.describe()

    def options(self) -> dict[str, Any]:
        """The step's option values as typed data (report rows, reproducers)."""
        return self.obj.options_dict()

    def references(self) -> list[str]:
        return []

    def key(self, prev: str | None) -> str:
        """What determines the step's output: its input's key, name, options, its own code version and the
        versions of the packages it declares, nothing else."""
        return stable_hash({"prev": prev, self.kind: self.name, "options": self.options(),
                            "version": self.obj.version, "versions": versions(self.obj.packages)})

    @abc.abstractmethod
    def compute(self, ir: ModelIR | None, ctx: PassContext, out_dir: Path) -> StepOutput:
        """The step's output from its input IR (None for a model step); `out_dir` is its directory."""

    def save(self, out: StepOutput, d: Path) -> StepOutput:
        """Write the output into `d` (an IR's directory; an exporter already wrote there)."""
        out.ir.save(d)
        out.files = [IR_JSON, WEIGHTS]
        return out

    def load(self, d: Path, info: dict[str, Any], ir: ModelIR | None, trust: "Trust") -> StepOutput | None:
        """The finished output in `d`, or None (with a warning saying why) when it must be recomputed."""
        return _load_ir(d, trust)

    def runtime(self, ir: ModelIR) -> Runtime:
        from compressor.evaluate.runtime import TorchRuntime

        return TorchRuntime(ir, self.name)

    def artifact_path(self, out: StepOutput, d: Path | None) -> Path | None:
        """What the runtime measures: the artifact, or the IR stage's directory."""
        return out.artifact if out.artifact is not None else d


@dataclass(frozen=True)
class Trust:
    """Which recipes a run rebuilds from the store: its own frontend's, and a `torch` recipe only for its
    own factory (rebuilding it runs that code)."""

    frontend: str
    factory: str | None = None
    # frontends that passes of the chain build (the nas pass); never `torch`, whose recipes run a factory's code
    also: tuple[str, ...] = ()


def _load_ir(d: Path, trust: Trust) -> StepOutput | None:
    from compressor.ir import read_document

    try:
        doc, _ = read_document(d)
        name = (doc["recipe"] or {}).get("frontend", {}).get("name")
        if name != trust.frontend and name not in trust.also:
            mine = " or ".join(f"'{f}'" for f in (trust.frontend, *trust.also))
            raise FrontendError(f"its recipe names frontend '{name}', this chain's is {mine}")
        return StepOutput(ModelIR.load(d, trust_factory=trust.factory or False), files=[IR_JSON, WEIGHTS])
    except FrontendError as exc:
        log.warning("stage %s is recomputed: %s", d.name, exc)
        return None


class ModelStep(Step):
    """Stage 0 of a pipeline: the frontend builds the model, then the baseline is trained when asked."""

    kind = "model"

    def __init__(self, model: Any, data_spec: dict[str, Any] | None, seed: int) -> None:
        self.model, self.data_spec, self.seed = model, data_spec, seed
        self.obj = model.frontend
        self.name = "baseline"

    @property
    def label(self) -> str:
        return self.model.describe()

    def options(self) -> dict[str, Any]:
        return self.model.as_data()

    def key(self, prev: str | None) -> str:
        return stable_hash({"data": self.data_spec, "model": self.model.as_data(), "seed": self.seed,
                            "version": self.obj.version, "versions": versions(self.obj.packages)})

    def compute(self, ir: ModelIR | None, ctx: PassContext, out_dir: Path) -> StepOutput:
        # every RNG seeded from the pipeline's seed: a frontend that initializes weights without seeding (a
        # plugin's, a user factory's) still builds the same model on every run (the built-ins seed themselves)
        ctx.seed_everything()
        ir = self.model.frontend.build(ctx.data, ctx)
        if ctx.data is not None and ctx.data.preprocess is not None:  # the deployment side needs it (ONNX metadata)
            ir.meta["preprocess"] = ctx.data.preprocess
        if self.model.train is not None:
            from compressor.train import train_stage

            start = time.perf_counter()
            result = train_stage(ctx, ir.module, ir.task, self.model.train, offset=0, name="train", desc="train")
            ir.meta["train"] = {"epochs": self.model.train.epochs, "final_loss": round(result.final_loss, 5),
                                "seconds": round(time.perf_counter() - start, 1)}
        return StepOutput(ir, info={"versions": versions(self.obj.packages)})

    def trust(self) -> Trust:
        return Trust(self.obj.name, getattr(self.obj.options, "factory", None))


class InputStep(Step):
    """Stage 0 of a Python chain: an IR the caller built. Its key is its content."""

    kind = "model"

    def __init__(self, ir: ModelIR, name: str = "input") -> None:
        self.ir, self.name, self.obj = ir, name, None
        self._key: str | None = None

    @property
    def label(self) -> str:
        front = (self.ir.recipe.frontend if self.ir.recipe is not None else {}) or {}
        return f"{self.name} ({front.get('name', 'module')}, {self.ir.precision})"

    def options(self) -> dict[str, Any]:
        return {}

    def key(self, prev: str | None) -> str:
        if self._key is None:
            self._key = stable_hash({"input": ir_content_hash(self.ir)})
        return self._key

    def compute(self, ir: ModelIR | None, ctx: PassContext, out_dir: Path) -> StepOutput:
        return StepOutput(self.ir)

    def trust(self) -> Trust:
        front = (self.ir.recipe.frontend if self.ir.recipe is not None else {}) or {}
        return Trust(str(front.get("name", "")), front.get("factory"))


class PassStep(Step):
    kind = "pass"

    def __init__(self, p: Any, location: str = "") -> None:
        self.obj, self.name, self.location = p, p.name, location

    def references(self) -> list[str]:
        return list(self.obj.references())

    def compute(self, ir: ModelIR | None, ctx: PassContext, out_dir: Path) -> StepOutput:
        assert ir is not None
        out = self.obj(ir, ctx)
        return StepOutput(out, info={"history": out.history[-1].__dict__ if out.history else None})


class ExportStep(Step):
    """An exporter: writes its artifact into the step's directory; the IR passes through unchanged. The
    exporter is its artifact's runtime."""

    kind = "export"

    def __init__(self, exporter: Any, location: str = "") -> None:
        self.obj, self.name, self.location = exporter, exporter.name, location

    def compute(self, ir: ModelIR | None, ctx: PassContext, out_dir: Path) -> StepOutput:
        assert ir is not None
        result = self.obj.export(ir, out_dir, ctx)
        return StepOutput(ir, result.primary, [p.name for p in result.files],
                          {"primary": result.primary.name, "files": [p.name for p in result.files],
                           "info": result.info})

    def save(self, out: StepOutput, d: Path) -> StepOutput:
        return out  # the exporter wrote its files into d

    def load(self, d: Path, info: dict[str, Any], ir: ModelIR | None, trust: Trust) -> StepOutput | None:
        assert ir is not None
        return StepOutput(ir, d / info["primary"], list(info.get("files", [])), info)

    def runtime(self, ir: ModelIR) -> Runtime:
        return self.obj


def as_step(item: Any) -> Step:
    """A Step from a Pass, an Exporter, a pipeline Stage, or a Step."""
    from compressor.passes_base import Exporter, Pass

    if isinstance(item, Step):
        return item
    obj, location = getattr(item, "obj", item), getattr(item, "location", "")
    if isinstance(obj, Pass):
        return PassStep(obj, location)
    if isinstance(obj, Exporter):
        return ExportStep(obj, location)
    raise TypeError(f"a chain holds passes and exporters, got {type(item).__name__}")


# ---- a run, as the instruments see it --------------------------------------------------------------

@dataclass
class StageRun:
    """One step being run: what instruments read and fill in."""

    index: int
    step: Step
    key: str
    input: ModelIR | None
    total: int
    start: float = field(default_factory=time.perf_counter)
    dir: Path | None = None             # the step's directory (in the store, or a scratch folder)
    output: StepOutput | None = None    # set by the store (cached) or by computing the step
    cached: bool = False
    resumed: bool = False
    record: dict[str, Any] = field(default_factory=dict)   # the measurement: one report row
    seconds: float = 0.0
    resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)  # locks, closed after

    @property
    def name(self) -> str:
        return self.step.name

    @property
    def label(self) -> str:
        return self.step.label

    @property
    def kind(self) -> str:
        return self.step.kind

    @property
    def ir(self) -> ModelIR | None:
        return self.output.ir if self.output is not None else None


@dataclass
class Run:
    """One run of a chain: shared by every instrument."""

    ctx: PassContext
    run_dir: Path | None
    steps: list[Step]
    title: str = ""
    pipeline: Any = None          # the Pipeline it came from, if any (the reproducer writes it)
    trust: Trust = Trust("")
    stages: list[StageRun] = field(default_factory=list)
    report: dict[str, Path] = field(default_factory=dict)


@dataclass
class RunResult:
    run_dir: Path | None
    stages: list[StageRun]
    report: dict[str, Path]
    ir: ModelIR

    @property
    def cached(self) -> list[bool]:
        return [s.cached for s in self.stages]


class Instrument:
    """Hooks around every step (TVM's PassInstrument). Each does one thing; all are optional."""

    def enter_run(self, run: Run) -> None:
        pass

    def before_stage(self, run: Run, s: StageRun) -> None:
        pass

    def after_stage(self, run: Run, s: StageRun) -> None:
        pass

    def stage_failed(self, run: Run, s: StageRun, exc: BaseException) -> None:
        """Called in reverse order when the step or an instrument fails; must not raise."""

    def exit_run(self, run: Run, ok: bool) -> None:
        pass
