"""image-folder: class folders of images, split by folder or by stratified fractions; one-line errors."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from imaging import cli_error, pipeline_text, run_cli, write_classes, write_image
from PIL import Image

from compressor.data import DataBundle, build_data, default_workers, loader_workers, make_loader
from compressor.errors import DataError

COUNTS = {"cat": 10, "dog": 20, "emu": 7}


def _files(ds) -> list[Path]:
    return [p for p, _ in ds.items]


def _flat(tmp_path: Path) -> Path:
    root = tmp_path / "flat"
    write_classes(root, COUNTS)
    return root


def test_split_layout(tmp_path):
    root = tmp_path / "imgs"
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        write_classes(root / split, {"zebra": n, "ant": n, "bee": n}, size=(12, 10), seed=len(split))
    b = build_data("image-folder", {"root": str(root)})
    assert b.task.kind == "classification" and b.task.num_classes == 3
    assert b.task.class_names == ("ant", "bee", "zebra")  # sorted folder names: their order is the index
    assert b.sizes() == {"train": 12, "val": 6, "test": 9}
    assert b.input_shape == (3, 12, 10) and b.input_range == (0.0, 1.0)
    for i, (path, label) in enumerate(b.val.items):
        x, y = b.val[i]
        assert b.task.class_names[int(y)] == path.parent.name == b.task.class_names[label]
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and y.dim() == 0
        expected = np.asarray(Image.open(path), dtype=np.float32).transpose(2, 0, 1) / 255.0
        assert np.allclose(x.numpy(), expected, atol=1e-7)
    assert b.preprocess["mode"] == "RGB" and b.preprocess["resize"] is None


def test_flat_layout_stratified_split_by_seed(tmp_path):
    root = _flat(tmp_path)
    b = build_data("image-folder", {"root": str(root)}, seed=0)
    # per class: round(n * 0.15) to val and to test, the rest to train (Python rounds half to even)
    expected = {s: {c: (round(n * 0.15) if s != "train" else n - 2 * round(n * 0.15)) for c, n in COUNTS.items()}
                for s in ("train", "val", "test")}
    for split in ("train", "val", "test"):
        got = Counter(p.parent.name for p in _files(b.split(split)))
        assert dict(got) == expected[split], split
    everything = sorted(_files(b.train) + _files(b.val) + _files(b.test))
    assert everything == sorted(root.glob("*/*.png"))  # a partition: every image once
    again = build_data("image-folder", {"root": str(root)}, seed=0)
    assert _files(again.val) == _files(b.val)
    other = build_data("image-folder", {"root": str(root)}, seed=1)
    assert _files(other.val) != _files(b.val)
    fractions = build_data("image-folder", {"root": str(root), "val_fraction": 0.3, "test_fraction": 0.1}, seed=0)
    assert len(fractions.val) == sum(round(n * 0.3) for n in COUNTS.values())
    assert len(fractions.test) == sum(round(n * 0.1) for n in COUNTS.values())


def test_missing_val_is_split_off_train(tmp_path):
    root = tmp_path / "imgs"
    write_classes(root / "train", {"a": 10, "b": 10})
    write_classes(root / "test", {"a": 2, "b": 3}, seed=5)
    b = build_data("image-folder", {"root": str(root), "val_fraction": 0.2}, seed=3)
    assert sorted(_files(b.test)) == sorted((root / "test").glob("*/*.png"))  # the given split is kept as is
    assert len(b.val) == 4 and len(b.train) == 16
    assert set(_files(b.val)) | set(_files(b.train)) == set((root / "train").glob("*/*.png"))


def test_decoded_on_access_and_cached_on_request(tmp_path):
    root = _flat(tmp_path)
    lazy = build_data("image-folder", {"root": str(root)})
    cached = build_data("image-folder", {"root": str(root), "cache": True})
    path = lazy.train.items[0][0]
    before_lazy, before_cached = lazy.train[0][0], cached.train[0][0]
    write_image(path, seed=999)  # the file changes after the build and after one access
    assert not torch.equal(lazy.train[0][0], before_lazy)  # read again from disk
    assert torch.equal(cached.train[0][0], before_cached)  # kept in memory
    assert lazy.train.in_memory is False and cached.train.in_memory is True
    assert loader_workers(cached.train) == 0 and loader_workers(lazy.train) == 0  # tiny: main process


def test_mode_conversion_and_channels(tmp_path):
    root = tmp_path / "gray"
    write_classes(root, {"a": 4, "b": 4}, mode="L")
    assert build_data("image-folder", {"root": str(root)}).input_shape == (1, 16, 16)
    rgb = build_data("image-folder", {"root": str(root), "preprocess": {"mode": "RGB"}})
    x, _ = rgb.train[0]
    assert x.shape == (3, 16, 16) and torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def test_worker_count_changes_nothing(tmp_path):
    root = _flat(tmp_path)
    b = build_data("image-folder", {"root": str(root), "num_workers": 2})
    assert b.num_workers == 2
    batches = {}
    for workers in (0, 2):
        loader = make_loader(b.train, 5, shuffle=True, seed=11, num_workers=workers)
        assert loader.num_workers == workers and not loader.persistent_workers
        batches[workers] = [(x, y) for x, y in loader]
    assert len(batches[0]) == len(batches[2])
    for (x0, y0), (x2, y2) in zip(batches[0], batches[2]):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)


def test_automatic_workers():
    class Lazy(torch.utils.data.Dataset):
        in_memory = False

        def __len__(self) -> int:
            return 1000

    assert loader_workers(Lazy()) == default_workers()
    assert loader_workers(Lazy(), 0) == 0  # on request
    assert loader_workers(torch.utils.data.Subset(Lazy(), range(10))) == 0  # tiny
    assert loader_workers(torch.utils.data.TensorDataset(torch.zeros(1000, 1))) == 0  # in memory
    assert 0 <= default_workers() <= 4


def test_worker_errors_are_one_line(tmp_path):
    root = _flat(tmp_path)
    b = build_data("image-folder", {"root": str(root)})
    bad = b.train.items[3][0]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")  # broken after the build: found when read
    with pytest.raises(DataError) as info:
        list(make_loader(b.train, 4, num_workers=2))
    text = str(info.value)
    assert str(bad) in text and "not a readable image" in text
    assert "Traceback" not in text and "\n" not in text


def test_max_samples_is_a_seeded_subset(tmp_path):
    root = _flat(tmp_path)
    b = build_data("image-folder", {"root": str(root), "max_samples": 5}, seed=0)
    assert b.sizes() == {"train": 5, "val": 5, "test": 5}
    again = build_data("image-folder", {"root": str(root), "max_samples": 5}, seed=0)
    assert torch.equal(b.train[2][0], again.train[2][0])


def _names(line: str, *parts: object) -> None:
    for part in parts:
        assert str(part) in line, (part, line)


def test_cli_errors_name_the_file(tmp_path):
    # a missing root
    _names(cli_error(tmp_path, f"{{name: image-folder, root: {tmp_path / 'nope'}}}"), tmp_path / "nope",
           "does not exist")
    # the split layout without train/
    root = tmp_path / "no_train"
    write_classes(root / "val", {"a": 2, "b": 2})
    _names(cli_error(tmp_path, f"{{name: image-folder, root: {root}}}"), root / "train", "is missing")
    # val/ missing and val_fraction 0
    root = tmp_path / "no_val"
    write_classes(root / "train", {"a": 3, "b": 3})
    _names(cli_error(tmp_path, f"{{name: image-folder, root: {root}, val_fraction: 0}}"), "no val split",
           "val_fraction")
    # an empty class folder
    root = tmp_path / "empty"
    write_classes(root, {"a": 5, "b": 5})
    (root / "c").mkdir()
    _names(cli_error(tmp_path, f"{{name: image-folder, root: {root}}}"), root / "c", "holds no images")
    # an unreadable image
    root = tmp_path / "broken"
    write_classes(root, {"a": 5, "b": 5})
    (root / "b" / "zz.png").write_bytes(b"not an image")
    _names(cli_error(tmp_path, f"{{name: image-folder, root: {root}}}"), root / "b" / "zz.png",
           "not a readable image")
    # mixed channel counts
    root = tmp_path / "mixed"
    write_classes(root, {"a": 5, "b": 5})
    write_image(root / "b" / "gray.png", mode="L")
    _names(cli_error(tmp_path, f"{{name: image-folder, root: {root}}}"), "mixed channel counts", root / "b" / "gray.png",
           "preprocess.mode")
    # different sizes without a resize
    root = tmp_path / "sizes"
    write_classes(root, {"a": 5, "b": 5})
    write_image(root / "a" / "wide.png", size=(16, 20))
    _names(cli_error(tmp_path, f"{{name: image-folder, root: {root}}}"), root / "a" / "wide.png", "preprocess.resize")
    # a crop larger than the (resized) image
    _names(cli_error(tmp_path, f"{{name: image-folder, root: {root}, preprocess: {{resize: 8, center_crop: 12}}}}"),
           "center_crop 12x12")
    # 16-bit images
    root = tmp_path / "deep"
    write_classes(root, {"a": 5, "b": 5})
    Image.fromarray(np.full((16, 16), 4000, dtype=np.uint16)).save(root / "a" / "deep.png")
    _names(cli_error(tmp_path, f"{{name: image-folder, root: {root}}}"), root / "a" / "deep.png", "16-bit")


def test_pipeline_runs_on_image_folder(tmp_path):
    root = tmp_path / "imgs"
    write_classes(root / "train", {"ant": 8, "bee": 8}, size=(20, 20))
    write_classes(root / "val", {"ant": 2, "bee": 2}, size=(20, 20), seed=1)
    data = f"{{name: image-folder, root: {root}, test_fraction: 0.25, preprocess: {{resize: 16, center_crop: 16}}}}"
    r = run_cli(tmp_path, pipeline_text(data))
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["stages"][0]["metrics"]["accuracy"] is not None
    ir = json.loads((tmp_path / "out" / "00_baseline" / "ir.json").read_text())
    assert ir["meta"]["preprocess"]["center_crop"] == [16, 16]  # recorded for the deployment side
    assert ir["inputs"][0]["shape"] == [None, 3, 16, 16]


def test_bundle_defaults_keep_old_constructions():
    ds = torch.utils.data.TensorDataset(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.int64))
    from compressor.ir import TaskSpec

    b = DataBundle("toy", TaskSpec("classification", 2), (1, 2, 2), (0.0, 1.0), ds, ds, ds)
    assert b.preprocess is None and b.num_workers is None
