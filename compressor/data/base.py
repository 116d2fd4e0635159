"""What every dataset shares: `DataBundle`, the common `DataOptions`, `build_data`, `make_loader` and the
split helpers. `compressor.data` re-exports all of it and imports the built-in datasets; a dataset module
(built-in or a plugin's) imports from here, so that none of them imports the package that imports them.

Every item of every split is `(x, y)`: x a float32 tensor (C, H, W); y an int64 scalar tensor for
classification, a float32 (1, H, W) tensor with values in {0, 1} for binary segmentation (1 = the
foreground, e.g. moving ground), an int64 (H, W) class-index map for semantic segmentation
(`TaskSpec.num_classes >= 2`).

Options every dataset takes (`DataOptions`, which each built-in dataset's options extend):
`num_workers` (loader worker processes; null = automatic, see `loader_workers`) and `max_samples`
(a seeded random subset of at most N samples per split, to try a large dataset quickly).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from compressor.errors import CompressError, ConfigError, DataError
from compressor.ir import TaskSpec
from compressor.options import option, parse_options, unknown_key_message
from compressor.registry import DATASETS, register_dataset

SPLITS = ("train", "val", "test")
# a split smaller than this is loaded in the main process: starting worker processes every epoch costs
# more than decoding a few hundred small images
TINY_SPLIT = 256
MAX_AUTO_WORKERS = 4
_SUBSET_SALT = 0x5AB5  # keeps the max_samples draw apart from other users of the run's seed

__all__ = [
    "DATASETS", "SPLITS", "ArrayDataset", "DataBundle", "DataOptions", "build_data", "data_factory",
    "dataset_options", "default_workers", "loader_workers", "make_loader", "register_dataset", "stratified_split",
]


@dataclass(frozen=True, kw_only=True)
class DataOptions:
    """Options every dataset's `data:` block takes (each built-in dataset's options extend this class)."""

    num_workers: int | None = option(None, "loader worker processes (null: automatic, 0 for in-memory and tiny "
                                     "splits, else min(4, CPUs - 1); 0: load in the main process)", min=0, max=64)
    max_samples: int = option(0, "use a seeded random subset of at most this many samples per split "
                              "(0 = all)", min=0, max=10**9)


@dataclass
class DataBundle:
    """The three splits of one dataset plus what a model needs to know about its inputs.

    `preprocess` is the resolved preprocessing of image datasets as plain JSON data (see
    `compressor.data.preprocess`); `input_shape` and `input_range` follow from it. `num_workers` is the
    data block's loader setting (None: automatic), passed to `make_loader` by the loaders a run builds.
    """

    name: str
    task: TaskSpec
    input_shape: tuple[int, ...]
    input_range: tuple[float, float]
    train: Dataset
    val: Dataset
    test: Dataset
    preprocess: dict[str, Any] | None = None
    num_workers: int | None = None

    def split(self, name: str) -> Dataset:
        """The split called `name` ("train", "val" or "test")."""
        if name not in SPLITS:
            raise ConfigError(f"dataset {self.name}: {unknown_key_message(name, list(SPLITS), 'split')}")
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        return {s: len(getattr(self, s)) for s in SPLITS}


class ArrayDataset(Dataset):
    """Samples held in two tensors: `x[i]` and `y[i]` make item i."""

    in_memory = True

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        self.x = x
        self.y = y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]


def _rng(seed: int, salt: int) -> np.random.Generator:
    seed_words = [int(seed) & 0xFFFFFFFF, (int(seed) >> 32) & 0xFFFFFFFF]
    return np.random.default_rng(np.random.SeedSequence([salt, *seed_words]))


def stratified_split(labels: np.ndarray, fractions: Mapping[str, float], seed: int, salt: int,
                     rest: str = "test") -> dict[str, np.ndarray]:
    """Stratified train/val/test indices (each sorted) that depend only on `seed` and `salt`.

    For each class, its indices are shuffled; every split but `rest` takes round(n * fraction) of them
    (a missing fraction is 0), `rest` takes what is left; they are cut in the order train, val, test.
    Labels all equal give a plain seeded random split.
    """
    rng = _rng(seed, salt)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        counts = {s: int(round(len(idx) * fractions.get(s, 0.0))) for s in SPLITS if s != rest}
        counts[rest] = len(idx) - sum(counts.values())
        start = 0
        for s in SPLITS:
            parts[s].append(idx[start:start + counts[s]])
            start += counts[s]
    return {s: np.sort(np.concatenate(v)) if v else np.zeros(0, dtype=np.int64) for s, v in parts.items()}


def dataset_options(name: str) -> type:
    """The options dataclass of the dataset `name` (ConfigError naming the closest if unknown)."""
    return DATASETS.get_or_error(name, "data").Options


def data_factory(spec: Mapping[str, Any] | None) -> str | None:
    """The user factory ('module:callable') that building the data block `spec` would call (a builder
    with `runs_user_code`), or None. Nothing is imported or run: a reproducer asks before replaying."""
    if not spec or not isinstance(spec.get("name"), str) or spec["name"] not in DATASETS:
        return None
    builder = DATASETS[spec["name"]]
    return str(spec.get("factory")) if getattr(builder, "runs_user_code", False) else None


def _subset(ds: Dataset, n: int, seed: int, split: str) -> Dataset:
    """A seeded random subset of `n` samples of `ds` (in their original order)."""
    keep = np.sort(_rng(seed, _SUBSET_SALT + SPLITS.index(split)).permutation(len(ds))[:n])
    return Subset(ds, keep.tolist())


def build_data(name: str, raw_options: Mapping[str, Any] | None = None, seed: int = 0) -> DataBundle:
    """Validate `raw_options` against the dataset's Options and build its DataBundle.

    Raises ConfigError for an unknown name or invalid options, DataError when a split is empty.
    The common options (`DataOptions`) are applied here: `max_samples` cuts every split to a seeded
    random subset, `num_workers` is recorded on the bundle.
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
    limit = getattr(options, "max_samples", 0)
    if limit:
        for split in SPLITS:
            if len(bundle.split(split)) > limit:
                setattr(bundle, split, _subset(bundle.split(split), limit, seed, split))
    bundle.num_workers = getattr(options, "num_workers", None)
    return bundle


