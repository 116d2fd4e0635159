"""Networks built from DARTS cells: the CIFAR and ImageNet classifiers of the papers and a segmentation net.

`Cell` and `NetworkCIFAR` follow quark0/darts cnn/model.py (our own code; same modules, same order,
same parameter count: DARTS_V2 with C=36, 20 cells, 10 classes has 3,349,342 parameters without
the auxiliary head: the published "3.3M"). Differences, all invisible in eval:
- drop-path probability is an attribute (`drop_path_prob`, set on the network, copied to every
  cell) rather than a forward argument, and drop-path only runs when `self.training and p > 0`,
  Python values at trace time, so an eval-mode fx trace contains no drop-path;
- `forward` returns the logits alone, except in training with `auxiliary=True`, where it returns
  (logits, aux_logits) as the reference does. The lowered IR is traced in eval, so it holds no
  auxiliary head (fx keeps only the modules its graph uses);
- the stem takes `in_channels` instead of a fixed 3.

`NetworkImageNet` follows quark0/darts cnn/model.py `NetworkImageNet` (the "mobile setting" network
of the DARTS, P-DARTS and PC-DARTS ImageNet tables), with the same three differences, plus global
average pooling by `AdaptiveAvgPool2d(1)` instead of `AvgPool2d(7)` (no parameters; identical on
the 7×7 map of a 224×224 input, and any other input size works), and out-of-place ReLUs where the
reference's in-place ones modify a tensor that another branch also reads (same values: that branch
starts with a ReLU). Parameter-exact: DARTS_V2 with C=48, 14 cells, 1000 classes has 4,718,752
parameters without the auxiliary head (the published "4.7M"). Its input sides must be multiples of
32: three stride-2 stem convs, then two reductions.

`NetworkSegmentation` (1 logit per pixel for binary masks, e.g. 2×100×100 InSAR coherence + phase; C logits
per pixel for C ≥ 2 classes):
- stem: Conv3×3 stride 1 (in_channels → 3C) + BN, so the cells start at full resolution;
- cells as in NetworkCIFAR, with `reductions` (0, 1 or 2) reduction cells at layers//3 and
  2*layers//3: 100 → 50 → 25. A third reduction would reduce the odd size 25, where
  FactorizedReduce's two branches disagree (13 vs 12), so at most two; input sizes must be
  divisible by 2**reductions;
- decoder: starting from the last cell's output, for each finer level (the 50×50 stage's last cell
  output, then the stem output): bilinear upsample to the skip's size
  (F.interpolate(size=skip.shape[-2:]), which traces and exports), concat the skip, Conv3×3-BN-ReLU
  to a modest width (C·2^level: 2C at 50×50, C at 100×100);
- head: Conv1×1 → num_classes logits at the input resolution (1 for binary masks).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.frontends.darts.genotypes import CellsGenotype, Genotype
from compressor.frontends.darts.ops import OPS, FactorizedReduce, Identity, ReLUConvBN


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples with probability drop_prob and rescale the rest (reference: utils.drop_path)."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


class Cell(nn.Module):
    """`genotype` gives the cell's gene: a Genotype its normal or reduce cell; a CellsGenotype (one
    gene per cell) the gene of cell `index` of a `layers`-cell network.

    Node i sums the outputs of its (op, input) pairs, in pair order: 2 pairs in the DARTS form, as
    many as its node size in a variable-input cell (D-DARTS threshold parsing; 1 pair: the node is
    that op's output). `_ops` holds one op per pair in pair order, so a DARTS-form cell has the
    modules, names and computation it always had."""

    def __init__(self, genotype: Genotype | CellsGenotype, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool, index: int = 0, layers: int = 0) -> None:
        super().__init__()
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_prev_prev, C)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        pairs, concat, sizes = genotype.cell_gene(index, reduction, layers)
        self.reduction = reduction
        self._steps = len(sizes)
        # each node's pairs as a range of `_ops`: node i holds _ops[start:end] for (start, end) = _node_ranges[i]
        ends = [sum(sizes[:i + 1]) for i in range(len(sizes))]
        self._node_ranges = tuple(zip([0] + ends[:-1], ends))
        self._concat = tuple(concat)
        self.multiplier = len(concat)
        self._indices = tuple(index for _, index in pairs)
        self._ops = nn.ModuleList()
        for name, index in pairs:
            stride = 2 if reduction and index < 2 else 1
            self._ops.append(OPS[name](C, stride, True))
        self.drop_prob = 0.0

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        drop = self.training and self.drop_prob > 0.0  # Python values at trace time: eval traces skip it
        for start, end in self._node_ranges:
            node = None
            for k in range(start, end):
                op = self._ops[k]
                h = op(states[self._indices[k]])
                if drop and not isinstance(op, Identity):
                    h = drop_path(h, self.drop_prob)
                node = h if node is None else node + h
            states.append(node)
        return torch.cat([states[i] for i in self._concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """Auxiliary classifier on the 8×8 output of cell 2*layers//3 (32×32 inputs)."""

    def __init__(self, C: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),  # 8×8 → 2×2
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(x.view(x.size(0), -1))


class AuxiliaryHeadImageNet(nn.Module):
    """Auxiliary classifier on the output of cell 2*layers//3 (quark0/darts `AuxiliaryHeadImageNet`).

    Its docstring says 14×14, but that cell is the second reduction, so a 224×224 input gives 7×7
    here: AvgPool2d(5, stride 2) → 2×2, Conv 2×2 → 1×1 (8×8, from 256×256 inputs, works too). As
    in the reference, there is no BatchNorm after the 2×2 conv: it is commented out there "for
    consistency with the experiments in the paper".
    """

    def __init__(self, C: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),  # its input also feeds the next cell (the reference's in-place ReLU
            # changes it there, harmlessly since cells start with a ReLU; we leave it intact)
            nn.AvgPool2d(5, stride=2, padding=0, count_include_pad=False),  # 7×7 → 2×2
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(x.view(x.size(0), -1))


class _DropPathMixin:
    cells: nn.ModuleList

    @property
    def drop_path_prob(self) -> float:
        return self._drop_path_prob

    @drop_path_prob.setter
    def drop_path_prob(self, p: float) -> None:
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"drop_path_prob must be in [0, 1), got {p}")
        self._drop_path_prob = float(p)
        for cell in self.cells:
            cell.drop_prob = float(p)


