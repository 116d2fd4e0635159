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
    """Subclasses set `name` (via @register_pass), `Options`, and implement `run`."""

    def requires(self, ir: ModelIR, ctx: PassContext) -> None:
        """Preconditions; raise PassError naming what is missing."""

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
    """Subclasses set `name` (via @register_exporter), `Options`, and implement `export`."""

    def export(self, ir: ModelIR, out_dir: Path, ctx: PassContext) -> ExportResult:
        raise PassError(f"exporter {self.name} does not implement export()")


def replace_options(obj: Configurable, **changes: Any) -> Configurable:
    return type(obj)(dataclasses.replace(obj.options, **changes))
