"""The pass protocol: frozen options, `run(ir, ctx) -> PassResult`, history recorded by `__call__`.

A pass keeps no state between runs and never mutates its input IR: `__call__` hands `run` a
clone, so the caller's IR (the teacher, an earlier stage) stays intact.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from compressor.context import PassContext
from compressor.errors import CompressError, PassError
from compressor.ir import ModelIR, PassRecord
from compressor.options import format_options, options_dict, parse_options

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NoOptions:
    """Options of a pass that takes none."""


@dataclass
class PassResult:
    ir: ModelIR
    changed: bool = True
    stats: dict[str, Any] = field(default_factory=dict)


class Configurable:
    """Something with a name and one options dataclass, built from kwargs or a validated mapping."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    label_keys: ClassVar[tuple[str, ...]] = ()  # options always shown in the one-line form
    # part of every stage key: bump `version` when a change to the code changes what the stage produces;
    # `packages` are the distributions whose versions can change it (compressor's own is always included)
    version: ClassVar[int] = 1
    packages: ClassVar[tuple[str, ...]] = ("torch",)

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        if options is not None and kwargs:
            raise TypeError("give either an options object or keyword options, not both")
        if options is None:
            options = parse_options(self.Options, kwargs, self.name)
        elif not isinstance(options, self.Options):
            raise TypeError(f"{self.name}: options must be {self.Options.__name__}, got {type(options).__name__}")
        self.options = options

    @classmethod
    def from_mapping(cls, raw: Any, context: str | None = None) -> "Configurable":
        return cls(parse_options(cls.Options, raw, context or cls.name))

    def describe(self) -> str:
        """One-line form: `prune-l1{ratio=0.6}`."""
        return format_options(self.name, self.options, always=self.label_keys)

    def options_dict(self) -> dict[str, Any]:
        return options_dict(self.options)

    def __repr__(self) -> str:
        return self.describe()


class Pass(Configurable):
    """Subclasses set `name` (via @register_pass), `Options`, and implement `run`.

    The contract (torch.fx's requires, TVM's `required`) is declared, not coded: `accepts` (input
    precisions), `produces` (the output precision; None keeps the input's), `needs_data` and `references`
    (earlier stages the pass reads, e.g. distill's teacher). `check_chain` checks a whole pipeline against
    it before any work (`compress validate`); `requires` checks precision and data against the actual IR
    and context (a pass resolves its references itself, e.g. distill's teacher, with its own message).
    The precision error is worded from the declarations (`compressor.precision.precision_error`)."""

    accepts: ClassVar[tuple[str, ...]] = ("fp32", "fp16")
    produces: ClassVar[str | None] = None

    def needs_data(self) -> bool:
        return False

    def references(self) -> list[str]:
        return []

    def builds_frontends(self) -> tuple[str, ...]:
        """Frontends whose networks this pass's result may hold (a pass that replaces the model): the run rebuilds
        cached stages of theirs besides the chain's own (`steps.Trust`)."""
        return ()

    def data_reason(self) -> str:
        """Why the pass needs data, for check_chain's message."""
        return "trains"

    def precision_error(self, got: str) -> str:
        """Why this pass cannot take an IR of precision `got`, and how to fix the pipeline."""
        from compressor.precision import precision_error

        return precision_error(self.name, self.accepts, self.produces, got)

    def requires(self, ir: ModelIR, ctx: PassContext) -> None:
        """Preconditions from the contract; raise PassError naming what is missing."""
        if ir.precision not in self.accepts:
            raise PassError(self.precision_error(ir.precision))
        if self.needs_data():
            ctx.require_data(self.describe())

    def run(self, ir: ModelIR, ctx: PassContext) -> PassResult:
        raise PassError(f"pass {self.name} does not implement run()")

    def __call__(self, ir: ModelIR, ctx: PassContext | None = None) -> ModelIR:
        ctx = ctx if ctx is not None else PassContext()
        self.requires(ir, ctx)
        start = time.perf_counter()
        try:
            result = self.run(ir.clone(), ctx)
        except CompressError:
            raise
        except Exception as exc:
            done = ", ".join(r.name for r in ir.history) or "none"
            raise PassError(f"pass {self.describe()} failed: {type(exc).__name__}: {exc} "
                            f"(passes already run: {done}; rerun with --debug for the traceback)") from exc
        seconds = time.perf_counter() - start
        record = PassRecord(self.name, self.options_dict(), round(seconds, 3), result.changed, result.stats)
        result.ir.history.append(record)
        log.info("%s: %.1fs changed=%s", self.describe(), seconds, result.changed)
        return result.ir


