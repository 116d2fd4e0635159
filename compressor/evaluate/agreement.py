"""Agreement of two models' predictions from their logits (numpy only): what a quantized ONNX graph is
verified by, where elementwise tolerances do not apply.

`predictions` turns logits into what the model predicts (binary mask pixels, argmax classes, argmax pixel
classes); `agreement` is the share of predictions two outputs share, near-ties excluded.
"""
from __future__ import annotations

import numpy as np

from compressor.ir import TaskSpec

BOUNDARY = 0.05  # predictions this close to the decision boundary (× the logits' std) may flip under int8


def _class_rows(task: TaskSpec | str, x: np.ndarray) -> np.ndarray:
    """Logits as one row of class scores per prediction: per sample (classification, (N, C)) or per pixel
    (multi-class segmentation, (N, C, H, W) → (N·H·W, C))."""
    if isinstance(task, TaskSpec) and task.multiclass_segmentation:
        return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])
    return x.reshape(x.shape[0], -1)


def predictions(task: TaskSpec | str, logits: np.ndarray) -> np.ndarray:
    """What the model predicts from its logits: the mask (logit > 0) of binary segmentation (a kind string
    "segmentation" means binary), else the argmax class of each sample or, for multi-class segmentation,
    of each pixel."""
    binary = task == "segmentation" if isinstance(task, str) else \
        task.kind == "segmentation" and not task.multiclass_segmentation
    if binary:
        return np.asarray(logits) > 0
    return _class_rows(task, np.asarray(logits)).argmax(axis=1)


def agreement(task: TaskSpec | str, got: np.ndarray, ref: np.ndarray) -> float:
    """Share of predictions (`predictions`: mask pixels, argmax classes or argmax pixel classes) the two outputs
    agree on, among those of `ref` farther than BOUNDARY × std(ref) from the decision boundary (logit 0, or the
    top-2 margin): onnxruntime's int8 kernels round intermediate tensors a step differently from the fake-quant
    model (int32 bias, requantization), which flips near-tie predictions on random inputs without being an
    error. The inputs are unlabelled, so every pixel counts (ignore_index exists only in labels; the metric
    check on the validation split leaves those pixels out)."""
    ref = np.asarray(ref, dtype=np.float64)
    band = BOUNDARY * float(ref.std())
    same = predictions(task, got) == predictions(task, ref)
    if same.shape == ref.shape:  # binary masks: the distance to logit 0
        sure = np.abs(ref) > band
    else:
        top2 = np.sort(_class_rows(task, ref), axis=1)[:, -2:]
        sure = (top2[:, 1] - top2[:, 0]) > band
    return float(same[sure].mean()) if sure.any() else 1.0
