"""The `darts` frontend: a genotype (published name or .json) → a DARTS network → the IR.

Classification data gets `NetworkCIFAR` (stem, cells, global pool, linear), or with
`network: imagenet` `NetworkImageNet` (three stride-2 stem convs; input sides multiples of 32);
segmentation data gets `NetworkSegmentation` (stride-1 stem, cells with two reductions, a decoder
back to the input resolution, 1 logit per pixel for binary masks, C for C ≥ 2 classes). All are traced
in eval mode: drop-path and the auxiliary head, which act only in training, are not part of the IR.

Python API: `lower_genotype(...)` (alias `lower`), e.g.
    darts.lower("PC_DARTS_cifar", task="segmentation", in_channels=2, init_channels=16, cells=8)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn as nn

from compressor.errors import ConfigError, FrontendError
from compressor.frontend import Frontend, input_spec_from
from compressor.frontend import lower as _lower_module
from compressor.frontends.darts.genotypes import CellsGenotype, Genotype, genotype_name, get_genotype
from compressor.frontends.darts.networks import NetworkCIFAR, NetworkImageNet, NetworkSegmentation
from compressor.ir import ModelIR, TaskSpec
from compressor.frontends.darts.search import SearchOptions, SearchResult, run_search
from compressor.options import option
from compressor.registry import register_frontend

if TYPE_CHECKING:
    from compressor.context import PassContext
    from compressor.data import DataBundle

SEG_REDUCTIONS = 2
IMAGENET_HALVINGS = 5  # NetworkImageNet: three stride-2 stem convs, then two reduction cells
DEFAULT_GENOTYPE = "PC_DARTS_cifar"
Network = Literal["auto", "cifar", "imagenet"]


@dataclass(frozen=True)
class DartsOptions:
    genotype: str | None = option(None, "published genotype name (DARTS_V1, DARTS_V2, PC_DARTS_cifar, "
                                        "PC_DARTS_image, PDARTS) or the path of a genotype .json "
                                        f"(default {DEFAULT_GENOTYPE} unless search is given)")
    search: SearchOptions | None = option(None, "run a search first and build its genotype: the search options")
    init_channels: int = option(16, "channels of the first cells (C; the stem has 3C)", min=1, max=1024,
                                search=[8, 16, 24, 36])
    layers: int = option(8, "number of cells (reduction cells at layers//3 and 2*layers//3)", min=3, max=64,
                         search=[5, 8, 11, 14, 20])
    network: Network = option("auto", "classification network: cifar (stride-1 stem) or imagenet (three stride-2 "
                                      "stem convs; inputs of at least 32 px, multiples of 32); auto: cifar "
                                      "(segmentation always uses the segmentation network)")
    auxiliary: bool = option(False, "auxiliary head for training (classification only; not in the traced IR)")
    drop_path_prob: float = option(0.0, "drop-path probability on non-identity ops in training", min=0, max=1,
                                   max_exclusive=True)
    seed: int = option(0, "weight initialization seed", min=0)

    def __post_init__(self) -> None:
        if self.search is not None and self.genotype is not None:
            raise ValueError("give either genotype (a known architecture) or search (find one), not both")
        if self.search is None:
            try:
                get_genotype(self.resolved_genotype)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None

    @property
    def resolved_genotype(self) -> str:
        return self.genotype or DEFAULT_GENOTYPE


def _check_size(shape: tuple[int, ...], reductions: int) -> None:
    h, w = shape[-2:]
    k = 2 ** reductions
    if h % k or w % k:
        raise FrontendError(f"DARTS cells reduce the input {reductions} times, so height and width must be "
                            f"divisible by {k}; got {h}×{w} (FactorizedReduce cannot halve an odd size): "
                            f"resize or crop the inputs")


def resolve_network(task: str, network: str) -> str:
    """The network a task and a `network` option build: "cifar", "imagenet" or "segmentation"
    (a resolved name passes through, so recipes hold it)."""
    if task == "segmentation":
        if network not in ("auto", "segmentation"):
            raise FrontendError(f"network: {network} is a classifier; segmentation data always gets the "
                                f"segmentation network: set network: auto")
        return "segmentation"
    if task == "classification":
        if network not in ("auto", "cifar", "imagenet"):
            raise FrontendError(f"unknown classification network {network!r}; choose auto, cifar or imagenet")
        return "cifar" if network == "auto" else network
    raise FrontendError(f"unknown task {task!r}; the darts frontend builds classification or segmentation networks")


def _check_input(shape: tuple[int, ...], network: str, init_channels: int, auxiliary: bool) -> None:
    """The input-size (and width) constraints of `network`, as one-line FrontendErrors."""
    if network != "imagenet":
        _check_size(shape, 2 if network == "cifar" else SEG_REDUCTIONS)
        return
    h, w = shape[-2:]
    k = 2 ** IMAGENET_HALVINGS
    if h % k or w % k:
        raise FrontendError(f"the ImageNet DARTS network halves its input {IMAGENET_HALVINGS} times, so height and "
                            f"width must be multiples of {k} (at least {k}); got {h}×{w}: resize or crop the inputs")
    if init_channels % 2:
        raise FrontendError(f"the ImageNet DARTS network needs an even init_channels (its first stem conv has "
                            f"init_channels/2); got {init_channels}")
    if auxiliary and not {h // k, w // k} <= {7, 8}:  # AvgPool 5/2 then a 2×2 conv must leave 1×1
        raise FrontendError(f"the ImageNet auxiliary head (as in the reference) needs 224 or 256 px inputs (a 7×7 "
                            f"or 8×8 map at cell 2*layers//3); got {h}×{w}: set auxiliary: false or resize")


def build_network(genotype: Genotype | CellsGenotype, task: str, in_channels: int, num_classes: int, init_channels: int,
                  layers: int, auxiliary: bool = False, drop_path_prob: float = 0.0,
                  network: str = "auto") -> nn.Module:
    """The DARTS network of `task`; `network` picks the classification stems (see `resolve_network`)."""
    network = resolve_network(task, network)
    if network == "cifar":
        return NetworkCIFAR(init_channels, num_classes, layers, auxiliary, genotype, in_channels=in_channels,
                            drop_path_prob=drop_path_prob)
    if network == "imagenet":
        return NetworkImageNet(init_channels, num_classes, layers, auxiliary, genotype, in_channels=in_channels,
                               drop_path_prob=drop_path_prob)
    if auxiliary:
        raise FrontendError("the auxiliary head exists only for classification; set auxiliary: false")
    return NetworkSegmentation(init_channels, layers, genotype, in_channels=in_channels, num_classes=num_classes,
                               reductions=SEG_REDUCTIONS, drop_path_prob=drop_path_prob)


def _recipe(geno: Genotype, task: str, in_channels: int, num_classes: int, init_channels: int, layers: int,
            auxiliary: bool, drop_path_prob: float, seed: int, network: str) -> dict[str, Any]:
    """What rebuilds the network: the genotype itself (not a search's options), so no search re-runs,
    and the resolved network ("cifar", "imagenet" or "segmentation")."""
    return {"name": "darts", "genotype": geno.to_dict(), "task": task, "network": network,
            "in_channels": in_channels, "num_classes": num_classes, "init_channels": init_channels,
            "layers": layers, "auxiliary": auxiliary, "drop_path_prob": drop_path_prob, "seed": seed}


def _meta(name: str, genotype: Genotype | CellsGenotype, init_channels: int, layers: int, network: str) -> dict:
    return {"frontend": "darts", "genotype": name, "genotype_json": genotype.to_dict(), "network": network,
            "init_channels": init_channels, "layers": layers}


def lower_genotype(genotype: "str | os.PathLike[str] | Genotype",
                   task: Literal["classification", "segmentation"] | TaskSpec = "segmentation", in_channels: int = 2,
                   input_size: int | tuple[int, int] = 100, num_classes: int = 1, init_channels: int = 16,
                   layers: int = 8, *, cells: int | None = None, auxiliary: bool = False, drop_path_prob: float = 0.0,
                   seed: int = 0, value_range: tuple[float, float] | None = None, network: Network = "auto") -> ModelIR:
    """Build the DARTS network of `genotype` and lower it to the IR (`cells` is an alias of `layers`;
    `network="imagenet"` gives classification the ImageNet stems). `task` is a kind, with `num_classes`, or a
    whole TaskSpec (its class count, ignore_index and class names are kept; `num_classes` is then unused):
    segmentation with C ≥ 2 classes gets C logits per pixel."""
    if cells is not None:
        layers = cells
    spec = task if isinstance(task, TaskSpec) else TaskSpec(task, num_classes)
    geno = get_genotype(genotype)
    hw = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    shape = (in_channels, *hw)
    resolved = resolve_network(spec.kind, network)
    _check_input(shape, resolved, init_channels, auxiliary)
    recipe = _recipe(geno, spec.kind, in_channels, spec.num_classes, init_channels, layers, auxiliary, drop_path_prob,
                     seed, resolved)
    return _lower_module(Darts.rebuild(recipe), [input_spec_from(shape, value_range)], spec,
                         meta=_meta(genotype_name(genotype), geno, init_channels, layers, resolved), recipe=recipe)


lower = lower_genotype


@register_frontend("darts")
class Darts(Frontend):
    Options = DartsOptions
    label_keys = ("genotype", "search", "search.algorithm")
    search_options = SearchOptions
    offers_students = True

    def key_options(self) -> dict[str, Any]:
        """The search block in the flat form the stage keys have always hashed (`SearchOptions.key_data`)."""
        data = self.options_dict()
        if self.options.search is not None:
            data["search"] = self.options.search.key_data()
        return data

    @classmethod
    def run_search(cls, options: SearchOptions, data: "DataBundle", out_dir: Path, device: str = "cpu",
                   progress: bool = True) -> SearchResult:
        return run_search(options, data, out_dir, device=device, progress=progress)

    @classmethod
    def student(cls, teacher: ModelIR, width: int | None = None, depth: int | None = None) -> ModelIR:
        """A fresh network of the teacher's genotype with `width` init channels and `depth` cells (default the
        teacher's), its network kind, inputs and task."""
        geno = teacher.meta.get("genotype_json")
        if geno is None:
            raise FrontendError("a darts student needs a teacher built by the darts frontend (its genotype); "
                                "use student: current for other models")
        spec = teacher.inputs[0]
        return lower_genotype(Genotype.from_dict(geno), task=teacher.task, in_channels=spec.shape[1],
                              input_size=tuple(spec.shape[2:]),
                              init_channels=width or teacher.meta.get("init_channels", 16),
                              layers=depth or teacher.meta.get("layers", 8),
                              value_range=spec.value_range, network=teacher.meta.get("network", "auto"))

    def describe(self) -> str:
        from compressor.options import format_options

        if self.options.search is None and self.options.genotype is None:
            import dataclasses

            return format_options(self.name, dataclasses.replace(self.options, genotype=DEFAULT_GENOTYPE),
                                  always=self.label_keys)
        return super().describe()

    def build(self, data: "DataBundle | None", ctx: "PassContext") -> ModelIR:
        o = self.options
        if data is None:
            raise FrontendError("the darts frontend takes its input shape and classes from the data: add a data: block")
        kind = data.task.kind
        network = resolve_network(kind, o.network)
        _check_input(tuple(data.input_shape), network, o.init_channels, o.auxiliary)
        extra: dict[str, Any] = {}
        if o.search is not None:
            geno, name, extra = self._search(data, ctx)
        else:
            geno, name = get_genotype(o.resolved_genotype), genotype_name(o.resolved_genotype)
        recipe = _recipe(geno, kind, int(data.input_shape[0]), data.task.num_classes, o.init_channels, o.layers,
                         o.auxiliary, o.drop_path_prob, o.seed, network)
        spec = input_spec_from(data.input_shape, data.input_range)
        return _lower_module(self.rebuild(recipe), [spec], data.task,
                             meta={**_meta(name, geno, o.init_channels, o.layers, network), **extra}, recipe=recipe)

    @classmethod
    def rebuild(cls, spec: dict[str, Any]) -> nn.Module:
        torch.manual_seed(int(spec.get("seed", 0)))
        return build_network(Genotype.from_dict(spec["genotype"]), spec["task"], int(spec["in_channels"]),
                             int(spec["num_classes"]), int(spec["init_channels"]), int(spec["layers"]),
                             bool(spec.get("auxiliary", False)), float(spec.get("drop_path_prob", 0.0)),
                             str(spec.get("network", "auto")))  # recipes from before the option: auto

    def _search(self, data: "DataBundle", ctx: "PassContext") -> tuple[Genotype, str, dict[str, Any]]:
        """Run (or resume, or reuse) the search. Its folder is keyed by the search options, the data
        and the seed, beside the stage folders, so retraining the baseline never redoes a search."""
        import hashlib
        import json
        import tempfile

        opts = self.options.search
        assert opts is not None  # build() searches only when a search block is given
        key = hashlib.sha256(json.dumps({"search": opts.key_data(), "data": ctx.data_spec or data.name,
                                         "seed": ctx.seed}, sort_keys=True, default=str).encode()).hexdigest()[:12]
        root = ctx.root_dir or (ctx.run_dir.parent if ctx.run_dir else Path(tempfile.mkdtemp(prefix="darts-search-")))
        result = run_search(opts, data, Path(root) / f"search-{key}", device=ctx.device, progress=ctx.progress)
        name = f"searched:{opts.algorithm}"
        return result.genotype, name, {"search_dir": str(result.out_dir), "search_seconds": round(result.seconds, 1)}
