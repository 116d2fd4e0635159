"""segmentation-folder: images + class-index PNG masks; binary and multi-class targets, ignore_index,
nearest-neighbour mask resizing, and one-line errors naming the file."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from imaging import cli_error, pipeline_text, run_cli, write_image, write_mask, write_segmentation
from PIL import Image

from compressor.data import build_data
from compressor.errors import DataError

SPLITS3 = {"train": 6, "val": 2, "test": 2}


def test_multiclass_targets(tmp_path):
    masks = write_segmentation(tmp_path / "seg", SPLITS3, num_classes=3, ignore=255)
    b = build_data("segmentation-folder", {"root": str(tmp_path / "seg"), "num_classes": 3, "ignore_index": 255,
                                           "class_names": ["sky", "road", "car"]})
    assert b.task.kind == "segmentation" and b.task.multiclass_segmentation
    assert b.task.ignore_index == 255 and b.task.class_names == ("sky", "road", "car")
    assert b.sizes() == SPLITS3 and b.input_shape == (3, 16, 16)
    for i, (image, mask) in enumerate(b.val.items):
        x, y = b.val[i]
        assert x.shape == (3, 16, 16) and y.shape == (16, 16) and y.dtype == torch.int64
        assert np.array_equal(y.numpy(), masks[mask])  # ignored pixels keep 255
        assert image.stem == mask.stem


def test_binary_masks_and_palette_mode(tmp_path):
    root = tmp_path / "bin"
    for split in SPLITS3:
        write_image(root / split / "images" / "a.jpg", seed=1)
        write_mask(root / split / "masks" / "a.png", np.eye(16, dtype=np.uint8), mode="P")
    b = build_data("segmentation-folder", {"root": str(root), "num_classes": 1})
    x, y = b.train[0]
    assert y.shape == (1, 16, 16) and y.dtype == torch.float32
    assert torch.equal(y[0], torch.eye(16))  # the palette indices, not the palette colors


def test_masks_resized_nearest_and_cropped_like_images(tmp_path):
    masks = write_segmentation(tmp_path / "seg", SPLITS3, num_classes=5, size=(20, 24))
    b = build_data("segmentation-folder", {"root": str(tmp_path / "seg"), "num_classes": 5,
                                           "preprocess": {"resize": 10, "center_crop": [10, 8]}})
    assert b.input_shape == (3, 10, 8)
    image, mask = b.test.items[0]
    _, y = b.test[0]
    # by hand: shorter side 20 -> 10, the other int(10 * 24 / 20) = 12; crop rows 0..10, cols (12 - 8) // 2 = 2..10
    expected = np.asarray(Image.fromarray(masks[mask]).resize((12, 10), Image.Resampling.NEAREST))[:, 2:10]
    assert np.array_equal(y.numpy(), expected)
    assert set(np.unique(y.numpy())) <= set(np.unique(masks[mask]))  # no interpolated values


def test_missing_val_and_test_split_off_train(tmp_path):
    write_segmentation(tmp_path / "seg", {"train": 20}, num_classes=2)
    b = build_data("segmentation-folder", {"root": str(tmp_path / "seg"), "num_classes": 2}, seed=4)
    assert b.sizes() == {"train": 14, "val": 3, "test": 3}
    again = build_data("segmentation-folder", {"root": str(tmp_path / "seg"), "num_classes": 2}, seed=4)
    assert again.val.items == b.val.items
    ids = [m.stem for s in ("train", "val", "test") for _, m in b.split(s).items]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 20


def test_out_of_range_value_names_file_and_value(tmp_path):
    write_segmentation(tmp_path / "seg", SPLITS3, num_classes=3)
    bad = tmp_path / "seg" / "train" / "masks" / "s01.png"
    values = np.zeros((16, 16), np.uint8)
    values[5, 5] = 7
    write_mask(bad, values)
    b = build_data("segmentation-folder", {"root": str(tmp_path / "seg"), "num_classes": 3})
    with pytest.raises(DataError, match=r"s01\.png: mask value 7 is out of range for num_classes 3; valid: 0\.\.2"):
        b.train[1]
    binary = build_data("segmentation-folder", {"root": str(tmp_path / "seg"), "num_classes": 1})
    write_mask(bad, (values > 0).astype(np.uint8) * 255)  # a 0/255 mask
    with pytest.raises(DataError, match="mask value 255 .* a 0/255 mask"):
        binary.train[1]
    # through a run: the first training batch reads it
    line = cli_error(tmp_path, f"{{name: segmentation-folder, root: {tmp_path / 'seg'}, num_classes: 3}}",
                     model="seg-cnn")
    assert str(bad) in line and "mask value 255" in line


def test_cli_errors_name_the_file(tmp_path):
    data = "{{name: segmentation-folder, root: {}, num_classes: 3}}".format
    # a missing train split
    write_segmentation(tmp_path / "a", {"val": 2, "test": 2})
    line = cli_error(tmp_path, data(tmp_path / "a"), "seg-cnn")
    assert "no train split" in line and str(tmp_path / "a") in line
    # a mask whose size differs from its image
    write_segmentation(tmp_path / "b", SPLITS3)
    write_mask(tmp_path / "b" / "val" / "masks" / "s01.png", np.zeros((16, 12), np.uint8))
    line = cli_error(tmp_path, data(tmp_path / "b"), "seg-cnn")
    assert str(tmp_path / "b" / "val" / "masks" / "s01.png") in line and "16x12" in line and "16x16" in line
    # an image without its mask
    write_segmentation(tmp_path / "c", SPLITS3)
    (tmp_path / "c" / "test" / "masks" / "s00.png").unlink()
    line = cli_error(tmp_path, data(tmp_path / "c"), "seg-cnn")
    assert str(tmp_path / "c" / "test" / "images" / "s00.png") in line and "has no mask" in line
    # a JPEG mask
    write_segmentation(tmp_path / "d", SPLITS3)
    Image.new("L", (16, 16)).save(tmp_path / "d" / "train" / "masks" / "extra.jpg")
    line = cli_error(tmp_path, data(tmp_path / "d"), "seg-cnn")
    assert str(tmp_path / "d" / "train" / "masks" / "extra.jpg") in line and "not a PNG" in line
    # an RGB mask
    write_segmentation(tmp_path / "e", SPLITS3)
    Image.new("RGB", (16, 16)).save(tmp_path / "e" / "train" / "masks" / "s02.png")
    line = cli_error(tmp_path, data(tmp_path / "e"), "seg-cnn")
    assert str(tmp_path / "e" / "train" / "masks" / "s02.png") in line and "mask mode RGB" in line
    # class_names that do not match num_classes: refused by validation already
    line = cli_error(tmp_path, "{name: segmentation-folder, root: x, num_classes: 3, class_names: [a, b]}", "seg-cnn")
    assert "class_names has 2 names for num_classes 3" in line
    # ignore_index with binary masks: the binary loss has no ignored pixels
    line = cli_error(tmp_path, "{name: segmentation-folder, root: x, num_classes: 1, ignore_index: 255}", "seg-cnn")
    assert "ignore_index applies to semantic segmentation (num_classes >= 2)" in line


def test_multiclass_pipeline_runs(tmp_path):
    write_segmentation(tmp_path / "seg", SPLITS3, num_classes=3, ignore=255)
    data = f"{{name: segmentation-folder, root: {tmp_path / 'seg'}, num_classes: 3, ignore_index: 255}}"
    r = run_cli(tmp_path, pipeline_text(data, model="seg-cnn"))
    assert r.exit_code == 0, r.output
    ir = json.loads((tmp_path / "out" / "00_baseline" / "ir.json").read_text())
    assert ir["task"]["num_classes"] == 3 and ir["task"]["ignore_index"] == 255
    assert ir["meta"]["preprocess"]["mode"] == "RGB"
    metrics = json.loads((tmp_path / "out" / "report.json").read_text())["stages"][0]["metrics"]
    assert metrics, "the baseline was measured"
