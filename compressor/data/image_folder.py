"""Image classification from class folders on disk.

Two layouts::

    root/{train,val,test}/<class>/<image>    splits given (val/ and test/ may be missing)
    root/<class>/<image>                     one pool, split by seed

Images are .jpg, .jpeg, .png, .bmp or .webp files (any case). The classes are the sorted folder names
of train/ (or of root); their order is the class index and goes into `TaskSpec.class_names`. A val or
test split that is missing is split off train, stratified by class, with the run's seed:
round(n * val_fraction) and round(n * test_fraction) of each class's n images. val/ and test/ may lack
classes but may not hold classes that train/ lacks.

Building reads every image's header (size, mode) and refuses in one line: a missing root or train
split, an empty class folder, an unreadable image, mixed channel counts (without preprocess.mode), and
images that give different input sizes. Pixels are decoded on access (see `compressor.data.images`).
Items: x float32 (C, H, W) from the `preprocess:` block, y the int64 class index.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compressor.data.base import SPLITS, DataBundle, register_dataset
from compressor.data.images import (EXTENSIONS_TEXT, ImageDataOptions, check_images, existing_root, fill_splits,
                                    folder_bundle, list_images, subfolders)
from compressor.data.preprocess import resolve
from compressor.errors import DataError
from compressor.ir import TaskSpec
from compressor.options import option

LAYOUT = "root/{train,val,test}/<class>/<image> or root/<class>/<image>"
_SALT = 0x1F01  # keeps this split's random state apart from other users of the run's seed


@dataclass(frozen=True)
class ImageFolderOptions(ImageDataOptions):
    root: str = option(help=f"folder laid out as {LAYOUT}")


def scan_classes(folder: Path, classes: list[str] | None = None) -> list[tuple[Path, int]]:
    """[(image, class index)] of one split folder, class by class; `classes` None: its own folders."""
    names = subfolders(folder)
    known = classes if classes is not None else names
    if not names:
        raise DataError(f"image-folder: {folder} has no class folders; expected {LAYOUT}")
    out: list[tuple[Path, int]] = []
    for name in names:
        if name not in known:
            raise DataError(f"image-folder: {folder / name} is a class that the train split lacks; valid classes: "
                            f"{', '.join(known)}; rename the folder or add it to train")
        images = list_images(folder / name)
        if not images:
            raise DataError(f"image-folder: class folder {folder / name} holds no images ({EXTENSIONS_TEXT}); add "
                            f"images or remove the folder")
        out += [(p, known.index(name)) for p in images]
    return out


@register_dataset("image-folder")
class ImageFolder:
    """Image classification from class folders: root/<split>/<class>/* or root/<class>/* (split by seed)."""

    Options = ImageFolderOptions
    task_kind = "classification"  # known before building (sweeps check their figures against it)

    @staticmethod
    def build(options: ImageFolderOptions, seed: int = 0) -> DataBundle:
        root = existing_root(options.root, "image-folder", LAYOUT)
        present = [s for s in SPLITS if (root / s).is_dir()]
        if present:
            others = [n for n in subfolders(root) if n not in SPLITS]
            if others:
                raise DataError(f"image-folder: {root} holds split folders ({', '.join(present)}) and other folders "
                                f"({', '.join(others[:3])}); use one layout: {LAYOUT}")
            if "train" not in present:
                raise DataError(f"image-folder: {root / 'train'} is missing; the split layout needs train/ (val/ "
                                f"and test/ may be missing: they are then split off train)")
            classes = subfolders(root / "train")
            samples = {s: scan_classes(root / s, classes) for s in present}
        else:
            classes = subfolders(root)
            samples = {"train": scan_classes(root)}
        if len(classes) < 2:
            raise DataError(f"image-folder: found {len(classes)} class folder(s) ({', '.join(classes)}); "
                            f"classification needs at least 2; expected {LAYOUT}")
        labels = {s: [label for _, label in items] for s, items in samples.items()}
        splits = fill_splits(samples, labels, options, seed, _SALT, "image-folder", root)
        pre, shape, _ = check_images([p for s in SPLITS for p, _ in splits[s]], resolve(options.preprocess),
                                     "image-folder")
        task = TaskSpec("classification", len(classes), class_names=tuple(classes))
        return folder_bundle("image-folder", task, pre, shape, splits, options.cache)