def default_workers() -> int:
    """Worker processes for a lazily decoded split: min(4, usable CPUs - 1), keeping one for training."""
    try:
        cpus = len(os.sched_getaffinity(0))  # the CPUs this process may use (containers, taskset)
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    return max(0, min(MAX_AUTO_WORKERS, cpus - 1))


def loader_workers(ds: Dataset, requested: int | None = None) -> int:
    """`requested`, or automatically: 0 for a split held in memory (a dataset whose `in_memory` is true or
    absent: nothing to decode in parallel, and a per-worker cache would be thrown away every epoch) or
    smaller than TINY_SPLIT, else `default_workers()`."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
            raise ConfigError(f"num_workers must be an integer >= 0 or null (automatic), got {requested!r}")
        return requested
    base = ds
    while isinstance(base, Subset):
        base = base.dataset
    if isinstance(base, TensorDataset) or getattr(base, "in_memory", True) or len(ds) < TINY_SPLIT:
        return 0
    return default_workers()


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and random in each worker from its torch seed (base seed + worker id), so that a dataset
    drawing random numbers does not draw the same ones in every worker, and keep each worker to one
    intra-op thread (N workers x all cores would oversubscribe the CPU)."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(1)


class _Loader(DataLoader):
    """A DataLoader with workers whose errors read as the dataset's own one-line error (torch re-raises an
    exception from a worker with the worker's traceback in its message), and whose workers stop as soon as
    an error ends the epoch."""

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        it = super().__iter__()
        if self.num_workers == 0:
            return it
        return self._unwrapped(it)

    @staticmethod
    def _unwrapped(it: Iterator[Any]) -> Iterator[Any]:
        try:
            yield from it
        except BaseException as exc:
            # Shut the workers down now: left to garbage collection (the traceback holds the iterator in a
            # cycle), torch's shutdown finds its queues finalized and waits 5 s per worker before killing it.
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            text = str(exc)
            if not isinstance(exc, CompressError) or "DataLoader worker" not in text:
                raise
            last = text.strip().splitlines()[-1]  # "compressor.errors.DataError: <the message>"
            raise type(exc)(last.split(": ", 1)[1] if ": " in last else last) from None


def make_loader(
    ds: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = False,
    num_workers: int | None = None,
) -> DataLoader:
    """A DataLoader whose order depends only on `seed` (with shuffle), never on the worker count.

    `num_workers` None picks automatically (`loader_workers`). Workers are started per epoch
    (persistent_workers off) and seeded by `_seed_worker`; the shuffle generator is the loader's
    `generator`, which a training checkpoint saves, so an exact resume does not depend on workers either.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}; pass e.g. batch_size=32")
    if drop_last and len(ds) < batch_size:
        raise DataError(
            f"a split of {len(ds)} samples gives no batch of {batch_size} with drop_last=True; "
            f"use a batch_size <= {len(ds)} or drop_last=False"
        )
    workers = loader_workers(ds, num_workers)
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return _Loader(
        ds, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=workers, drop_last=drop_last,
        persistent_workers=False, worker_init_fn=_seed_worker if workers else None,
    )
