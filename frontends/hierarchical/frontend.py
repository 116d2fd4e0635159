"""The `hierarchical` frontend: a genotype of seed 002's hierarchical space → an eager network → the IR.

    model: {frontend: hierarchical, genotype: mobile-small, width_mult: 1.0, seed: 0}

`genotype` is a built-in name (`mobile-small`, `mobilenet-v2`), the path of a genotype .json, or the genotype
mapping itself (format: `genotypes.py`). Classification data gets the classifier head, segmentation data
the decoder (`networks.py`); the data's task says how many logits.

Search (`compress search` with `frontend: hierarchical`): NSGA-II over a weight-sharing supernet of an elastic
slice of the space (`supernet.py`, `evolution.py`); its `search:` block is `HierarchicalSearchOptions`.

Python API: `lower_genotype(...)` (alias `lower`), e.g.
    hierarchical.lower("mobile-small", task="classification", in_channels=3, input_size=32, num_classes=10)
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping

import torch
import torch.nn as nn

from compressor.errors import ConfigError, FrontendError
from compressor.frontend import Frontend, input_spec_from
from compressor.frontend import lower as lower_module
from compressor.frontends.hierarchical.blocks import block_configs
from compressor.frontends.hierarchical.evolution import (HierarchicalSearchOptions, HierarchicalSearchResult,
                                                        run_search)
from compressor.frontends.hierarchical.genotypes import GENOTYPES, HierGenotype, get_genotype
from compressor.frontends.hierarchical.networks import HierarchicalNet
from compressor.ir import ModelIR, TaskSpec
from compressor.options import option
from compressor.registry import register_frontend

if TYPE_CHECKING:
    from compressor.context import PassContext
    from compressor.data import DataBundle

DEFAULT_GENOTYPE = "mobile-small"


@dataclass(frozen=True)
class HierarchicalOptions:
    genotype: str | dict[str, Any] = option(DEFAULT_GENOTYPE, "built-in genotype (" + ", ".join(GENOTYPES) + "), the "
                                            "path of a genotype .json, or the genotype mapping inline")
    width_mult: float = option(1.0, "global width multiplier, on top of the genotype's own (widths are rounded to "
                                    "multiples of 8)", min=0, max=16, min_exclusive=True,
                               search=[0.25, 0.5, 0.75, 1.0])
    seed: int = option(0, "weight initialization seed", min=0)

    def __post_init__(self) -> None:
        try:
            get_genotype(self.genotype)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


def _recipe(geno: HierGenotype, task: str, in_channels: int, num_classes: int, input_hw: tuple[int, int],
            width_mult: float, seed: int) -> dict[str, Any]:
    """What rebuilds the network: the genotype itself (so a later edit of its file changes nothing saved)."""
    return {"name": "hierarchical", "genotype": geno.to_dict(), "genotype_name": geno.name, "task": task,
            "in_channels": in_channels, "num_classes": num_classes, "input_hw": list(input_hw),
            "width_mult": width_mult, "seed": seed}


def _meta(geno: HierGenotype, width_mult: float) -> dict[str, Any]:
    return {"frontend": "hierarchical", "genotype": geno.name, "genotype_json": geno.to_dict(),
            "width_mult": width_mult}


def lower_genotype(genotype: "str | os.PathLike[str] | Mapping[str, Any] | HierGenotype",
                   task: Literal["classification", "segmentation"] | TaskSpec = "classification", in_channels: int = 3,
                   input_size: int | tuple[int, int] = 32, num_classes: int = 10, width_mult: float = 1.0,
                   seed: int = 0, value_range: tuple[float, float] | None = None) -> ModelIR:
    """Build the network of `genotype` and lower it to the IR. `task` is a kind with `num_classes`, or a whole
    TaskSpec (segmentation with C ≥ 2 classes gets C logits per pixel, with 1 class one)."""
    spec = task if isinstance(task, TaskSpec) else TaskSpec(task, num_classes)
    geno = get_genotype(genotype)
    hw = (input_size, input_size) if isinstance(input_size, int) else (int(input_size[0]), int(input_size[1]))
    recipe = _recipe(geno, spec.kind, in_channels, spec.num_classes, hw, width_mult, seed)
    return lower_module(Hierarchical.rebuild(recipe), [input_spec_from((in_channels, *hw), value_range)], spec,
                        meta=_meta(geno, width_mult), recipe=recipe)


lower = lower_genotype


def narrower(genotype: HierGenotype, depth: int | None) -> HierGenotype:
    """`genotype` with every stage cut to its first `depth` blocks (None: unchanged)."""
    if depth is None:
        return genotype
    return replace(genotype, stages=tuple(replace(s, blocks=s.blocks[:depth]) for s in genotype.stages))


@register_frontend("hierarchical")
class Hierarchical(Frontend):
    Options = HierarchicalOptions
    label_keys = ("genotype",)
    offers_students = True
    search_options = HierarchicalSearchOptions

    @classmethod
    def run_search(cls, options: HierarchicalSearchOptions, data: "DataBundle", out_dir: Path, device: str = "cpu",
                   progress: bool = True) -> HierarchicalSearchResult:
        """NSGA-II on a weight-sharing supernet of the space (`evolution.py`): genotype.json and one genotype per
        budget in `out_dir`."""
        return run_search(options, data, out_dir, device=device, progress=progress)

    @classmethod
    def student(cls, teacher: ModelIR, width: int | None = None, depth: int | None = None) -> ModelIR:
        """The teacher's genotype, freshly initialized, with about `width` stem channels (every width scales by
        the same factor, then rounds to a multiple of 8) and at most `depth` blocks per stage (its first ones)."""
        recipe = dict(teacher.recipe.frontend) if teacher.recipe is not None else {}
        if recipe.get("name") != "hierarchical":
            raise FrontendError("a hierarchical student needs a teacher built by the hierarchical frontend (its "
                                "genotype); use student: current for other models")
        geno = HierGenotype.from_dict(recipe["genotype"], "teacher recipe: genotype", recipe.get("genotype_name", "custom"))
        mult = float(recipe.get("width_mult", 1.0))
        if width is not None:
            stem = block_configs(geno, (int(recipe["in_channels"]),), mult)[0].cout
            mult = mult * width / stem
        geno = narrower(geno, depth)
        recipe.update(genotype=geno.to_dict(), width_mult=mult)
        return lower_module(cls.rebuild(recipe), list(teacher.inputs), teacher.task, meta=_meta(geno, mult),
                            recipe=recipe)

    @classmethod
    def latency_parts(cls, ir: ModelIR) -> tuple[Any, Any, Any, tuple[int, ...]] | str:
        """The parts a latency table predicts `ir`'s network from (`latency.latency_parts`), the part builder, the
        parts' inputs and the network's input shape; or why they do not describe the network: a pass changed its
        structure (its parameter count differs from its genotype's network) or its precision."""
        from compressor.evaluate.stats import count_params
        from compressor.frontends.hierarchical.latency import latency_parts, make_part, part_inputs

        spec = dict(ir.recipe.frontend) if ir.recipe is not None else {}
        if ir.precision != "fp32":
            return f"the latency table holds fp32 blocks; this network is {ir.precision}"
        geno = HierGenotype.from_dict(spec["genotype"], "recipe hierarchical: genotype")
        shape = (int(spec["in_channels"]), *(int(v) for v in spec["input_hw"]))
        segmentation = spec["task"] == "segmentation"
        reference = HierarchicalNet(geno, shape[0], int(spec["num_classes"]), segmentation,
                                    float(spec["width_mult"]), input_hw=shape[1:])
        if count_params(ir.module) != count_params(reference):
            return ("a pass changed the network's structure (its parameters differ from its genotype's network); "
                    "the table predicts genotypes as built")
        parts = latency_parts(geno, shape, int(spec["num_classes"]), segmentation, float(spec["width_mult"]))
        return parts, make_part, part_inputs, shape

    def build(self, data: "DataBundle | None", ctx: "PassContext") -> ModelIR:
        o = self.options
        if data is None:
            raise FrontendError("the hierarchical frontend takes its input shape and classes from the data: add a "
                                "data: block")
        if data.task.kind not in ("classification", "segmentation"):
            raise FrontendError(f"the hierarchical frontend builds classification or segmentation networks, not "
                                f"{data.task.kind}")
        geno = get_genotype(o.genotype)
        shape = tuple(int(d) for d in data.input_shape)
        recipe = _recipe(geno, data.task.kind, shape[0], data.task.num_classes, (shape[-2], shape[-1]),
                         o.width_mult, o.seed)
        spec = input_spec_from(data.input_shape, data.input_range)
        return lower_module(self.rebuild(recipe), [spec], data.task, meta=_meta(geno, o.width_mult), recipe=recipe)

    def source_digest(self) -> dict[str, Any] | None:
        """A genotype file's content (canonical form) is part of the model stage's key: editing it rebuilds."""
        g = self.options.genotype
        if isinstance(g, str) and g not in GENOTYPES:
            return {"genotype": get_genotype(g).to_dict()}
        return None

    @classmethod
    def rebuild(cls, spec: dict[str, Any]) -> nn.Module:
        geno = HierGenotype.from_dict(spec["genotype"], "recipe hierarchical: genotype")
        torch.manual_seed(int(spec.get("seed", 0)))
        return HierarchicalNet(geno, int(spec["in_channels"]), int(spec["num_classes"]),
                               segmentation=spec["task"] == "segmentation", width_mult=float(spec["width_mult"]),
                               input_hw=tuple(spec["input_hw"]))
