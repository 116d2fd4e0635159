"""Zoo frontend: small reference models that the passes can be exercised on.

- `seg-cnn`: a small encoder-decoder for segmentation (InSAR coherence + phase → mask):
  two stride-2 reductions through depthwise-separable blocks (so the depthwise exclusion of
  prune-l1 has something to exclude), a bottleneck, bilinear upsampling with skip connections back
  to the input resolution, and a 1×1 head giving one logit per pixel (binary masks) or, when the
  data's task has C ≥ 2 classes, C logits per pixel (semantic segmentation).
- `cls-cnn`: a small classifier (conv, conv, max-pool, depthwise-separable block, global pool,
  linear) for images such as the 8×8 digits.
- `vit`: a small Vision Transformer (see `compressor.frontends.vision`): patch embedding, cls token,
  learned positional embedding sized from the input, `depth` pre-norm blocks (default 12) of
  `heads`-head attention (default 4) and a 2× MLP. Its embedding dim is 4·`width` (64 at the
  default width 16). `patch_size` defaults to 2 below 32 pixels a side and 4 from 32 up (the largest
  of those, then 1, that divides both H and W).
- `resnet`: a CIFAR-style ResNet (He et al. 2016): stages of `depth` BasicBlocks (default 3, i.e.
  ResNet-20) with widths `width`, 2·`width`, 4·`width`, 1×1 conv projection shortcuts. `kernels`
  sets each block's conv1 kernel (seed 003's search space: 3, 5 or 7 for each of the 9 blocks).
- `mobilenet-v2`: MobileNetV2 (Sandler et al. 2018) with channels scaled by `width`/32 (32 gives
  the paper's counts); stride-2 layers run at stride 1 once the feature map is below 8 pixels.

Models take their input channels, size and class count from the data (its whole task: ignore_index and
class names included), their width from `width`.
Options that only some models take (`depth`, `heads`, `patch_size`, `kernels`) are rejected for the others.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.errors import ConfigError, FrontendError
from compressor.frontend import Frontend, input_spec_from, lower
from compressor.frontends.vision import MobileNetV2, ResNet, VisionTransformer
from compressor.ir import ModelIR
from compressor.options import option, options_dict, parse_options
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
    def __init__(self, in_channels: int = 2, width: int = 16, num_classes: int = 1) -> None:
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
        self.head = nn.Conv2d(w, num_classes, 1)

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
    # (in_channels, num_classes, input (H, W), options) → module
    factory: Callable[[int, int, tuple[int, int], "ZooOptions"], nn.Module]
    help: str


VIT_DIM_PER_WIDTH = 4  # vit's embedding dim is 4·width: 64 at the default width 16


def vit_patch_size(options: "ZooOptions", input_hw: tuple[int, int]) -> int:
    """The patch size vit uses on an input of size input_hw (FrontendError if the set one does not fit)."""
    h, w = input_hw
    if options.patch_size is None:
        first = 4 if min(h, w) >= 32 else 2
        return next(p for p in (first, 2, 1) if p <= first and h % p == 0 and w % p == 0)
    p = options.patch_size
    if h % p or w % p:
        valid = [d for d in range(1, min(h, w) + 1) if h % d == 0 and w % d == 0]
        raise FrontendError(f"zoo model 'vit': patch_size {p} does not divide the input size {h}×{w}; "
                            f"valid: {', '.join(map(str, valid))}; set model.patch_size to one of them")
    return p


def _vit(c: int, n: int, hw: tuple[int, int], o: "ZooOptions") -> nn.Module:
    return VisionTransformer(c, n, hw, dim=VIT_DIM_PER_WIDTH * o.width, depth=o.depth or 12,
                             num_heads=o.heads or 4, patch_size=vit_patch_size(o, hw))


ZOO: dict[str, ZooModel] = {
    "seg-cnn": ZooModel("segmentation", lambda c, n, hw, o: SegCNN(c, o.width, n),
                        "encoder-decoder with depthwise-separable reductions and skips; 1 logit per pixel "
                        "(binary) or one per class"),
    "cls-cnn": ZooModel("classification", lambda c, n, hw, o: ClsCNN(c, n, o.width),
                        "conv-conv-pool-separable-pool-linear classifier"),
    "vit": ZooModel("classification", _vit,
                    "small Vision Transformer (dim 4·width, depth 12, 4 heads, patch 2 / 4 from 32 px)"),
    "resnet": ZooModel("classification", lambda c, n, hw, o: ResNet(c, n, o.width, o.depth or 3, o.kernels),
                       "CIFAR ResNet-6·depth+2 (ResNet-20 at depth 3), widths width/2·width/4·width"),
    "mobilenet-v2": ZooModel("classification", lambda c, n, hw, o: MobileNetV2(c, n, hw, o.width),
                             "MobileNetV2 with channels scaled by width/32, strides kept on maps of 8 px and up"),
}

# Options that only some models take: setting one for another model is an error.
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "depth": ("vit", "resnet"),
    "heads": ("vit",),
    "patch_size": ("vit",),
    "kernels": ("resnet",),
}


@dataclass(frozen=True)
class ZooOptions:
    model: str = option("seg-cnn", "zoo model name: " + ", ".join(ZOO))
    width: int = option(16, "base channel width (vit: embedding dim 4·width)", min=1, max=1024)
    seed: int = option(0, "weight initialization seed", min=0)
    depth: int | None = option(None, "vit: transformer blocks (default 12); resnet: BasicBlocks per stage "
                               "(default 3 = ResNet-20)", min=1)
    heads: int | None = option(None, "vit: attention heads (default 4); must divide 4·width", min=1)
    patch_size: int | None = option(None, "vit: patch side in pixels (default 2, or 4 for inputs of 32 px "
                                    "and up); must divide the input's H and W", min=1)
    kernels: tuple[int, ...] | None = option(None, "resnet: conv1 kernel of each BasicBlock, 3·depth odd sizes "
                                             "(seed 003's space: each 3, 5 or 7); default all 3", min=1, max=15)

    def __post_init__(self) -> None:
        if self.model not in ZOO:
            from compressor.options import unknown_key_message

            raise ValueError(unknown_key_message(self.model, list(ZOO), "zoo model"))
        for name, models in MODEL_OPTIONS.items():
            if getattr(self, name) is not None and self.model not in models:
                raise ValueError(f"option '{name}' applies only to zoo model(s) {', '.join(models)}, not to "
                                 f"'{self.model}'; remove it")
        if self.kernels is not None:
            blocks = 3 * (self.depth or 3)
            if len(self.kernels) != blocks or any(k % 2 == 0 for k in self.kernels):
                raise ValueError(f"kernels {list(self.kernels)}: resnet needs {blocks} odd sizes (3 stages × depth "
                                 f"{self.depth or 3}), one per BasicBlock, e.g. [{', '.join(['3'] * blocks)}]")
        if self.model == "vit" and self.heads is not None:
            dim = VIT_DIM_PER_WIDTH * self.width
            if dim % self.heads:
                valid = [d for d in range(1, dim + 1) if dim % d == 0]
                raise ValueError(f"heads {self.heads} does not divide vit's embedding dim {dim} (4·width); "
                                 f"valid: {', '.join(map(str, valid))}; change heads or width")


@register_frontend("zoo")
class Zoo(Frontend):
    Options = ZooOptions
    label_keys = ("model",)
    offers_students = True

    @classmethod
    def student(cls, teacher: ModelIR, width: int | None = None, depth: int | None = None) -> ModelIR:
        """The teacher's zoo model at `width` and `depth` (None: the teacher's; depth only for the models that
        take it), freshly initialized, with the teacher's inputs and task."""
        recipe = dict(teacher.recipe.frontend) if teacher.recipe is not None else {}
        raw = dict(recipe.get("options", {}))
        if width is not None:
            raw["width"] = width
        if depth is not None:
            if raw.get("model") not in MODEL_OPTIONS["depth"]:
                raise FrontendError(f"zoo model '{raw.get('model')}' has no depth; leave student_layers unset "
                                    f"(models with a depth: {', '.join(MODEL_OPTIONS['depth'])})")
            raw["depth"], raw["kernels"] = depth, None  # per-block kernels belong to the teacher's depth
        try:
            opts = parse_options(ZooOptions, raw, "distill student (zoo)")
        except ConfigError as exc:
            raise FrontendError(str(exc)) from None
        recipe["options"] = options_dict(opts)
        meta = {"frontend": "zoo", "model": opts.model, "width": opts.width}
        meta.update({k: getattr(opts, k) for k in MODEL_OPTIONS if getattr(opts, k) is not None})
        return lower(cls.rebuild(recipe), list(teacher.inputs), teacher.task, meta=meta, recipe=recipe)

    def build(self, data: "DataBundle | None", ctx: "PassContext") -> ModelIR:
        entry = ZOO[self.options.model]
        if data is None:
            raise FrontendError("the zoo frontend takes its input shape and classes from the data: add a data: block")
        if data.task.kind != entry.task:
            raise FrontendError(f"zoo model '{self.options.model}' is a {entry.task} model but dataset "
                                f"'{data.name}' is a {data.task.kind} task; pick a "
                                f"{data.task.kind} model: " + ", ".join(k for k, v in ZOO.items() if v.task == data.task.kind))
        input_hw = (int(data.input_shape[-2]), int(data.input_shape[-1]))
        recipe = {"name": "zoo", "options": options_dict(self.options), "in_channels": int(data.input_shape[0]),
                  "num_classes": data.task.num_classes, "input_hw": list(input_hw)}
        model = self.rebuild(recipe)
        spec = input_spec_from(data.input_shape, data.input_range)
        meta = {"frontend": "zoo", "model": self.options.model, "width": self.options.width}
        meta.update({k: getattr(self.options, k) for k in MODEL_OPTIONS if getattr(self.options, k) is not None})
        return lower(model, [spec], data.task, meta=meta, recipe=recipe)

    @classmethod
    def rebuild(cls, spec: dict) -> nn.Module:
        opts = parse_options(ZooOptions, spec["options"], "recipe zoo")
        torch.manual_seed(opts.seed)
        return ZOO[opts.model].factory(int(spec["in_channels"]), int(spec["num_classes"]),
                                       tuple(spec["input_hw"]), opts)
