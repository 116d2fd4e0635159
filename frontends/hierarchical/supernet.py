"""A weight-sharing supernet over an elastic slice of the hierarchical space (OFA-style elastic kernel, expansion,
width and depth), trained once; candidates are scored on inherited weights.

The space (`SupernetSpace`): a fixed stem (`stem_channels`, 3×3, stride `stem_stride`) and a fixed list of
stages, each with its base `channels` and `stride`. Every block is an `mbconv` without SE (the op is fixed: one
set of weights serves every choice). Elastic per stage: the depth (`min_depth`..`max_depth` blocks), the stage
`width_mult` (one of `width_mults`; the stage width is `scaled_channels(channels, width_mult)`, a multiple of 8);
elastic per block: the `kernel` (one of `kernels`, subset of 3/5/7) and the `expansion` (one of `expansions`,
subset of 3/6: expansion 1 has no expand conv in the discrete network, so no weight of the supernet maps onto it
and it is left out). The head is the classifier (no `head_channels`) or, for segmentation, the decoder of
`networks.py` (one 3×3 conv → BN → ReLU per skip, then a 1×1 conv to the logits) at the candidate's widths.
A candidate is a plain `HierGenotype` of this space (`SupernetSpace.contains` checks it), so a winner is a genotype
JSON the hierarchical frontend loads as is.

Weights (`Supernet`): each block holds the largest choice — the stage's widest `cin`/`cout`, hidden width
`max cin × max expansion`, a 7×7 (the largest kernel) depthwise kernel. A block of the candidate uses
- the first `cin`, `hidden` (= cin · expansion) and `cout` channels of every conv and BatchNorm (width and
  expansion: the leading channels are the shared ones, as in OFA);
- the centre k×k of the depthwise kernel (OFA adds a learned kernel transform; we slice plainly);
- the first `depth` blocks of each stage (the deeper blocks are skipped, OFA's elastic depth);
- the first `cout` input features of the classifier;
- segmentation: a decoder step's input is the concatenation [upsampled deeper map (c_dec channels), skip (w
  channels)]; its 3×3 weight holds the widest of both, (w_max, c_dec_max + w_max), and a candidate uses output
  rows `:w` and input columns `:c_dec` and `c_dec_max:c_dec_max + w` (the leading channels of each part); the 1×1
  head uses its first `c_dec` input columns.
A residual is added exactly where the discrete network has one (`blocks.residual_allowed`: stride 1 and
cin == cout), so `Supernet.forward(x, genotype)` and `extract(genotype)` (a standalone `HierarchicalNet` holding
copies of those slices) compute the same function once their BatchNorm statistics agree.

Training (`train_supernet`): uniform single-path sampling (SPOS, Guo et al. 2020): each step draws ONE random
candidate (`SupernetSpace.sample`) and trains only its path. We chose SPOS over the sandwich rule (largest +
smallest + random paths per step, BigNAS/OFA) because a step then costs one forward and backward of one
sub-network, which keeps the search within the small budgets this project runs at, and it is what the DARTS
evolution search (`frontends/darts/evolution.py`) trains its supernet with.

Scoring (`recalibrate_bn`): the BatchNorm statistics a supernet accumulates mix every sampled path, so before a
candidate is scored its statistics are re-estimated: running stats reset, momentum None (a cumulative average),
a few training batches forwarded in train mode without gradient. The search (`hierarchical/evolution.py`)
recalibrates the extracted standalone network, which leaves the supernet untouched.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.frontends.hierarchical.blocks import BlockConfig, block_configs, residual_allowed, scaled_channels
from compressor.frontends.hierarchical.genotypes import BlockGene, HierGenotype, StageGene
from compressor.frontends.hierarchical.networks import HierarchicalNet

if TYPE_CHECKING:
    from compressor.data import DataBundle


@dataclass(frozen=True)
class SupernetSpace:
    """The elastic space (see the module docstring). `stages`: (base channels, stride) per stage."""

    stages: tuple[tuple[int, int], ...] = ((16, 1), (24, 2), (40, 2), (80, 2))
    stem_channels: int = 16
    stem_stride: int = 1
    min_depth: int = 1
    max_depth: int = 3
    kernels: tuple[int, ...] = (3, 5, 7)
    expansions: tuple[int, ...] = (3, 6)
    width_mults: tuple[float, ...] = (0.75, 1.0)

    def __post_init__(self) -> None:
        if not set(self.kernels) <= {3, 5, 7} or not self.kernels:
            raise ValueError(f"supernet kernels must be a non-empty subset of 3, 5, 7, got {list(self.kernels)}")
        if not set(self.expansions) <= {3, 6} or not self.expansions:
            raise ValueError(f"supernet expansions must be a non-empty subset of 3, 6 (expansion 1 has no expand "
                             f"conv to share), got {list(self.expansions)}")
        if not 1 <= self.min_depth <= self.max_depth:
            raise ValueError(f"supernet depths need 1 <= min_depth <= max_depth, got {self.min_depth}, "
                             f"{self.max_depth}")
        if not self.width_mults or any(not 0 < w <= 16 for w in self.width_mults):
            raise ValueError(f"supernet width_mults must be numbers in (0, 16], got {list(self.width_mults)}")
        if not self.stages:
            raise ValueError("a supernet space needs at least one stage")

    def genotype(self, depths: Sequence[int], widths: Sequence[float],
                 blocks: Sequence[Sequence[tuple[int, int]]]) -> HierGenotype:
        """The genotype of per-stage depths, width multipliers and (kernel, expansion) per block."""
        stages = tuple(StageGene(c, tuple(BlockGene("mbconv", kernel=k, expansion=e) for k, e in blocks[s][:depths[s]]),
                                 stride, float(widths[s]))
                       for s, (c, stride) in enumerate(self.stages))
        return HierGenotype(self.stem_channels, stages, stem_kernel=3, stem_stride=self.stem_stride, name="supernet")

    def sample(self, rng: random.Random) -> HierGenotype:
        """A uniformly random candidate: per stage a depth and a width, per block a kernel and an expansion."""
        depths = [rng.randint(self.min_depth, self.max_depth) for _ in self.stages]
        widths = [rng.choice(self.width_mults) for _ in self.stages]
        blocks = [[(rng.choice(self.kernels), rng.choice(self.expansions)) for _ in range(d)] for d in depths]
        return self.genotype(depths, widths, blocks)

    def largest(self) -> HierGenotype:
        d = self.max_depth
        return self.genotype([d] * len(self.stages), [max(self.width_mults)] * len(self.stages),
                             [[(max(self.kernels), max(self.expansions))] * d for _ in self.stages])

    def smallest(self) -> HierGenotype:
        d = self.min_depth
        return self.genotype([d] * len(self.stages), [min(self.width_mults)] * len(self.stages),
                             [[(min(self.kernels), min(self.expansions))] * d for _ in self.stages])

    def contains(self, g: HierGenotype) -> str | None:
        """None if `g` is a candidate of this space, else the first reason it is not."""
        if (g.stem_channels, g.stem_kernel, g.stem_stride) != (self.stem_channels, 3, self.stem_stride):
            return "its stem differs from the supernet's"
        if g.width_mult != 1.0 or g.depth_mult != 1.0 or g.head_channels:
            return "it has a global width_mult/depth_mult or head_channels"
        if len(g.stages) != len(self.stages):
            return f"it has {len(g.stages)} stages, the supernet {len(self.stages)}"
        for s, (stage, (c, stride)) in enumerate(zip(g.stages, self.stages)):
            if (stage.channels, stage.stride) != (c, stride) or stage.width_mult not in self.width_mults:
                return f"stage {s}'s channels, stride or width_mult is outside the supernet's"
            if not self.min_depth <= stage.depth <= self.max_depth:
                return f"stage {s} has {stage.depth} blocks, outside {self.min_depth}..{self.max_depth}"
            for b in stage.blocks:
                if b.op != "mbconv" or b.se or b.kernel not in self.kernels or b.expansion not in self.expansions:
                    return f"stage {s} has a block outside mbconv × kernels {list(self.kernels)} × expansions " \
                           f"{list(self.expansions)} without SE"
        return None


# ---- elastic layers --------------------------------------------------------------------------------

class ElasticConvBN(nn.Module):
    """A conv (groups 1 or depthwise) + BN of the largest size, run on its leading channels and centre kernel."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, depthwise: bool = False) -> None:
        super().__init__()
        self.depthwise = depthwise
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=cout if depthwise else 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def weight(self, cin: int, cout: int, kernel: int | None = None) -> torch.Tensor:
        w = self.conv.weight[:cout] if self.depthwise else self.conv.weight[:cout, :cin]
        full = self.conv.weight.shape[-1]
        k = full if kernel is None else kernel
        lo = (full - k) // 2
        # contiguous: torch's CPU convolution backward takes a path ~100× slower for a strided weight view
        return w[:, :, lo:lo + k, lo:lo + k].contiguous()

    def forward(self, x: torch.Tensor, cout: int, kernel: int | None = None, stride: int = 1) -> torch.Tensor:
        cin = x.shape[1]
        w = self.weight(cin, cout, kernel)
        x = F.conv2d(x, w, None, stride, w.shape[-1] // 2, 1, cout if self.depthwise else 1)
        return sliced_bn(self.bn, x, cout)


def sliced_bn(bn: nn.BatchNorm2d, x: torch.Tensor, c: int) -> torch.Tensor:
    """`bn` on its first `c` channels (the running statistics of those channels are updated in train mode)."""
    factor = 0.0
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
                        bn.training or not bn.track_running_stats, factor, bn.eps)


