"""The user's own torch Datasets, from a factory.

`factory: 'package.module:callable'` (with `kwargs`, and `search_path` added to sys.path first) returns a
mapping {train, val, test}; each value is a torch Dataset (anything with __len__ and __getitem__) or a
callable that returns one. Item i of a split is `(x, y)`: x a (C, H, W) float tensor or array, y as the
task says (`compressor.data`): a class index for classification, a {0, 1} (1, H, W) or (H, W) mask for
binary segmentation (num_classes 1), an (H, W) class-index map for semantic segmentation.

Every item is checked when it is read: its shape against the first train item's, its label against
`num_classes` and `ignore_index`; a bad one is refused in one line naming the split and the index.
`input_range` defaults to the [min, max] over the first 16 train items.

The factory is user code. As with the `torch` model frontend, a pipeline the user runs is trusted and
calls it; a reproducer that names it is not replayed without --trust-factory (`data_factory`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.utils.data import Dataset, TensorDataset

from compressor.data.base import SPLITS, DataBundle, DataOptions, register_dataset
from compressor.data.labels import TaskOptions, check_label, mask_target
from compressor.errors import DataError
from compressor.ir import TaskSpec
from compressor.options import option
from compressor.usercode import describe_failure, resolve_factory

RANGE_SAMPLES = 16  # train items whose values give the default input_range


@dataclass(frozen=True)
class TorchDatasetOptions(TaskOptions, DataOptions):
    factory: str = option(help="'package.module:callable' returning {train, val, test} of torch Datasets (or "
                               "callables returning them)")
    task: Literal["classification", "segmentation"] = option(help="what the labels are")
    num_classes: int = option(help="classes (segmentation: 1 = binary masks)", min=1, max=100_000)
    kwargs: dict[str, Any] = option({}, "keyword arguments for the factory")
    search_path: str | None = option(None, "directory added to sys.path before importing the factory")
    input_range: list[float] | None = option(None, "[low, high] of the inputs (default: measured on the first "
                                             f"{RANGE_SAMPLES} train items)")

    def __post_init__(self) -> None:
        if self.factory.count(":") != 1 or not all(self.factory.split(":")):
            raise ValueError(f"factory must look like 'package.module:callable', got {self.factory!r}")
        lo_hi = self.input_range
        if lo_hi is not None and (len(lo_hi) != 2 or not lo_hi[0] < lo_hi[1]):
            raise ValueError(f"input_range must be [low, high] with low < high, got {list(self.input_range)}")
        super().__post_init__()


def _call(fn: Any, what: str, **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except (Exception, SystemExit) as exc:  # user code: any failure, even sys.exit()
        raise DataError(f"{what} failed: {describe_failure(exc)}; fix it (run it in Python to see the traceback)") from None


class CheckedSplit(Dataset):
    """One split of the user's dataset; each item is checked and converted to the task's (x, y)."""

    def __init__(self, ds: Any, split: str, task: TaskSpec, shape: tuple[int, ...] | None = None) -> None:
        self.ds, self.split, self.task, self.shape = ds, split, task, shape

    def __len__(self) -> int:
        return len(self.ds)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.ds, TensorDataset) or bool(getattr(self.ds, "in_memory", False))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        where = f"torch-dataset split '{self.split}' item {int(index)}"
        try:
            item = self.ds[int(index)]
        except (Exception, SystemExit) as exc:
            raise DataError(f"{where}: the dataset raised {describe_failure(exc)}; fix the dataset") from None
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DataError(f"{where} is a {type(item).__name__}, not an (x, y) pair; return (input, label)")
        x = torch.as_tensor(item[0]).float()
        if x.dim() != 3:
            raise DataError(f"{where}: x has shape {tuple(x.shape)}; an input is one (C, H, W) sample")
        if self.shape is not None and tuple(x.shape) != self.shape:
            raise DataError(f"{where}: x has shape {tuple(x.shape)} but the first train item's is {self.shape}; every "
                            f"sample must have one shape")
        return x, self.target(item[1], where, tuple(x.shape[1:]))

    def target(self, y: Any, where: str, hw: tuple[int, ...]) -> torch.Tensor:
        if self.task.kind == "classification":
            return torch.tensor(check_label(y, self.task, where), dtype=torch.int64)
        mask = torch.as_tensor(y)
        if mask.dim() == 3 and mask.shape[0] == 1:
            mask = mask[0]
        if tuple(mask.shape) != hw:
            raise DataError(f"{where}: the mask has shape {tuple(mask.shape)} but x is {hw[0]}x{hw[1]}; give an "
                            f"(H, W) or (1, H, W) mask of the input's size")
        if mask.is_floating_point() and not torch.equal(mask, mask.round()):
            raise DataError(f"{where}: the mask holds fractional values; give class indices (binary: 0 and 1)")
        return mask_target(mask.numpy(), self.task, where)


@register_dataset("torch-dataset")
class TorchDataset:
    """The user's torch Datasets from a factory 'package.module:callable' (user code: trusted as the torch frontend)."""

    Options = TorchDatasetOptions
    runs_user_code = True  # a reproducer naming it replays only with --trust-factory (compressor.data.data_factory)

    @staticmethod
    def build(options: TorchDatasetOptions, seed: int = 0) -> DataBundle:
        factory = resolve_factory(options.factory, options.search_path)
        torch.manual_seed(seed)  # a factory that draws random numbers (a random split) draws the same ones
        result = _call(factory, f"data factory '{options.factory}'", **options.kwargs)
        if not isinstance(result, Mapping):
            raise DataError(f"data factory '{options.factory}' returned {type(result).__name__}, not a mapping "
                            f"{{train, val, test}} of torch Datasets")
        extra = sorted(set(map(str, result)) - set(SPLITS))
        missing = [s for s in SPLITS if s not in result]
        if extra or missing:
            raise DataError(f"data factory '{options.factory}' returned the splits {sorted(map(str, result))}; it must "
                            f"return exactly train, val and test (missing: {', '.join(missing) or 'none'}; unknown: "
                            f"{', '.join(extra) or 'none'})")
        task = TaskSpec(options.task, options.num_classes, options.ignore_index, options.class_names)
        splits: dict[str, CheckedSplit] = {}
        for split in SPLITS:
            ds = result[split]
            is_dataset = hasattr(ds, "__len__") and hasattr(ds, "__getitem__") and not isinstance(ds, type)
            if callable(ds) and not is_dataset:
                ds = _call(ds, f"the '{split}' callable of data factory '{options.factory}'")
            if not (hasattr(ds, "__len__") and hasattr(ds, "__getitem__")):
                raise DataError(f"data factory '{options.factory}': '{split}' is a {type(ds).__name__}, not a "
                                f"Dataset (__len__ and __getitem__) or a callable returning one")
            splits[split] = CheckedSplit(ds, split, task)
        if len(splits["train"]) == 0:
            raise DataError(f"data factory '{options.factory}': the train split is empty")
        first = [splits["train"][i][0] for i in range(min(RANGE_SAMPLES, len(splits["train"])))]
        shape = tuple(first[0].shape)
        for s in splits.values():
            s.shape = shape
        if options.input_range is not None:
            lo, hi = options.input_range
        else:
            lo, hi = min(float(x.min()) for x in first), max(float(x.max()) for x in first)
            hi = hi if hi > lo else lo + 1.0  # a constant input still needs a range of positive width
        return DataBundle(name="torch-dataset", task=task, input_shape=shape, input_range=(float(lo), float(hi)),
                          **splits)
