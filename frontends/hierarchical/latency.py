"""The hierarchical space on a per-block latency table (`compressor.evaluate.latency_table`).

A network's parts are its stem and blocks (`block_configs`) plus one fixed part for its head (`HeadConfig`):
the classifier head ([1×1 conv to head_channels] → global average pool → Linear) measured on the last stage's
output, or the whole segmentation decoder (its steps and 1×1 head) measured on the deepest map and the skips.
The fixed parts are table entries like the blocks (not an overhead term measured by difference): a head's key
holds everything its cost depends on, so networks that share a head share its entry.

    parts = latency_parts(genotype, (3, 32, 32), num_classes=10)
    table = LatencyTable.load_or_measure(store, "onnxruntime-cpu", (3, 32, 32), 1, parts, make_part,
                                         part_inputs=part_inputs)
    table.predict(parts)

`check_predictor` samples random genotypes of a small space (`genotypes.sample_genotype`), measures each whole
network end-to-end the same way as the parts, and reports Spearman's ρ and the MAPE of the prediction.
"""
from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn as nn

from compressor.evaluate.latency_table import LatencyTable, default_part_inputs, mape, measure_module, spearman
from compressor.frontends.hierarchical.blocks import BlockConfig, block_configs, conv_bn, make_block, scaled_channels
from compressor.frontends.hierarchical.genotypes import sample_genotype
from compressor.frontends.hierarchical.networks import HierarchicalNet, decode, decoder_layers

if TYPE_CHECKING:
    from compressor.frontends.hierarchical.genotypes import HierGenotype


@dataclass(frozen=True)
class HeadConfig:
    """A network's fixed head. `kind` "classifier": input `cin` × `in_hw`, `hidden` the 1×1 conv's width (0: none).
    `kind` "decoder": input the deepest map (`cin` × `in_hw`) and the skips (`skips`: (width, H, W) each, the
    shallowest first), output `num_classes` maps of `out_hw`."""

    kind: str
    cin: int
    num_classes: int
    in_hw: tuple[int, int]
    hidden: int = 0
    skips: tuple[tuple[int, int, int], ...] = ()
    out_hw: tuple[int, int] | None = None
    name: str = "head"

    def key(self) -> tuple:
        return (self.kind, self.cin, self.num_classes, self.in_hw, self.hidden, self.skips, self.out_hw)


def decoder_macs(cfg: HeadConfig) -> int:
    """MACs of a segmentation decoder on one input (its 3×3 convs at each skip's size and the 1×1 head at the
    shallowest skip's; bilinear upsampling is not counted, as `count_macs` does not count it)."""
    if cfg.kind != "decoder":
        raise ValueError(f"decoder_macs takes a decoder head, got {cfg.kind}")
    macs, deeper = 0, cfg.cin
    hw = cfg.in_hw
    for width, h, w in reversed(cfg.skips):
        macs += 9 * (deeper + width) * width * h * w
        deeper, hw = width, (h, w)
    return macs + deeper * cfg.num_classes * hw[0] * hw[1]


class ClassifierHead(nn.Module):
    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.last = conv_bn(cfg.cin, cfg.hidden, 1) if cfg.hidden else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cfg.hidden or cfg.cin, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.last(x)), 1))


class DecoderHead(nn.Module):
    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.size = cfg.out_hw
        self.decoder, self.head = decoder_layers(cfg.cin, [s[0] for s in cfg.skips], cfg.num_classes)

    def forward(self, out: torch.Tensor, *skips: torch.Tensor) -> torch.Tensor:
        return decode(self.decoder, self.head, out, skips, self.size)


