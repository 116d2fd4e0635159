"""Genotypes of seed 002's hierarchical space (Sec. "Search Space Design") as data.

The three levels of the paper map onto the genotype as follows:
- macro: `width_mult` and `depth_mult`, which scale every stage's channels and block count;
- meso: the stages, each with its base `channels`, its own `width_mult`, the `stride` of its first block and
  its `blocks` (its depth is the number of blocks);
- micro: each block's op and that op's choices (kernel, expansion, squeeze-and-excitation, pooling kind).

JSON form (what `save` writes and `load` reads; keys a block's op does not take are refused):

    {"stem": {"channels": 16, "kernel": 3, "stride": 1},
     "stages": [
       {"channels": 16, "stride": 1, "blocks": [{"op": "sep", "kernel": 3}]},
       {"channels": 24, "stride": 2, "depth": 2, "blocks": [{"op": "mbconv", "expansion": 3, "kernel": 3}]},
       {"channels": 40, "stride": 2, "blocks": [{"op": "mbconv", "expansion": 6, "kernel": 5, "se": true},
                                                {"op": "skip"}]}],
     "head_channels": 0, "width_mult": 1.0, "depth_mult": 1.0}

Ops: `conv` (standard k×k convolution), `sep` (depthwise-separable), `mbconv` (inverted bottleneck with
`expansion` 1, 3 or 6), `skip` (the identity), `pool` (k×k max or average pooling). `kernel` is 3, 5 or 7
(default 3); `se` (squeeze-and-excitation, default false) applies to conv, sep and mbconv. A stage with
`depth` and a single block repeats it `depth` times. `skip` may not open a stage (the first block carries
the stage's stride and width change, which an identity cannot). `head_channels` > 0 adds a 1×1 conv before
the classifier (MobileNetV2's 1280); segmentation networks ignore it.

Errors are one line naming the JSON path, what was received, what is valid and how to fix it:
`genotype stages[1].blocks[0].kernel: 4 is not one of 3, 5, 7; set it to one of them`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from compressor import schema
from compressor.errors import ConfigError
from compressor.options import unknown_key_message
from compressor.store import atomic_write

OPS = ("conv", "sep", "mbconv", "skip", "pool")
KERNELS = (3, 5, 7)
EXPANSIONS = (1, 3, 6)
POOLS = ("max", "avg")
STRIDES = (1, 2)
# the keys each op takes besides `op` (any other key is an error that says which ops take it)
OP_KEYS: dict[str, tuple[str, ...]] = {
    "conv": ("kernel", "se"),
    "sep": ("kernel", "se"),
    "mbconv": ("kernel", "expansion", "se"),
    "skip": (),
    "pool": ("kernel", "pool"),
}
MAX_CHANNELS = 4096
MAX_DEPTH = 64  # blocks per stage
MAX_STAGES = 16
GENOTYPE_KEYS = ("stem", "stages", "head_channels", "width_mult", "depth_mult")
STEM_KEYS = ("channels", "kernel", "stride")
STAGE_KEYS = ("channels", "stride", "width_mult", "depth", "blocks")


@dataclass(frozen=True)
class BlockGene:
    """One block's micro choices; fields an op does not take keep their defaults."""

    op: str
    kernel: int = 3
    expansion: int = 6
    se: bool = False
    pool: str = "max"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, **{k: getattr(self, k) for k in OP_KEYS[self.op]}}


@dataclass(frozen=True)
class StageGene:
    channels: int
    blocks: tuple[BlockGene, ...]  # one per block: a stage's depth is len(blocks)
    stride: int = 1
    width_mult: float = 1.0

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def to_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "stride": self.stride, "width_mult": self.width_mult,
                "blocks": [b.to_dict() for b in self.blocks]}