class ElasticMBConv(nn.Module):
    """An mbconv of the largest choice: expand 1×1 (max_cin → max_cin·max_e), depthwise max-kernel, project 1×1."""

    def __init__(self, max_cin: int, max_cout: int, max_expansion: int, max_kernel: int, stride: int) -> None:
        super().__init__()
        hidden = max_cin * max_expansion
        self.stride = stride
        self.expand = ElasticConvBN(max_cin, hidden, 1)
        self.depthwise = ElasticConvBN(hidden, hidden, max_kernel, depthwise=True)
        self.project = ElasticConvBN(hidden, max_cout, 1)

    def forward(self, x: torch.Tensor, cfg: BlockConfig) -> torch.Tensor:
        h = cfg.cin * cfg.expansion
        out = F.relu(self.expand(x, h))
        out = F.relu(self.depthwise(out, h, cfg.kernel, self.stride))
        out = self.project(out, cfg.cout)
        return x + out if residual_allowed("mbconv", cfg.cin, cfg.cout, cfg.stride) else out


class ElasticDecoderStep(nn.Module):
    """A decoder step (3×3 conv → BN → ReLU on [deeper map, skip]) of the widest choice; see the module docstring."""

    def __init__(self, max_deeper: int, max_skip: int) -> None:
        super().__init__()
        self.max_deeper = max_deeper
        self.conv = nn.Conv2d(max_deeper + max_skip, max_skip, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(max_skip)

    def weight(self, deeper: int, skip: int) -> torch.Tensor:
        w = self.conv.weight[:skip]
        return torch.cat([w[:, :deeper], w[:, self.max_deeper:self.max_deeper + skip]], dim=1)

    def forward(self, out: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(out, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = F.conv2d(torch.cat([out, skip], dim=1), self.weight(out.shape[1], skip.shape[1]), None, 1, 1)
        return F.relu(sliced_bn(self.bn, x, skip.shape[1]))


class Supernet(nn.Module):
    """The weights of every candidate of `space` (see the module docstring); `forward(x, genotype)` runs one."""

    def __init__(self, space: SupernetSpace, in_channels: int, num_classes: int, segmentation: bool = False) -> None:
        super().__init__()
        self.space, self.in_channels, self.num_classes = space, in_channels, num_classes
        self.segmentation = segmentation
        wmax = max(space.width_mults)
        cin = scaled_channels(space.stem_channels)
        widths = [cin]  # the widest output of the stem, then of each stage
        self.stem = ElasticConvBN(in_channels, cin, 3)
        self.stages = nn.ModuleList()
        for c, stride in space.stages:
            cout = scaled_channels(c, wmax)
            blocks = nn.ModuleList()
            for i in range(space.max_depth):
                blocks.append(ElasticMBConv(cin if i == 0 else cout, cout, max(space.expansions),
                                            max(space.kernels), stride if i == 0 else 1))
            self.stages.append(blocks)
            cin = cout
            widths.append(cout)
        if segmentation:
            # as HierarchicalNet: the map before each stride-2 stage is a skip; the decoder runs deepest first
            self.skip_at = tuple(i for i, (_, stride) in enumerate(space.stages) if stride == 2)
            self.decoder = nn.ModuleList()
            deeper = widths[-1]
            for i in reversed(self.skip_at):
                self.decoder.append(ElasticDecoderStep(deeper, widths[i]))
                deeper = widths[i]
            self.head = nn.Conv2d(deeper, num_classes, 1)
        else:
            self.classifier = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def configs(self, genotype: HierGenotype) -> list[BlockConfig]:
        why = self.space.contains(genotype)
        if why is not None:
            raise ValueError(f"genotype is not a candidate of this supernet: {why}")
        return block_configs(genotype, (self.in_channels,))

    def forward(self, x: torch.Tensor, genotype: HierGenotype) -> torch.Tensor:
        configs = self.configs(genotype)
        out = F.relu(self.stem(x, configs[0].cout, stride=self.space.stem_stride))
        skips: list[torch.Tensor] = []
        stage = -1
        for cfg in configs[1:]:
            _, s, i = cfg.name.split(".")
            if self.segmentation and int(s) != stage:
                stage = int(s)
                if stage in self.skip_at:
                    skips.append(out)
            out = self.stages[int(s)][int(i)](out, cfg)
        if self.segmentation:
            for step, skip in zip(self.decoder, reversed(skips)):
                out = step(out, skip)
            if tuple(out.shape[-2:]) != tuple(x.shape[-2:]):  # a stride-2 stem
                out = F.interpolate(out, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
            return F.conv2d(out, self.head.weight[:, :out.shape[1]], self.head.bias)
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return F.linear(out, self.classifier.weight[:, :out.shape[1]], self.classifier.bias)

    @torch.no_grad()
    def extract(self, genotype: HierGenotype, input_hw: tuple[int, int] | None = None) -> HierarchicalNet:
        """A standalone `HierarchicalNet` of `genotype` holding copies of its slices of the supernet's weights and
        BatchNorm buffers (recalibrate it before scoring: see `recalibrate_bn`)."""
        configs = self.configs(genotype)
        net = HierarchicalNet(genotype, self.in_channels, self.num_classes, self.segmentation, input_hw=input_hw)
        _copy_conv_bn(self.stem, net.stem.body[0], net.stem.body[1], configs[0].cin, configs[0].cout, 3)
        for cfg in configs[1:]:
            _, s, i = cfg.name.split(".")
            src, body = self.stages[int(s)][int(i)], net.stages[int(s)][int(i)].body
            h = cfg.cin * cfg.expansion
            _copy_conv_bn(src.expand, body[0], body[1], cfg.cin, h)
            _copy_conv_bn(src.depthwise, body[3], body[4], h, h, cfg.kernel)
            _copy_conv_bn(src.project, body[6], body[7], h, cfg.cout)
        if self.segmentation:
            for src, dst in zip(self.decoder, net.decoder):
                skip, deeper = dst[0].out_channels, dst[0].in_channels - dst[0].out_channels
                dst[0].weight.copy_(src.weight(deeper, skip))
                _copy_bn(src.bn, dst[1], skip)
            c = net.head.in_channels
            net.head.weight.copy_(self.head.weight[:, :c])
            net.head.bias.copy_(self.head.bias)
            return net
        c = net.classifier.in_features
        net.classifier.weight.copy_(self.classifier.weight[:, :c])
        net.classifier.bias.copy_(self.classifier.bias)
        return net


def _copy_conv_bn(src: ElasticConvBN, conv: nn.Conv2d, bn: nn.BatchNorm2d, cin: int, cout: int,
                  kernel: int | None = None) -> None:
    conv.weight.copy_(src.weight(cin, cout, kernel))
    _copy_bn(src.bn, bn, cout)


def _copy_bn(src: nn.BatchNorm2d, bn: nn.BatchNorm2d, c: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(bn, name).copy_(getattr(src, name)[:c])
    bn.num_batches_tracked.copy_(src.num_batches_tracked)


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor], genotype: HierGenotype | None = None) -> None:
    """Re-estimate every BatchNorm's statistics: reset, momentum None (a cumulative average), forward `batches` in
    train mode without gradient (`model(x, genotype)` for a `Supernet`), then eval mode. Weights never change."""
    for m in batch_norms(model):
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for x in batches:
        model(x) if genotype is None else model(x, genotype)
    model.eval()


def train_supernet(net: Supernet, data: "DataBundle", epochs: int, batch_size: int, lr: float, seed: int,
                   device: str = "cpu", max_steps: int | None = None, progress: bool = False) -> dict[str, Any]:
    """SPOS training (see the module docstring): SGD (momentum 0.9, weight decay 4e-5, cosine lr over the steps),
    one uniformly sampled candidate per step, the task's training loss (`train.task_loss`: cross-entropy, or BCE +
    Dice for binary masks), in channels-last memory format where that pays (`train.channels_last_pays`). Returns
    {"steps", "loss"} (the last epoch's mean)."""
    from compressor.train import channels_last_pays, task_loss

    layout = torch.channels_last if channels_last_pays(net, device) else torch.contiguous_format
    net.to(memory_format=layout)
    try:
        return _train(net, data, epochs, batch_size, lr, seed, device, max_steps, progress, task_loss(data.task))
    finally:
        net.to(memory_format=torch.contiguous_format)


def _train(net: Supernet, data: "DataBundle", epochs: int, batch_size: int, lr: float, seed: int, device: str,
           max_steps: int | None, progress: bool, loss_fn: Any) -> dict[str, Any]:
    from compressor.data import make_loader
    from compressor.progress import progress_bar

    rng = random.Random(seed)
    torch.manual_seed(seed)
    net.to(device).train()
    loader = make_loader(data.train, batch_size, shuffle=True, seed=seed, drop_last=False)
    total = epochs * len(loader) if max_steps is None else min(max_steps, epochs * len(loader))
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=4e-5, nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / max(total, 1))))
    step, losses = 0, []
    bar = progress_bar(total=total, desc="supernet", disable=not progress, leave=False)
    for _ in range(epochs):
        losses = []
        for x, y in loader:
            if step >= total:
                break
            genotype = net.space.sample(rng)
            x = x.to(device)
            loss = loss_fn(net(x, genotype), y.to(device), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    bar.close()
    return {"steps": step, "loss": sum(losses) / len(losses) if losses else float("nan")}

