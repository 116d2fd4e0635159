"""Frontend protocol and lowering: an nn.Module becomes a ModelIR (an fx GraphModule + specs)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.fx
import torch.nn as nn

from compressor.errors import FrontendError
from compressor.ir import InputSpec, ModelIR, TaskSpec
from compressor.passes_base import Configurable

if TYPE_CHECKING:
    from compressor.context import PassContext
    from compressor.data import DataBundle

log = logging.getLogger(__name__)


class Frontend(Configurable):
    """Subclasses set `name` (via @register_frontend), `Options`, and implement `build`."""

    def build(self, data: "DataBundle | None", ctx: "PassContext") -> ModelIR:
        raise FrontendError(f"frontend {self.name} does not implement build()")


class _LeafTracer(torch.fx.Tracer):
    def __init__(self, leaf_types: Sequence[str] = ()) -> None:  # default: unpickling re-creates it
        super().__init__()
        self.leaf_types = set(leaf_types)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m).__name__ in self.leaf_types or super().is_leaf_module(m, qualname)


def check_output(out: Any, task: TaskSpec, spec: InputSpec, batch: int) -> None:
    if not isinstance(out, torch.Tensor):
        raise FrontendError(f"the model returns {type(out).__name__}; compressor needs one logits tensor "
                            f"(wrap the model so that forward returns the logits)")
    if task.kind == "classification":
        want = (batch, task.num_classes)
    else:
        want = (batch, 1, *spec.shape[2:])
    if tuple(out.shape) != want:
        raise FrontendError(f"the model's output has shape {tuple(out.shape)} but a {task.kind} task with "
                            f"{task.num_classes} classes on input {list(spec.shape)} needs {want}")


def lower(model: nn.Module, inputs: list[InputSpec], task: TaskSpec, meta: dict[str, Any] | None = None,
          leaf_modules: Sequence[str] = ()) -> ModelIR:
    """Check that `model` accepts the declared inputs and yields task-shaped logits, then trace it."""
    model = model.eval()
    spec = inputs[0]
    example = tuple(s.example(batch=2) for s in inputs)
    try:
        with torch.no_grad():
            out = model(*example)
    except Exception as exc:
        shape = [list(s.shape) for s in inputs]
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FrontendError(f"the model does not accept inputs of shape {shape} (batch dim None): {first}; "
                            f"check the data's channels/size against the model's") from None
    check_output(out, task, spec, 2)
    try:
        tracer = _LeafTracer(leaf_modules)
        graph = tracer.trace(model)
        for node in graph.nodes:
            # Type annotations on placeholders become code globals that torch 2.13's GraphModule
            # pickling cannot name (a str global '_torch_Tensor_'); the IR does not need them.
            node.type = None
        gm = torch.fx.GraphModule(tracer.root, graph, type(model).__name__)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0]
        raise FrontendError(f"torch.fx could not trace {type(model).__name__}: {first}; list untraceable "
                            f"submodule classes in the frontend's leaf_modules option") from None
    gm.eval()
    with torch.no_grad():
        traced = gm(*example)
    if not torch.allclose(traced, out, atol=1e-5, rtol=1e-4):
        raise FrontendError(f"the traced graph of {type(model).__name__} does not reproduce the model's outputs "
                            f"(data-dependent control flow?); mark those submodules as leaf_modules")
    return ModelIR(module=gm, inputs=list(inputs), task=task, meta=dict(meta or {}))


def input_spec_from(shape: Sequence[int], value_range: tuple[float, float] | None, name: str = "input") -> InputSpec:
    return InputSpec(name=name, shape=(None, *[int(d) for d in shape]), value_range=value_range)
