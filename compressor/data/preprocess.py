"""Preprocessing declared once: how an image becomes the model's input tensor.

The image datasets (`image-folder`, `segmentation-folder`, `hf-dataset`) take a `preprocess:` block::

    preprocess:
      resize: 256                  # int: the shorter side becomes 256, aspect kept; [H, W]: exactly H x W
      center_crop: [224, 224]      # or 224
      mean: [0.485, 0.456, 0.406]  # per channel, applied after scaling to [0, 1]
      std: [0.229, 0.224, 0.225]
      channel_order: RGB           # BGR: the model takes the channels reversed (mean/std in that order)
      mode: RGB                    # convert every image to RGB (or L); null: the images' own, which must agree
      interpolation: bilinear      # of the image resize (masks are always resized nearest-neighbour)
      hf_processor: path/to/dir    # a Hugging Face preprocessor_config.json; keys given here override it

Every image goes through, in order: mode conversion, resize, center crop, (H, W, C) uint8 to (C, H, W)
float32, channel order, `* rescale_factor` (1/255), `(x - mean) / std`. A segmentation mask goes
through the same resize (nearest-neighbour) and crop, never through a mode conversion.

* `resize: S` follows torchvision and Hugging Face: the shorter side becomes S, the longer
  int(S * long / short). The crop's top-left corner is ((H - h) // 2, (W - w) // 2), as Hugging Face
  image processors place it (torchvision rounds an odd margin instead).
* Without `mode`, grayscale images (PIL modes 1, L, LA) give 1 channel and color ones (RGB, RGBA, P,
  CMYK, ...) 3; a dataset holding both is refused (set `mode`). Alpha is dropped, not composited.
  16-bit and float images are refused: save 8-bit images.
* `mean` and `std` hold one value per channel, or one value for every channel.

`hf_processor: DIR` reads DIR/preprocessor_config.json (or the .json file named) and maps:
`do_resize` + `size` ({height, width} -> resize [H, W]; {shortest_edge} -> resize S; an int -> [S, S]),
`resample` (PIL's codes 0-5) -> interpolation, `do_center_crop` + `crop_size` ({height, width} or an
int) -> center_crop, `do_rescale` + `rescale_factor`, `do_normalize` + `image_mean` / `image_std`,
`do_convert_rgb` -> mode RGB. Ignored (logged when they would change pixels): `crop_pct`, `do_pad`,
`pad_size`, `size_divisor`, `longest_edge`, `do_reduce_labels`, and every other key.

The resolved preprocessing (`Preprocess.to_dict()`) is plain JSON: it goes on `DataBundle.preprocess`,
into the IR's meta and the ONNX file's metadata_props, so that the deployment side feeds the model the
same tensors it was trained and measured on.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from compressor.errors import ConfigError, DataError
from compressor.options import option

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]
GRAY_MODES = ("1", "L", "LA", "La")
COLOR_MODES = ("RGB", "RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")
MASK_MODES = ("L", "P")
HF_CONFIG = "preprocessor_config.json"
# PIL's resampling codes as Hugging Face image processors store them in `resample`
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
_HF_IGNORED_PIXELS = ("crop_pct", "do_pad", "pad_size", "size_divisor", "do_reduce_labels")


@dataclass(frozen=True)
class PreprocessOptions:
    resize: int | list[int] | None = option(None, "int: the shorter side in pixels (aspect kept); [H, W]: "
                                            "exactly that size (null: no resize)", min=1, max=65536)
    center_crop: int | list[int] | None = option(None, "[H, W] (or one int for a square) cut from the centre "
                                                 "after the resize", min=1, max=65536)
    mean: list[float] | None = option(None, "per-channel mean subtracted after scaling to [0, 1]")
    std: list[float] | None = option(None, "per-channel std divided by after the mean", min=0, min_exclusive=True)
    channel_order: Literal["RGB", "BGR"] | None = option(None, "channel order the model takes (null: RGB)")
    mode: Literal["RGB", "L"] | None = option(None, "convert every image to RGB or L (null: the images' own "
                                              "mode, which must agree)")
    interpolation: Interpolation | None = option(None, "image resize filter (null: bilinear)")
    hf_processor: str | None = option(None, "directory holding a Hugging Face preprocessor_config.json (or the "
                                      "file); the keys above override it")

    def __post_init__(self) -> None:
        for name in ("resize", "center_crop"):
            value = getattr(self, name)
            if isinstance(value, tuple) and len(value) != 2:
                raise ValueError(f"preprocess.{name}: {list(value)} is not valid; give one int or [H, W]")
        for name in ("mean", "std"):
            if getattr(self, name) == ():
                raise ValueError(f"preprocess.{name} is empty; give one value per channel (or leave it out)")


def channels(mode: str) -> int:
    """Channels of a model input in `mode` ("L" or "RGB")."""
    return 1 if mode == "L" else 3


def natural_mode(pil_mode: str, where: Any) -> str:
    """"L" for a grayscale PIL mode, "RGB" for a color one; DataError for 16-bit, float and unknown modes."""
    if pil_mode in GRAY_MODES:
        return "L"
    if pil_mode in COLOR_MODES:
        return "RGB"
    raise DataError(f"{where}: image mode {pil_mode} (16-bit, float or unknown) is not supported; save 8-bit "
                    f"grayscale or color images (PIL modes {', '.join(GRAY_MODES + COLOR_MODES)})")


def check_mask_mode(mode: str, where: Any) -> None:
    """DataError unless `mode` is a class-index mode (8-bit L or P)."""
    if mode not in MASK_MODES:
        raise DataError(f"{where}: mask mode {mode} is not a class-index image; save masks as 8-bit PNGs of class "
                        f"indices (mode L or P)")


def _pair(value: int | tuple[int, ...] | list[int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


@dataclass(frozen=True)
class Preprocess:
    """The resolved preprocessing of one dataset (`resolve`); `mode` is None until the images are known."""

    mode: str | None = None
    convert: bool = False  # every image converted to `mode` (the mode was asked for), else modes must agree
    channel_order: str = "RGB"
    resize: int | tuple[int, int] | None = None
    interpolation: str = "bilinear"
    center_crop: tuple[int, int] | None = None
    rescale_factor: float = 1.0 / 255.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    hf_processor: str | None = None

    # ---- resolution ---------------------------------------------------------------------------
    def with_mode(self, mode: str) -> "Preprocess":
        """This preprocessing for images of `mode`, with mean and std expanded to one value per channel."""
        c = channels(mode)
        stats: dict[str, tuple[float, ...] | None] = {}
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and len(values) not in (1, c):
                raise ConfigError(f"preprocess.{name} has {len(values)} values but the images have {c} channel(s) "
                                  f"(mode {mode}); give {c} value(s) or one for all, or set preprocess.mode")
            stats[name] = None if values is None else tuple(float(v) for v in values) * (c if len(values) == 1 else 1)
        return dataclasses.replace(self, mode=mode, **stats)

    def resized(self, h: int, w: int) -> tuple[int, int]:
        """(H, W) after the resize alone."""
        if self.resize is None:
            return h, w
        if not isinstance(self.resize, int):
            return self.resize
        s = self.resize
        if w <= h:
            return int(s * h / w), s
        return s, int(s * w / h)

    def output_size(self, h: int, w: int, where: Any) -> tuple[int, int]:
        """(H, W) of the model input made from an image of h x w; DataError when the crop does not fit."""
        rh, rw = self.resized(h, w)
        if self.center_crop is None:
            return rh, rw
        ch, cw = self.center_crop
        if ch > rh or cw > rw:
            raise DataError(f"{where} is {rh}x{rw} after the resize, smaller than center_crop {ch}x{cw}; lower "
                            f"preprocess.center_crop or raise preprocess.resize")
        return ch, cw

    def input_range(self) -> tuple[float, float]:
        """The range of every value the preprocessing can produce (over all channels)."""
        top = 255.0 * self.rescale_factor
        if self.mean is None:
            return (0.0, top)
        pairs = list(zip(self.mean, self.std or ()))  # resolve() sets both, with_mode one per channel
        return (min((0.0 - m) / s for m, s in pairs), max((top - m) / s for m, s in pairs))

    def to_dict(self) -> dict[str, Any]:
        """The resolved preprocessing as plain JSON data (what the deployment side applies)."""
        return {"mode": self.mode, "channel_order": self.channel_order,
                "resize": list(self.resize) if isinstance(self.resize, tuple) else self.resize,
                "interpolation": self.interpolation,
                "center_crop": list(self.center_crop) if self.center_crop else None,
                "rescale_factor": self.rescale_factor,
                "mean": list(self.mean) if self.mean is not None else None,
                "std": list(self.std) if self.std is not None else None,
                "layout": "NCHW", "dtype": "float32",
                **({"hf_processor": self.hf_processor} if self.hf_processor else {})}

    # ---- application --------------------------------------------------------------------------
    def _geometry(self, img: "Image.Image", resample: int, where: Any) -> "Image.Image":
        h, w = img.height, img.width
        out = self.output_size(h, w, where)  # checks the crop fits before anything is resampled
        rh, rw = self.resized(h, w)
        if (rh, rw) != (h, w):
            img = img.resize((rw, rh), resample)
        if self.center_crop is not None:
            top, left = (rh - out[0]) // 2, (rw - out[1]) // 2
            img = img.crop((left, top, left + out[1], top + out[0]))
        return img

    def image(self, img: "Image.Image", where: Any) -> torch.Tensor:
        """The float32 (C, H, W) model input made from a PIL image."""
        from PIL import Image

        assert self.mode is not None, "resolve the mode (with_mode) before applying the preprocessing"
        natural = natural_mode(img.mode, where)
        if not self.convert and natural != self.mode:
            raise DataError(f"{where} is {img.mode} ({channels(natural)} channel(s)) but the dataset's images are "
                            f"{self.mode} ({channels(self.mode)}); mixed channel counts: set preprocess.mode: RGB "
                            f"(or L) to convert every image")
        if img.mode != self.mode:
            img = img.convert(self.mode)
        resample = getattr(Image.Resampling, self.interpolation.upper())
        arr = np.asarray(self._geometry(img, resample, where), dtype=np.float32)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        if self.channel_order == "BGR":
            arr = arr[::-1]
        arr = arr * np.float32(self.rescale_factor)
        if self.mean is not None and self.std is not None:
            mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
            std = np.asarray(self.std, dtype=np.float32)[:, None, None]
            arr = (arr - mean) / std
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))

    def mask(self, img: "Image.Image", where: Any) -> np.ndarray:
        """The (H, W) class-index map of a mask image (mode L or P), resized nearest-neighbour and cropped
        like its image."""
        from PIL import Image

        check_mask_mode(img.mode, where)
        return np.asarray(self._geometry(img, Image.Resampling.NEAREST, where))


# ---- resolution ---------------------------------------------------------------------------------

def _hf_size(value: Any, key: str, path: Path) -> int | tuple[int, int]:
    """A Hugging Face `size` / `crop_size` entry as resize S or (H, W)."""
    if isinstance(value, bool):
        raise ConfigError(f"{path}: {key} {value!r} is not a size")
    if isinstance(value, int):
        return (value, value)  # transformers' default_to_square
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    if isinstance(value, dict):
        if isinstance(value.get("height"), int) and isinstance(value.get("width"), int):
            return (value["height"], value["width"])
        if isinstance(value.get("shortest_edge"), int) and key == "size":
            if "longest_edge" in value:
                log.warning("preprocess: %s: size.longest_edge is ignored (only shortest_edge is applied)", path)
            return int(value["shortest_edge"])
    raise ConfigError(f"{path}: {key} {value!r} is not supported; valid: {{height, width}}, {{shortest_edge}} "
                      f"(size only) or an int; set preprocess.resize / center_crop instead")


def _hf_stats(value: Any, key: str, path: Path) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                             for v in values):
        raise ConfigError(f"{path}: {key} {value!r} is not a number or a list of numbers")
    return tuple(float(v) for v in values)


def read_hf_processor(path: str | Path) -> dict[str, Any]:
    """The preprocessing a Hugging Face `preprocessor_config.json` declares, as `Preprocess` fields."""
    p = Path(path).expanduser()
    file = p / HF_CONFIG if p.is_dir() else p
    if not file.is_file():
        raise ConfigError(f"preprocess.hf_processor: {file} does not exist; give a directory holding {HF_CONFIG} "
                          f"(e.g. a model saved with save_pretrained) or the file itself")
    try:
        doc = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"preprocess.hf_processor: {file} is not readable JSON ({exc}); fix or replace it") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"preprocess.hf_processor: {file} holds {type(doc).__name__}, not a JSON object")
    out: dict[str, Any] = {"hf_processor": str(file)}
    if doc.get("do_resize", "size" in doc) and doc.get("size") is not None:
        out["resize"] = _hf_size(doc["size"], "size", file)
    if "resample" in doc:
        if doc["resample"] not in _PIL_RESAMPLE:
            raise ConfigError(f"{file}: resample {doc['resample']!r} is not a PIL filter code; valid: 0-5")
        out["interpolation"] = _PIL_RESAMPLE[doc["resample"]]
    if doc.get("do_center_crop", "crop_size" in doc) and doc.get("crop_size") is not None:
        out["center_crop"] = _pair(_hf_size(doc["crop_size"], "crop_size", file))
    if not doc.get("do_rescale", True):
        out["rescale_factor"] = 1.0
    elif "rescale_factor" in doc:
        factor = _hf_stats(doc["rescale_factor"], "rescale_factor", file)
        if len(factor) != 1 or factor[0] <= 0:
            raise ConfigError(f"{file}: rescale_factor {doc['rescale_factor']!r} must be one positive number")
        out["rescale_factor"] = factor[0]
    if doc.get("do_normalize", "image_mean" in doc):
        if "image_mean" in doc:
            out["mean"] = _hf_stats(doc["image_mean"], "image_mean", file)
        if "image_std" in doc:
            out["std"] = _hf_stats(doc["image_std"], "image_std", file)
    if doc.get("do_convert_rgb"):
        out["mode"] = "RGB"
    ignored = [k for k in _HF_IGNORED_PIXELS if doc.get(k)]
    if ignored:
        log.warning("preprocess: %s: %s ignored; the tensors may differ from the processor's", file,
                    ", ".join(ignored))
    return out


def resolve(opts: PreprocessOptions | None) -> Preprocess:
    """The `Preprocess` an options block asks for: the hf_processor's values, then the keys given beside it.
    Its `mode` stays None unless asked for; the dataset sets it from its images (`Preprocess.with_mode`)."""
    if opts is None:
        return Preprocess()
    values: dict[str, Any] = read_hf_processor(opts.hf_processor) if opts.hf_processor else {}
    for f in dataclasses.fields(opts):
        value = getattr(opts, f.name)
        if value is not None and f.name != "hf_processor":
            values[f.name] = value
    if "resize" in values and not isinstance(values["resize"], int):
        values["resize"] = _pair(values["resize"])
    if "center_crop" in values:
        values["center_crop"] = _pair(values["center_crop"])
    if "mean" in values or "std" in values:  # one given: the other is the identity
        values["mean"] = tuple(values.get("mean", (0.0,)))
        values["std"] = tuple(values.get("std", (1.0,)))
    return Preprocess(convert=values.get("mode") is not None, **values)
