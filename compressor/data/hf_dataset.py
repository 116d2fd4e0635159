"""A Hugging Face `datasets` dataset saved with `save_to_disk`, read from the local disk.

It is loaded with `datasets.load_from_disk(path)` and HF_DATASETS_OFFLINE=1: nothing is downloaded
(the `datasets` package is needed: `pip install 'compressor[hf]'`). `path` holds a DatasetDict (its
splits are mapped by `splits`, default train <- train, val <- validation | val | valid, test <- test)
or a single Dataset (used as train). A val or test split the data lacks is split off train with the
run's seed by `val_fraction` / `test_fraction` (stratified by label for classification).

`image_column` holds the images (PIL images as `datasets.Image` decodes them, {bytes, path} dicts, or
uint8 arrays). For `task: classification`, `label_column` holds integer class indices; the class
names and their count come from its `ClassLabel` feature when it has one (`num_classes` /
`class_names` override). Every label is checked when the dataset is built. For
`task: segmentation`, `label_column` holds the masks (mode L or P images of class indices, checked
when read, like segmentation-folder's), and `num_classes` is required.

Images are decoded on access; the first train image sets the channel count (without preprocess.mode)
and the input size that every other image must give.
"""
from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from compressor.data.base import SPLITS, DataBundle, register_dataset
from compressor.data.images import ImageDataOptions, ImageSamples, fill_splits
from compressor.data.labels import TaskOptions, check_label
from compressor.data.preprocess import channels, natural_mode, resolve
from compressor.errors import ConfigError, DataError
from compressor.ir import TaskSpec
from compressor.options import option, unknown_key_message

_SALT = 0x4F0D  # keeps this split's random state apart from other users of the run's seed
DEFAULT_SPLITS = {"train": ("train",), "val": ("validation", "val", "valid"), "test": ("test",)}


@dataclass(frozen=True)
class HFDatasetOptions(TaskOptions, ImageDataOptions):
    path: str = option(help="folder written by Dataset.save_to_disk or DatasetDict.save_to_disk")
    image_column: str = option("image", "column holding the images")
    label_column: str = option("label", "column holding the class index (classification) or the mask "
                               "(segmentation)")
    task: Literal["classification", "segmentation"] = option("classification", "what the labels are")
    num_classes: int | None = option(None, "classes (default: the label column's ClassLabel; required for "
                                     "segmentation)", min=1, max=100_000)
    splits: dict[str, str] = option({}, "split name in the saved dataset for train, val, test (default: train; "
                                    "validation, val or valid; test)")

    def __post_init__(self) -> None:
        for key, value in self.splits.items():
            if key not in SPLITS:
                raise ValueError(f"splits: {unknown_key_message(key, list(SPLITS), 'split')}")
            if not isinstance(value, str):
                raise ValueError(f"splits.{key}: expected a split name (a string), got {value!r}")
        if self.task == "segmentation" and self.num_classes is None:
            raise ValueError("segmentation needs num_classes (1: binary masks 0/1; >= 2: class indices)")
        super().__post_init__()


def load_saved(path: Path) -> Any:
    """`datasets.load_from_disk(path)`, offline; DataError naming the path when it cannot be loaded."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"  # read the disk only, whatever the environment says
    try:
        import datasets
    except ImportError:
        raise DataError("hf-dataset needs the Hugging Face `datasets` package, which is not installed; "
                        "pip install 'compressor[hf]' (or pip install datasets)") from None
    if not path.exists():
        raise DataError(f"hf-dataset: {path} does not exist; give the folder written by save_to_disk (data.path)")
    try:
        return datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises FileNotFoundError, ValueError, arrow errors...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"hf-dataset: {path} is not a dataset saved with save_to_disk ({type(exc).__name__}: "
                        f"{first[:200]}); save one with dataset.save_to_disk(path)") from None


def to_pil(value: Any, where: str) -> Any:
    """A PIL image from what a `datasets` image column holds."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    try:
        if isinstance(value, Mapping) and (value.get("bytes") or value.get("path")):
            with Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]) as im:
                im.load()
                return im
        if isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim in (2, 3):
            return Image.fromarray(value)
    except Exception as exc:
        raise DataError(f"{where}: not a readable image ({type(exc).__name__}: {exc}); fix the dataset") from None
    raise DataError(f"{where}: holds {type(value).__name__}, not an image (a PIL image, {{bytes, path}} or a uint8 "
                    f"array); check image_column / label_column")


def _columns(table: Any, options: HFDatasetOptions, name: str) -> None:
    names = list(table.column_names)
    for key in ("image_column", "label_column"):
        column = getattr(options, key)
        if column not in names:
            raise DataError(f"hf-dataset: split '{name}' of {options.path}: "
                            f"{unknown_key_message(column, names, 'column')}; set {key}")