def head_config(genotype: "HierGenotype", configs: Sequence[BlockConfig], num_classes: int,
                segmentation: bool = False, width_mult: float = 1.0) -> HeadConfig:
    """The head of `genotype`'s network whose stem and blocks are `configs` (`block_configs` with an input size)."""
    last = configs[-1]
    if last.out_hw is None:
        raise ValueError("head_config needs block configs listed with the input size (C, H, W)")
    if not segmentation:
        hidden = scaled_channels(genotype.head_channels, genotype.width_mult, width_mult) if genotype.head_channels \
            else 0
        return HeadConfig("classifier", last.cout, num_classes, last.out_hw, hidden=hidden)
    stage_out: list[BlockConfig] = [configs[0]]  # the stem, then each stage's last block
    for cfg in configs[1:]:
        s = int(cfg.name.split(".")[1])
        if s + 1 < len(stage_out):
            stage_out[s + 1] = cfg
        else:
            stage_out.append(cfg)
    skip_at = [i for i, st in enumerate(genotype.stages) if st.stride == 2]
    skips = tuple((stage_out[i].cout, *stage_out[i].out_hw) for i in skip_at)  # type: ignore[misc]
    return HeadConfig("decoder", last.cout, num_classes, last.out_hw, skips=skips, out_hw=configs[0].in_hw)


def latency_parts(genotype: "HierGenotype", input_shape: Sequence[int], num_classes: int,
                  segmentation: bool = False, width_mult: float = 1.0) -> list[BlockConfig | HeadConfig]:
    """Every part of the network a latency table sums: the stem, each block, the head."""
    if len(input_shape) < 3:
        raise ValueError(f"latency parts need the input shape (C, H, W), got {tuple(input_shape)}")
    configs = block_configs(genotype, input_shape, width_mult)
    return [*configs, head_config(genotype, configs, num_classes, segmentation, width_mult)]


def make_part(cfg: BlockConfig | HeadConfig) -> nn.Module:
    if isinstance(cfg, HeadConfig):
        return ClassifierHead(cfg) if cfg.kind == "classifier" else DecoderHead(cfg)
    return make_block(cfg)


def part_inputs(cfg: BlockConfig | HeadConfig) -> list[tuple[int, ...]]:
    """A part's per-sample input shapes (a decoder takes the deepest map and its skips)."""
    if isinstance(cfg, HeadConfig):
        return [(cfg.cin, *cfg.in_hw), *cfg.skips]
    return default_part_inputs(cfg)


def check_predictor(store_root: str | os.PathLike[str], n: int = 20, input_shape: Sequence[int] = (3, 32, 32),
                    batch: int = 1, num_classes: int = 10, segmentation: bool = False, seed: int = 0,
                    backend: str = "onnxruntime-cpu", threads: int | None = None, warmup: int = 5,
                    iters: int = 20, rounds: int = 3, stages: int = 3, max_depth: int = 2,
                    channels: tuple[int, ...] = (8, 16, 24, 32)) -> dict[str, Any]:
    """Predicted against end-to-end latency of `n` random networks: {"rho", "mape", "predicted_ms",
    "measured_ms", "genotypes", "parts_measured", "seconds"}. Every network is measured as the parts are
    (`measure_module`: ONNX on `backend`, `rounds` × `iters` calls); the table lives in `store_root`."""
    if n < 2:
        raise ValueError(f"check_predictor needs n >= 2 networks, got {n}")
    t0 = time.perf_counter()
    rng = random.Random(seed)
    genotypes = [sample_genotype(rng, stages, max_depth, channels, stem_channels=channels[0]) for _ in range(n)]
    shape = tuple(int(v) for v in input_shape)
    parts = [latency_parts(g, shape, num_classes, segmentation) for g in genotypes]
    table = LatencyTable.load_or_measure(store_root, backend, shape, batch, [p for ps in parts for p in ps],
                                         make_part, part_inputs=part_inputs, threads=threads, warmup=warmup,
                                         iters=iters, rounds=rounds)
    predicted = [table.predict(ps) for ps in parts]
    torch.manual_seed(seed)
    measured = [measure_module(HierarchicalNet(g, shape[0], num_classes, segmentation, input_hw=shape[1:3]),
                               [shape], batch, backend, threads, warmup, iters, rounds) for g in genotypes]
    return {"rho": spearman(predicted, measured), "mape": mape(predicted, measured), "predicted_ms": predicted,
            "measured_ms": measured, "genotypes": [g.to_dict() for g in genotypes], "parts_measured": table.measured,
            "table": str(table.path), "seconds": time.perf_counter() - t0}
