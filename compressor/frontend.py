"""Frontend protocol and lowering: an eager nn.Module becomes a ModelIR (the module + specs + recipe)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn as nn

from compressor.errors import FrontendError
from compressor.ir import InputSpec, ModelIR, Recipe, TaskSpec
from compressor.passes_base import Configurable

if TYPE_CHECKING:
    from compressor.context import PassContext
    from compressor.data.base import DataBundle

log = logging.getLogger(__name__)


class Frontend(Configurable):
    """Subclasses set `name` (via @register_frontend), `Options`, and implement `build`."""

    def build(self, data: "DataBundle | None", ctx: "PassContext") -> ModelIR:
        raise FrontendError(f"frontend {self.name} does not implement build()")

    @classmethod
    def rebuild(cls, spec: dict[str, Any]) -> nn.Module:
        """A fresh module from the recipe spec that `build` recorded (weights are loaded afterwards)."""
        raise FrontendError(f"frontend {cls.name} cannot rebuild a module from a recipe")

    def source_digest(self) -> dict[str, Any] | None:
        """Digests of the files the frontend reads beyond its options (a checkpoint directory), or None.
        They are part of the model stage's key, so that editing those files rebuilds the stage."""
        return None


def check_output(out: Any, task: TaskSpec, spec: InputSpec, batch: int) -> None:
    if not isinstance(out, torch.Tensor):
        raise FrontendError(f"the model returns {type(out).__name__}; compressor needs one logits tensor "
                            f"(wrap the model so that forward returns the logits)")
    if task.kind == "classification":
        want = (batch, task.num_classes)
    else:  # binary masks: 1 logit per pixel; semantic segmentation: C
        want = (batch, task.num_classes if task.multiclass_segmentation else 1, *spec.shape[2:])
    if tuple(out.shape) != want:
        raise FrontendError(f"the model's output has shape {tuple(out.shape)} but a {task.kind} task with "
                            f"{task.num_classes} classes on input {list(spec.shape)} needs {want}")


def lower(model: nn.Module, inputs: list[InputSpec], task: TaskSpec, meta: dict[str, Any] | None = None,
          recipe: "Recipe | dict[str, Any] | None" = None) -> ModelIR:
    """Check that `model` accepts the declared inputs, yields task-shaped logits and is deterministic in
    eval mode (two forwards agree), then wrap it as the IR. The module stays the eager module its author
    wrote: nothing is traced. `recipe` (the frontend spec that rebuilds it) makes the IR saveable."""
    model = model.eval()
    spec = inputs[0]
    example = tuple(s.example(batch=2) for s in inputs)
    try:
        with torch.no_grad():
            out = model(*example)
            again = model(*example)
    except Exception as exc:
        shape = [list(s.shape) for s in inputs]
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FrontendError(f"the model does not accept inputs of shape {shape} (batch dim None): {first}; "
                            f"check the data's channels/size against the model's") from None
    check_output(out, task, spec, 2)
    if not torch.allclose(out, again, atol=1e-6, rtol=1e-5):
        raise FrontendError(f"{type(model).__name__} gives different outputs for the same input in eval mode "
                            "(randomness in forward?); compressor needs a deterministic model")
    if isinstance(recipe, dict):
        recipe = Recipe(frontend=recipe)
    return ModelIR(module=model, inputs=list(inputs), task=task, meta=dict(meta or {}), recipe=recipe)


def input_spec_from(shape: Sequence[int], value_range: tuple[float, float] | None, name: str = "input") -> InputSpec:
    return InputSpec(name=name, shape=(None, *[int(d) for d in shape]), value_range=value_range)
