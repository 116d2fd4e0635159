"""The eager network of a hierarchical genotype: stem, stages of blocks, and a classification or segmentation head.

- `stem`: a conv block (k×k conv → BN → ReLU, the genotype's stem stride).
- `stages`: a ModuleList of one Sequential per stage, each holding its blocks (`blocks.make_block`), so DARIO
  finds the residual blocks as list elements and torch-pruning sees plain convolutions.
- classification: [`last`: 1×1 conv → BN → ReLU to `head_channels`, when > 0] → global average pool →
  `classifier` (Linear).
- segmentation: a decoder with skips back to the input resolution, as the DARTS segmentation network has
  (frontends/darts/networks.py): the skips are the last feature map at each resolution above the deepest (the
  stem's output, and each stage output that a stride-2 stage follows); from the deepest map up, each decoder
  block upsamples (bilinear) to the skip's size, concatenates the skip and runs a 3×3 conv → BN → ReLU to the
  skip's channels. A stride-2 stem has no full-resolution map: the decoder's output is then upsampled to the
  input size. `head`: a 1×1 conv to 1 logit per pixel (binary masks) or C (C ≥ 2 classes).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.frontends.hierarchical.blocks import BlockConfig, block_configs, block_macs, conv_bn, make_block, \
    scaled_channels
from compressor.frontends.vision import init_mobilenet_weights

if TYPE_CHECKING:
    from compressor.frontends.hierarchical.genotypes import HierGenotype


class HierarchicalNet(nn.Module):
    def __init__(self, genotype: "HierGenotype", in_channels: int, num_classes: int, segmentation: bool = False,
                 width_mult: float = 1.0, input_hw: tuple[int, int] | None = None) -> None:
        super().__init__()
        shape = (in_channels, *input_hw) if input_hw is not None else (in_channels,)
        configs = block_configs(genotype, shape, width_mult)
        self.stem = make_block(configs[0])
        per_stage: list[list[BlockConfig]] = [[] for _ in genotype.stages]
        for cfg in configs[1:]:
            per_stage[int(cfg.name.split(".")[1])].append(cfg)
        self.stages = nn.ModuleList(nn.Sequential(*[make_block(c) for c in stage]) for stage in per_stage)
        widths = [configs[0].cout] + [stage[-1].cout for stage in per_stage]  # stem, then each stage's output
        self.segmentation = segmentation
        self.genotype, self.width_mult = genotype, width_mult  # what built it (weight inheritance checks it)
        if segmentation:
            strides = [s.stride for s in genotype.stages]
            # feature index (0 = stem, i + 1 = stage i) of the last map at each resolution above the deepest
            self.skip_at = tuple(i for i in range(len(strides)) if strides[i] == 2)
            self.decoder, self.head = decoder_layers(widths[-1], [widths[i] for i in self.skip_at], num_classes)
        else:
            c = widths[-1]
            self.last: nn.Module = nn.Identity()
            if genotype.head_channels:
                head = scaled_channels(genotype.head_channels, genotype.width_mult, width_mult)
                self.last, c = conv_bn(c, head, 1), head
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(c, num_classes)
        init_mobilenet_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem(x)
        if not self.segmentation:
            for stage in self.stages:
                out = stage(out)
            return self.classifier(torch.flatten(self.pool(self.last(out)), 1))
        skips = []
        for i, stage in enumerate(self.stages):
            if i in self.skip_at:
                skips.append(out)
            out = stage(out)
        return decode(self.decoder, self.head, out, skips, x.shape[-2:])


def decoder_layers(deepest: int, skip_widths: Sequence[int], num_classes: int) -> tuple[nn.ModuleList, nn.Conv2d]:
    """The segmentation decoder's steps (one 3×3 conv → BN → ReLU per skip, deepest skip first) and its 1×1 head,
    for a deepest map of `deepest` channels and skips of `skip_widths` (shallowest first)."""
    decoder = nn.ModuleList()
    c_dec = deepest
    for w in reversed(skip_widths):
        decoder.append(conv_bn(c_dec + w, w, 3))
        c_dec = w
    return decoder, nn.Conv2d(c_dec, num_classes, 1)


def decode(decoder: nn.ModuleList, head: nn.Module, out: torch.Tensor, skips: Sequence[torch.Tensor],
           size: Sequence[int]) -> torch.Tensor:
    """The decoder's forward: from the deepest map `out` up through `skips` (shallowest first), then the head,
    upsampled to `size` when the shallowest skip is smaller (a stride-2 stem)."""
    for block, skip in zip(decoder, reversed(skips)):
        out = F.interpolate(out, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        out = block(torch.cat([out, skip], dim=1))
    if tuple(out.shape[-2:]) != tuple(size):  # a stride-2 stem: no skip at the input resolution
        out = F.interpolate(out, size=tuple(size), mode="bilinear", align_corners=False)
    return head(out)


def genotype_macs(genotype: "HierGenotype", input_shape: Sequence[int], width_mult: float = 1.0) -> int:
    """MACs of the stem and the blocks (not the head) on one input of `input_shape` (C, H, W), from the block
    configurations alone (`block_macs`); `compressor.evaluate.stats.count_macs` measures the whole network."""
    return sum(block_macs(c) for c in block_configs(genotype, input_shape, width_mult))
