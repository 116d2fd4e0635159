"""InSAR landslide segmentation data: a synthetic ISSLIDE stand-in and a loader for real folders.

Both datasets give items `(x, y)`: x float32 (2, H, W) with x[0] the estimated coherence in [0, 1]
and x[1] the wrapped interferometric phase in [-pi, pi]; y float32 (1, H, W), 1 = moving ground.
`input_range` is (-pi, pi), which covers both channels.

insar-synthetic
---------------
Samples are generated on the fly from a random state seeded by (seed, split, index) through
`numpy.random.SeedSequence`, so item i of a split is the same in every process and the three splits
never share a state. Sample i uses the temporal baseline `baselines[i % len(baselines)]` (days),
so the baselines come in equal parts as in ISSLIDE (6, 12 and 18 days).

The physical model of one sample (one interferogram of `size` x `size` pixels):

* Displacement. With probability `landslide_prob` the scene holds 1..`max_slides` slow landslides
  (uniform count), otherwise none. Each landslide is an elliptical, rotated Gaussian bowl of line-of-
  sight (LOS) displacement d(x) = s * v * B * exp(-u^2/(2 sx^2) - w^2/(2 sy^2)): s = +-1 (towards or
  away from the satellite), v the velocity in mm/day drawn log-uniformly from
  [`min_velocity`, `max_velocity`], B the baseline in days, sx, sy the bowl widths drawn uniformly
  from [`min_sigma`, `max_sigma`] times `size` pixels, (u, w) the coordinates rotated by a uniform
  angle about a centre drawn in the inner 80% of the image. A bowl whose fringes would alias (phase
  gradient above `max_gradient` rad/pixel) has its amplitude clipped to that limit.
* Phase. phi = 4*pi/lambda * d_LOS + atmosphere, with lambda = 0.0555 m (Sentinel-1 C band); one
  fringe (2*pi) is lambda/2 = 27.75 mm of LOS motion. The atmosphere is a power-law random field
  (power spectrum ~ k^(-11/3), Kolmogorov turbulence) made by FFT, with a standard deviation of
  `atmosphere_mm` (LOS mm) times a per-sample factor uniform in [0.5, 1.5].
* Coherence. The true coherence is gamma = gamma_max * exp(-B / tau) * (1 - slide_decorrelation * b)
  with gamma_max = 0.95: temporal decorrelation with time constant tau = `tau_bare` days on bare
  ground and `tau_vegetation` days on vegetation-like patches (the two rates blended by a soft
  vegetation map cut from a second power-law field, covering on average `vegetation` of the
  scene), and b in [0, 1] the normalised bowl shape, so moving ground is a little less coherent.
  Longer baselines and vegetation therefore give lower coherence.
* Speckle. With `looks` = L independent looks per pixel, s1 = n1 and
  s2 = gamma e^{-j phi} n1 + sqrt(1 - gamma^2) n2 (n1, n2 circular complex Gaussian). The observed
  phase is angle(sum s1 s2*), the estimated coherence |sum s1 s2*| / sqrt(sum|s1|^2 sum|s2|^2). The
  sums are drawn directly from their exact distribution (a complex Wishart matrix with L degrees of
  freedom, by Bartlett's decomposition: four random numbers per pixel instead of 4L), which gives
  the same statistics as summing L looks and is faster.
* Mask. A pixel is moving ground where some landslide's |d| exceeds `mask_fraction` of that
  landslide's peak |d| (the bowl's outline; it does not depend on the baseline).

With the defaults about 11% of the pixels are moving ground (about 15% of the samples hold none)
and the mean estimated coherence is about 0.79 / 0.72 / 0.65 at 6 / 12 / 18 days. Measured
learnability (val foreground IoU; predicting "all moving" scores 0.11): a two-level U-Net of 26k
parameters (16/32 channels, BCE + Dice, Adam 1e-3, batch 32, 1024 training samples) reaches
0.61-0.68 after 5 epochs (~25 s per epoch on 2 CPU cores) and ~0.72 after 15; a four-level U-Net of
1.07M parameters (32..128 channels) reaches ~0.86 after 30 epochs (0.91 with 8000 training
samples). Slides on vegetation at long baselines and slow slides at short baselines stay hard, so
IoU 1.0 is out of reach.

insar-folder
------------
Real ISSLIDE-style data on disk, laid out as::

    root/{train,val,test}/coherence/<id>.npy|.png   coherence in [0, 1]
    root/{train,val,test}/phase/<id>.npy|.png       wrapped phase in [-pi, pi]
    root/{train,val,test}/mask/<id>.npy|.png        mask, > 0 = moving ground

A sample is the triple with the same <id> (file name without extension) in the three folders.
`.npy` files hold 2-D arrays in those units. PNG files are grayscale (color PNGs are converted to
luminance): 8-bit 0..255 and 16-bit 0..65535 are scaled to [0, 1] for coherence and to [-pi, pi]
for phase; for masks any value > 0 is moving ground. All samples of all splits must share one size
(H, W). The layout, the id sets and every file's size are checked when the dataset is built; the
pixel values are read when an item is first accessed.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from compressor.data.base import SPLITS, DataBundle, DataOptions, register_dataset
from compressor.errors import DataError
from compressor.ir import TaskSpec
from compressor.options import option

WAVELENGTH_M = 0.0555          # Sentinel-1 C-band radar wavelength
GAMMA_MAX = 0.95               # coherence of bare, stable ground at zero baseline
PHASE_PER_MM = 4.0 * math.pi / (WAVELENGTH_M * 1000.0)   # rad per mm of LOS displacement
INPUT_RANGE = (-math.pi, math.pi)
SEGMENTATION = TaskSpec("segmentation", 1)
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
_DATASET_SALT = 0x1A5A  # keeps these random states apart from other users of SeedSequence([seed, ...])


# =============================================================================================
# insar-synthetic
# =============================================================================================
@dataclass(frozen=True)
class InsarSyntheticOptions(DataOptions):
    n_train: int = option(1024, "number of training samples (generated in memory)", min=0, max=10**6)
    n_val: int = option(256, "number of validation samples", min=0, max=10**6)
    n_test: int = option(256, "number of test samples", min=0, max=10**6)
    size: int = option(100, "image height and width in pixels (ISSLIDE: 100)", min=16, max=1024)
    looks: int = option(9, "independent looks L averaged per pixel (more looks: less phase noise)",
                        min=2, max=1000)
    baselines: list[int] = option([6, 12, 18], "temporal baselines in days; sample i uses "
                                  "baselines[i % len(baselines)]")
    landslide_prob: float = option(0.85, "probability that a sample holds at least one landslide",
                                   min=0.0, max=1.0)
    max_slides: int = option(2, "most landslides in one sample (the count is uniform in 1..max_slides)",
                             min=1, max=20)
    min_velocity: float = option(1.2, "slowest LOS landslide velocity in mm/day", min=0.0,
                                 min_exclusive=True, max=1000.0)
    max_velocity: float = option(4.5, "fastest LOS landslide velocity in mm/day", min=0.0,
                                 min_exclusive=True, max=1000.0)
    min_sigma: float = option(0.05, "smallest landslide bowl width (Gaussian sigma) as a fraction "
                              "of the image size", min=0.005, max=0.5)
    max_sigma: float = option(0.14, "largest landslide bowl width as a fraction of the image size",
                              min=0.005, max=0.5)
    max_gradient: float = option(1.5, "largest landslide phase gradient in rad/pixel (faster "
                                 "bowls are clipped so that fringes do not alias)", min=0.1, max=3.1)
    mask_fraction: float = option(0.2, "a pixel is moving ground where |d| exceeds this fraction "
                                  "of its landslide's peak |d|", min=0.01, max=0.99)
    atmosphere_mm: float = option(1.5, "standard deviation of the atmospheric delay in LOS mm "
                                  "(power-law k^-11/3 field)", min=0.0, max=100.0)
    vegetation: float = option(0.2, "mean fraction of the scene covered by vegetation "
                               "(fast-decorrelating patches)", min=0.0, max=0.95)
    tau_bare: float = option(90.0, "coherence time constant of bare ground in days", min=0.1)
    tau_vegetation: float = option(8.0, "coherence time constant of vegetation in days", min=0.1)
    slide_decorrelation: float = option(0.2, "relative coherence loss at the centre of a landslide",
                                        min=0.0, max=1.0)
    cache: bool = option(True, "keep generated samples in memory after their first access")

    def __post_init__(self) -> None:
        if not self.baselines:
            raise ValueError("baselines is empty; give at least one baseline in days, e.g. [6, 12, 18]")
        bad = [b for b in self.baselines if b < 1 or b > 10000]
        if bad:
            raise ValueError(f"baselines {bad} out of range; each baseline must be in [1, 10000] days")
        if self.min_velocity > self.max_velocity:
            raise ValueError(f"min_velocity ({self.min_velocity:g}) > max_velocity ({self.max_velocity:g}); "
                             f"make min_velocity <= max_velocity")
        if self.min_sigma > self.max_sigma:
            raise ValueError(f"min_sigma ({self.min_sigma:g}) > max_sigma ({self.max_sigma:g}); "
                             f"make min_sigma <= max_sigma")


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx, yy


@lru_cache(maxsize=8)
def _power_law_filter(size: int, slope: float = -11.0 / 3.0) -> np.ndarray:
    """Amplitude filter k^(slope/2) on the FFT grid (zero mean), scaled so the field has unit std."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    k = np.sqrt(fx * fx + fy * fy)
    k[0, 0] = 1.0
    amp = k ** (slope / 2.0)
    amp[0, 0] = 0.0
    # complex white noise of unit variance per component -> ifft -> variance sum(amp^2)/size^4 per part
    amp *= size / math.sqrt(float(np.sum(amp * amp)))
    return amp.astype(np.float32)


