"""Frontend protocol and lowering: an eager nn.Module becomes a ModelIR (the module + specs + recipe).

Beyond `build` and `rebuild`, a frontend may offer two capabilities, looked up by name by the code that needs
them (which never imports a frontend):
- search (`compress search`, a pipeline's search block): `search_options` (the options class of the search
  file's `search:` block) and `run_search(options, data, out_dir, device, progress)`, whose result has
  `summary()` (the lines `compress search` prints);
- students (the distill pass's `student: <frontend>`): `student(teacher, width, depth)`, a fresh, smaller
  network of the teacher's kind, built from the teacher IR's recipe.
A frontend may also bring command-line groups: it registers them with `compressor.registry.register_command`
(the darts frontend's `compress genotype`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import torch
import torch.nn as nn

from compressor.errors import ConfigError, FrontendError
from compressor.ir import InputSpec, ModelIR, Recipe, TaskSpec
from compressor.passes_base import Configurable
from compressor.registry import FRONTENDS

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

    def key_options(self) -> dict[str, Any]:
        """The options as the model stage's key hashes them (default: `options_dict()`); a frontend whose options
        changed shape overrides it to keep the keys of unchanged options."""
        return self.options_dict()

    # ---- optional capabilities -----------------------------------------------------------------
    search_options: ClassVar[type | None] = None  # the search block's options; None: this frontend does not search
    offers_students: ClassVar[bool] = False  # True when `student` is implemented

    @classmethod
    def run_search(cls, options: Any, data: "DataBundle", out_dir: Path, device: str = "cpu",
                   progress: bool = True) -> Any:
        """Search on `data` with `options` (a `search_options` instance), writing into `out_dir`; the result has
        `summary() -> list[str]`."""
        raise FrontendError(f"frontend {cls.name} does not search; frontends that do: {', '.join(searching())}")

    @classmethod
    def student(cls, teacher: ModelIR, width: int | None = None, depth: int | None = None) -> ModelIR:
        """A fresh network of the teacher's kind (the teacher was built by this frontend: its recipe says how),
        at `width` / `depth` (None: the teacher's), with the teacher's inputs and task."""
        raise FrontendError(f"frontend {cls.name} offers no student network; frontends that do: "
                            f"{', '.join(offering_students()) or 'none'}")


def searching() -> list[str]:
    """The registered frontends that search (`compress search`)."""
    return [n for n in FRONTENDS.names() if getattr(FRONTENDS[n], "search_options", None) is not None]


def offering_students() -> list[str]:
    """The registered frontends that build distillation students."""
    return [n for n in FRONTENDS.names() if getattr(FRONTENDS[n], "offers_students", False)]


def search_frontend(name: str, where: str = "frontend") -> type[Frontend]:
    """The frontend class `name`, which must search; a one-line ConfigError otherwise."""
    cls = FRONTENDS.get_or_error(name, where)
    if getattr(cls, "search_options", None) is None:
        raise ConfigError(f"{where}: frontend {name} does not search; frontends that do: {', '.join(searching())}")
    return cls


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
