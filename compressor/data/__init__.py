"""Datasets: a registry of builders that turn validated options into a `DataBundle`.

Each dataset module registers a builder with `@register_dataset("name")`. A builder is an object
with an `Options` attribute (a frozen dataclass declared with `compressor.options.option`) and a
`build(options, seed) -> DataBundle` callable. `build_data(name, raw_options, seed)` validates the
raw mapping (YAML or kwargs) and builds the bundle; `make_loader` wraps one split in a
deterministic `DataLoader`.

Every item of every split is `(x, y)`: x a float32 tensor (C, H, W); y an int64 scalar tensor for
classification, a float32 (1, H, W) tensor with values in {0, 1} for segmentation (1 = moving
ground).

Built-in datasets: `insar-synthetic`, `insar-folder` (see `compressor.data.insar`) and `digits`
(see `compressor.data.digits`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from compressor.errors import ConfigError, DataError
from compressor.ir import TaskSpec
from compressor.options import parse_options, unknown_key_message
from compressor.registry import DATASETS, register_dataset

SPLITS = ("train", "val", "test")

__all__ = [
    "DATASETS", "SPLITS", "ArrayDataset", "DataBundle", "build_data", "dataset_options",
    "make_loader", "register_dataset",
]


@dataclass
class DataBundle:
    """The three splits of one dataset plus what a model needs to know about its inputs."""

    name: str
    task: TaskSpec
    input_shape: tuple[int, ...]
    input_range: tuple[float, float]
    train: Dataset
    val: Dataset
    test: Dataset

    def split(self, name: str) -> Dataset:
        """The split called `name` ("train", "val" or "test")."""
        if name not in SPLITS:
            raise ConfigError(f"dataset {self.name}: {unknown_key_message(name, list(SPLITS), 'split')}")
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        return {s: len(getattr(self, s)) for s in SPLITS}


class ArrayDataset(Dataset):
    """Samples held in two tensors: `x[i]` and `y[i]` make item i."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        self.x = x
        self.y = y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]


def dataset_options(name: str) -> type:
    """The options dataclass of the dataset `name` (ConfigError naming the closest if unknown)."""
    return DATASETS.get_or_error(name, "data").Options


def build_data(name: str, raw_options: Mapping[str, Any] | None = None, seed: int = 0) -> DataBundle:
    """Validate `raw_options` against the dataset's Options and build its DataBundle.

    Raises ConfigError for an unknown name or invalid options, DataError when a split is empty.
    """
    builder = DATASETS.get_or_error(name, "data")
    options = parse_options(builder.Options, raw_options, f"data {name}")
    bundle = builder.build(options, seed)
    for split in SPLITS:
        if len(bundle.split(split)) == 0:
            raise DataError(
                f"dataset {name} split '{split}' is empty; every split (train, val, test) needs at "
                f"least one sample: give that split samples (check its size options or its files)"
            )
    return bundle


def make_loader(
    ds: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = False
) -> DataLoader:
    """A single-process DataLoader; with shuffle, the order depends only on `seed`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}; pass e.g. batch_size=32")
    if drop_last and len(ds) < batch_size:
        raise DataError(
            f"a split of {len(ds)} samples gives no batch of {batch_size} with drop_last=True; "
            f"use a batch_size <= {len(ds)} or drop_last=False"
        )
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0, drop_last=drop_last
    )


# Importing the built-in dataset modules registers them; keep these imports last (they import
# DataBundle and register_dataset from this module).
from compressor.data import digits, insar  # noqa: E402,F401