def _class_names(table: Any, options: HFDatasetOptions) -> tuple[int, tuple[str, ...] | None]:
    """num_classes and class names of a classification dataset: the options', else the ClassLabel's."""
    feature = getattr(table, "features", {}).get(options.label_column)
    names = getattr(feature, "names", None) if type(feature).__name__ == "ClassLabel" else None
    n = options.num_classes or (len(names) if names else None)
    if n is None:
        raise DataError(f"hf-dataset: column '{options.label_column}' of {options.path} is not a ClassLabel, so the "
                        f"number of classes is unknown; set num_classes")
    if names and len(names) != n:
        if options.num_classes is not None and options.class_names is None:
            raise ConfigError(f"hf-dataset: num_classes {n} but column '{options.label_column}' names "
                              f"{len(names)} classes; drop num_classes or make it {len(names)}")
        names = None
    if options.class_names is not None and len(options.class_names) != n:
        raise ConfigError(f"hf-dataset: class_names has {len(options.class_names)} names for {n} classes; give one "
                          f"name per class")
    return n, tuple(options.class_names or names or ()) or None


class HFSamples(ImageSamples):
    """One split of hf-dataset: rows of a `datasets.Dataset`."""

    def __init__(self, table: Any, rows: list[int], name: str, options: HFDatasetOptions, **kwargs: Any) -> None:
        super().__init__(len(rows), **kwargs)
        self.table, self.rows, self.name = table, rows, name
        self.image_column, self.label_column, self.path = options.image_column, options.label_column, options.path

    def source(self, index: int) -> tuple[Any, Any, Any, Any]:
        row = self.rows[index]
        where = f"hf-dataset {self.path} split '{self.name}' row {row}"
        item = self.table[row]
        image = to_pil(item[self.image_column], f"{where} column '{self.image_column}'")
        target = item[self.label_column]
        label_where = f"{where} column '{self.label_column}'"
        return image, where, target if self.task.kind == "classification" else to_pil(target, label_where), label_where


@register_dataset("hf-dataset")
class HFDataset:
    """A Hugging Face dataset saved with save_to_disk (image classification or segmentation), read offline."""

    Options = HFDatasetOptions

    @staticmethod
    def build(options: HFDatasetOptions, seed: int = 0) -> DataBundle:
        loaded = load_saved(Path(options.path).expanduser())
        available = dict(loaded) if isinstance(loaded, Mapping) else {"train": loaded}
        tables: dict[str, tuple[Any, str]] = {}
        for split in SPLITS:
            if split in options.splits:
                name = options.splits[split]
                if name not in available:
                    raise DataError(f"hf-dataset: splits.{split} names '{name}', which {options.path} lacks; "
                                    f"{unknown_key_message(name, sorted(available), 'split')}")
            else:
                name = next((n for n in DEFAULT_SPLITS[split] if n in available), "")
            if name:
                tables[split] = (available[name], name)
        if "train" not in tables:
            raise DataError(f"hf-dataset: {options.path} has no train split (it has {', '.join(sorted(available))}); "
                            f"map one with splits: {{train: NAME}}")
        for split, (table, name) in tables.items():
            _columns(table, options, name)
            if hasattr(table, "select_columns"):  # a row then decodes these two columns only
                tables[split] = (table.select_columns([options.image_column, options.label_column]), name)
        table, name = tables["train"]
        if options.task == "classification":
            n, names = _class_names(table, options)
        else:
            n, names = int(options.num_classes or 1), options.class_names
        task = TaskSpec(options.task, n, options.ignore_index, names)
        rows, labels = {}, {}
        for split, (t, hf_name) in tables.items():
            rows[split] = [(split, r) for r in range(len(t))]
            if task.kind == "classification":
                values = list(t[options.label_column])
                labels[split] = [check_label(v, task, f"hf-dataset {options.path} split '{hf_name}' row {r} column "
                                                      f"'{options.label_column}'") for r, v in enumerate(values)]
            else:
                labels[split] = [0] * len(t)
        splits = fill_splits(rows, labels, options, seed, _SALT, "hf-dataset", options.path)
        pre = resolve(options.preprocess)
        where = f"hf-dataset {options.path} split '{name}' row 0"  # the first train image sets mode and size
        image = to_pil(table[0][options.image_column], where)
        mode = pre.mode if pre.convert and pre.mode else natural_mode(image.mode, where)
        pre = pre.with_mode(mode)
        shape = (channels(mode), *pre.output_size(image.height, image.width, where))
        out = {}
        for split in SPLITS:
            (origin,) = {o for o, _ in splits[split]}  # fill_splits cuts val/test from train only
            t, hf_name = tables[origin]
            out[split] = HFSamples(t, [r for _, r in splits[split]], hf_name, options, pre=pre, task=task,
                                   shape=shape, cache=options.cache)
        return DataBundle(name="hf-dataset", task=task, input_shape=shape, input_range=pre.input_range(), **out,
                          preprocess=pre.to_dict())