def _two_power_law_fields(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Two independent zero-mean power-law (k^-11/3) fields of about unit standard deviation."""
    white = rng.standard_normal((2, size, size), dtype=np.float32)
    spec = (white[0] + 1j * white[1]) * _power_law_filter(size)
    field = np.fft.ifft2(spec) * size
    return field.real.astype(np.float32), field.imag.astype(np.float32)


def speckle(
    rng: np.random.Generator, gamma: np.ndarray, phase: np.ndarray, looks: int
) -> tuple[np.ndarray, np.ndarray]:
    """Estimated (coherence, phase) of an L-look interferogram with true coherence and phase.

    Draws the sample covariance sum_l s s^H of s = (s1, s2), s1 = n1,
    s2 = gamma e^{-j phase} n1 + sqrt(1 - gamma^2) n2, through Bartlett's decomposition of the
    complex Wishart matrix W = sum_l n n^H = T T^H (T11^2 ~ Gamma(L), T22^2 ~ Gamma(L-1),
    T21 ~ CN(0, 1)).
    """
    shape = gamma.shape
    f32 = np.float32
    g1 = rng.standard_gamma(looks, size=shape, dtype=f32)
    g2 = rng.standard_gamma(looks - 1, size=shape, dtype=f32)
    t = rng.standard_normal((2,) + shape, dtype=f32) * f32(math.sqrt(0.5))
    t0, t1 = t[0], t[1]
    gamma = gamma.astype(f32, copy=False)
    c, s = np.cos(phase, dtype=f32), np.sin(phase, dtype=f32)
    b = np.sqrt(np.maximum(f32(1.0) - gamma * gamma, f32(0.0)))   # covariance Cholesky: [[1, 0], [a, b]]
    t11 = np.sqrt(g1)
    # with a = gamma e^{-j phase} and W12 = T11 conj(T21):
    # S12 = conj(a) W11 + b W12;  S22 = gamma^2 W11 + 2 b Re(a W12) + b^2 W22;  S11 = W11
    bt = b * t11
    re = gamma * g1 * c + bt * t0
    im = gamma * g1 * s - bt * t1
    s22 = gamma * gamma * g1 + f32(2.0) * gamma * bt * (c * t0 - s * t1) + b * b * (t0 * t0 + t1 * t1 + g2)
    coherence = np.sqrt((re * re + im * im) / np.maximum(g1 * s22, f32(1e-30)))
    return np.clip(coherence, 0.0, 1.0).astype(f32), np.arctan2(im, re).astype(f32)


def generate_sample(
    rng: np.random.Generator, opts: InsarSyntheticOptions, baseline: float
) -> dict[str, np.ndarray]:
    """One synthetic interferogram; returns coherence, phase, mask plus the true fields behind them.

    Keys: coherence, phase, mask (float32 H x W, mask in {0, 1}), displacement_mm (LOS),
    atmosphere_mm, gamma (true coherence), vegetation (soft map in [0, 1]).
    """
    n = opts.size
    xx, yy = _grid(n)
    disp = np.zeros((n, n), np.float32)
    bowl = np.zeros((n, n), np.float32)
    mask = np.zeros((n, n), bool)
    if rng.random() < opts.landslide_prob:
        count = int(rng.integers(1, opts.max_slides + 1))
        for _ in range(count):
            sx, sy = rng.uniform(opts.min_sigma, opts.max_sigma, size=2) * n
            cx, cy = rng.uniform(0.1 * n, 0.9 * n, size=2)
            theta = rng.uniform(0.0, math.pi)
            v = math.exp(rng.uniform(math.log(opts.min_velocity), math.log(opts.max_velocity)))
            sign = 1.0 if rng.random() < 0.5 else -1.0
            amp_mm = v * baseline
            # the steepest slope of a Gaussian bowl is amp * e^-1/2 / sigma (per pixel)
            max_amp_mm = opts.max_gradient * min(sx, sy) * math.exp(0.5) / PHASE_PER_MM
            amp_mm = min(amp_mm, max_amp_mm)
            c, s = math.cos(theta), math.sin(theta)
            dx, dy = xx - cx, yy - cy
            u = c * dx + s * dy
            w = -s * dx + c * dy
            g = np.exp(-0.5 * ((u / sx) ** 2 + (w / sy) ** 2))
            disp += np.float32(sign * amp_mm) * g
            np.maximum(bowl, g, out=bowl)
            mask |= g > opts.mask_fraction
    f_atmo, f_veg = _two_power_law_fields(rng, n)
    atmo_mm = f_atmo * np.float32(opts.atmosphere_mm * rng.uniform(0.5, 1.5))
    cover = float(np.clip(rng.uniform(0.0, 2.0 * opts.vegetation), 0.0, 0.95))
    if cover > 0.0:
        f_veg = f_veg / max(float(f_veg.std()), 1e-6)
        thresh = statistics.NormalDist().inv_cdf(1.0 - cover)
        veg = 1.0 / (1.0 + np.exp(-(f_veg - thresh) / 0.15))
    else:
        veg = np.zeros((n, n), np.float32)
    rate = (1.0 - veg) / opts.tau_bare + veg / opts.tau_vegetation  # 1/days
    gamma = GAMMA_MAX * np.exp(-baseline * rate) * (1.0 - opts.slide_decorrelation * bowl)
    gamma = gamma.astype(np.float32)
    phase_true = (disp + atmo_mm) * np.float32(PHASE_PER_MM)
    coherence, phase = speckle(rng, gamma, phase_true, opts.looks)
    return {
        "coherence": coherence,
        "phase": phase,
        "mask": mask.astype(np.float32),
        "displacement_mm": disp,
        "atmosphere_mm": atmo_mm.astype(np.float32),
        "gamma": gamma,
        "vegetation": veg.astype(np.float32),
    }


class InsarSyntheticDataset(Dataset):
    """One split of insar-synthetic: `length` samples generated from (seed, split, index)."""

    def __init__(self, options: InsarSyntheticOptions, split: str, length: int, seed: int = 0) -> None:
        self.options = options
        self.split = split
        self.length = int(length)
        self.seed = int(seed)
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return self.length

    @property
    def in_memory(self) -> bool:
        """Cached samples stay in this process; without the cache they are generated on access (a loader
        may then generate them in worker processes)."""
        return self.options.cache

    def _check(self, index: int) -> int:
        if isinstance(index, torch.Tensor):
            index = int(index)
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for split '{self.split}' of {self.length} samples")
        return index

    def baseline(self, index: int) -> int:
        """Temporal baseline (days) of sample `index`."""
        index = self._check(index)
        return self.options.baselines[index % len(self.options.baselines)]

    def rng(self, index: int) -> np.random.Generator:
        index = self._check(index)
        seed_words = [self.seed & 0xFFFFFFFF, (self.seed >> 32) & 0xFFFFFFFF]
        entropy = [_DATASET_SALT, *seed_words, _SPLIT_IDS[self.split], index]
        return np.random.default_rng(np.random.SeedSequence(entropy))

    def sample(self, index: int) -> dict[str, np.ndarray]:
        """All fields of sample `index` (see `generate_sample`), plus its baseline; never cached."""
        index = self._check(index)
        out: dict[str, Any] = generate_sample(self.rng(index), self.options, self.baseline(index))
        out["baseline"] = self.baseline(index)
        return out

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = self._check(index)
        item = self._cache.get(index)
        if item is None:
            s = generate_sample(self.rng(index), self.options, self.baseline(index))
            x = torch.from_numpy(np.stack([s["coherence"], s["phase"]]))
            y = torch.from_numpy(s["mask"][None])
            item = (x, y)
            if self.options.cache:
                self._cache[index] = item
        x, y = item
        return x.clone(), y.clone()


@register_dataset("insar-synthetic")
class InsarSynthetic:
    """Synthetic ISSLIDE-like interferograms (coherence, wrapped phase) with landslide masks."""

    Options = InsarSyntheticOptions
    task_kind = "segmentation"  # known before building (sweeps check their figures against it)

    @staticmethod
    def build(options: InsarSyntheticOptions, seed: int = 0) -> DataBundle:
        lengths = {"train": options.n_train, "val": options.n_val, "test": options.n_test}
        splits = {s: InsarSyntheticDataset(options, s, lengths[s], seed) for s in SPLITS}
        return DataBundle(
            name="insar-synthetic",
            task=SEGMENTATION,
            input_shape=(2, options.size, options.size),
            input_range=INPUT_RANGE,
            **splits,
        )


# =============================================================================================
# insar-folder
# =============================================================================================
CHANNELS = ("coherence", "phase", "mask")
_EXTENSIONS = (".npy", ".png")
_LAYOUT = "root/{train,val,test}/{coherence,phase,mask}/<id>.npy|.png"
_PNG_8BIT = ("L", "P", "1", "LA", "RGB", "RGBA")      # 0..255 (color: converted to luminance)
_PNG_16BIT = ("I;16", "I;16B", "I;16L", "I")          # 0..65535


@dataclass(frozen=True)
class InsarFolderOptions(DataOptions):
    root: str = option(help=f"folder laid out as {_LAYOUT}")
    cache: bool = option(False, "keep loaded samples in memory after their first access")


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) of a 2-D .npy or .png file, read from its header only."""
    try:
        if path.suffix == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            shape = arr.shape
        else:
            from PIL import Image

            with Image.open(path) as im:
                w, h = im.size
                mode = im.mode
            shape = (h, w)
            if mode not in _PNG_8BIT + _PNG_16BIT:
                raise DataError(f"{path}: PNG mode {mode} is not supported; save grayscale 8- or 16-bit PNGs")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path} is not a readable {path.suffix} file ({type(exc).__name__}: {exc}); "
                        f"replace or remove it") from None
    if len(shape) != 2:
        raise DataError(f"{path} has shape {tuple(shape)}; each file must hold one 2-D (H, W) image")
    return int(shape[0]), int(shape[1])


