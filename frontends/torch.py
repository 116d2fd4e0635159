"""Torch frontend: any user model given as `package.module:factory`, with optional weights.

Weights are loaded with `torch.load(..., weights_only=True)` (no arbitrary code from the file);
the file may hold a state_dict or a dict with a `state_dict` / `model` entry.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn as nn

from compressor.errors import FrontendError
from compressor.frontend import Frontend, input_spec_from, lower
from compressor.ir import ModelIR, TaskSpec
from compressor.options import option
from compressor.registry import register_frontend
from compressor.usercode import describe_failure, resolve_factory

if TYPE_CHECKING:
    from compressor.context import PassContext
    from compressor.data import DataBundle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TorchOptions:
    factory: str = option(help="'package.module:callable' returning an nn.Module")
    kwargs: dict[str, Any] = option({}, "keyword arguments for the factory")
    weights: str | None = option(None, "state_dict file (.pt/.pth), loaded with weights_only=True")
    input_shape: list[int] | None = option(None, "C,H,W of one sample (default: the data's)", min=1)
    task: Literal["classification", "segmentation"] | None = option(None, "task kind (default: the data's)")
    num_classes: int | None = option(None, "classes (default: the data's)", min=1)
    leaf_modules: list[str] = option([], "ignored (the IR no longer traces the model); accepted so that old "
                                         "pipelines still validate")
    search_path: str | None = option(None, "directory added to sys.path before importing the factory")

    def __post_init__(self) -> None:
        if ":" not in self.factory or self.factory.count(":") != 1 or not all(self.factory.split(":")):
            raise ValueError(f"factory must look like 'package.module:callable', got {self.factory!r}")


def load_weights(model: nn.Module, path: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise FrontendError(f"weights file {p} does not exist; give a path to a state_dict saved with torch.save")
    if p.stat().st_size == 0:
        raise FrontendError(f"weights file {p} is empty (0 bytes); save a state_dict into it with "
                            f"torch.save(model.state_dict(), path)")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = describe_failure(exc)
        raise FrontendError(f"cannot load {p} with weights_only=True: {first}; save a plain state_dict "
                            f"(torch.save(model.state_dict(), path))") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, Mapping):  # e.g. torch.save(tensor): load_state_dict would raise a TypeError
        raise FrontendError(f"weights file {p} holds a {type(state).__name__}, not a state_dict (a mapping of "
                            f"parameter names to tensors); save one with torch.save(model.state_dict(), path)")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = describe_failure(exc).removeprefix("RuntimeError: ")
        missing = [ln.strip() for ln in str(exc).splitlines()[1:3]]
        raise FrontendError(f"weights in {p} do not fit the model: {first} {' '.join(missing)}"[:400]) from None


@register_frontend("torch")
class TorchModel(Frontend):
    Options = TorchOptions
    label_keys = ("factory",)
    packages = ("torch", "transformers")  # what users' models are commonly built from

    def build(self, data: "DataBundle | None", ctx: "PassContext") -> ModelIR:
        o = self.options
        shape = o.input_shape or (data.input_shape if data else None)
        kind = o.task or (data.task.kind if data else None)
        classes = o.num_classes or (data.task.num_classes if data else None)
        if shape is None or kind is None or classes is None:
            raise FrontendError("the torch frontend needs input_shape, task and num_classes, from its options "
                                "or from a data: block")
        if o.leaf_modules:
            log.warning("torch frontend: leaf_modules is ignored (the IR keeps the eager module, nothing is traced); "
                        "remove it from the pipeline")
        recipe = {"name": "torch", "factory": o.factory, "kwargs": dict(o.kwargs), "seed": ctx.seed,
                  "search_path": str(Path(o.search_path).resolve()) if o.search_path else None}
        model = self.rebuild(recipe)
        if o.weights:
            load_weights(model, o.weights)
        value_range = data.input_range if data else None
        # the data's own task when it is the one asked for: its ignore_index and class names come along
        same = data is not None and (data.task.kind, data.task.num_classes) == (kind, classes)
        task = data.task if same else TaskSpec(kind, classes)
        return lower(model, [input_spec_from(shape, value_range)], task,
                     meta={"frontend": "torch", "factory": o.factory, "weights": o.weights}, recipe=recipe)

    @classmethod
    def rebuild(cls, spec: dict[str, Any]) -> nn.Module:
        """Import and call the factory (user code: ModelIR.load asks for trust before calling this)."""
        factory = resolve_factory(spec["factory"], spec.get("search_path"))
        torch.manual_seed(int(spec.get("seed", 0)))
        try:
            model = factory(**spec.get("kwargs", {}))
        except (Exception, SystemExit) as exc:  # user code: any failure, even sys.exit()
            raise FrontendError(f"factory '{spec['factory']}' failed: {describe_failure(exc)}") from None
        if not isinstance(model, nn.Module):
            raise FrontendError(f"factory '{spec['factory']}' returned {type(model).__name__}, not a torch.nn.Module")
        return model
