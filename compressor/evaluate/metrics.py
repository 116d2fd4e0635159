"""Task metrics over a whole split, in the definitions the papers use.

Segmentation (one logit per pixel, positive class = "moving ground"): the prediction is
`logit > 0` (sigmoid > 0.5). TP/FP/FN/TN are summed over every pixel of the split and the scores
are computed once from those totals, not averaged over images or batches:

    accuracy  = (TP + TN) / all          precision = TP / (TP + FP)
    recall    = TP / (TP + FN)           f1        = 2PR / (P + R)
    iou       = TP / (TP + FP + FN)      (IoU of the positive class)

0/0 convention: a ratio whose denominator is 0 is 1.0 when the split has no positive pixel and
none was predicted (an empty mask predicted as empty is perfect), and 0.0 otherwise. So:
nothing predicted but positives exist -> precision 0.0 (recall, f1 and iou are 0.0 by the formula);
no positives but some predicted -> recall 0.0 (precision, f1, iou are 0.0 by the formula);
no positives and none predicted -> precision = recall = f1 = iou = 1.0. f1 with P + R = 0 is 0.0.

Classification (logits (N, C), integer targets (N,)): accuracy is top-1 over all samples
(micro); precision, recall and f1 are macro averages from torchmetrics (average="macro"), which
leave out of the mean any class that neither occurs in the targets nor is predicted, and count a
class's 0/0 precision or recall as 0.0. With more than 5 classes, `top5` is the share of samples
whose class is among the 5 highest logits (micro).

Multi-class semantic segmentation (`TaskSpec.multiclass_segmentation`: logits (N, C, H, W), int64
class maps (N, H, W)): the prediction is the argmax over the class dim. Pixels whose label is
`ignore_index` are left out of every count (they are neither right nor wrong, whatever is predicted
there). Per class c, summed over every labelled pixel of the split (torchmetrics'
MulticlassJaccardIndex(average=None), i.e. mmseg's `intersect_and_union` totals):

    iou_c          = TP_c / (TP_c + FP_c + FN_c)
    miou           = mean of iou_c over the classes that occur in the labels or in the predictions
                     (TP_c + FP_c + FN_c > 0), the ignore_index class excluded
    pixel_accuracy = correct labelled pixels / labelled pixels   (MulticlassAccuracy(average="micro"))

A class that neither occurs nor is predicted has no IoU (0/0): it is left out of the mean, as
torchmetrics' macro average and mmseg's nanmean do, and its `per_class_iou` entry is None (NaN in
mmseg). `per_class_iou` maps each class name (`TaskSpec.class_names`, else the index) to its IoU.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryStatScores,
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassJaccardIndex,
    MulticlassPrecision,
    MulticlassRecall,
)

from compressor.errors import ConfigError, DataError, ExportError
from compressor.ir import TaskSpec
from compressor.train import class_map

__all__ = ["TaskMetrics", "evaluate_module", "evaluate_onnx", "main_metric", "per_class_names", "segmentation_scores",
           "split_batch"]

TOP_K = 5  # classification reports top-5 accuracy when it has more classes than this


def segmentation_scores(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """The segmentation scores from split-wide pixel counts, with the 0/0 convention above."""
    total = tp + fp + fn + tn
    if total == 0:
        raise DataError("no pixels were evaluated: the split is empty; check the data loader")
    empty_and_perfect = (tp + fn == 0) and (fp == 0)

    def ratio(num: int, den: int) -> float:
        if den == 0:
            return 1.0 if empty_and_perfect else 0.0
        return num / den

    precision = ratio(tp, tp + fp)
    recall = ratio(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "accuracy": (tp + tn) / total,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "iou": ratio(tp, tp + fp + fn),
    }


def main_metric(task: TaskSpec | str) -> str:
    """The task metric a budget (a quantization's metric drop) is measured in: mIoU for multi-class
    segmentation, IoU for binary segmentation (a kind string means binary), else accuracy."""
    if isinstance(task, TaskSpec) and task.multiclass_segmentation:
        return "miou"
    kind = task.kind if isinstance(task, TaskSpec) else task
    return "iou" if kind == "segmentation" else "accuracy"


def per_class_names(task: TaskSpec) -> list[str]:
    """The `per_class_iou` keys: each class's name (its index without names); a repeated name gets its
    index appended, so that no class hides another."""
    names: list[str] = []
    for i in range(task.num_classes):
        name = task.class_name(i)
        names.append(f"{name} ({i})" if name in names else name)
    return names


class TaskMetrics:
    """Accumulates predictions over a split; `compute()` returns plain floats in [0, 1].

    Binary segmentation keys: accuracy, precision, recall, f1, iou. Classification keys: accuracy,
    precision, recall, f1 (no iou), and top5 with more than 5 classes. Multi-class segmentation keys:
    miou, pixel_accuracy, and per_class_iou ({class name: IoU, or None for a class that neither occurs
    nor is predicted}). The metric state follows the device of the logits.
    """

    def __init__(self, task: TaskSpec) -> None:
        self.task = task
        c = task.num_classes
        if task.multiclass_segmentation:
            # argmax maps go in, so torchmetrics' own argmax/threshold logic never reads the logits
            self._metric: Any = MetricCollection({
                "iou": MulticlassJaccardIndex(c, average=None, ignore_index=task.ignore_index),
                "pixel_accuracy": MulticlassAccuracy(c, average="micro", ignore_index=task.ignore_index),
            }, compute_groups=False)
        elif task.kind == "segmentation":
            self._metric = BinaryStatScores(multidim_average="global")
        else:
            if c < 2:
                raise DataError(f"classification needs num_classes >= 2, got {c}")
            metrics = {
                "accuracy": MulticlassAccuracy(c, average="micro"),
                "precision": MulticlassPrecision(c, average="macro"),
                "recall": MulticlassRecall(c, average="macro"),
                "f1": MulticlassF1Score(c, average="macro"),
            }
            if c > TOP_K:
                metrics["top5"] = MulticlassAccuracy(c, top_k=TOP_K, average="micro")
            self._metric = MetricCollection(metrics)
        self._samples = 0
        self._device = torch.device("cpu")

    def reset(self) -> None:
        self._metric.reset()
        self._samples = 0

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        logits = logits.detach()
        target = target.detach().to(logits.device)
        if self._device != logits.device:
            self._metric = self._metric.to(logits.device)
            self._device = logits.device
        if self.task.multiclass_segmentation:
            preds, target = self._class_maps(logits, target)
        elif self.task.kind == "segmentation":
            if target.ndim == logits.ndim - 1 and logits.ndim == 4 and logits.shape[1] == 1:
                target = target.unsqueeze(1)  # (N, H, W) masks beside (N, 1, H, W) logits
            if logits.shape != target.shape:
                raise DataError(f"segmentation logits {tuple(logits.shape)} and masks "
                                f"{tuple(target.shape)} differ in shape; expected (N, 1, H, W) for both")
            # Thresholded here, not by torchmetrics: it applies the sigmoid only when some value
            # lies outside [0, 1], so logits that happen to fall inside [0, 1] would be misread.
            preds = (logits > 0).long()
        else:
            if logits.ndim != 2 or logits.shape[1] != self.task.num_classes:
                raise DataError(f"classification logits must be (N, {self.task.num_classes}), "
                                f"got {tuple(logits.shape)}")
            if target.ndim != 1 or target.shape[0] != logits.shape[0]:
                raise DataError(f"classification targets must be (N,) class indices, got "
                                f"{tuple(target.shape)} for logits {tuple(logits.shape)}")
            preds = logits.float()
            target = target.long()
        try:
            self._metric.update(preds, target)
        except RuntimeError as exc:  # torchmetrics' value checks (e.g. a mask value outside {0, 1})
            raise DataError(f"invalid targets for {self.task.kind}: {exc}") from None
        self._samples += int(logits.shape[0])

    def _class_maps(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(argmax predictions, int64 labels), both (N, H, W), for multi-class segmentation."""
        c = self.task.num_classes
        if logits.ndim != 4 or logits.shape[1] != c:
            raise DataError(f"multi-class segmentation logits must be (N, {c}, H, W), got {tuple(logits.shape)}")
        if target.is_floating_point() and not torch.equal(target, target.round()):
            raise DataError("multi-class segmentation labels must be class indices (int64 (N, H, W) maps); "
                            "got non-integer values")
        target = class_map(target)
        if target.shape != (logits.shape[0], *logits.shape[2:]):
            raise DataError(f"multi-class segmentation logits {tuple(logits.shape)} and labels "
                            f"{tuple(target.shape)} do not match; expected labels (N, H, W)")
        return logits.argmax(dim=1), target

    def _multiclass_scores(self) -> dict[str, Any]:
        confmat = self._metric["iou"].confmat  # (C, C), labelled pixels only: rows labels, columns predictions
        if int(confmat.sum()) == 0:
            raise DataError("no labelled pixels were evaluated: every pixel of the split is ignore_index "
                            f"{self.task.ignore_index}; check the labels")
        values = self._metric.compute()
        ious = values["iou"].tolist()
        union = (confmat.sum(0) + confmat.sum(1) - confmat.diag()).tolist()
        ignored = self.task.ignore_index
        present = [i for i in range(self.task.num_classes) if union[i] > 0 and i != ignored]
        per_class = {name: (float(ious[i]) if i in present else None)
                     for i, name in enumerate(per_class_names(self.task))}
        return {"miou": sum(ious[i] for i in present) / len(present),
                "pixel_accuracy": float(values["pixel_accuracy"]),
                "per_class_iou": per_class}

    def compute(self) -> dict[str, Any]:
        if self._samples == 0:
            raise DataError("no samples were evaluated: the split is empty; check the data loader")
        if self.task.multiclass_segmentation:
            return self._multiclass_scores()
        if self.task.kind == "segmentation":
            tp, fp, tn, fn, _support = (int(v) for v in self._metric.compute().tolist())
            return segmentation_scores(tp, fp, fn, tn)
        return {k: float(v) for k, v in self._metric.compute().items()}


def split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of a loader batch; a DataError for anything else."""
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise DataError(f"a data loader batch must be (inputs, targets); got {type(batch).__name__}")


_split_batch = split_batch  # the old name, still imported by exporters/tensorrt.py until the precision branch lands


def _progress(loader: Iterable, progress: bool, desc: str) -> Iterable:
    if not progress:
        return loader
    from compressor.progress import progress_bar as tqdm  # one line per bar when stderr is not a terminal

    return tqdm(loader, desc=desc, leave=False)


def _module_dtype(module: torch.nn.Module) -> torch.dtype:
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


@torch.no_grad()
def evaluate_module(
    module: torch.nn.Module,
    loader: Iterable,
    task: TaskSpec,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "evaluate",
) -> dict[str, Any]:
    """Task metrics of `module` over every batch of `loader`.

    The module is moved to `device` (in place) and put in eval mode for the duration; its
    train/eval flags are restored afterwards. Inputs are cast to `dtype` (None: the dtype of the
    module's floating-point parameters, so an fp16 model gets fp16 inputs); logits are cast to
    float32 before the metrics.
    """
    dtype = dtype or _module_dtype(module)
    modes = {m: m.training for m in module.modules()}
    module.to(device).eval()
    metrics = TaskMetrics(task)
    try:
        for batch in _progress(loader, progress, desc):
            x, y = split_batch(batch)
            x = x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)
            logits = module(x)
            metrics.update(logits.float(), y.to(device))
    finally:
        for m, mode in modes.items():
            m.training = mode
    return metrics.compute()


def evaluate_onnx(
    path: Any,
    loader: Iterable,
    task: TaskSpec,
    threads: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Task metrics of an ONNX graph run by onnxruntime (CPUExecutionProvider).

    Each batch's inputs go as float32 to the graph's first input (fp16 graphs exported with fp32
    I/O take them as is); metrics are computed on the graph's first output.
    """
    import onnxruntime as ort

    if not Path(path).is_file():
        raise ConfigError(f"no ONNX file at {path}; pass the .onnx artifact of an export stage")
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # an invalid graph: onnxruntime raises its own exception types
        raise ExportError(f"onnxruntime cannot load {path}: {exc}") from None
    input_name = sess.get_inputs()[0].name
    metrics = TaskMetrics(task)
    for batch in _progress(loader, progress, f"evaluate {path}"):
        x, y = split_batch(batch)
        (out, *_rest) = sess.run(None, {input_name: x.numpy().astype("float32")})
        metrics.update(torch.from_numpy(out).float(), y)
    return metrics.compute()
