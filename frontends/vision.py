"""Vision reference models for the zoo: a small ViT, a CIFAR-style ResNet and a scaled MobileNetV2.

All three are classifiers built from (in_channels, num_classes) of the data; the zoo frontend
(`compressor.frontends.zoo`) registers them as `vit`, `resnet` and `mobilenet-v2`.

- `VisionTransformer` (Dosovitskiy et al. 2021): patch embedding, a cls token, a learned positional
  embedding sized from the input's H×W, `depth` pre-norm blocks, a final LayerNorm and a linear
  head on the cls token. Its `Attention` has timm's fused-qkv layout (`qkv`, `proj`, `num_heads`,
  `head_dim`), which `compressor.adapters` knows how to gate and prune by head.
- `ResNet` (He et al. 2016, the CIFAR ResNet-6n+2 family): 3×3 stem, three stages of `depth`
  BasicBlocks with widths w, 2w, 4w; stages 2 and 3 start with stride 2 and a 1×1 conv + BN
  projection shortcut. depth=3 is ResNet-20.
- `MobileNetV2` (Sandler et al. 2018): the paper's inverted-residual table with channels scaled by
  width/32 (rounded to multiples of 8), stride-2 layers skipped on small feature maps.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

# --------------------------------------------------------------------------------------------- ViT


class PatchEmbed(nn.Module):
    """Non-overlapping patch_size×patch_size patches → tokens (B, H/p · W/p, dim)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention in timm's fused-qkv layout: `num_heads`, `head_dim`, `qkv`
    (dim → 3·num_heads·head_dim, laid out as (3, num_heads, head_dim)), `proj` (num_heads·head_dim →
    dim), `scale`. forward takes every size from the tensors and attributes, so removing heads (slicing
    qkv/proj and lowering num_heads, `compressor.adapters.attention`) needs no other change.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int | None = None, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim if head_dim is not None else dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * num_heads * self.head_dim, bias=qkv_bias)
        self.proj = nn.Linear(num_heads * self.head_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # not qkv[0], qkv[1], qkv[2]: torch-pruning reads indexing as channel slicing
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: two residual adds (attention, then MLP)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


class VisionTransformer(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, input_hw: tuple[int, int], *, dim: int = 64,
                 depth: int = 12, num_heads: int = 4, patch_size: int = 2, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        h, w = input_hw
        if h % patch_size or w % patch_size:
            raise ValueError(f"patch_size {patch_size} does not divide the input size {h}×{w}")
        if dim % num_heads:
            raise ValueError(f"{num_heads} heads do not divide the embedding dim {dim}")
        self.patch_embed = PatchEmbed(in_channels, dim, patch_size)
        num_patches = (h // patch_size) * (w // patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_vit_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def _init_vit_weights(m: nn.Module) -> None:
    # Xavier-uniform linears, as in the original (JAX) ViT: at these small widths timm's
    # trunc_normal(0.02) is ~4× below Xavier and leaves training on a long plateau.
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# ------------------------------------------------------------------------------------------ ResNet


class BasicBlock(nn.Module):
    """convk×k-BN-ReLU-conv3×3-BN, plus the shortcut, then ReLU (relu2 is the post-add ReLU). conv1's
    kernel k (3 by default; odd, 'same' padding) is seed 003's per-block choice of 3, 5 or 7."""

    def __init__(self, inp: int, oup: int, stride: int = 1, kernel: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inp, oup, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(oup)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(oup, oup, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(oup)
        self.relu2 = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inp != oup:
            self.downsample = nn.Sequential(nn.Conv2d(inp, oup, 1, stride=stride, bias=False), nn.BatchNorm2d(oup))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + identity)


class ResNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int = 16, depth: int = 3,
                 kernels: Sequence[int] | None = None) -> None:
        super().__init__()
        w = width
        k = list(kernels) if kernels is not None else [3] * (3 * depth)
        if len(k) != 3 * depth:
            raise ValueError(f"kernels gives {len(k)} sizes but the ResNet has {3 * depth} blocks (3 stages × depth "
                             f"{depth}); give one odd size per block")
        self.conv1 = nn.Conv2d(in_channels, w, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(w, w, depth, 1, k[:depth])
        self.layer2 = self._stage(w, 2 * w, depth, 2, k[depth:2 * depth])
        self.layer3 = self._stage(2 * w, 4 * w, depth, 2, k[2 * depth:])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _stage(inp: int, oup: int, blocks: int, stride: int, kernels: Sequence[int]) -> nn.Sequential:
        return nn.Sequential(*[BasicBlock(inp if i == 0 else oup, oup, stride if i == 0 else 1, kernels[i])
                               for i in range(blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ------------------------------------------------------------------------------------- MobileNetV2

# (expand ratio t, output channels c at width 32, repeats n, first stride s): Sandler et al., Table 2.
MOBILENET_V2_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's `_make_divisible`: round to the nearest multiple of divisor, never below
    min_value (default: divisor) and never more than 10% below v."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def conv_bn_relu6(inp: int, oup: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, k, stride=stride, padding=k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_relu6(inp, hidden, 1))
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 with channels scaled by width/32 (width=32 gives the paper's channel counts).

    Small inputs: a stride-2 layer (the stem, or the first block of a stage with s=2) keeps its
    stride only while the feature map entering it is at least 8 pixels on its shorter side;
    otherwise it runs at stride 1. 224×224 thus keeps all five reductions (final 7×7), 32×32 keeps
    three (final 4×4) and the 8×8 digits keep one (final 4×4).
    """

    def __init__(self, in_channels: int, num_classes: int, input_hw: tuple[int, int], width: int = 32,
                 dropout: float = 0.2) -> None:
        super().__init__()
        mult = width / 32
        size = min(input_hw)

        def stride_for(s: int) -> int:
            nonlocal size
            if s == 2 and size >= 8:
                size = (size + 1) // 2
                return 2
            return 1

        cin = make_divisible(32 * mult)
        features: list[nn.Module] = [conv_bn_relu6(in_channels, cin, 3, stride_for(2))]
        for t, c, n, s in MOBILENET_V2_SETTING:
            cout = make_divisible(c * mult)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, stride_for(s) if i == 0 else 1, t))
                cin = cout
        self.last_channel = max(64, make_divisible(1280 * mult))
        features.append(conv_bn_relu6(cin, self.last_channel, 1))
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        init_mobilenet_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def init_mobilenet_weights(module: nn.Module) -> None:
    """torchvision's MobileNetV2 initialization: convolutions Kaiming normal (fan-out) with zero bias, BatchNorm
    ones and zeros, Linear N(0, 0.01) with zero bias."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
