"""int8_calib: activation-range calibrators for INT8 post-training quantization.

A `RangeObserver` watches one tensor over the calibration batches and returns the range to quantize it
with, the way TensorRT, onnxruntime and NVIDIA ModelOpt calibrate:

* ``minmax``: the smallest and largest value seen.
* ``percentile``: clip the top ``100 - percentile`` percent of the values (from a histogram).
* ``entropy``: TensorRT's KL-divergence calibration (IInt8EntropyCalibrator2; onnxruntime's
  ``get_entropy_threshold``, pytorch-quantization's ``_compute_amax_entropy``).

Two passes over the same batches: ``observe`` records the running min and max (all that minmax needs);
then, where ``needs_histogram``, ``observe_histogram`` accumulates histograms over that fixed range, so
the bins of every batch line up. Per tensor there are ``bins`` bins for each of: |x| over [0, max|x|]
(symmetric ranges), x > 0 over [0, max(x, 0)] and -x for x < 0 over [0, max(-x, 0)] (asymmetric
ranges), plus the count of all values. Exact zeros are counted but not histogrammed: zero is exactly
representable and needs no range, and the zeros of a ReLU output would otherwise swamp bin 0 and drag
the entropy threshold down (pytorch-quantization patches bin 0 for the same reason). Percentiles still
count the zeros as values at or below the first bin's upper edge.

Every range contains 0 (lo <= 0 <= hi). A tensor that is all zeros gives (0.0, 0.0); callers handle
that (``compressor.quant.quant_params`` gives it scale 1.0, as onnxruntime does, and turns a range into the
(scale, zero_point) that onnxruntime's ``compute_scale_zp`` computes for it).
"""
from __future__ import annotations

import numpy as np
import torch

METHODS = ("minmax", "percentile", "entropy")
LEVELS = 128  # quantized levels per side of int8: the KL candidate Q has this many
KL_EPS = 1e-4  # smoothing (in counts) of an empty Q bin that must hold clipped outliers, as in onnxruntime/MXNet


def _range(lo: float, hi: float) -> tuple[float, float]:
    """(lo, hi) widened to contain 0 (the min/max order also turns -0.0 into 0.0)."""
    return min(0.0, lo), max(0.0, hi)


def _percentile_threshold(hist: np.ndarray, top: float, total: float, percentile: float) -> float:
    """Upper edge of the first bin (of ``hist``, over [0, top]) at which at most ``100 - percentile``
    percent of ``total`` values lie above it; ``top`` exactly for 100, 0.0 for an empty histogram.
    ``total`` may exceed ``hist.sum()`` (values not in this histogram count as below every edge)."""
    below = total - (hist.sum() - np.cumsum(hist))  # values not above the upper edge of each bin
    # Counts are exact integers; the 1e-12 relative slack lets a decimal percentile that binary floats
    # cannot hold exactly (99.9 is 99.90000000000000568...) reach its intended rank.
    k = int(np.argmax(below * 100 >= percentile * total * (1 - 1e-12)))
    return float(np.linspace(0.0, top, hist.size + 1)[k + 1])  # linspace ends exactly at top


def _xlogx(v: np.ndarray) -> np.ndarray:
    """v * log(v), 0 where v is 0."""
    return v * np.log(np.where(v > 0, v, 1.0))


