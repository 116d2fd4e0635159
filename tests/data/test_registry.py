"""The dataset registry, build_data, dataset_options, DataBundle.split and make_loader."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from compressor.data import DATASETS, ArrayDataset, DataBundle, build_data, dataset_options, make_loader
from compressor.data.insar import InsarSyntheticOptions
from compressor.errors import ConfigError, DataError
from compressor.ir import TaskSpec
from compressor.options import describe_options

BUILTIN = ("insar-synthetic", "insar-folder", "digits")


def test_builtins_registered():
    for name in BUILTIN:
        assert name in DATASETS
        builder = DATASETS[name]
        assert dataclasses.is_dataclass(builder.Options)
        assert callable(builder.build)
        assert builder.name == name


@pytest.mark.parametrize("name", BUILTIN)
def test_every_option_is_documented(name):
    infos = describe_options(dataset_options(name))
    assert infos
    for info in infos:
        assert info.help, f"{name}.{info.name} has no help text"


def test_dataset_options():
    assert dataset_options("insar-synthetic") is InsarSyntheticOptions


def test_unknown_dataset_names_the_closest():
    with pytest.raises(ConfigError) as info:
        build_data("insar-synthtic", None)
    msg = str(info.value)
    assert "did you mean 'insar-synthetic'" in msg and "digits" in msg
    with pytest.raises(ConfigError, match="did you mean 'digits'"):
        dataset_options("digit")


def test_options_must_be_a_mapping():
    with pytest.raises(ConfigError, match="mapping"):
        build_data("digits", [1, 2])


def _bundle(n_val=2):
    ds = lambda n: ArrayDataset(torch.zeros(n, 1, 2, 2), torch.zeros(n, dtype=torch.int64))  # noqa: E731
    return DataBundle("toy", TaskSpec("classification", 2), (1, 2, 2), (0.0, 1.0), ds(5), ds(n_val), ds(3))


def test_split_lookup():
    b = _bundle()
    assert b.split("train") is b.train and b.split("val") is b.val and b.split("test") is b.test
    with pytest.raises(ConfigError, match="did you mean 'val'"):
        b.split("vall")


def test_make_loader_validation():
    b = _bundle()
    with pytest.raises(ConfigError, match="batch_size"):
        make_loader(b.train, 0)
    with pytest.raises(DataError, match="drop_last"):
        make_loader(b.test, 4, drop_last=True)
    loader = make_loader(b.train, 2)
    assert loader.num_workers == 0 and len(loader) == 3


def test_empty_split_message():
    with pytest.raises(DataError) as info:
        build_data("insar-synthetic", {"n_train": 0, "n_val": 1, "n_test": 1, "size": 16})
    msg = str(info.value)
    assert "insar-synthetic" in msg and "'train'" in msg
