"""hf-dataset: a `datasets` dataset saved with save_to_disk, read offline.

The `datasets` package is not installed in every environment (it is the `hf` extra). Without it the
build is refused in one line (tested), the mapping from a loaded dataset to a DataBundle (splits,
columns, ClassLabel names, labels, masks) is tested against a small in-memory stand-in for
`datasets.load_from_disk` with the same interface (column_names, features, rows, columns,
select_columns), and the save_to_disk round trip runs only where `datasets` is installed.
"""
from __future__ import annotations

import importlib.util
import io
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from imaging import cli_error
from PIL import Image

from compressor.data import build_data
from compressor.errors import ConfigError, DataError

HAVE_DATASETS = importlib.util.find_spec("datasets") is not None


class ClassLabel:
    """What `datasets.ClassLabel` exposes to the loader: its names (matched by class name)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names


class Table:
    """A `datasets.Dataset` as the loader reads it: rows by index, columns by name, features."""

    def __init__(self, columns: dict[str, list], features: dict | None = None) -> None:
        self.columns, self.features = columns, features or {}

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, key):
        if isinstance(key, str):
            return list(self.columns[key])
        return {name: values[key] for name, values in self.columns.items()}

    def select_columns(self, names: list[str]) -> "Table":
        return Table({n: self.columns[n] for n in names}, {n: f for n, f in self.features.items() if n in names})


@pytest.fixture
def saved(monkeypatch, tmp_path):
    """Register what `load_from_disk(path)` returns for a path; returns (register, path)."""
    store: dict[str, object] = {}

    def load_from_disk(path: str):
        if path not in store:
            raise FileNotFoundError(f"Directory {path} is neither a `Dataset` directory nor a `DatasetDict` directory.")
        return store[path]

    module = types.ModuleType("datasets")
    module.load_from_disk = load_from_disk
    monkeypatch.setitem(sys.modules, "datasets", module)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

    def register(obj, name="ds"):
        path = tmp_path / name
        path.mkdir(exist_ok=True)
        store[str(path)] = obj
        return str(path)

    return register


def _image(seed: int, mode: str = "RGB", size=(12, 10)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def _png_bytes(img: Image.Image) -> dict:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def _classes(n: int, labels=None, seed: int = 0) -> Table:
    images = [_image(seed + i) for i in range(n)]
    images[1] = _png_bytes(images[1])  # the encoded form datasets keeps with decode=False
    images[2] = np.asarray(images[2])  # an array column
    labels = labels if labels is not None else [i % 3 for i in range(n)]
    return Table({"img": images, "label": labels, "other": list(range(n))},
                 {"label": ClassLabel(["cat", "dog", "emu"])})


def test_classification_with_classlabel(saved):
    path = saved({"train": _classes(30), "validation": _classes(6, seed=100)})
    b = build_data("hf-dataset", {"path": path, "image_column": "img", "test_fraction": 0.2}, seed=0)
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"
    assert b.task.class_names == ("cat", "dog", "emu") and b.task.num_classes == 3
    assert b.sizes() == {"train": 24, "val": 6, "test": 6}  # validation -> val; test: 2 of each class's 10
    assert b.input_shape == (3, 12, 10) and b.preprocess["mode"] == "RGB"
    for split in ("train", "val", "test"):
        ds = b.split(split)
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (3, 12, 10) and int(y) == ds.rows[i] % 3
    x, _ = b.val[0]
    assert np.allclose(x.numpy(), np.asarray(_image(100), dtype=np.float32).transpose(2, 0, 1) / 255, atol=1e-7)
    again = build_data("hf-dataset", {"path": path, "image_column": "img", "test_fraction": 0.2}, seed=0)
    assert again.test.rows == b.test.rows


def test_split_mapping_and_single_dataset(saved):
    path = saved({"fit": _classes(12), "dev": _classes(3), "holdout": _classes(3)})
    b = build_data("hf-dataset", {"path": path, "image_column": "img",
                                  "splits": {"train": "fit", "val": "dev", "test": "holdout"}})
    assert b.sizes() == {"train": 12, "val": 3, "test": 3}
    with pytest.raises(DataError, match="splits.val names 'valid', which .* lacks; .*valid: dev, fit, holdout"):
        build_data("hf-dataset", {"path": path, "image_column": "img", "splits": {"train": "fit", "val": "valid"}})
    with pytest.raises(DataError, match="has no train split \\(it has dev, fit, holdout\\)"):
        build_data("hf-dataset", {"path": path, "image_column": "img"})
    single = saved(_classes(20), "single")
    assert sum(build_data("hf-dataset", {"path": single, "image_column": "img"}).sizes().values()) == 20


def test_bad_inputs(saved):
    path = saved({"train": _classes(9, labels=[0, 1, 2, 0, 1, 5, 0, 1, 2])})
    with pytest.raises(DataError, match="split 'train' row 5 column 'label': label 5 is out of range; valid: 0..2"):
        build_data("hf-dataset", {"path": path, "image_column": "img"})
    with pytest.raises(DataError, match="unknown column 'image'; .*valid: img, label, other; set image_column"):
        build_data("hf-dataset", {"path": path})
    no_names = saved({"train": Table({"image": [_image(0)] * 21, "label": [0, 1, 2] * 7})}, "plain")
    with pytest.raises(DataError, match="is not a ClassLabel, so the number of classes is unknown; set num_classes"):
        build_data("hf-dataset", {"path": no_names})
    assert build_data("hf-dataset", {"path": no_names, "num_classes": 3}).task.class_names is None
    mixed = _classes(12)
    mixed.columns["img"][7] = _image(7, "L")
    b = build_data("hf-dataset", {"path": saved({"train": mixed}, "mixed"), "image_column": "img"}, seed=0)
    rows = {s: b.split(s).rows for s in ("train", "val", "test")}
    split, i = next((s, r.index(7)) for s, r in rows.items() if 7 in r)
    with pytest.raises(DataError, match="row 7 is L .*mixed channel counts"):
        b.split(split)[i]
    with pytest.raises(DataError, match="-gone does not exist; give the folder written by save_to_disk"):
        build_data("hf-dataset", {"path": path + "-gone"})
    not_saved = Path(path).parent / "not_saved"
    not_saved.mkdir()
    with pytest.raises(DataError, match=r"not_saved is not a dataset saved with save_to_disk \(FileNotFoundError"):
        build_data("hf-dataset", {"path": str(not_saved)})


def test_segmentation_masks(saved):
    masks = [Image.fromarray(np.full((12, 10), i % 3, np.uint8)) for i in range(10)]
    masks[4] = Image.fromarray(np.full((12, 10), 255, np.uint8))
    table = Table({"image": [_image(i) for i in range(10)], "mask": masks})
    path = saved({"train": table, "test": table})
    opts = {"path": path, "label_column": "mask", "task": "segmentation", "num_classes": 3}
    b = build_data("hf-dataset", {**opts, "ignore_index": 255, "val_fraction": 0.2})
    assert b.task.multiclass_segmentation and b.sizes() == {"train": 8, "val": 2, "test": 10}
    x, y = b.test[4]
    assert y.shape == (12, 10) and y.dtype == torch.int64 and int(y.max()) == 255
    plain = build_data("hf-dataset", opts)
    with pytest.raises(DataError, match="row 4 column 'mask': mask value 255 is out of range for num_classes 3"):
        plain.test[4]
    with pytest.raises(ConfigError, match="segmentation needs num_classes"):
        build_data("hf-dataset", {"path": path, "task": "segmentation"})


@pytest.mark.skipif(HAVE_DATASETS, reason="the `datasets` package is installed here: the build does not refuse")
def test_without_the_datasets_package_one_line(tmp_path):
    line = cli_error(tmp_path, f"{{name: hf-dataset, path: {tmp_path}}}")
    assert "needs the Hugging Face `datasets` package" in line and "pip install" in line


@pytest.mark.skipif(not HAVE_DATASETS, reason="the Hugging Face `datasets` package is not installed here (it is the "
                                              "optional `hf` extra); the save_to_disk round trip needs it")
def test_save_to_disk_round_trip(tmp_path):
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    ds = datasets.Dataset.from_dict({"image": [_image(i) for i in range(10)], "label": [i % 2 for i in range(10)]},
                                    features=features)
    datasets.DatasetDict({"train": ds, "test": ds.select(range(4))}).save_to_disk(str(tmp_path / "saved"))
    b = build_data("hf-dataset", {"path": str(tmp_path / "saved"), "val_fraction": 0.2})
    assert b.task.class_names == ("a", "b") and b.sizes() == {"train": 8, "val": 2, "test": 4}
    x, y = b.test[3]
    assert x.shape == (3, 12, 10) and int(y) == 1