@dataclass
class ExportResult:
    """Files an exporter wrote; `primary` is the deployable artifact (e.g. model.onnx)."""

    primary: Path
    files: list[Path]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)


class Exporter(Configurable):
    """Subclasses set `name` (via @register_exporter), `Options`, and implement `export`.

    An exporter also owns the runtime of its artifact, so that the manager measures any exporter's stage
    without knowing its file type: `evaluate` (task metrics of the artifact on labelled batches) and
    `latency` on each of `latency_backends`; `suffixes` and `describe_artifact` let `compress inspect`
    describe its files."""

    latency_backends: ClassVar[tuple[str, ...]] = ()
    suffixes: ClassVar[tuple[str, ...]] = ()  # the artifact files it writes (what `compress inspect` takes)

    @classmethod
    def describe_artifact(cls, path: Path) -> str:
        """What `compress inspect` prints for an artifact of this exporter, read without running it."""
        raise PassError(f"exporter {cls.name} cannot describe {path.name}")

    def export(self, ir: ModelIR, out_dir: Path, ctx: PassContext) -> ExportResult:
        raise PassError(f"exporter {self.name} does not implement export()")

    def evaluate(self, artifact: Path, loader: Any, ir: ModelIR, *, threads: int | None,
                 progress: bool) -> tuple[dict[str, Any], str | None]:
        """(task metrics of `artifact` over `loader`, None), or ({}, why they cannot be measured here)."""
        return {}, f"exporter {self.name} has no runtime to evaluate its artifact"

    def latency(self, artifact: Path, backend: str, opts: Any) -> Any:
        """LatencyStats of `artifact` on `backend` (one of `latency_backends`); raises
        BackendUnavailable when that backend cannot run on this machine."""
        raise PassError(f"exporter {self.name} has no latency backend")


def check_chain(passes: list[Any], has_data: bool, precision: str = "fp32") -> None:
    """Check every pass's contract along the chain (baseline, then `passes`, objects with `.obj` (the
    Pass) and `.location`), before anything runs: precision flow, data, referenced stages. Raises
    ConfigError naming the stage, its file:line, and how to fix it."""
    from compressor.errors import ConfigError

    seen = ["baseline"]
    current = precision
    for i, stage in enumerate(passes):
        p = stage.obj
        where = f"{stage.location}: passes[{i}] {p.name}" if getattr(stage, "location", "") else f"passes[{i}] {p.name}"
        if current not in p.accepts:
            raise ConfigError(f"{where}: {p.precision_error(current)}")
        if p.needs_data() and not has_data:
            raise ConfigError(f"{where}: {p.describe()} {p.data_reason()}, so it needs data; add a data: block "
                              "(e.g. data: {name: insar-synthetic})")
        for ref in p.references():
            if ref not in seen:
                later = [f"passes[{j}]" for j, s in enumerate(passes) if s.obj.name == ref]
                hint = f" ({ref} runs later, at {', '.join(later)})" if later else ""
                raise ConfigError(f"{where}: reads stage '{ref}', which does not run before it{hint}; valid: "
                                  f"{', '.join(seen)}")
        current = p.produces or current
        seen.append(p.name)


def replace_options(obj: Configurable, **changes: Any) -> Configurable:
    return type(obj)(dataclasses.replace(obj.options, **changes))
