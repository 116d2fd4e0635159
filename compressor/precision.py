"""Precisions: what `ModelIR.precision` names, and the hooks the generic code calls for it.

Each precision is one module in `compressor/precisions/` (fp32, fp16, int8, ...) that subclasses
`Precision` and registers itself with `@register_precision`. The generic code never checks a precision's
name: it looks the IR's precision up here (`get_precision(ir.precision)`) and calls its hooks:

- the IR: bytes per weight (`state_bytes`), the dtype its module takes its inputs in (`input_dtype`), the
  torch dtype a float module is cast to (`module_dtype`: the precisions `compress bench --precision` and a
  TensorRT export may cast to);
- the ONNX exporter: an `OnnxLowering` per export (the float module to export, node tags before
  simplification, the graph conversion or quantization after it, and the verification: elementwise
  tolerances or the share of agreeing predictions, plus an optional task-metric check);
- the TensorRT exporter: `tensorrt` (trtexec/builder flags of TensorRT 10, the layer type the engine must
  show) and `check_tensorrt` (what an IR needs to be built at this precision);
- `compress bench`: `recognize` (the label of an ONNX graph of this precision, read from its operators);
- the report: `stage_record` (what a pass producing this precision adds to its stage's report row) and
  `report_sections` (markdown tables rendered from that row).

This module is ground level: it imports nothing from passes or exporters, and nothing heavy (an edge
device running `compress bench` has numpy and onnxruntime only). The precisions are plugins
(`compressor.plugins`): the built-in package `compressor.precisions` and any third-party package that declares
the entry point are loaded on the first lookup.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, TypeVar

from compressor.errors import ConfigError, ExportError
from compressor.options import unknown_key_message
from compressor.plugins import load_plugins

log = logging.getLogger(__name__)



# ---- what the hooks return ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Tolerance:
    """Verify an ONNX graph elementwise against the torch model: |onnx - torch| <= atol + rtol * |torch|."""

    rtol: float
    atol: float
    knobs: str  # the options that loosen it, for the error message

    def as_info(self) -> dict[str, float]:
        return {"rtol": self.rtol, "atol": self.atol}


@dataclass(frozen=True)
class Agreement:
    """Verify an ONNX graph by the share of predictions (mask pixels, classes) it shares with a torch
    reference, near-ties excluded (`compressor.evaluate.agreement`): quantized graphs round differently."""

    minimum: float
    knob: str        # the option that sets the minimum
    graph: str       # what the graph is, e.g. "QDQ graph"
    reference: str   # what it is compared with, e.g. "torch fake-quant model"

    def as_info(self) -> dict[str, float]:
        return {"min_agreement": self.minimum}


@dataclass(frozen=True)
class TensorRTLowering:
    """How TensorRT builds an engine at this precision from the precision's ONNX graph. TensorRT >= 11 is
    strongly typed (the graph decides, no flag); TensorRT 10 needs `flags` (trtexec's, e.g. --fp16)."""

    flags: tuple[str, ...] = ()
    layer_type: str | None = None   # the engine inspector must show layers of this type, else ExportError
    missing_hint: str = ""          # how to fix an engine without them
    graph: str = ""                 # the ONNX graph it is built from (build_engine.sh's comment)
    trt10_note: str = ""            # what TensorRT 10 needs (build_engine.sh's comment)


@dataclass(frozen=True)
class GraphSummary:
    """What `compress bench` reads from an ONNX graph, without running it: its operator types and the
    elements of its floating-point weights (initializers and Constant nodes; without any, its inputs)."""

    ops: frozenset[str]
    float32_elements: int
    float16_elements: int


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    align: tuple[str, ...]  # "---" (left) or "---:" (right) per column
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class ReportSection:
    """A section of report.md: a `## title`, a paragraph, then tables (rendered by compressor.report)."""

    title: str
    text: str = ""
    tables: tuple[Table, ...] = field(default_factory=tuple)


class OnnxLowering:
    """What the ONNX exporter does for one export of an IR at a precision, in the order it calls the hooks.
    The base class is fp32's: the float graph as exported, verified elementwise."""

    info_key: ClassVar[str | None] = None  # the export info's key for what `lower` returns (None: not recorded)
    metric_hint: ClassVar[str | None] = None  # set: with data, check the task metric (how to recover a drop)

    def __init__(self, ir: Any, opts: Any) -> None:
        self.ir, self.opts = ir, opts

    def float_module(self, module: Any) -> Any:
        """The float32 module to export (a CPU deep copy of the IR's module, in eval mode)."""
        return module

    def tag(self, model: Any) -> None:
        """Mark nodes in the exported graph while its name scopes are there (before simplification)."""

    def simplify_refused(self, model: Any) -> str | None:
        """Why the simplified graph cannot be used (the unsimplified one is kept), or None."""
        return None

    def lower(self, model: Any, input_names: list[str]) -> tuple[Any, dict[str, Any]]:
        """The graph at this precision, and what to record about the lowering."""
        return model, {}

    def reference(self, module: Any) -> Any:
        """The torch model the graph is verified against (default: the exported float module)."""
        return module

    def check(self) -> Tolerance | Agreement:
        return Tolerance(self.opts.rtol, self.opts.atol, "atol/rtol")


class Precision:
    """One precision. Subclasses set `name` (via @register_precision) and override the hooks they need."""

    name: ClassVar[str] = ""
    produced_by: ClassVar[str | None] = None  # the pass that lowers an IR to it (hints in error messages)
    module_dtype: ClassVar[str | None] = None  # torch dtype of a module cast to it; None: not a cast
    graph_priority: ClassVar[int] = 0  # `recognize` asks the highest first
    tensorrt: ClassVar[TensorRTLowering | None] = None  # None: no TensorRT engine at this precision
    tensorrt_graph: ClassVar[str] = "graph"  # what the ONNX graph is called in TensorRT messages
    no_cast_reason: ClassVar[str] = ""  # why an engine at this precision needs an IR at it (not a cast)
    onnx_lowering_class: ClassVar[type[OnnxLowering]] = OnnxLowering

    # ---- the IR ------------------------------------------------------------------------------------
    @property
    def input_dtype(self) -> str | None:
        """The torch dtype the IR's module takes its inputs in, when the inputs' own is not it."""
        return self.module_dtype if self.module_dtype not in (None, "float32") else None

    def torch_input_dtype(self) -> Any:
        """`input_dtype` as a torch.dtype (this imports torch), or None."""
        if self.input_dtype is None:
            return None
        import torch

        return getattr(torch, self.input_dtype)

    def state_bytes(self, module: Any) -> int:
        """Bytes of the module's weights and buffers (state_dict tensors) at this precision."""
        return sum(t.numel() * t.element_size() for t in module.state_dict().values())

    # ---- exporters ---------------------------------------------------------------------------------
    def onnx_lowering(self, ir: Any, opts: Any) -> OnnxLowering:
        return self.onnx_lowering_class(ir, opts)

    def check_tensorrt(self, ir: Any) -> None:
        """Raise ExportError when `ir` (at this precision) cannot be built into a TensorRT engine."""
        if self.tensorrt is None:
            raise ExportError(f"tensorrt exporter: there is no TensorRT engine for an {self.name} IR; "
                              f"export it with onnx, or use a precision TensorRT builds ({', '.join(tensorrt_names())})")

    # ---- compress bench -----------------------------------------------------------------------------
    def recognize(self, graph: GraphSummary) -> str | None:
        """The label of an ONNX graph of this precision (e.g. "int8 (QDQ)"), or None if it is not one."""
        return None

    # ---- the report --------------------------------------------------------------------------------
    def stage_record(self, stats: dict[str, Any]) -> dict[str, Any]:
        """Fields a pass producing this precision adds to its stage's report row, from the pass's stats."""
        return {}

    def report_sections(self, record: dict[str, Any]) -> list[ReportSection]:
        """report.md sections for one stage's row (those `stage_record` added)."""
        return []


# ---- the registry ----------------------------------------------------------------------------------

PRECISIONS: dict[str, Precision] = {}
P = TypeVar("P", bound=type[Precision])


def register_precision(name: str) -> Callable[[P], P]:
    """Class decorator: register one instance of the class under `name` (twice is an error, the built-ins
    included: they are loaded first)."""
    def deco(cls: P) -> P:
        _load()
        if name in PRECISIONS:
            raise ValueError(f"precision '{name}' is registered twice ({PRECISIONS[name]!r} and {cls!r})")
        cls.name = name
        PRECISIONS[name] = cls()
        return cls

    return deco


def _load() -> None:
    """Load the plugins (once per process): the built-in precisions are the `precisions` entry of the
    `compressor.plugins` entry points, and a third-party package adds its own the same way."""
    load_plugins()


def get_precision(name: str) -> Precision:
    """The registered precision `name`; ConfigError naming the closest one otherwise."""
    _load()
    found = PRECISIONS.get(name)
    if found is None:
        raise ConfigError(unknown_key_message(str(name), precision_names(), "precision"))
    return found


def precision_names() -> list[str]:
    """Every registered precision, fp32 first, then by name."""
    _load()
    return sorted(PRECISIONS, key=lambda n: (PRECISIONS[n].graph_priority, n))


def cast_names() -> list[str]:
    """The precisions a float module can be cast to (`module_dtype`): what `compress bench --precision` takes."""
    return [n for n in precision_names() if PRECISIONS[n].module_dtype is not None]


def check_cast_precision(name: str | None) -> None:
    """ConfigError unless `name` is None or a precision a float module can be cast to (`cast_names`)."""
    if name is not None and name not in cast_names():
        raise ConfigError(f"precision '{name}' is not valid; choose {' or '.join(cast_names())}")


def tensorrt_names() -> list[str]:
    return [n for n in precision_names() if PRECISIONS[n].tensorrt is not None]


def precision_of_dtype(dtype: str) -> str | None:
    """The cast precision whose module dtype is `dtype` ("float16" -> "fp16"), or None."""
    return next((n for n in cast_names() if PRECISIONS[n].module_dtype == dtype), None)


def recognize_graph(graph: GraphSummary) -> str | None:
    """The label of an ONNX graph: the first precision (highest `graph_priority`) that recognizes it."""
    _load()
    for prec in sorted(PRECISIONS.values(), key=lambda p: -p.graph_priority):
        label = prec.recognize(graph)
        if label is not None:
            return label
    return None


def all_precisions() -> list[Precision]:
    return [PRECISIONS[n] for n in precision_names()]


def precision_error(pass_name: str, accepts: tuple[str, ...], produces: str | None, got: str) -> str:
    """Why a pass declared to take `accepts` and produce `produces` (None: keeps the precision) cannot take an
    IR of precision `got`, and how to fix the pipeline: generated from the declarations, never per pass."""
    if produces is not None and got == produces:
        return f"{pass_name}: the IR is already {got}; remove the second {pass_name} from the pipeline"
    _load()
    maker = PRECISIONS[got].produced_by if got in PRECISIONS else None
    head = f"{pass_name} takes an {' or '.join(accepts)} IR but gets {got}"
    if maker is None:
        return f"{head}; give it an {' or '.join(accepts)} IR"
    if produces is not None:  # both lower the precision: a model takes one of them
        return f"{head}; run {pass_name} instead of {maker}"
    return f"{head}; run {pass_name} before {maker}"