def _entropy_threshold(hist: np.ndarray, top: float) -> float:
    """TensorRT's KL-divergence threshold for a histogram of magnitudes over [0, top]; 0.0 if empty.

    For every candidate bin count i in range(128, bins + 1): the reference P is hist[:i] with the
    outliers hist[i:] added into its last bin; the candidate Q merges hist[:i] (without the outliers)
    into 128 groups (bin j in group j * 128 // i, so group sizes differ by at most one, as in
    pytorch-quantization) and spreads each group's total evenly over the group's bins where P is
    nonzero (as onnxruntime and MXNet do). KL(P || Q) with both normalized, skipping P's zeros. The one
    bin where Q can be 0 while P is not is the last, when the outliers land in an empty last group: it
    then gets KL_EPS counts (the references add that much to every zero bin, which would spoil the
    closed form below), so clipping outliers costs a finite divergence. A candidate with hist[:i] all
    zero is never chosen. Returns the upper edge of bin i - 1 for the first i minimizing KL.

    Vectorised in closed form, O(128) per candidate: with S_g, n_g the sum and P-nonzero bin count of
    group g and t the outlier count, sum_j P_j log Q_j = sum_g S_g log(S_g / n_g) + t log Q_{i-1}.
    """
    bins, total = hist.size, hist.sum()
    if total == 0:
        return 0.0
    i = np.arange(LEVELS, bins + 1)
    edges = -(-np.outer(i, np.arange(LEVELS + 1)) // LEVELS)  # ceil(g * i / 128): group g is [edges_g, edges_g+1)
    csum = np.concatenate(([0.0], np.cumsum(hist)))
    sums = np.diff(csum[edges], axis=1)  # S_g
    nonzero = np.diff(np.concatenate(([0], np.cumsum(hist > 0)))[edges], axis=1)  # n_g, before the outliers
    tail = total - csum[i]
    nonzero[:, -1] += (hist[i - 1] == 0) & (tail > 0)  # the outliers make P's last bin nonzero
    with np.errstate(divide="ignore", invalid="ignore"):  # masked-out branches of np.where
        p_log_p = np.concatenate(([0.0], np.cumsum(_xlogx(hist))))[i - 1] + _xlogx(hist[i - 1] + tail)
        group_terms = np.where(sums > 0, sums * np.log(sums / nonzero), 0.0).sum(axis=1)
        smoothed = (sums[:, -1] == 0) & (tail > 0)
        q_last = np.where(smoothed, KL_EPS, sums[:, -1] / nonzero[:, -1])
        p_log_q = group_terms + np.where(tail > 0, tail * np.log(q_last), 0.0)
        q_total = csum[i] + np.where(smoothed, KL_EPS, 0.0)
        kl = (p_log_p - p_log_q) / total + np.log(q_total / total)
    kl[csum[i] == 0] = np.inf
    best = int(i[np.argmin(kl)])
    return float(np.linspace(0.0, top, bins + 1)[best])


def _magnitudes(x: torch.Tensor, top: float, bins: int) -> np.ndarray:
    """Histogram (float64, ``bins`` bins over [0, top]) of the nonnegative values ``x``; top goes into
    the last bin. Empty when ``x`` is."""
    if x.numel() == 0:
        return np.zeros(bins)
    idx = (x * (bins / top)).long().clamp_(max=bins - 1)
    return torch.bincount(idx, minlength=bins).cpu().double().numpy()


class RangeObserver:
    """Collects the values of one tensor over calibration batches and gives its quantization range.

    Pass 1 calls ``observe`` on every batch; if ``needs_histogram``, pass 2 calls
    ``observe_histogram`` on the same batches; then ``range(symmetric)`` gives (lo, hi).
    """

    def __init__(self, method: str = "minmax", percentile: float = 99.99, bins: int = 2048) -> None:
        """``method`` is one of METHODS; ``percentile`` in (0, 100] (percentile method only);
        ``bins`` (>= 128) histogram bins per side (percentile and entropy). ValueError otherwise."""
        if method not in METHODS:
            raise ValueError(f"unknown calibration method {method!r}: use one of {', '.join(METHODS)}")
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        if bins < LEVELS:
            raise ValueError(f"bins must be at least {LEVELS}, got {bins}")
        self.method, self.percentile, self.bins = method, percentile, bins
        self._batches = 0
        self._min = self._max = 0.0  # 0 is always in the range, so it is a safe start
        self._hist: dict[str, np.ndarray] | None = None  # "abs", "pos", "neg" histograms of pass 2
        self._count = 0  # values seen in pass 2

    @property
    def batches(self) -> int:
        """Number of ``observe`` calls so far."""
        return self._batches

    @property
    def needs_histogram(self) -> bool:
        """Whether ``range`` needs the histogram pass: False for minmax, True otherwise."""
        return self.method != "minmax"

    @staticmethod
    def _values(x: torch.Tensor) -> torch.Tensor:
        """``x`` detached, flattened and float32; ValueError if it has NaN or inf."""
        x = x.detach().reshape(-1).float()
        if not bool(torch.isfinite(x).all()):
            raise ValueError("calibration tensor has NaN/inf values: its range cannot be calibrated")
        return x

    def observe(self, x: torch.Tensor) -> None:
        """Pass 1: update the running min and max with the values of ``x`` (any shape and device)."""
        x = self._values(x)
        self._batches += 1
        if x.numel():
            lo, hi = torch.aminmax(x)
            self._min, self._max = min(self._min, float(lo)), max(self._max, float(hi))

    def observe_histogram(self, x: torch.Tensor) -> None:
        """Pass 2 (after every ``observe`` call): add the values of ``x`` to the histograms over the
        range found in pass 1. A no-op for minmax. ValueError if ``x`` leaves that range (pass 2 must
        see the same batches as pass 1)."""
        if not self.needs_histogram:
            return
        if not self._batches:
            raise RuntimeError("observe_histogram comes after observe: call observe on every batch first")
        x = self._values(x)
        if x.numel() and (float(x.min()) < self._min or float(x.max()) > self._max):
            raise ValueError(
                "observe_histogram got values outside the range seen by observe: pass the same batches to both passes"
            )
        amax = max(-self._min, self._max)
        hist = {
            "abs": _magnitudes(x[x != 0].abs(), amax, self.bins),
            "pos": _magnitudes(x[x > 0], self._max, self.bins),
            "neg": _magnitudes(-x[x < 0], -self._min, self.bins),
        }
        self._hist = hist if self._hist is None else {k: self._hist[k] + v for k, v in hist.items()}
        self._count += x.numel()

    def _threshold(self, hist: np.ndarray, top: float) -> float:
        """The method's clipping threshold for one histogram of magnitudes over [0, top]."""
        if self.method == "percentile":
            return _percentile_threshold(hist, top, self._count, self.percentile)
        return _entropy_threshold(hist, top)

    def range(self, symmetric: bool) -> tuple[float, float]:
        """The calibrated range (lo, hi), lo <= 0 <= hi; (0.0, 0.0) if every value was 0.

        symmetric=True: (-a, a) with a the max |x| (minmax), the percentile of |x| (percentile) or the
        KL threshold of the |x| histogram (entropy). symmetric=False: minmax gives the min and max;
        percentile and entropy threshold the positive values' histogram for hi and the negative
        values' magnitudes for lo (0 when there are none), with the same routines. For percentile the
        allowed tail, 100 - percentile percent of ALL values, applies to each side separately.
        RuntimeError if the method needs the histogram pass and it has not run.
        """
        if self.method == "minmax":
            if symmetric:
                a = max(-self._min, self._max)
                return _range(-a, a)
            return _range(self._min, self._max)
        if self._hist is None:
            raise RuntimeError(
                f"{self.method} calibration needs the histogram pass: call observe_histogram on the same batches"
            )
        if symmetric:
            a = self._threshold(self._hist["abs"], max(-self._min, self._max))
            return _range(-a, a)
        return _range(-self._threshold(self._hist["neg"], -self._min), self._threshold(self._hist["pos"], self._max))
