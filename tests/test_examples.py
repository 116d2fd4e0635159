"""`compress data make-example` / `compressor.examples.make_example`: the documented layouts, the same bytes
for the same seed, classes a trivial feature tells apart, and a non-empty directory refused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from compressor.cli import EXAMPLE_KINDS, main
from compressor.errors import ConfigError
from compressor.examples import IGNORE, IMAGE_CLASSES, KINDS, SEGMENT_CLASSES, SPLITS, make_example

FOLDERS = ("image-folder", "segmentation-folder")
MODELS = ("hf-classifier", "hf-segmenter")


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_the_cli_lists_every_kind():
    assert EXAMPLE_KINDS == tuple(KINDS)


def test_image_folder_layout(tmp_path):
    files = make_example("image-folder", tmp_path / "img")
    counts = {"train": 60, "val": 21, "test": 21}
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == sorted(SPLITS)
    for split, n in counts.items():
        assert sorted(p.name for p in (tmp_path / "img" / split).iterdir()) == list(IMAGE_CLASSES)
        for cls in IMAGE_CLASSES:
            names = sorted(int(p.stem) for p in (tmp_path / "img" / split / cls).glob("*.png"))
            assert names == list(range(n // 3))
    assert len(files) == sum(counts.values()) == len(_tree(tmp_path / "img"))
    with Image.open(tmp_path / "img" / "train" / "blob" / "0.png") as im:
        assert (im.mode, im.size) == ("RGB", (32, 32))


def test_image_folder_classes_differ_in_their_pattern(tmp_path):
    """Stripes run along one axis (their gradient lies across it), a blob has neither: the ratio of vertical
    to horizontal gradient energy alone tells the three classes apart on every training image."""
    make_example("image-folder", tmp_path / "img")
    for cls in IMAGE_CLASSES:
        for p in (tmp_path / "img" / "train" / cls).glob("*.png"):
            x = np.asarray(Image.open(p), dtype=np.float64).mean(2)
            ratio = np.abs(np.diff(x, axis=0)).mean() / np.abs(np.diff(x, axis=1)).mean()
            expected = {"horizontal": ratio > 3, "vertical": ratio < 1 / 3, "blob": 1 / 3 <= ratio <= 3}[cls]
            assert expected, (p, ratio)


def test_segmentation_folder_layout(tmp_path):
    make_example("segmentation-folder", tmp_path / "seg", n_train=12, n_val=4, n_test=4)
    values: set[int] = set()
    for split, n in {"train": 12, "val": 4, "test": 4}.items():
        images = sorted(p.name for p in (tmp_path / "seg" / split / "images").iterdir())
        assert images == sorted(p.name for p in (tmp_path / "seg" / split / "masks").iterdir())
        assert len(images) == n
        for name in images:
            with Image.open(tmp_path / "seg" / split / "images" / name) as im, \
                    Image.open(tmp_path / "seg" / split / "masks" / name) as mask:
                assert (im.mode, im.size, mask.mode, mask.size) == ("RGB", (32, 32), "L", (32, 32))
                values |= set(np.unique(np.asarray(mask)).tolist())
    assert values == set(range(len(SEGMENT_CLASSES))) | {IGNORE}  # every class, and ignore pixels


@pytest.mark.parametrize("kind, names, arch", [("hf-classifier", IMAGE_CLASSES, "ViTForImageClassification"),
                                               ("hf-segmenter", SEGMENT_CLASSES, "SegformerForSemanticSegmentation")])
def test_hf_model_layout(tmp_path, kind, names, arch):
    pytest.importorskip("transformers")
    from safetensors import safe_open

    d = tmp_path / kind
    make_example(kind, d, size=24)
    assert sorted(_tree(d)) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    config = json.loads((d / "config.json").read_text())
    assert config["architectures"] == [arch] and "auto_map" not in config
    assert [config["id2label"][str(i)] for i in range(3)] == list(names)
    processor = json.loads((d / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 24, "width": 24} and processor["do_normalize"] is True
    with safe_open(d / "model.safetensors", "pt") as f:
        assert len(list(f.keys())) > 10


@pytest.mark.parametrize("kind", list(KINDS))
def test_same_seed_same_bytes(tmp_path, kind):
    if kind in MODELS:
        pytest.importorskip("transformers")
    small = {"n_train": 6, "n_val": 3, "n_test": 3} if kind in FOLDERS else {}
    make_example(kind, tmp_path / "a", seed=3, **small)
    make_example(kind, tmp_path / "b", seed=3, **small)
    make_example(kind, tmp_path / "c", seed=4, **small)
    a, b, c = (_tree(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_a_non_empty_directory_is_refused_unless_forced(tmp_path):
    d = tmp_path / "img"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not empty; .*--force"):
        make_example("image-folder", d, n_train=3, n_val=3, n_test=3)
    r = CliRunner().invoke(main, ["data", "make-example", "image-folder", str(d)])
    assert r.exit_code == 2 and r.output.startswith("error: ") and r.output.count("\n") == 1
    make_example("image-folder", d, force=True, n_train=6, n_val=3, n_test=3)
    make_example("image-folder", d, force=True, n_train=3, n_val=3, n_test=3)  # replaces the larger example
    assert len(list((d / "train").rglob("*.png"))) == 3
    assert (d / "notes.txt").read_text() == "mine"  # what is not the example's stays


def test_cli_writes_an_example_and_rejects_bad_kinds_and_options(tmp_path):
    r = CliRunner().invoke(main, ["data", "make-example", "segmentation-folder", str(tmp_path / "s"), "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "wrote 204 files of the segmentation-folder example" in r.output
    r = CliRunner().invoke(main, ["data", "make-example", "imagefolder", str(tmp_path / "x")])
    assert r.exit_code == 2 and "'imagefolder' is not one of 'image-folder'" in r.output
    with pytest.raises(ConfigError, match="unknown option 'n_trian'; did you mean 'n_train'"):
        make_example("image-folder", tmp_path / "y", n_trian=3)


@pytest.mark.parametrize("kind, task, classes", [("image-folder", "classification", IMAGE_CLASSES),
                                                 ("segmentation-folder", "segmentation", SEGMENT_CLASSES)])
def test_folder_examples_read_back_as_their_datasets(tmp_path, kind, task, classes):
    """The pipeline block the CLI prints builds the dataset (once that dataset is registered)."""
    import yaml

    from compressor.data import DATASETS, build_data
    from compressor.plugins import load_plugins

    load_plugins()
    if kind not in DATASETS:
        pytest.skip(f"the {kind} dataset is not registered in this checkout")
    make_example(kind, tmp_path / "d", n_train=6, n_val=3, n_test=3)
    block = yaml.safe_load(KINDS[kind].usage.format(dir=tmp_path / "d"))["data"]
    bundle = build_data(block.pop("name"), block)
    assert bundle.sizes() == {"train": 6, "val": 3, "test": 3}
    assert (bundle.task.kind, bundle.task.class_names, bundle.input_shape) == (task, classes, (3, 32, 32))
    x, y = bundle.train[0]
    assert x.shape == (3, 32, 32) and (y.shape == (32, 32) if task == "segmentation" else y.ndim == 0)