def _read_png(path: Path) -> tuple[np.ndarray, float]:
    """Pixel values and the full-scale value (255 or 65535) of a grayscale PNG."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in _PNG_16BIT:
            arr = np.asarray(im).astype(np.float64)
            full = 65535.0
        elif im.mode in _PNG_8BIT:
            arr = np.asarray(im.convert("L")).astype(np.float64)
            full = 255.0
        else:
            raise DataError(f"{path}: PNG mode {im.mode} is not supported; save grayscale 8- or 16-bit PNGs")
    return arr, full


def load_channel(path: Path, channel: str) -> np.ndarray:
    """One channel file in model units: coherence [0, 1], phase [-pi, pi], mask {0, 1}."""
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False).astype(np.float32)
        except Exception as exc:
            raise DataError(f"{path} is not a readable .npy file ({type(exc).__name__}: {exc}); "
                            f"replace or remove it") from None
        if channel == "mask":
            return (arr > 0).astype(np.float32)
        if not np.all(np.isfinite(arr)):
            raise DataError(f"{path} holds NaN or infinite values; replace them (e.g. coherence 0, phase 0)")
        tol = 1e-3
        if channel == "coherence" and (arr.min() < -tol or arr.max() > 1 + tol):
            raise DataError(f"{path}: coherence spans [{arr.min():g}, {arr.max():g}]; valid: [0, 1]; "
                            f"rescale the file to [0, 1]")
        if channel == "phase" and (arr.min() < -math.pi - tol or arr.max() > math.pi + tol):
            raise DataError(f"{path}: phase spans [{arr.min():g}, {arr.max():g}]; valid: [-pi, pi] "
                            f"radians; wrap or convert it (degrees? multiply by pi/180)")
        if channel == "coherence":
            return np.clip(arr, 0.0, 1.0)
        return np.clip(arr, -math.pi, math.pi).astype(np.float32)
    arr, full = _read_png(path)
    if channel == "mask":
        return (arr > 0).astype(np.float32)
    unit = arr / full
    if channel == "coherence":
        return unit.astype(np.float32)
    return (unit * 2.0 * math.pi - math.pi).astype(np.float32)


def _index_channel(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in _EXTENSIONS:
            continue
        if path.stem in files:
            raise DataError(f"{folder} holds both {files[path.stem].name} and {path.name}; keep one file "
                            f"per id")
        files[path.stem] = path
    return files


def scan_split(root: Path, split: str) -> list[tuple[str, dict[str, Path]]]:
    """[(id, {channel: path})] of one split, sorted by id; raises DataError on a bad layout."""
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"insar-folder: {split_dir} is missing; expected the layout {_LAYOUT}; create it "
                        f"or point root at the folder that holds train/, val/ and test/")
    index: dict[str, dict[str, Path]] = {}
    for channel in CHANNELS:
        folder = split_dir / channel
        if not folder.is_dir():
            raise DataError(f"insar-folder: {folder} is missing; expected the layout {_LAYOUT}; "
                            f"create it with one file per sample id")
        index[channel] = _index_channel(folder)
    all_ids = set().union(*(set(v) for v in index.values()))
    for channel in CHANNELS:
        missing = sorted(all_ids - set(index[channel]))
        if missing:
            have = [c for c in CHANNELS if missing[0] in index[c]]
            raise DataError(
                f"insar-folder: {len(missing)} id(s) of {split_dir} have no {channel} file, e.g. "
                f"'{missing[0]}' (found in {', '.join(have)}); add {split_dir / channel / missing[0]}"
                f".npy|.png or remove that id from the other folders"
            )
    return [(i, {c: index[c][i] for c in CHANNELS}) for i in sorted(all_ids)]


class InsarFolderDataset(Dataset):
    """One split of an on-disk ISSLIDE-style folder; files are read on access."""

    def __init__(self, items: list[tuple[str, dict[str, Path]]], cache: bool = False) -> None:
        self.items = items
        self.cache = cache
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.items)

    @property
    def in_memory(self) -> bool:
        return self.cache  # uncached files are read on access, possibly by loader worker processes

    def ids(self) -> list[str]:
        return [i for i, _ in self.items]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(index)
        item = self._cache.get(index)
        if item is None:
            _, paths = self.items[index]
            coh = load_channel(paths["coherence"], "coherence")
            pha = load_channel(paths["phase"], "phase")
            msk = load_channel(paths["mask"], "mask")
            item = (torch.from_numpy(np.stack([coh, pha]).astype(np.float32)), torch.from_numpy(msk[None]))
            if self.cache:
                self._cache[index] = item
        x, y = item
        return x.clone(), y.clone()


@register_dataset("insar-folder")
class InsarFolder:
    """ISSLIDE-style coherence/phase/mask files on disk (npy or png)."""

    Options = InsarFolderOptions
    task_kind = "segmentation"  # known before building (sweeps check their figures against it)

    @staticmethod
    def build(options: InsarFolderOptions, seed: int = 0) -> DataBundle:
        root = Path(options.root).expanduser()
        if not root.is_dir():
            raise DataError(f"insar-folder: root {root} does not exist or is not a folder; expected the "
                            f"layout {_LAYOUT}; fix data.options.root")
        splits: dict[str, list[tuple[str, dict[str, Path]]]] = {}
        size: tuple[int, int] | None = None
        first: Path | None = None
        for split in SPLITS:
            items = scan_split(root, split)
            if not items:
                raise DataError(f"insar-folder: split '{split}' under {root / split} is empty; add at least "
                                f"one sample (coherence, phase and mask files with the same id)")
            for sample_id, paths in items:
                for channel in CHANNELS:
                    hw = _image_size(paths[channel])
                    if size is None:
                        size, first = hw, paths[channel]
                    elif hw != size:
                        raise DataError(
                            f"insar-folder: {paths[channel]} is {hw[0]}x{hw[1]} but {first} is "
                            f"{size[0]}x{size[1]}; all coherence, phase and mask files must share one "
                            f"size: resize or crop them"
                        )
            splits[split] = items
        assert size is not None
        return DataBundle(
            name="insar-folder",
            task=SEGMENTATION,
            input_shape=(2, size[0], size[1]),
            input_range=INPUT_RANGE,
            **{s: InsarFolderDataset(splits[s], options.cache) for s in SPLITS},
        )
