"""Small generated examples to try the compiler on real-layout data and pretrained models, offline.

`make_example(kind, dir, **options)` (CLI: `compress data make-example KIND DIR`) writes one of:

- `image-folder`: `DIR/<split>/<class>/<i>.png` for splits train, val and test; 3 classes of RGB patterns
  (`blob`: a coloured disc, `horizontal` and `vertical`: stripes), `size`×`size` pixels (32), `n_train` /
  `n_val` / `n_test` images per split (60 / 21 / 21), dealt to the classes in turn.
- `segmentation-folder`: `DIR/<split>/images/<id>.png` (RGB) and `DIR/<split>/masks/<id>.png` (mode L:
  class indices 0 background, 1 square, 2 disc; 255 on a 1-pixel ring around each shape = ignore).
- `hf-classifier`: a tiny random-init Hugging Face ViTForImageClassification (3 labels named like the
  image-folder classes) saved with `save_pretrained(DIR, safe_serialization=True)`, with a
  `preprocessor_config.json` (resize to `size`, rescale 1/255, normalize mean 0.5 std 0.5).
- `hf-segmenter`: a tiny random-init SegformerForSemanticSegmentation (3 labels named like the
  segmentation-folder classes) and its `preprocessor_config.json` (ImageNet mean / std).

Everything is drawn from `seed`: the same seed writes the same bytes. A non-empty DIR is refused unless
`force`, which replaces the files the example writes (and, for the folders, its split directories).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from compressor.errors import ConfigError
from compressor.options import option, parse_options

SPLITS = ("train", "val", "test")
IMAGE_CLASSES = ("blob", "horizontal", "vertical")      # sorted: folder order = class index
SEGMENT_CLASSES = ("background", "square", "disc")      # mask values 0, 1, 2
IGNORE = 255


@dataclass(frozen=True)
class FolderOptions:
    seed: int = option(0, "random seed: the same seed writes the same files", min=0)
    size: int = option(32, "image side in pixels", min=8, max=1024)
    n_train: int = option(60, "images in train", min=3, max=100_000)
    n_val: int = option(21, "images in val", min=3, max=100_000)
    n_test: int = option(21, "images in test", min=3, max=100_000)


@dataclass(frozen=True)
class ModelOptions:
    seed: int = option(0, "weight initialization seed: the same seed writes the same files", min=0)
    size: int = option(32, "input side in pixels the model and its preprocessor expect", min=8, max=1024)


# ---- images ------------------------------------------------------------------------------------------

def _contrasting(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dark and a light colour, in random order: the pattern stands out of the pixel noise."""
    dark, light = rng.uniform(0.05, 0.4, 3), rng.uniform(0.6, 0.95, 3)
    return (dark, light) if rng.random() < 0.5 else (light, dark)


def _pattern(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One float (size, size, 3) image in [0, 1] of class `kind`: random colours, period, phase and position,
    with pixel noise, so that the class is in the pattern's shape, not its colour."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    a, b = _contrasting(rng)
    if kind == "blob":
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size * rng.uniform(0.15, 0.3)) ** 2
    else:
        period = rng.uniform(size / 8, size / 4)
        axis = yy if kind == "horizontal" else xx
        inside = np.sin(2 * np.pi * axis / period + rng.uniform(0, 2 * np.pi)) > 0
    img = np.where(inside[..., None], a, b) + rng.normal(0, 0.04, (size, size, 3))
    return np.clip(img, 0, 1)


def _png(path: Path, array: np.ndarray, mode: str) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)  # uint8 (H, W, 3): RGB; (H, W): L
    assert image.mode == mode, image.mode
    image.save(path, format="PNG")
    return path


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(img * 255).astype(np.uint8)


def _samples(o: FolderOptions) -> Iterator[tuple[str, int]]:
    """(split, index in the split) of every sample, in the order they are drawn."""
    for split, n in (("train", o.n_train), ("val", o.n_val), ("test", o.n_test)):
        yield from ((split, i) for i in range(n))


def image_folder(d: Path, o: FolderOptions) -> list[Path]:
    rng = np.random.default_rng(o.seed)
    files = []
    for split, i in _samples(o):
        kind = IMAGE_CLASSES[i % len(IMAGE_CLASSES)]  # dealt in turn: class sizes differ by at most one
        image = _to_uint8(_pattern(kind, o.size, rng))
        files.append(_png(d / split / kind / f"{i // len(IMAGE_CLASSES)}.png", image, "RGB"))
    return files


def _scene(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image of 1-3 squares and discs on a noisy background, and its mask: 0 background, 1 square,
    2 disc, 255 on the 1-pixel ring around each shape (a boundary no loss or metric should count)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    background, foreground = _contrasting(rng)
    img = np.broadcast_to(background, (size, size, 3)).copy()
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(1, 3))
        cy, cx = rng.uniform(size * 0.2, size * 0.8, 2)
        r = size * rng.uniform(0.1, 0.2)
        if cls == 1:
            dist = np.maximum(np.abs(yy - cy), np.abs(xx - cx))
        else:
            dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        ring = (dist > r) & (dist <= r + 1)
        inside = dist <= r
        img[inside] = np.clip(foreground + rng.normal(0, 0.05, 3), 0, 1)
        mask[ring & (mask == 0)] = IGNORE
        mask[inside] = cls
    img += rng.normal(0, 0.04, img.shape)
    return _to_uint8(np.clip(img, 0, 1)), mask


