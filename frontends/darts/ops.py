"""The DARTS search-space primitives (after quark0/darts cnn/operations.py; our own code).

Every op maps (N, C, H, W) to (N, C, H/stride, W/stride). Faithful to the reference:
- pools: 3×3, padding 1; average pooling with count_include_pad=False.
- SepConv(k): [ReLU → depthwise k×k (stride) → 1×1 → BN] then [ReLU → depthwise k×k → 1×1 → BN].
- DilConv(k): ReLU → depthwise k×k dilation 2 (padding 2 for 3×3, 4 for 5×5) → 1×1 → BN.
- skip_connect: Identity at stride 1, FactorizedReduce at stride 2.
- none: Zero (subsample at stride 2, then multiply by 0).

FactorizedReduce concatenates two 1×1 stride-2 convs, one on x and one on x[:, :, 1:, 1:]. On an odd
spatial size the two branches differ by one pixel (e.g. 25 → 13 and 12) and the concat fails, exactly
as in the reference. The networks therefore only reduce even sizes: classification 32 → 16 → 8,
segmentation 100 → 50 → 25 (at most two reductions; the frontend checks divisibility).

Everything here is torch.fx-traceable and ONNX-exportable: the slices are plain getitem nodes and
Zero is a `mul(0.)`.

Search speed (CPU): oneDNN's depthwise and 1×1 convolutions on few channels run 1.5-3× faster,
forward and backward, on channels-last tensors, while its batch norm on 4-8 channels runs up to 7×
slower there (benchmarks/search_step_vs_official.py; microbenchmarks in BENCHMARKS.md). SepConv and
DilConv therefore take `channels_last_convs`: when set (the search supernet sets it) and the input
is on the CPU, each depthwise → 1×1 pair runs channels-last between two layout changes whose
backward changes the gradient's layout back, and ReLU and BN stay NCHW. The supernet's stride-1 3×3
max pools, 1.5-2× faster channels-last, run inside `ChannelsLastCPU`. The values are the same
convolutions' (oneDNN's summation order may differ in the last bits); the module structure and
state-dict keys do not change, and the flag is off in the networks that are trained and exported.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable

import torch
import torch.nn as nn

PRIMITIVES: list[str] = [
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
]


_CHANNELS_LAST_ON_CPU = True


@contextmanager
def reference_ops() -> Iterator[None]:
    """Run the supernet's ops as the reference implementations do: NCHW, each op with its own ReLU
    (see `fast_cpu_ops`). Tests compare the two; the golden search results were written this way."""
    global _CHANNELS_LAST_ON_CPU
    before, _CHANNELS_LAST_ON_CPU = _CHANNELS_LAST_ON_CPU, False
    try:
        yield
    finally:
        _CHANNELS_LAST_ON_CPU = before


def fast_cpu_ops() -> bool:
    """Whether the search supernet may run its CPU fast paths: channels-last convolution pairs and
    max pools (see the module docstring), and one ReLU per edge shared by its separable and dilated
    convolutions. Both compute the same function; the float rounding differs in the last bits."""
    return _CHANNELS_LAST_ON_CPU


def _channels_last(x: torch.Tensor) -> bool:
    return _CHANNELS_LAST_ON_CPU and x.device.type == "cpu"


class _Layout(torch.autograd.Function):
    """`x.contiguous(memory_format=forward)` whose backward returns the gradient in `backward`'s
    layout (a plain `.contiguous()` passes the gradient through in the new layout, which sends
    mixed-layout tensors into the ReLU and add backward kernels: slow paths)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, forward: torch.memory_format,  # type: ignore[override]
                backward: torch.memory_format) -> torch.Tensor:
        ctx.layouts = (forward, backward)
        return x.contiguous(memory_format=forward)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        forward, backward = ctx.layouts
        return _Layout.apply(grad, backward, forward), None, None


def conv_pair_channels_last(x: torch.Tensor, depthwise: nn.Conv2d, pointwise: nn.Conv2d) -> torch.Tensor:
    """pointwise(depthwise(x)) computed on a channels-last copy of x; the result is NCHW."""
    h = _Layout.apply(x, torch.channels_last, torch.contiguous_format)
    return _Layout.apply(pointwise(depthwise(h)), torch.contiguous_format, torch.channels_last)


class ChannelsLastCPU(nn.Module):
    """Runs `module` on a channels-last copy of a CPU input and returns NCHW (see the module
    docstring); on other devices (or in `reference_ops()`) it is `module` itself. Holds no parameters of its own."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _channels_last(x):
            return self.module(x)
        h = _Layout.apply(x, torch.channels_last, torch.contiguous_format)
        return _Layout.apply(self.module(h), torch.contiguous_format, torch.channels_last)


class ReLUConvBN(nn.Module):
    """ReLU → Conv k×k (no bias) → BN."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int,
                 affine: bool = True) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """ReLU → depthwise k×k dilated conv → pointwise 1×1 → BN."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 affine: bool = True) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation,
                      groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )
        self.channels_last_convs = False  # see the module docstring

    def forward(self, x: torch.Tensor, activated: bool = False) -> torch.Tensor:
        """`activated`: x is already ReLU(x) (a supernet edge computes it once for all its convs)."""
        op = self.op
        h = x if activated else op[0](x)
        if self.channels_last_convs and _channels_last(x):
            return op[3](conv_pair_channels_last(h, op[1], op[2]))
        return op[3](op[2](op[1](h)))


class SepConv(nn.Module):
    """Two stacked (ReLU → depthwise k×k → 1×1 → BN) blocks; only the first one strides."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int,
                 affine: bool = True) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, padding=0, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )
        self.channels_last_convs = False  # see the module docstring

    def forward(self, x: torch.Tensor, activated: bool = False) -> torch.Tensor:
        """`activated`: x is already ReLU(x) (a supernet edge computes it once for all its convs)."""
        op = self.op
        h = x if activated else op[0](x)
        if self.channels_last_convs and _channels_last(x):
            h = op[3](conv_pair_channels_last(h, op[1], op[2]))
            return op[7](conv_pair_channels_last(op[4](h), op[5], op[6]))
        h = op[3](op[2](op[1](h)))
        return op[7](op[6](op[5](op[4](h))))


class Identity(nn.Module):
    """skip_connect at stride 1 (its own class so that drop-path can recognise and spare it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """The `none` op: zeros of the output shape (subsampled at stride 2)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:  # a Python attribute: resolved at trace time
            return x.mul(0.0)
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve H and W: ReLU, two 1×1 stride-2 convs of C_out/2 (on x and on x shifted by one pixel),
    concatenated, then BN. Needs an even C_out and even H, W (see the module docstring)."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True) -> None:
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        out = torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1)
        return self.bn(out)


OPS: dict[str, Callable[[int, int, bool], nn.Module]] = {
    "none": lambda C, stride, affine: Zero(stride),
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "skip_connect": lambda C, stride, affine: Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine),
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine=affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine=affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine=affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine=affine),
}
assert list(OPS) == PRIMITIVES
