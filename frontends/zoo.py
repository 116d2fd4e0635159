"""Zoo frontend: small reference models that the passes can be exercised on.

- `seg-cnn`: a small encoder-decoder for binary segmentation (InSAR coherence + phase → mask):
  two stride-2 reductions through depthwise-separable blocks (so the depthwise exclusion of
  prune-l1 has something to exclude), a bottleneck, bilinear upsampling with skip connections back
  to the input resolution, and a 1×1 head giving one logit per pixel.
- `cls-cnn`: a small classifier (conv, conv, max-pool, depthwise-separable block, global pool,
  linear) for images such as the 8×8 digits.

Models take their input channels and class count from the data, their width from `width`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.errors import FrontendError
from compressor.frontend import Frontend, input_spec_from, lower
from compressor.ir import ModelIR, TaskSpec
from compressor.options import option
from compressor.registry import register_frontend

if TYPE_CHECKING:
    from compressor.context import PassContext
    from compressor.data import DataBundle


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def separable(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Depthwise 3×3 (stride) → pointwise 1×1, each followed by BN + ReLU."""
    return nn.Sequential(conv_bn_relu(cin, cin, 3, stride, groups=cin), conv_bn_relu(cin, cout, 1))


class SegCNN(nn.Module):
    def __init__(self, in_channels: int = 2, width: int = 16) -> None:
        super().__init__()
        w = width
        self.stem = conv_bn_relu(in_channels, w)
        self.enc1 = conv_bn_relu(w, w)
        self.down1 = separable(w, 2 * w, stride=2)
        self.enc2 = conv_bn_relu(2 * w, 2 * w)
        self.down2 = separable(2 * w, 4 * w, stride=2)
        self.bottleneck = nn.Sequential(conv_bn_relu(4 * w, 4 * w), separable(4 * w, 4 * w))
        self.dec2 = conv_bn_relu(4 * w + 2 * w, 2 * w)
        self.dec1 = conv_bn_relu(2 * w + w, w)
        self.head = nn.Conv2d(w, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.enc1(self.stem(x))
        s2 = self.enc2(self.down1(s1))
        b = self.bottleneck(self.down2(s2))
        u2 = F.interpolate(b, size=s2.shape[-2:], mode="bilinear", align_corners=False)
        d2 = self.dec2(torch.cat([u2, s2], dim=1))
        u1 = F.interpolate(d2, size=s1.shape[-2:], mode="bilinear", align_corners=False)
        d1 = self.dec1(torch.cat([u1, s1], dim=1))
        return self.head(d1)


class ClsCNN(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn_relu(in_channels, w),
            conv_bn_relu(w, 2 * w),
            nn.MaxPool2d(2),
            separable(2 * w, 4 * w),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@dataclass(frozen=True)
class ZooModel:
    task: Literal["classification", "segmentation"]
    factory: Callable[[int, int, int], nn.Module]  # (in_channels, num_classes, width)
    help: str


ZOO: dict[str, ZooModel] = {
    "seg-cnn": ZooModel("segmentation", lambda c, n, w: SegCNN(c, w),
                        "encoder-decoder with depthwise-separable reductions and skips; 1 logit per pixel"),
    "cls-cnn": ZooModel("classification", lambda c, n, w: ClsCNN(c, n, w),
                        "conv-conv-pool-separable-pool-linear classifier"),
}


@dataclass(frozen=True)
class ZooOptions:
    model: str = option("seg-cnn", "zoo model name: " + ", ".join(ZOO))
    width: int = option(16, "base channel width", min=1, max=1024)
    seed: int = option(0, "weight initialization seed", min=0)

    def __post_init__(self) -> None:
        if self.model not in ZOO:
            from compressor.options import unknown_key_message

            raise ValueError(unknown_key_message(self.model, list(ZOO), "zoo model"))


@register_frontend("zoo")
class Zoo(Frontend):
    Options = ZooOptions
    label_keys = ("model",)

    def build(self, data: "DataBundle | None", ctx: "PassContext") -> ModelIR:
        entry = ZOO[self.options.model]
        if data is None:
            raise FrontendError("the zoo frontend takes its input shape and classes from the data: add a data: block")
        if data.task.kind != entry.task:
            raise FrontendError(f"zoo model '{self.options.model}' is a {entry.task} model but dataset "
                                f"'{data.name}' is a {data.task.kind} task; pick a "
                                f"{data.task.kind} model: " + ", ".join(k for k, v in ZOO.items() if v.task == data.task.kind))
        torch.manual_seed(self.options.seed)
        model = entry.factory(data.input_shape[0], data.task.num_classes, self.options.width)
        spec = input_spec_from(data.input_shape, data.input_range)
        return lower(model, [spec], TaskSpec(data.task.kind, data.task.num_classes),
                     meta={"frontend": "zoo", "model": self.options.model, "width": self.options.width})
