"""Models "brought by a user", for the torch frontend (`factory: user_models:<name>`, `search_path: samples`).

Nothing here is written for compressor: Hugging Face `transformers` models behind the usual three-line
wrapper that returns the logits tensor (the hf frontend's `LogitsOnly`, which a pretrained directory gets
without any factory: `model: {frontend: hf, path: DIR}`), a `torch.nn.TransformerEncoder` classifier, and
plain CNNs with residual blocks (in an `nn.Sequential`, or as named attributes `block1`, `block2`, ...)
and a depthwise conv. Random init from small configs (no downloads).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.frontends.hf import LogitsOnly


def hf_vit(image_size: int = 8, channels: int = 1, num_labels: int = 10, layers: int = 12, hidden: int = 64,
           heads: int = 4, patch: int = 2) -> nn.Module:
    """Hugging Face ViTForImageClassification (digits: 1×8×8, 10 classes)."""
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(image_size=image_size, patch_size=patch, num_channels=channels, hidden_size=hidden,
                    num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=2 * hidden,
                    num_labels=num_labels, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return LogitsOnly(ViTForImageClassification(cfg))


def hf_mobilevit(channels: int = 3, num_labels: int = 10, image_size: int = 32) -> nn.Module:
    """Hugging Face MobileViTForImageClassification, a small config."""
    from transformers import MobileViTConfig, MobileViTForImageClassification

    cfg = MobileViTConfig(image_size=image_size, num_channels=channels, num_labels=num_labels,
                          hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 48],
                          num_attention_heads=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                          classifier_dropout_prob=0.0)
    return LogitsOnly(MobileViTForImageClassification(cfg))


def hf_segformer(channels: int = 2, hidden: tuple[int, ...] = (16, 32), heads: tuple[int, ...] = (2, 2),
                 depths: tuple[int, ...] = (2, 2)) -> nn.Module:
    """Hugging Face SegformerForSemanticSegmentation with 1 output class (InSAR: coherence + phase → mask),
    logits upsampled to the input size."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    n = len(hidden)
    cfg = SegformerConfig(num_channels=channels, num_labels=1, num_encoder_blocks=n, depths=list(depths),
                          hidden_sizes=list(hidden), num_attention_heads=list(heads), sr_ratios=[2, 1, 1, 1][:n],
                          patch_sizes=[7, 3, 3, 3][:n], strides=[4, 2, 2, 2][:n], mlp_ratios=[2] * n,
                          decoder_hidden_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                          classifier_dropout_prob=0.0, drop_path_rate=0.0)
    return LogitsOnly(SegformerForSemanticSegmentation(cfg), upsample=True)


def hf_swin(image_size: int = 16, channels: int = 1, num_labels: int = 10, embed_dim: int = 16,
            depths: tuple[int, ...] = (2, 2), heads: tuple[int, ...] = (2, 4), patch: int = 2,
            window: int = 4) -> nn.Module:
    """Hugging Face SwinForImageClassification: shifted-window attention with a relative-position bias
    table per head, stages joined by patch merging (4 neighbours concatenated → LayerNorm(4C) →
    Linear(4C → 2C))."""
    from transformers import SwinConfig, SwinForImageClassification

    cfg = SwinConfig(image_size=image_size, patch_size=patch, num_channels=channels, embed_dim=embed_dim,
                     depths=list(depths), num_heads=list(heads), window_size=window, mlp_ratio=2.0,
                     num_labels=num_labels, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                     drop_path_rate=0.0)
    model = SwinForImageClassification(cfg)
    # transformers initializes the bias tables to zero; a trained one is not, and random values let a test
    # see whether removing a head removes that head's column
    for stage in model.swin.encoder.layers:
        for layer in stage.blocks:
            nn.init.normal_(layer.attention.relative_position_bias.relative_position_bias_table, std=0.5)
    return LogitsOnly(model)


def hf_dinov2(image_size: int = 8, channels: int = 1, num_labels: int = 10, layers: int = 2, hidden: int = 32,
              heads: int = 4, patch: int = 2) -> nn.Module:
    """Hugging Face Dinov2ForImageClassification: layer scale, and a classifier reading the CLS token
    concatenated with the mean of the patch tokens (in_features = 2 · hidden)."""
    from transformers import Dinov2Config, Dinov2ForImageClassification

    cfg = Dinov2Config(image_size=image_size, patch_size=patch, num_channels=channels, hidden_size=hidden,
                       num_hidden_layers=layers, num_attention_heads=heads, mlp_ratio=2, num_labels=num_labels,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, drop_path_rate=0.0)
    return LogitsOnly(Dinov2ForImageClassification(cfg))


class EncoderClassifier(nn.Module):
    """Patches → `nn.TransformerEncoder` (pre-norm) → mean pool → linear."""

    def __init__(self, channels: int = 1, num_classes: int = 10, dim: int = 32, heads: int = 4, layers: int = 3,
                 patch: int = 2, image_size: int = 8, norm_first: bool = True) -> None:
        super().__init__()
        self.embed = nn.Conv2d(channels, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(1, (image_size // patch) ** 2, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.encoder(tokens).mean(1))


def transformer_encoder(channels: int = 1, num_classes: int = 10, norm_first: bool = True) -> nn.Module:
    return EncoderClassifier(channels, num_classes, norm_first=norm_first)


class ResidualBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.pw(F.relu(self.bn1(self.dw(x)))))


class ResidualCNN(nn.Module):
    """A plain CNN: stem, two residual blocks (depthwise + pointwise), head. Classification or 1-logit
    segmentation."""

    def __init__(self, channels: int = 1, num_classes: int = 10, width: int = 16, segmentation: bool = False) -> None:
        super().__init__()
        self.segmentation = segmentation
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(ResidualBlock(width), ResidualBlock(width))
        self.head = nn.Conv2d(width, 1, 1) if segmentation else nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.blocks(self.stem(x))
        return self.head(y) if self.segmentation else self.head(y.mean((2, 3)))


def residual_cnn(channels: int = 1, num_classes: int = 10, width: int = 16, segmentation: bool = False) -> nn.Module:
    return ResidualCNN(channels, num_classes, width, segmentation)


class NamedBlockCNN(nn.Module):
    """A CNN whose residual blocks are attributes `block1`, `block2`, `block3` of the model (no
    ModuleList / Sequential), the way many hand-written networks are."""

    def __init__(self, channels: int = 1, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        self.block1 = ResidualBlock(width)
        self.block2 = ResidualBlock(width)
        self.block3 = ResidualBlock(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block3(self.block2(self.block1(self.stem(x))))
        return self.head(y.mean((2, 3)))


def named_block_cnn(channels: int = 1, num_classes: int = 10, width: int = 16) -> nn.Module:
    return NamedBlockCNN(channels, num_classes, width)
