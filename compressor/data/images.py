"""What the image datasets share: their common options, image files, header checks, and the split class
that decodes samples on access.

An image split (`ImageSamples`) holds where its samples are, never their pixels: item i is decoded with
PIL when it is read (by the main process or a loader worker) and preprocessed by the dataset's
`Preprocess`. With `cache: true` each decoded item is kept after its first access; such a split is
loaded in the main process (a worker's cache would be thrown away every epoch).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from compressor.data.base import SPLITS, DataBundle, DataOptions, stratified_split
from compressor.data.labels import check_label, mask_target
from compressor.data.preprocess import Preprocess, PreprocessOptions, channels, natural_mode
from compressor.errors import DataError
from compressor.ir import TaskSpec
from compressor.options import option

if TYPE_CHECKING:
    from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
EXTENSIONS_TEXT = ", ".join(IMAGE_EXTENSIONS)


@dataclass(frozen=True, kw_only=True)
class ImageDataOptions(DataOptions):
    """Options of every image dataset (image-folder, segmentation-folder, hf-dataset)."""

    val_fraction: float = option(0.15, "share of each class of train split off as val when the data has no "
                                 "val split", min=0.0, max=1.0, max_exclusive=True)
    test_fraction: float = option(0.15, "share of each class of train split off as test when the data has no "
                                  "test split", min=0.0, max=1.0, max_exclusive=True)
    preprocess: PreprocessOptions = option(PreprocessOptions(), "how an image becomes the model input (resize, "
                                           "center_crop, mean, std, channel_order, mode, hf_processor)")
    cache: bool = option(False, "keep decoded samples in memory after their first access (the split is then "
                         "loaded in the main process)")

    def __post_init__(self) -> None:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g} leaves "
                             f"no training samples; valid: a sum below 1 (e.g. 0.15 and 0.15)")


def existing_root(path: str, dataset: str, layout: str) -> Path:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"{dataset}: root {root} does not exist or is not a folder; expected {layout}; fix "
                        f"data.root")
    return root


def subfolders(folder: Path) -> list[str]:
    """The names of `folder`'s visible subfolders, sorted."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_images(folder: Path) -> list[Path]:
    """The image files directly in `folder` (by extension, any case), sorted by name; hidden files skipped."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def _unreadable(path: Path, exc: Exception) -> DataError:
    lines = str(exc).strip().splitlines()
    return DataError(f"{path} is not a readable image ({type(exc).__name__}: {lines[0] if lines else ''}); "
                     f"replace or remove it")


def read_header(path: Path) -> tuple[str, tuple[int, int]]:
    """(PIL mode, (H, W)) of an image file, from its header only."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode, (im.height, im.width)
    except Exception as exc:  # PIL raises many kinds for a corrupt or foreign file
        raise _unreadable(path, exc) from None