@dataclass(frozen=True)
class HierGenotype:
    stem_channels: int
    stages: tuple[StageGene, ...]
    stem_kernel: int = 3
    stem_stride: int = 1
    head_channels: int = 0
    width_mult: float = 1.0
    depth_mult: float = 1.0
    name: str = field(default="custom", compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"stem": {"channels": self.stem_channels, "kernel": self.stem_kernel, "stride": self.stem_stride},
                "stages": [s.to_dict() for s in self.stages], "head_channels": self.head_channels,
                "width_mult": self.width_mult, "depth_mult": self.depth_mult}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, doc: Any, source: str = "genotype", name: str = "custom") -> "HierGenotype":
        """The genotype of its JSON form; a ConfigError naming `source` and the field path otherwise."""
        try:
            return parse(doc, name)
        except schema.Invalid as exc:
            where = f"{source} {exc.path}" if exc.path else source
            raise ConfigError(f"{where}: {exc.problem}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write JSON atomically: a temp file beside the target, then rename."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, self.to_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "HierGenotype":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"no hierarchical genotype file at {path}; give a built-in name "
                              f"({', '.join(GENOTYPES)}), the path of a genotype .json or the genotype mapping")
        doc = schema.load_json(path, "genotype", max_bytes=schema.GENOTYPE_MAX_BYTES,
                               fix="give a hierarchical genotype .json (README, 'Hierarchical search space')")
        return cls.from_dict(doc, f"{path}: genotype", name=path.stem)


# ---- validation: one line, with the JSON path --------------------------------------------------------

def _fail(path: str, problem: str) -> schema.Invalid:
    return schema.Invalid(path, problem)


def _choices(value: Any, valid: tuple, path: str) -> Any:
    if not any(type(value) is type(v) and value == v for v in valid):  # 3.0 and true are not 3 and 1
        listing = ", ".join(str(v) for v in valid)
        raise _fail(path, f"{schema.got(value)} is not one of {listing}; set it to one of them")
    return value


def _int(value: Any, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"expected an integer in [{low}, {high}], got {schema.got(value)}")
    if not low <= value <= high:
        raise _fail(path, f"{value} is out of range; valid: [{low}, {high}]")
    return value


def _mult(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)) \
            or not 0 < value <= 16:
        raise _fail(path, f"expected a number in (0, 16], got {schema.got(value)}; 1.0 keeps the base width")
    return float(value)


def _mapping(value: Any, path: str, keys: tuple[str, ...], what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path, f"expected a mapping with keys {', '.join(keys)}, got {schema.got(value)}")
    for key in value:
        if key not in keys:
            raise _fail(path, unknown_key_message(str(key), list(keys), what))
    return value


def _block(value: Any, path: str, first: bool) -> BlockGene:
    if not isinstance(value, Mapping):
        raise _fail(path, f"expected a block mapping such as {{\"op\": \"mbconv\", \"expansion\": 6, \"kernel\": 3}}, "
                          f"got {schema.got(value)}")
    if "op" not in value:
        raise _fail(path, f"missing key 'op'; give one of {', '.join(OPS)}")
    op = value["op"]
    if not isinstance(op, str) or op not in OPS:
        raise _fail(f"{path}.op", unknown_key_message(str(op), list(OPS), "op"))
    for key in value:
        if key == "op" or key in OP_KEYS[op]:
            continue
        takers = [o for o, keys in OP_KEYS.items() if key in keys]
        if takers:
            raise _fail(f"{path}.{key}", f"a {op} block takes no {key} (only {', '.join(takers)} blocks do); "
                                         f"remove it")
        valid = ["op", *OP_KEYS[op]]
        raise _fail(path, unknown_key_message(str(key), valid, f"key of a {op} block"))
    if op == "skip" and first:
        raise _fail(f"{path}.op", "skip cannot be a stage's first block: that block carries the stage's stride and "
                                  "width change, which the identity cannot; make it conv, sep, mbconv or pool, or "
                                  "drop the stage")
    gene: dict[str, Any] = {"op": op}
    if "kernel" in value:
        gene["kernel"] = _choices(value["kernel"], KERNELS, f"{path}.kernel")
    if "expansion" in value:
        gene["expansion"] = _choices(value["expansion"], EXPANSIONS, f"{path}.expansion")
    if "se" in value:
        if not isinstance(value["se"], bool):
            raise _fail(f"{path}.se", f"expected true or false, got {schema.got(value['se'])}")
        gene["se"] = value["se"]
    if "pool" in value:
        gene["pool"] = _choices(value["pool"], POOLS, f"{path}.pool")
    return BlockGene(**gene)


