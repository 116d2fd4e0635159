"""Labels: the task options the labelled datasets share, and the checks that turn a label or a mask into
the task's target (out-of-range values are refused in one line naming where they were found)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from compressor.errors import DataError
from compressor.ir import TaskSpec
from compressor.options import option


@dataclass(frozen=True, kw_only=True)
class TaskOptions:
    """`ignore_index` and `class_names` of segmentation-folder, hf-dataset and torch-dataset (with the
    dataset's own `num_classes`, when it has one)."""

    ignore_index: int | None = option(None, "label value that no loss or metric counts (e.g. 255 in masks)")
    class_names: list[str] | None = option(None, "the classes' names in index order (one per class)")

    def __post_init__(self) -> None:
        n = getattr(self, "num_classes", None)
        if self.class_names is not None and n is not None and len(self.class_names) != n:
            raise ValueError(f"class_names has {len(self.class_names)} names for num_classes {n}; give one name "
                             f"per class")
        kind = getattr(self, "task", "segmentation")
        if self.ignore_index is not None and (kind != "segmentation" or (n is not None and n < 2)):
            # the classification and binary (BCE + Dice) losses have no ignored labels: refused, not trained wrong
            raise ValueError(f"ignore_index applies to semantic segmentation (num_classes >= 2), not to {kind} with "
                             f"num_classes {n}; for binary masks with ignored pixels use num_classes: 2 "
                             f"(background, foreground)")
        getattr(super(), "__post_init__", lambda: None)()  # the other bases' checks (e.g. the split fractions)


def mask_target(arr: np.ndarray, task: TaskSpec, where: Any) -> torch.Tensor:
    """A mask's class indices as the task's target: float32 (1, H, W) in {0, 1} for binary segmentation
    (num_classes 1), int64 (H, W) otherwise. A value that is neither a class nor `ignore_index` raises a
    DataError naming `where` and the value; ignored pixels keep the ignore_index value."""
    arr = np.asarray(arr).astype(np.int64, copy=False)  # compare as signed ints (an ignore_index may be -100)
    limit = 2 if task.num_classes == 1 else task.num_classes
    bad = (arr < 0) | (arr >= limit)
    if task.ignore_index is not None:
        bad &= arr != task.ignore_index
    if bad.any():
        value = int(arr[bad].flat[0])
        ignore = f" or {task.ignore_index} (ignore_index)" if task.ignore_index is not None else ""
        hint = "; a 0/255 mask? store 0 and 1" if task.num_classes == 1 and value == 255 else ""
        raise DataError(f"{where}: mask value {value} is out of range for num_classes {task.num_classes}; valid: "
                        f"0..{limit - 1}{ignore}{hint}; fix the mask, or set num_classes / ignore_index")
    if task.num_classes == 1:
        return torch.from_numpy(arr.astype(np.float32))[None]
    return torch.from_numpy(arr.astype(np.int64))


def check_label(value: Any, task: TaskSpec, where: Any) -> int:
    """A classification label as an int in 0..num_classes-1; DataError naming `where` and the value."""
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{where}: label {value!r} is not an integer class index; valid: 0..{task.num_classes - 1}")
    if not 0 <= int(value) < task.num_classes:
        raise DataError(f"{where}: label {int(value)} is out of range; valid: 0..{task.num_classes - 1} "
                        f"(num_classes {task.num_classes}); fix the label or num_classes")
    return int(value)