def _build_cells(genotype: Genotype | CellsGenotype, C: int, layers: int, C_stem: int, reduce_at: tuple[int, ...],
                 reduction_prev: bool = False) -> tuple[nn.ModuleList, list[int]]:
    """The cell stack; returns the cells and each cell's output channel count.

    `reduction_prev` is for the first cell: True when its two inputs differ in resolution by 2
    (the ImageNet stems), so that its preprocess0 is a FactorizedReduce.
    """
    cells = nn.ModuleList()
    out_channels = []
    C_prev_prev, C_prev, C_curr = C_stem, C_stem, C
    for i in range(layers):
        reduction = i in reduce_at
        if reduction:
            C_curr *= 2
        cell = Cell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev, i, layers)
        reduction_prev = reduction
        cells.append(cell)
        C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
        out_channels.append(C_prev)
    return cells, out_channels


class _Classifier(_DropPathMixin, nn.Module):
    """What the CIFAR and ImageNet classifiers share: the checks, and the path from the stems' outputs
    through the cells (with the auxiliary head) to the logits."""

    def __init__(self, layers: int, auxiliary: bool, genotype: Genotype | CellsGenotype) -> None:
        super().__init__()
        genotype.validate()
        if layers < 3:
            raise ValueError(f"layers must be at least 3 (two reduction cells at layers//3 and 2*layers//3), got {layers}")
        self._layers = layers
        self._auxiliary = auxiliary

    def _classify(self, s0: torch.Tensor, s1: torch.Tensor):  # noqa: ANN202
        """The cells from the stems' outputs, then pooling and the classifier; with the auxiliary head in
        training, (logits, auxiliary logits) as the references return them."""
        logits_aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i == 2 * self._layers // 3 and self._auxiliary and self.training:
                logits_aux = self.auxiliary_head(s1)
        out = self.global_pooling(s1)
        logits = self.classifier(out.view(out.size(0), -1))
        if logits_aux is not None:
            return logits, logits_aux
        return logits


