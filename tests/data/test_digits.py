"""digits: scikit-learn's bundled 8x8 handwritten digits, split 70/15/15 by seed."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from compressor.data import build_data, make_loader
from compressor.data.digits import split_indices
from compressor.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def digits():
    return build_data("digits", None, seed=0)


def test_metadata(digits):
    assert digits.name == "digits"
    assert digits.task.kind == "classification" and digits.task.num_classes == 10
    assert digits.input_shape == (1, 8, 8)
    assert digits.input_range == (0.0, 1.0)


def test_split_sizes(digits):
    sizes = digits.sizes()
    assert sum(sizes.values()) == 1797
    assert sizes["train"] == pytest.approx(0.7 * 1797, abs=10)
    assert sizes["val"] == pytest.approx(0.15 * 1797, abs=10)
    assert sizes["test"] == pytest.approx(0.15 * 1797, abs=10)


def test_items(digits):
    x, y = digits.train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.dim() == 0
    for split in ("train", "val", "test"):
        ds = digits.split(split)
        assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0
        assert set(ds.y.unique().tolist()) == set(range(10))  # stratified: every class everywhere
    assert digits.train.x.max() == 1.0


def test_splits_partition_the_data():
    labels = np.repeat(np.arange(10), 180)[:1797]
    idx = split_indices(labels, 0.7, 0.15, seed=0)
    all_idx = np.concatenate(list(idx.values()))
    assert len(all_idx) == 1797 and len(np.unique(all_idx)) == 1797


def test_split_depends_only_on_seed(digits):
    again = build_data("digits", None, seed=0)
    assert torch.equal(digits.val.x, again.val.x)
    other = build_data("digits", None, seed=1)
    assert not torch.equal(digits.val.x, other.val.x)


def test_fractions_option():
    b = build_data("digits", {"train_fraction": 0.5, "val_fraction": 0.25})
    sizes = b.sizes()
    assert sum(sizes.values()) == 1797
    assert sizes["train"] == pytest.approx(898, abs=10)


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"train_fraction": 0.0}, "out of range"),
        ({"train_fraction": 1.2}, "out of range"),
        ({"train_fraction": 0.8, "val_fraction": 0.2}, "leaves no test samples"),
        ({"val_fracton": 0.1}, "did you mean 'val_fraction'"),
    ],
)
def test_option_errors(raw, needle):
    with pytest.raises(ConfigError, match=needle):
        build_data("digits", raw)


def test_empty_val_split_is_a_data_error():
    with pytest.raises(DataError, match="split 'val' is empty"):
        build_data("digits", {"val_fraction": 0.0})


def test_loader(digits):
    x, y = next(iter(make_loader(digits.train, 64, shuffle=True, seed=0)))
    assert x.shape == (64, 1, 8, 8) and y.shape == (64,) and y.dtype == torch.int64