def _stage(value: Any, path: str) -> StageGene:
    value = _mapping(value, path, STAGE_KEYS, "stage key")
    for key in ("channels", "blocks"):
        if key not in value:
            raise _fail(path, f"missing key '{key}'; a stage has channels and blocks (and optional stride, "
                              f"width_mult, depth)")
    channels = _int(value["channels"], f"{path}.channels", 1, MAX_CHANNELS)
    stride = _choices(value.get("stride", 1), STRIDES, f"{path}.stride")
    width = _mult(value.get("width_mult", 1.0), f"{path}.width_mult")
    raw = value["blocks"]
    if isinstance(raw, (str, bytes)) or not isinstance(raw, (list, tuple)) or not raw:
        raise _fail(f"{path}.blocks", f"expected a non-empty list of blocks, got {schema.got(raw)}")
    blocks = [_block(b, f"{path}.blocks[{i}]", i == 0) for i, b in enumerate(raw)]
    if "depth" in value:
        depth = _int(value["depth"], f"{path}.depth", 1, MAX_DEPTH)
        if len(blocks) == 1:
            blocks = blocks * depth
        elif len(blocks) != depth:
            raise _fail(f"{path}.depth", f"depth {depth} but {len(blocks)} blocks; give one block (repeated depth "
                                         f"times) or exactly {depth} blocks")
    if len(blocks) > MAX_DEPTH:
        raise _fail(f"{path}.blocks", f"{len(blocks)} blocks; a stage holds at most {MAX_DEPTH}")
    return StageGene(channels, tuple(blocks), stride, width)


def parse(doc: Any, name: str = "custom") -> HierGenotype:
    """A HierGenotype from its JSON form; `schema.Invalid` (a field path and the problem) otherwise."""
    doc = _mapping(doc, "", GENOTYPE_KEYS, "genotype key")
    for key in ("stem", "stages"):
        if key not in doc:
            raise _fail("", f"missing key '{key}'; a genotype has stem and stages (and optional head_channels, "
                              f"width_mult, depth_mult)")
    stem = _mapping(doc["stem"], "stem", STEM_KEYS, "stem key")
    if "channels" not in stem:
        raise _fail("stem", "missing key 'channels'; e.g. {\"channels\": 16}")
    stages = doc["stages"]
    if isinstance(stages, (str, bytes)) or not isinstance(stages, (list, tuple)) or not stages:
        raise _fail("stages", f"expected a non-empty list of stages, got {schema.got(stages)}")
    if len(stages) > MAX_STAGES:
        raise _fail("stages", f"{len(stages)} stages; at most {MAX_STAGES}")
    return HierGenotype(
        stem_channels=_int(stem["channels"], "stem.channels", 1, MAX_CHANNELS),
        stem_kernel=_choices(stem.get("kernel", 3), KERNELS, "stem.kernel"),
        stem_stride=_choices(stem.get("stride", 1), STRIDES, "stem.stride"),
        stages=tuple(_stage(s, f"stages[{i}]") for i, s in enumerate(stages)),
        head_channels=_int(doc.get("head_channels", 0), "head_channels", 0, 8 * MAX_CHANNELS),
        width_mult=_mult(doc.get("width_mult", 1.0), "width_mult"),
        depth_mult=_mult(doc.get("depth_mult", 1.0), "depth_mult"),
        name=name,
    )


# ---- built-in genotypes ------------------------------------------------------------------------------

def _mb(e: int, k: int = 3, se: bool = False) -> dict[str, Any]:
    return {"op": "mbconv", "expansion": e, "kernel": k, "se": se}


