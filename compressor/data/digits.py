"""digits: scikit-learn's bundled handwritten digits (1797 images of 8x8, 10 classes; no download).

Items are `(x, y)`: x float32 (1, 8, 8) with the 0..16 gray levels scaled to [0, 1], y an int64
scalar class 0..9. The split is stratified and depends only on `seed`: for each class, its samples
are shuffled and the first round(n * train_fraction) go to train, the next round(n * val_fraction)
to val, the rest to test (70/15/15 by default).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from compressor.data.base import ArrayDataset, DataBundle, DataOptions, register_dataset, stratified_split
from compressor.errors import DataError
from compressor.ir import TaskSpec
from compressor.options import option

_SALT = 0xD161  # keeps this split's random state apart from other users of the same seed


@dataclass(frozen=True)
class DigitsOptions(DataOptions):
    train_fraction: float = option(0.7, "fraction of each class that goes to the train split",
                                   min=0.0, max=1.0, min_exclusive=True, max_exclusive=True)
    val_fraction: float = option(0.15, "fraction of each class that goes to the val split "
                                 "(the rest is test)", min=0.0, max=1.0, max_exclusive=True)

    def __post_init__(self) -> None:
        if self.train_fraction + self.val_fraction >= 1.0:
            raise ValueError(
                f"train_fraction + val_fraction = {self.train_fraction + self.val_fraction:g} leaves no "
                f"test samples; valid: a sum below 1 (e.g. train_fraction=0.7, val_fraction=0.15)"
            )


def _load() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # scikit-learn is a dependency; this is a broken install
        raise DataError(f"the digits dataset needs scikit-learn ({exc}); pip install scikit-learn") from None
    bunch = load_digits()
    return bunch.images.astype(np.float32) / 16.0, bunch.target.astype(np.int64)


def split_indices(
    labels: np.ndarray, train_fraction: float, val_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Stratified train/val/test indices (each sorted) that depend only on `seed`; test takes the rest."""
    return stratified_split(labels, {"train": train_fraction, "val": val_fraction}, seed, _SALT, rest="test")


@register_dataset("digits")
class Digits:
    """scikit-learn's handwritten digits: 8x8 grayscale, 10 classes, bundled (no download)."""

    Options = DigitsOptions
    task_kind = "classification"  # known before building (sweeps check their figures against it)

    @staticmethod
    def build(options: DigitsOptions, seed: int = 0) -> DataBundle:
        images, labels = _load()
        idx = split_indices(labels, options.train_fraction, options.val_fraction, seed)
        x = torch.from_numpy(images[:, None])
        y = torch.from_numpy(labels)
        splits = {k: ArrayDataset(x[v].clone(), y[v].clone()) for k, v in idx.items()}
        return DataBundle(
            name="digits",
            task=TaskSpec("classification", 10),
            input_shape=(1, 8, 8),
            input_range=(0.0, 1.0),
            **splits,
        )