def open_image(path: Path) -> "Image.Image":
    """The decoded image at `path` (its file closed again)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return im
    except Exception as exc:
        raise _unreadable(path, exc) from None


def check_images(paths: Sequence[Path], pre: Preprocess, dataset: str) -> tuple[Preprocess, tuple[int, int, int],
                                                                                list[tuple[int, int]]]:
    """Read every image's header: the preprocessing with its mode set, the model input shape (C, H, W), and
    each image's own (H, W). Raises a DataError naming the file for an unreadable or 16-bit image, for
    images whose channel counts differ (without preprocess.mode) and for images that give different input
    sizes."""
    sizes: list[tuple[int, int]] = []
    first_of: dict[str, Path] = {}
    shape_of: tuple[tuple[int, int], Path] | None = None
    for path in paths:
        mode, hw = read_header(path)
        first_of.setdefault(natural_mode(mode, path), path)
        out = pre.output_size(*hw, where=path)
        if shape_of is None:
            shape_of = (out, path)
        elif out != shape_of[0]:
            (h, w), first = shape_of
            raise DataError(f"{dataset}: {path} gives a {out[0]}x{out[1]} input but {first} gives {h}x{w}; the "
                            f"model takes one size: set preprocess.resize: [H, W], or resize + center_crop")
        sizes.append(hw)
    if shape_of is None:
        raise DataError(f"{dataset}: no images found")
    if not pre.convert and len(first_of) > 1:
        raise DataError(f"{dataset}: mixed channel counts: {first_of['L']} is grayscale (1 channel) but "
                        f"{first_of['RGB']} is color (3 channels); set preprocess.mode: RGB (or L) to convert "
                        f"every image")
    mode = pre.mode if pre.convert and pre.mode else next(iter(first_of))
    pre = pre.with_mode(mode)
    return pre, (channels(mode), *shape_of[0]), sizes


def fill_splits(samples: dict[str, list[Any]], labels: dict[str, list[int]], options: ImageDataOptions,
                seed: int, salt: int, dataset: str, where: Path | str) -> dict[str, list[Any]]:
    """Every split of `samples`: the val and test splits the data lacks are split off train by
    `val_fraction` / `test_fraction` (stratified by `labels`, seeded), each refused in one line when it
    would be empty."""
    missing = [s for s in ("val", "test") if s not in samples]
    if "train" not in samples:
        raise DataError(f"{dataset}: {where} has no train split; add it (val and test may be split off train)")
    for s in missing:
        if getattr(options, f"{s}_fraction") == 0:
            raise DataError(f"{dataset}: {where} has no {s} split and {s}_fraction is 0; add the {s} split or set "
                            f"{s}_fraction > 0 to split it off train")
    out = dict(samples)
    if missing:
        train = samples["train"]
        idx = stratified_split(np.asarray(labels["train"]), {s: getattr(options, f"{s}_fraction") for s in missing},
                               seed, salt, rest="train")
        for s in ("train", *missing):
            out[s] = [train[i] for i in idx[s]]
    for s in SPLITS:
        if not out[s]:
            how = (f"{s}_fraction {getattr(options, f'{s}_fraction'):g} of {len(samples['train'])} train samples "
                   f"rounds to none per class; add samples or raise {s}_fraction") if s in missing else "add samples"
            raise DataError(f"{dataset}: split '{s}' of {where} is empty; {how}")
    return out


class ImageSamples(Dataset):
    """One split of an image dataset, decoded on access. Subclasses say where item i comes from (`source`)."""

    def __init__(self, length: int, pre: Preprocess, task: TaskSpec, shape: tuple[int, ...],
                 cache: bool = False) -> None:
        self.length, self.pre, self.task, self.shape, self.cache = length, pre, task, tuple(shape), cache
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return self.length

    @property
    def in_memory(self) -> bool:
        return self.cache

    def source(self, index: int) -> tuple["Image.Image", Any, Any, Any]:
        """(image, where it is, target, where the target is): the target is a class index or a mask image."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(index)
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a split of {self.length} samples")
        item = self._cache.get(index)
        if item is None:
            image, where, target, target_where = self.source(index)
            x = self.pre.image(image, where)
            if tuple(x.shape) != self.shape:
                raise DataError(f"{where} gives a {tuple(x.shape)} input but the dataset's is {self.shape}; the model "
                                f"takes one size: set preprocess.resize: [H, W], or resize + center_crop")
            item = (x, self.target(target, image, target_where))
            if self.cache:
                self._cache[index] = item
        x, y = item
        return x.clone(), y.clone()

    def target(self, target: Any, image: "Image.Image", where: Any) -> torch.Tensor:
        if self.task.kind == "classification":
            return torch.tensor(check_label(target, self.task, where), dtype=torch.int64)
        if target.size != image.size:
            raise DataError(f"{where} is {target.height}x{target.width} but its image is {image.height}x"
                            f"{image.width}; a mask must have its image's size")
        return mask_target(self.pre.mask(target, where), self.task, where)


class FileSamples(ImageSamples):
    """One split of a folder dataset: (image file, target) pairs, the target a class index or a mask file."""

    def __init__(self, items: list[tuple[Path, int | Path]], **kwargs: Any) -> None:
        super().__init__(len(items), **kwargs)
        self.items = items

    def source(self, index: int) -> tuple["Image.Image", Any, Any, Any]:
        image, target = self.items[index]
        if isinstance(target, Path):
            return open_image(image), image, open_image(target), target
        return open_image(image), image, target, image


def folder_bundle(name: str, task: TaskSpec, pre: Preprocess, shape: tuple[int, int, int],
                  splits: dict[str, list[tuple[Path, int | Path]]], cache: bool) -> DataBundle:
    """The DataBundle of a folder dataset whose splits hold (image file, target) pairs."""
    common = {"pre": pre, "task": task, "shape": shape, "cache": cache}
    return DataBundle(name=name, task=task, input_shape=shape, input_range=pre.input_range(),
                      **{s: FileSamples(splits[s], **common) for s in SPLITS}, preprocess=pre.to_dict())