# MobileNetV2 (Sandler et al. 2018, Table 2): t, c, n, s per stage; 32-channel stride-2 stem, 1280-channel head.
_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
BUILTIN_DOCS: dict[str, dict[str, Any]] = {
    # A small mixed network for 32×32 inputs (CIFAR-10, where seed 002 searches): stride-1 stem, three
    # reductions, the op kinds the paper reports its networks to favour (depthwise-separable convolutions,
    # bottlenecks, SE placed late).
    "mobile-small": {
        "stem": {"channels": 16, "kernel": 3, "stride": 1},
        "stages": [
            {"channels": 16, "stride": 1, "blocks": [{"op": "sep", "kernel": 3}]},
            {"channels": 24, "stride": 2, "depth": 2, "blocks": [_mb(3, 3)]},
            {"channels": 40, "stride": 2, "blocks": [_mb(3, 5, True), _mb(3, 5, True)]},
            {"channels": 80, "stride": 2, "blocks": [_mb(6, 3), _mb(3, 3, True)]},
            {"channels": 96, "stride": 1, "blocks": [_mb(6, 3, True)]},
        ],
    },
    # MobileNetV2 itself as a point of the space (ReLU for ReLU6; parameter count equal to torchvision's).
    "mobilenet-v2": {
        "stem": {"channels": 32, "kernel": 3, "stride": 2},
        "stages": [{"channels": c, "stride": s, "depth": n, "blocks": [_mb(t)]} for t, c, n, s in _V2],
        "head_channels": 1280,
    },
}
GENOTYPES: dict[str, HierGenotype] = {k: HierGenotype.from_dict(v, name=k) for k, v in BUILTIN_DOCS.items()}


def get_genotype(value: "str | os.PathLike[str] | Mapping[str, Any] | HierGenotype") -> HierGenotype:
    """A built-in genotype by name, one loaded from a .json file, or one given as a mapping."""
    if isinstance(value, HierGenotype):
        return value
    if isinstance(value, Mapping):
        return HierGenotype.from_dict(value, name="inline")
    s = str(value)
    if s in GENOTYPES:
        return GENOTYPES[s]
    if s.lower().endswith(".json") or os.sep in s or "/" in s or Path(s).is_file():
        return HierGenotype.load(s)
    raise ConfigError(f"{unknown_key_message(s, list(GENOTYPES), 'hierarchical genotype')} (or the path of a "
                      f"genotype .json, or the genotype mapping inline)")


# ---- random genotypes --------------------------------------------------------------------------------

def sample_genotype(rng: Any, stages: int = 3, max_depth: int = 2, channels: tuple[int, ...] = (8, 16, 24, 32),
                    ops: tuple[str, ...] = OPS, stem_channels: int = 8) -> HierGenotype:
    """A random valid genotype of a small space: `stages` stages (the first stride 1, the others stride 2) of 1 to
    `max_depth` blocks, non-decreasing widths drawn from `channels`, each block's op from `ops` (never skip first)
    and its micro choices uniformly. `rng`: anything with `.random()` (random.Random, a numpy Generator)."""
    def pick(seq: tuple | list) -> Any:
        return seq[min(int(rng.random() * len(seq)), len(seq) - 1)]

    docs = []
    width = pick(channels)
    for s in range(stages):
        width = pick([c for c in channels if c >= width])
        blocks = []
        for i in range(1 + min(int(rng.random() * max_depth), max_depth - 1)):
            op = pick([o for o in ops if not (o == "skip" and i == 0)])
            gene: dict[str, Any] = {"op": op}
            if "kernel" in OP_KEYS[op]:
                gene["kernel"] = pick(KERNELS)
            if "expansion" in OP_KEYS[op]:
                gene["expansion"] = pick(EXPANSIONS)
            if "se" in OP_KEYS[op]:
                gene["se"] = rng.random() < 0.5
            if "pool" in OP_KEYS[op]:
                gene["pool"] = pick(POOLS)
            blocks.append(gene)
        docs.append({"channels": width, "stride": 1 if s == 0 else 2, "blocks": blocks})
    return HierGenotype.from_dict({"stem": {"channels": stem_channels}, "stages": docs}, "sampled genotype",
                                  name="sampled")