def segmentation_folder(d: Path, o: FolderOptions) -> list[Path]:
    rng = np.random.default_rng(o.seed)
    files = []
    for split, i in _samples(o):
        img, mask = _scene(o.size, rng)
        name = f"{i:04d}.png"
        files += [_png(d / split / "images" / name, img, "RGB"), _png(d / split / "masks" / name, mask, "L")]
    return files


# ---- Hugging Face models -------------------------------------------------------------------------------

def _processor(kind: str, size: int, mean: list[float], std: list[float]) -> dict[str, Any]:
    """A preprocessor_config.json as transformers' image processors write it."""
    doc: dict[str, Any] = {"do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": mean,
                           "image_processor_type": kind, "image_std": std, "resample": 2,
                           "rescale_factor": 1 / 255, "size": {"height": size, "width": size}}
    if kind == "SegformerImageProcessor":
        doc["do_reduce_labels"] = False
    return doc


def _save_model(d: Path, model: Any, processor: dict[str, Any]) -> list[Path]:
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # save_pretrained's shard bar: noise for a one-file model
    try:
        model.save_pretrained(str(d), safe_serialization=True)
    finally:
        if was:
            hf_logging.enable_progress_bar()
    (d / "preprocessor_config.json").write_text(json.dumps(processor, indent=2, sort_keys=True) + "\n")
    return [d / "config.json", d / "model.safetensors", d / "preprocessor_config.json"]


def _labels(names: tuple[str, ...]) -> dict[str, Any]:
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def hf_classifier(d: Path, o: ModelOptions) -> list[Path]:
    """ViT: 2 layers, hidden 32, 4 heads, 4×4 patches of size/4 pixels (about 24k parameters at 32 px).
    Weights drawn from N(0, 0.1), not transformers' 0.02 (made for models 20× wider): trained from scratch
    on the image-folder example, 10 epochs reach 95-100% val accuracy for every seed tried, against
    43-67% from the 0.02 init."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(image_size=o.size, patch_size=o.size // 4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0, initializer_range=0.1, **_labels(IMAGE_CLASSES))
    torch.manual_seed(o.seed)
    return _save_model(d, ViTForImageClassification(cfg), _processor("ViTImageProcessor", o.size, [0.5] * 3, [0.5] * 3))


def hf_segmenter(d: Path, o: ModelOptions) -> list[Path]:
    """Segformer: 2 stages (hidden 16, 32), 1 and 2 heads, decoder 32 (about 20k parameters)."""
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    cfg = SegformerConfig(num_channels=3, num_encoder_blocks=2, depths=[1, 1], hidden_sizes=[16, 32],
                          num_attention_heads=[1, 2], sr_ratios=[2, 1], patch_sizes=[7, 3], strides=[4, 2],
                          mlp_ratios=[2, 2], decoder_hidden_size=32, hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0, drop_path_rate=0.0,
                          **_labels(SEGMENT_CLASSES))
    torch.manual_seed(o.seed)
    processor = _processor("SegformerImageProcessor", o.size, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    return _save_model(d, SegformerForSemanticSegmentation(cfg), processor)


HF_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


@dataclass(frozen=True)
class Kind:
    options: type
    write: Callable[[Path, Any], list[Path]]
    owned: tuple[str, ...]  # what --force replaces: the example's own entries in DIR
    help: str
    usage: str  # the pipeline block that reads it ({dir}: the example's directory)


KINDS: dict[str, Kind] = {
    "image-folder": Kind(FolderOptions, image_folder, SPLITS,
                         "DIR/<split>/<class>/<i>.png, 3 classes of RGB patterns (image-folder dataset)",
                         "data: {{name: image-folder, root: {dir}}}"),
    "segmentation-folder": Kind(FolderOptions, segmentation_folder, SPLITS,
                                "DIR/<split>/images|masks/<id>.png, 3 classes, 255 = ignore "
                                "(segmentation-folder dataset)",
                                "data: {{name: segmentation-folder, root: {dir}, num_classes: 3, ignore_index: 255, "
                                "class_names: [" + ", ".join(SEGMENT_CLASSES) + "]}}"),
    "hf-classifier": Kind(ModelOptions, hf_classifier, HF_FILES,
                          "tiny ViT image classifier, 3 labels, safetensors + preprocessor_config.json (hf frontend)",
                          "model: {{frontend: hf, path: {dir}}}"),
    "hf-segmenter": Kind(ModelOptions, hf_segmenter, HF_FILES,
                         "tiny Segformer, 3 labels, safetensors + preprocessor_config.json (hf frontend)",
                         "model: {{frontend: hf, path: {dir}}}"),
}


def make_example(kind: str, directory: str | Path, *, force: bool = False, **options: Any) -> list[Path]:
    """Write the example `kind` into `directory` (created if missing); returns the files written.
    Options: `seed`, `size`, and for the folders `n_train`, `n_val`, `n_test`."""
    if kind not in KINDS:
        from compressor.options import unknown_key_message

        raise ConfigError(unknown_key_message(kind, list(KINDS), "example kind"))
    spec = KINDS[kind]
    opts = parse_options(spec.options, options, f"make-example {kind}")
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ConfigError(f"{d} is a file; give a directory for the example")
    if d.is_dir() and any(d.iterdir()):
        if not force:
            raise ConfigError(f"{d} is not empty; give an empty or new directory, or --force to replace the "
                              f"example's files in it ({', '.join(spec.owned)})")
        for name in spec.owned:
            p = d / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
    d.mkdir(parents=True, exist_ok=True)
    return spec.write(d, opts)