class NetworkCIFAR(_Classifier):
    def __init__(self, C: int, num_classes: int, layers: int, auxiliary: bool, genotype: Genotype | CellsGenotype,
                 in_channels: int = 3, drop_path_prob: float = 0.0) -> None:
        super().__init__(layers, auxiliary, genotype)
        C_stem = 3 * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False), nn.BatchNorm2d(C_stem))
        self.cells, out_channels = _build_cells(genotype, C, layers, C_stem, (layers // 3, 2 * layers // 3))
        if auxiliary:
            self.auxiliary_head = AuxiliaryHeadCIFAR(out_channels[2 * layers // 3], num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(out_channels[-1], num_classes)
        self.drop_path_prob = drop_path_prob

    def forward(self, x: torch.Tensor):  # noqa: ANN201 (a tensor, or a pair in auxiliary training)
        s = self.stem(x)
        return self._classify(s, s)


class NetworkImageNet(_Classifier):
    """The DARTS ImageNet classifier (quark0/darts cnn/model.py `NetworkImageNet`).

    stem0: Conv3×3/2 (in_channels → C/2)-BN-ReLU-Conv3×3/2 (→ C)-BN; stem1: ReLU-Conv3×3/2-BN, so
    the cells start at 1/8 of the input resolution with C channels. The first cell takes stem0's
    output (1/4) and stem1's (1/8), hence reduction_prev=True: its preprocess0 is a
    FactorizedReduce(C, C). Reductions at layers//3 and 2*layers//3 as in `NetworkCIFAR`; the
    auxiliary head (training only) reads the output of cell 2*layers//3.
    """

    def __init__(self, C: int, num_classes: int, layers: int, auxiliary: bool, genotype: Genotype | CellsGenotype,
                 in_channels: int = 3, drop_path_prob: float = 0.0) -> None:
        super().__init__(layers, auxiliary, genotype)
        if C < 2 or C % 2:
            raise ValueError(f"the ImageNet network needs an even C ≥ 2 (stem0 has C/2 channels and the first "
                             f"cell's FactorizedReduce needs an even width), got {C}")
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, C // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),  # stem0's output is also the first cell's s0: not modified in place
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.cells, out_channels = _build_cells(genotype, C, layers, C, (layers // 3, 2 * layers // 3),
                                                reduction_prev=True)
        if auxiliary:
            self.auxiliary_head = AuxiliaryHeadImageNet(out_channels[2 * layers // 3], num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)  # the reference's AvgPool2d(7), for any input size
        self.classifier = nn.Linear(out_channels[-1], num_classes)
        self.drop_path_prob = drop_path_prob

    def forward(self, x: torch.Tensor):  # noqa: ANN201 (a tensor, or a pair in auxiliary training)
        s0 = self.stem0(x)
        return self._classify(s0, self.stem1(s0))


class _DecoderBlock(nn.Module):
    def __init__(self, C_in: int, C_out: int) -> None:
        super().__init__()
        self.op = nn.Sequential(nn.Conv2d(C_in, C_out, 3, padding=1, bias=False), nn.BatchNorm2d(C_out),
                                nn.ReLU(inplace=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class NetworkSegmentation(_DropPathMixin, nn.Module):
    def __init__(self, C: int, layers: int, genotype: Genotype | CellsGenotype, in_channels: int = 2, num_classes: int = 1,
                 reductions: int = 2, drop_path_prob: float = 0.0) -> None:
        super().__init__()
        genotype.validate()
        if layers < 3:
            raise ValueError(f"layers must be at least 3, got {layers}")
        if reductions not in (0, 1, 2):
            raise ValueError(f"reductions must be 0, 1 or 2 (a third would reduce an odd size), got {reductions}")
        self._layers = layers
        self.reductions = reductions
        reduce_at = (layers // 3, 2 * layers // 3)[:reductions]
        C_stem = 3 * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False), nn.BatchNorm2d(C_stem))
        self.cells, out_channels = _build_cells(genotype, C, layers, C_stem, reduce_at)
        # Skips: the stem (level 0), then the last cell output of each intermediate level.
        self._skip_cells: tuple[int, ...] = tuple(r - 1 for r in reduce_at[1:])  # cell index per level ≥ 1
        skip_channels = [C_stem] + [out_channels[i] for i in self._skip_cells]
        self.decoder = nn.ModuleList()
        C_dec = out_channels[-1]
        for level in reversed(range(reductions)) if reductions else [0]:
            width = C * 2 ** level
            self.decoder.append(_DecoderBlock(C_dec + skip_channels[level], width))
            C_dec = width
        self.head = nn.Conv2d(C_dec, num_classes, 1)
        self.drop_path_prob = drop_path_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem(x)
        skips = [stem]
        s0 = s1 = stem
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i in self._skip_cells:
                skips.append(s1)
        out = s1
        levels = list(reversed(range(self.reductions))) if self.reductions else [0]
        for block, level in zip(self.decoder, levels):
            skip = skips[level]
            if self.reductions:  # the deeper state is coarser than the skip
                out = F.interpolate(out, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            out = block(torch.cat([out, skip], dim=1))
        return self.head(out)
