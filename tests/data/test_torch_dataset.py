"""torch-dataset: the user's torch Datasets from a factory; items checked on access; the factory is user code,
trusted in a run and refused in a reproducer without --trust-factory."""
from __future__ import annotations

import textwrap

import pytest
import torch
from click.testing import CliRunner
from imaging import cli_error, pipeline_text, run_cli

from compressor.cli import main
from compressor.data import build_data, data_factory
from compressor.errors import ConfigError, DataError

FACTORY = textwrap.dedent("""\
    import torch
    from pathlib import Path
    from torch.utils.data import TensorDataset

    def make(n=12, bad_label_at=-1, calls=None, classes=3):
        if calls:  # count the calls: a refused replay must not call the factory
            with open(calls, "a") as f:
                f.write("call\\n")
        g = torch.Generator().manual_seed(0)
        def split(k):
            y = torch.arange(k) % classes
            if 0 <= bad_label_at < k:
                y[bad_label_at] = 7
            return TensorDataset(torch.rand(k, 2, 8, 8, generator=g) * 4 - 2, y)
        return {"train": split(n), "val": lambda: split(4), "test": split(4)}

    def masks():
        x = torch.rand(6, 1, 8, 8)
        y = (torch.rand(6, 8, 8) * 3).long()
        return {s: TensorDataset(x, y) for s in ("train", "val", "test")}

    def no_test():
        return {"train": TensorDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2).long()),
                "val": TensorDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2).long())}

    def broken():
        raise RuntimeError("no such directory: /data")

    def not_a_mapping():
        return [1, 2, 3]
    """)


@pytest.fixture
def user_module(tmp_path):
    (tmp_path / "userdata.py").write_text(FACTORY)
    return tmp_path


def _opts(path, factory="userdata:make", **extra):
    return {"factory": factory, "search_path": str(path), "task": "classification", "num_classes": 3, **extra}


def test_mapping_of_datasets_and_callables(user_module):
    b = build_data("torch-dataset", _opts(user_module, kwargs={"n": 9}, class_names=["a", "b", "c"]))
    assert b.sizes() == {"train": 9, "val": 4, "test": 4}
    assert b.input_shape == (2, 8, 8) and b.task.class_names == ("a", "b", "c")
    lo, hi = b.input_range  # measured on the first train items: inside the data's [-2, 2)
    assert -2.0 <= lo < -1.0 and 1.0 < hi < 2.0
    x, y = b.val[1]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and int(y) == 1
    assert b.preprocess is None
    fixed = build_data("torch-dataset", _opts(user_module, input_range=[-2.0, 2.0]))
    assert fixed.input_range == (-2.0, 2.0)


def test_multiclass_masks(user_module):
    b = build_data("torch-dataset", _opts(user_module, "userdata:masks", task="segmentation", ignore_index=255))
    x, y = b.train[0]
    assert x.shape == (1, 8, 8) and y.shape == (8, 8) and y.dtype == torch.int64
    assert b.task.multiclass_segmentation and b.task.ignore_index == 255


def test_items_are_checked(user_module):
    # the build reads the first 16 train items (input range): item 18 is read on access only
    b = build_data("torch-dataset", _opts(user_module, kwargs={"n": 20, "bad_label_at": 18}))
    with pytest.raises(DataError, match=r"torch-dataset split 'train' item 18: label 7 is out of range; valid: 0\.\.2"):
        b.train[18]
    with pytest.raises(DataError, match=r"split 'train' item 0: mask value 2 is out of range for num_classes 1"):
        build_data("torch-dataset", _opts(user_module, "userdata:masks", task="segmentation", num_classes=1))


def test_factory_errors(user_module):
    with pytest.raises(DataError, match=r"data factory 'userdata:broken' failed: RuntimeError: no such directory"):
        build_data("torch-dataset", _opts(user_module, "userdata:broken"))
    with pytest.raises(DataError, match="returned list, not a mapping"):
        build_data("torch-dataset", _opts(user_module, "userdata:not_a_mapping"))
    with pytest.raises(ConfigError, match="factory must look like"):
        build_data("torch-dataset", _opts(user_module, "userdata.make"))


def test_cli_errors(user_module, tmp_path):
    data = "{{name: torch-dataset, factory: 'userdata:{}', search_path: {}, task: classification, num_classes: 3{}}}"
    line = cli_error(tmp_path, data.format("no_test", user_module, ""))
    assert "missing: test" in line and "userdata:no_test" in line
    line = cli_error(tmp_path, data.format("make", user_module, ", kwargs: {bad_label_at: 2}"))
    assert "split 'train' item 2: label 7 is out of range" in line


def test_reproducer_needs_trust_factory(user_module, tmp_path):
    """A failed run writes a reproducer; replaying it calls the data factory only with --trust-factory."""
    calls = tmp_path / "calls.txt"
    data = (f"{{name: torch-dataset, factory: 'userdata:make', search_path: {user_module}, task: classification, "
            f"num_classes: 3, kwargs: {{n: 20, bad_label_at: 18, calls: '{calls}'}}}}")
    r = run_cli(tmp_path, pipeline_text(data))
    assert r.exit_code == 2 and "label 7 is out of range" in r.stderr  # the user's own run calls it
    assert calls.read_text().count("call") == 1
    reproducer = tmp_path / "out" / "reproduce"
    assert reproducer.is_dir()
    refused = CliRunner().invoke(main, ["run", "--reproduce", str(reproducer)])
    assert refused.exit_code == 2 and "userdata:make" in refused.stderr and "--trust-factory" in refused.stderr
    assert calls.read_text().count("call") == 1  # refused before anything ran
    trusted = CliRunner().invoke(main, ["run", "--reproduce", str(reproducer), "--trust-factory"])
    assert trusted.exit_code == 2 and "label 7 is out of range" in trusted.stderr  # replayed: the same failure
    assert calls.read_text().count("call") == 2
    assert data_factory({"name": "torch-dataset", "factory": "userdata:make"}) == "userdata:make"
    assert data_factory({"name": "digits"}) is None
