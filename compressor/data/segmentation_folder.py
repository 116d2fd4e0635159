"""Segmentation images and class-index PNG masks on disk.

Layout::

    root/{train,val,test}/images/<id>.<ext>   .jpg, .jpeg, .png, .bmp or .webp
    root/{train,val,test}/masks/<id>.png      8-bit PNG (mode L or P) of class indices, the image's size

A sample is the image and the mask with the same <id>. val/ and test/ may be missing: they are then
split off train at random with the run's seed (`val_fraction`, `test_fraction`).

`num_classes` 1 is binary segmentation: mask values 0 and 1, y float32 (1, H, W), as the InSAR
datasets. `num_classes` >= 2 is semantic segmentation: values 0..num_classes-1, y int64 (H, W).
`ignore_index` (e.g. 255; semantic segmentation only, as the binary loss has no ignored pixels) marks
pixels that no loss or metric counts; it may appear in any mask and keeps its value in y. Masks are
resized nearest-neighbour and cropped like their images.

Building reads every header and refuses in one line: a missing root or train split, an image without
its mask (or a mask without its image), a mask that is not a PNG of mode L or P, a mask whose size
differs from its image's, an unreadable image, mixed channel counts and different input sizes. A mask
value out of range (neither a class nor ignore_index) is refused when that sample is read, naming the
file and the value.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compressor.data.base import SPLITS, DataBundle, register_dataset
from compressor.data.images import (EXTENSIONS_TEXT, ImageDataOptions, check_images, existing_root, fill_splits,
                                    folder_bundle, list_images, read_header)
from compressor.data.labels import TaskOptions
from compressor.data.preprocess import check_mask_mode, resolve
from compressor.errors import DataError
from compressor.ir import TaskSpec
from compressor.options import option

LAYOUT = "root/{train,val,test}/images/<id>.<ext> and root/{train,val,test}/masks/<id>.png"
_SALT = 0x5E61  # keeps this split's random state apart from other users of the run's seed


@dataclass(frozen=True)
class SegmentationFolderOptions(TaskOptions, ImageDataOptions):
    root: str = option(help=f"folder laid out as {LAYOUT}")
    num_classes: int = option(help="1: binary masks (values 0, 1); >= 2: class indices 0..num_classes-1",
                              min=1, max=256)


def _index(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"segmentation-folder: {folder} is missing; expected {LAYOUT}")
    files: dict[str, Path] = {}
    for path in list_images(folder):
        if path.stem in files:
            raise DataError(f"segmentation-folder: {folder} holds both {files[path.stem].name} and {path.name}; keep "
                            f"one {what} per id")
        if what == "mask" and path.suffix.lower() != ".png":
            raise DataError(f"segmentation-folder: {path} is not a PNG; masks must be lossless PNGs of class indices "
                            f"(compression changes a JPEG's values)")
        files[path.stem] = path
    return files


def scan_split(split_dir: Path) -> list[tuple[Path, Path]]:
    """[(image, mask)] of one split, sorted by id."""
    images, masks = _index(split_dir / "images", "image"), _index(split_dir / "masks", "mask")
    for sample_id in sorted(set(images) ^ set(masks)):
        if sample_id in images:
            raise DataError(f"segmentation-folder: {images[sample_id]} has no mask; add "
                            f"{split_dir / 'masks' / sample_id}.png or remove the image")
        raise DataError(f"segmentation-folder: {masks[sample_id]} has no image; add {split_dir / 'images' / sample_id}"
                        f".<ext> ({EXTENSIONS_TEXT}) or remove the mask")
    return [(images[i], masks[i]) for i in sorted(images)]


@register_dataset("segmentation-folder")
class SegmentationFolder:
    """Images and class-index PNG masks: root/<split>/images/<id>.<ext> + root/<split>/masks/<id>.png."""

    Options = SegmentationFolderOptions
    task_kind = "segmentation"  # known before building (sweeps check their figures against it)

    @staticmethod
    def build(options: SegmentationFolderOptions, seed: int = 0) -> DataBundle:
        root = existing_root(options.root, "segmentation-folder", LAYOUT)
        samples = {s: scan_split(root / s) for s in SPLITS if (root / s).is_dir()}
        labels = {s: [0] * len(items) for s, items in samples.items()}  # one stratum: a plain random split
        splits = fill_splits(samples, labels, options, seed, _SALT, "segmentation-folder", root)
        pairs = [pair for s in SPLITS for pair in splits[s]]
        pre, shape, sizes = check_images([image for image, _ in pairs], resolve(options.preprocess),
                                         "segmentation-folder")
        for (image, mask), (h, w) in zip(pairs, sizes):
            mode, (mh, mw) = read_header(mask)
            check_mask_mode(mode, mask)
            if (mh, mw) != (h, w):
                raise DataError(f"segmentation-folder: {mask} is {mh}x{mw} but its image {image} is {h}x{w}; a mask "
                                f"must have its image's size")
        task = TaskSpec("segmentation", options.num_classes, options.ignore_index, options.class_names)
        return folder_bundle("segmentation-folder", task, pre, shape, splits, options.cache)
