"""The blocks of the hierarchical space: a block's concrete configuration alone builds it (`make_block`).

`block_configs(genotype, input_shape, width_mult)` lists the stem and every block of the network with its
concrete numbers (op, cin, cout, kernel, expansion, se, pool, stride, input H×W, residual), the unit a
per-block latency table or a weight-sharing supernet works on; `block_macs` counts a block's
multiply-accumulates from its configuration alone (convolutions and the linear layer only, the convention
of `compressor.evaluate.stats.count_macs`, which it equals).

Block bodies (plain torch layers; every convolution is followed by BatchNorm2d, the activation is ReLU):
- `conv`: k×k conv (stride) → BN → ReLU [→ SE]. Its ReLU stays inside the residual: x + ReLU(BN(conv x)).
- `sep`: depthwise k×k (stride) → BN → ReLU [→ SE] → pointwise 1×1 → BN (linear output, MnasNet's SepConv).
- `mbconv`: [1×1 expand to e·cin → BN → ReLU, when e > 1] → depthwise k×k (stride) → BN → ReLU [→ SE] →
  1×1 project → BN (linear output, MobileNetV2's inverted residual).
- `skip`: the identity (only where shapes match: never a stage's first block).
- `pool`: k×k max or average pooling (stride, padding k//2); when the width changes, a 1×1 conv → BN → ReLU
  follows (the avg-pool-then-1×1 downsampling of ResNet-D).
conv, sep and mbconv add their input (`x + f(x)`) when stride is 1 and cin == cout, as MobileNetV2 and MnasNet
do; DARIO's block discovery (`compressor.adapters.blocks`) finds exactly these.
SE (Hu et al. 2018) is conv-based: global average pool → 1×1 conv to max(1, cin // 4) → ReLU → 1×1 conv back →
sigmoid, multiplying its input (cin: the block's input channels, EfficientNet's se_ratio 0.25).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn as nn

from compressor.frontends.vision import make_divisible

if TYPE_CHECKING:
    from compressor.frontends.hierarchical.genotypes import HierGenotype

CHANNEL_DIVISOR = 8  # every width is rounded to a multiple of 8 (MobileNet's rule, see `scaled_channels`)
RESIDUAL_OPS = ("conv", "sep", "mbconv")
SE_RATIO = 4  # squeeze to the block's input channels // 4


def scaled_channels(base: int, *mults: float) -> int:
    """A width: `base` times the multipliers, rounded to a multiple of 8 by `make_divisible` (torchvision's rule,
    which MobileNetV2 and MnasNet scale their widths with: the nearest multiple, at least 8, never more than 10%
    below the unrounded width)."""
    v = float(base)
    for m in mults:
        v *= m
    return make_divisible(v, CHANNEL_DIVISOR)


def stage_depth(depth: int, depth_mult: float) -> int:
    """Blocks of a stage of `depth` blocks under the macro `depth_mult` (EfficientNet's ceil(d · m), at least 1)."""
    return max(1, int(-(-depth * depth_mult // 1))) if depth_mult != 1.0 else depth


@dataclass(frozen=True)
class BlockConfig:
    """A block's concrete configuration: what `make_block` builds and a latency table keys on.
    `in_hw` is the input's height and width (None when the input size was not given)."""

    op: str
    cin: int
    cout: int
    kernel: int = 3
    expansion: int = 1
    se: bool = False
    pool: str = "max"
    stride: int = 1
    residual: bool = False
    in_hw: tuple[int, int] | None = None
    name: str = ""  # the module path in the network ("stem", "stages.1.0")

    @property
    def out_hw(self) -> tuple[int, int] | None:
        """Output height and width: ceil(H / stride) (odd kernels, padding k // 2)."""
        if self.in_hw is None:
            return None
        return (-(-self.in_hw[0] // self.stride), -(-self.in_hw[1] // self.stride))

    @property
    def hidden(self) -> int:
        """The channels the depthwise conv (and SE) of an mbconv runs on."""
        return self.cin * self.expansion if self.op == "mbconv" else self.cin

    @property
    def se_channels(self) -> int:
        return max(1, self.cin // SE_RATIO)

    def key(self) -> tuple:
        """The fields that define the block's cost (not its name): a latency table's row key."""
        return (self.op, self.cin, self.cout, self.kernel, self.expansion if self.op == "mbconv" else 1, self.se,
                self.pool if self.op == "pool" else "", self.stride, self.residual, self.in_hw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["in_hw"] = list(self.in_hw) if self.in_hw is not None else None
        return d


def residual_allowed(op: str, cin: int, cout: int, stride: int) -> bool:
    return op in RESIDUAL_OPS and stride == 1 and cin == cout


def block_configs(genotype: "HierGenotype", input_shape: Sequence[int], width_mult: float = 1.0) -> list[BlockConfig]:
    """The stem and every block of `genotype`'s network, in order, for inputs of `input_shape` ((C, H, W), or
    (C,) when the size does not matter), with the global `width_mult` on top of the genotype's own."""
    in_channels = int(input_shape[0])
    hw = (int(input_shape[1]), int(input_shape[2])) if len(input_shape) >= 3 else None
    g = genotype
    stem_out = scaled_channels(g.stem_channels, g.width_mult, width_mult)
    stem = BlockConfig("conv", in_channels, stem_out, g.stem_kernel, stride=g.stem_stride, in_hw=hw, name="stem")
    configs = [stem]
    cin, hw = stem_out, stem.out_hw
    for s, stage in enumerate(g.stages):
        cout = scaled_channels(stage.channels, stage.width_mult, g.width_mult, width_mult)
        n = stage_depth(stage.depth, g.depth_mult)
        genes = list(stage.blocks[:n]) + [stage.blocks[-1]] * (n - stage.depth)  # extra blocks repeat the last
        for i, gene in enumerate(genes):
            stride = stage.stride if i == 0 else 1
            cfg = BlockConfig(gene.op, cin, cout, gene.kernel, gene.expansion if gene.op == "mbconv" else 1,
                              gene.se and gene.op in RESIDUAL_OPS, gene.pool, stride,
                              residual_allowed(gene.op, cin, cout, stride), hw, f"stages.{s}.{i}")
            configs.append(cfg)
            cin, hw = cout, cfg.out_hw
    return configs


def block_macs(cfg: BlockConfig) -> int:
    """Multiply-accumulates of one forward of the block on one input of `cfg.in_hw` (convolutions only: BN,
    activations, pooling and the SE multiply are not counted, as `count_macs` does not count them)."""
    if cfg.in_hw is None:
        raise ValueError(f"block {cfg.name or cfg.op}: MACs need the input size (in_hw)")
    hi, wi = cfg.in_hw
    ho, wo = cfg.out_hw  # type: ignore[misc]
    k2, out_px = cfg.kernel ** 2, ho * wo
    se = 2 * cfg.se_channels * (cfg.cout if cfg.op == "conv" else cfg.hidden) if cfg.se else 0
    if cfg.op == "conv":
        return k2 * cfg.cin * cfg.cout * out_px + se
    if cfg.op == "sep":
        return k2 * cfg.cin * out_px + cfg.cin * cfg.cout * out_px + se
    if cfg.op == "mbconv":
        h = cfg.hidden
        expand = cfg.cin * h * hi * wi if cfg.expansion > 1 else 0
        return expand + k2 * h * out_px + h * cfg.cout * out_px + se
    if cfg.op == "pool":
        return cfg.cin * cfg.cout * out_px if cfg.cin != cfg.cout else 0
    return 0  # skip


# ---- modules -----------------------------------------------------------------------------------------

def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """x · sigmoid(W2 · ReLU(W1 · avgpool(x))), W1 and W2 1×1 convolutions with bias."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class Block(nn.Module):
    """One block of the space: `body` (a Sequential), plus its input when `residual` (`x + body(x)`).
    The configuration is kept as plain attributes (`op`, `cin`, `cout`, ...) so that a module tells what it is."""

    def __init__(self, cfg: BlockConfig, body: nn.Module) -> None:
        super().__init__()
        self.op, self.cin, self.cout, self.kernel = cfg.op, cfg.cin, cfg.cout, cfg.kernel
        self.expansion, self.se, self.stride, self.residual = cfg.expansion, cfg.se, cfg.stride, cfg.residual
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)

    def extra_repr(self) -> str:
        extra = f", e={self.expansion}" if self.op == "mbconv" else ""
        return (f"{self.op} {self.cin}→{self.cout}, k={self.kernel}{extra}, stride={self.stride}"
                f"{', se' if self.se else ''}{', residual' if self.residual else ''}")


def make_block(cfg: BlockConfig) -> nn.Module:
    """The module of one block configuration (see the module docstring for each op's layers)."""
    if cfg.residual and not residual_allowed(cfg.op, cfg.cin, cfg.cout, cfg.stride):
        raise ValueError(f"block {cfg.name or cfg.op}: a residual needs a conv, sep or mbconv block with stride 1 "
                         f"and cin == cout, got {cfg.op} {cfg.cin}→{cfg.cout} stride {cfg.stride}")
    k, s = cfg.kernel, cfg.stride
    layers: list[nn.Module]
    if cfg.op == "conv":
        layers = list(conv_bn(cfg.cin, cfg.cout, k, s))
        if cfg.se:
            layers.append(SqueezeExcite(cfg.cout, cfg.se_channels))
    elif cfg.op == "sep":
        layers = [*conv_bn(cfg.cin, cfg.cin, k, s, groups=cfg.cin)]
        if cfg.se:
            layers.append(SqueezeExcite(cfg.cin, cfg.se_channels))
        layers += [*conv_bn(cfg.cin, cfg.cout, 1, relu=False)]
    elif cfg.op == "mbconv":
        h = cfg.hidden
        layers = [*conv_bn(cfg.cin, h, 1)] if cfg.expansion > 1 else []
        layers += [*conv_bn(h, h, k, s, groups=h)]
        if cfg.se:
            layers.append(SqueezeExcite(h, cfg.se_channels))
        layers += [*conv_bn(h, cfg.cout, 1, relu=False)]
    elif cfg.op == "pool":
        layers = [nn.MaxPool2d(k, s, padding=k // 2) if cfg.pool == "max"
                  else nn.AvgPool2d(k, s, padding=k // 2, count_include_pad=False)]
        if cfg.cin != cfg.cout:
            layers += [*conv_bn(cfg.cin, cfg.cout, 1)]
    elif cfg.op == "skip":
        if cfg.cin != cfg.cout or s != 1:
            raise ValueError(f"block {cfg.name or 'skip'}: skip is the identity and needs stride 1 and cin == cout, "
                             f"got {cfg.cin}→{cfg.cout} stride {s}")
        return nn.Identity()
    else:
        raise ValueError(f"unknown block op {cfg.op!r}; valid: conv, sep, mbconv, skip, pool")
    return Block(cfg, nn.Sequential(*layers))
