import numpy as np
import pytest
import torch
from onnx import TensorProto
from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

from compressor.passes.int8_calib import METHODS, RangeObserver, _entropy_threshold
from compressor.quant import quant_params


def calibrate(batches, method, symmetric, percentile=99.99, bins=2048):
    obs = RangeObserver(method, percentile, bins)
    for b in batches:
        obs.observe(b)
    if obs.needs_histogram:
        for b in batches:
            obs.observe_histogram(b)
    return obs.range(symmetric)


def test_minmax_over_two_batches():
    batches = [torch.tensor([[-1.0, 2.0], [0.5, 3.0]]), torch.tensor([-4.0, 1.0])]
    obs = RangeObserver()
    for b in batches:
        obs.observe(b)
    assert obs.batches == 2 and not obs.needs_histogram
    assert obs.range(symmetric=True) == (-4.0, 4.0)
    assert obs.range(symmetric=False) == (-4.0, 3.0)
    assert calibrate([torch.tensor([1.0, 2.0]), torch.tensor([5.0])], "minmax", False) == (0.0, 5.0)
    assert calibrate([torch.zeros(3)], "minmax", True) == (0.0, 0.0)


def test_percentile_hand_values():
    x = torch.arange(1, 1001, dtype=torch.float32) * torch.tensor([1.0, -1.0]).repeat(500)  # |x| = 1..1000
    batches = list(x.chunk(2))
    width = 1000 / 2048
    lo, hi = calibrate(batches, "percentile", True, percentile=99)
    assert lo == -hi and 990 <= hi < 990 + width
    _, hi = calibrate(batches, "percentile", True, percentile=99.9)  # 99.9 is not exact in binary
    assert 999 <= hi < 999 + width
    assert calibrate(batches, "percentile", True, percentile=100) == (-1000.0, 1000.0)


def test_percentile_matches_numpy():
    x = torch.randn(50_000, generator=torch.Generator().manual_seed(0))
    for p in (99.0, 99.9, 99.99):
        _, hi = calibrate(list(x.chunk(3)), "percentile", True, percentile=p)
        exact = np.percentile(x.abs().numpy(), p)
        assert exact - 1e-6 <= hi <= exact + x.abs().max().item() / 2048


def test_percentile_asymmetric_tails_measured_against_all_values():
    x = torch.cat([-torch.arange(1.0, 101.0), torch.arange(1.0, 901.0)])  # 1000 values, 1% tail = 10 per side
    lo, hi = calibrate(list(x.chunk(2)), "percentile", False, percentile=99)
    assert 890 <= hi < 890 + 900 / 2048
    assert -90 - 100 / 2048 < lo <= -90


def test_entropy_clips_outliers():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(100_000, generator=g), torch.full((5,), 1000.0)])
    # candidates start at 128 of `bins` bins, so the threshold is >= max * 128 / bins: 8192 bins allow < 20
    lo, hi = calibrate(list(x.chunk(2)), "entropy", True, bins=8192)
    assert lo == -hi and 2 < hi < 20


def test_entropy_keeps_uniform_range():
    x = torch.rand(100_000, generator=torch.Generator().manual_seed(1)) * 2 - 1
    _, hi = calibrate(list(x.chunk(2)), "entropy", True)
    assert 0.9 < hi <= 1.0


def test_entropy_ignores_exact_zeros():
    x = torch.randn(20_000, generator=torch.Generator().manual_seed(3))
    with_zeros = torch.cat([x, torch.zeros(200_000)])  # e.g. the zeros of a ReLU
    assert calibrate([with_zeros], "entropy", True) == calibrate([x], "entropy", True)


def _entropy_by_definition(hist, top, eps=1e-4):
    """The KL calibration written out bin by bin, one candidate at a time."""
    best_kl, best_i = np.inf, None
    for i in range(128, hist.size + 1):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        group = np.arange(i) * 128 // i
        sums = np.bincount(group, weights=hist[:i], minlength=128)
        nonzero = np.bincount(group, weights=p > 0, minlength=128)
        q = np.where(p > 0, sums[group] / np.maximum(nonzero[group], 1), 0.0)
        if hist[:i].sum() == 0:
            continue
        if p[-1] > 0 and q[-1] == 0:
            q[-1] = eps
        p, q = p / p.sum(), q / q.sum()
        kl = np.sum(p[p > 0] * np.log(p[p > 0] / q[p > 0]))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return np.linspace(0, top, hist.size + 1)[best_i]


def test_entropy_vectorised_matches_definition():
    rng = np.random.default_rng(0)
    for case in range(4):
        hist = rng.poisson(rng.uniform(0, 20, 300) * (rng.random(300) < 0.7)).astype(float)
        if case == 1:
            hist[:150] = 0  # every candidate below 150 bins clips all the data
        if case == 2:
            hist[130:299], hist[299] = 0, 3  # a few far outliers
        assert _entropy_threshold(hist, 3.0) == pytest.approx(_entropy_by_definition(hist, 3.0), abs=0)
    assert _entropy_threshold(np.zeros(256), 3.0) == 0.0


@pytest.mark.parametrize("method", METHODS)
def test_asymmetric_relu_output_has_lo_zero(method):
    x = torch.relu(torch.randn(20_000, generator=torch.Generator().manual_seed(2)))
    lo, hi = calibrate(list(x.chunk(2)), method, False)
    assert lo == 0.0 and 1 < hi <= x.max().item()


def test_quant_params_hand_values():
    assert quant_params(-2.0, 1.0, True) == (float(np.float32(2 / 127)), 0)
    assert quant_params(-1.0, 3.0, False) == (float(np.float32(4 / 255)), 64)  # round(63.75)
    assert quant_params(-0.5, 254.5, False) == (1.0, 0)  # 0.5 rounds half to even
    assert quant_params(-1.5, 253.5, False) == (1.0, 2)
    assert quant_params(0.0, 0.0, True) == (1.0, 0) and quant_params(0.0, 0.0, False) == (1.0, 0)


RANGES = [(-0.1, 0.7), (-3.3, 0.0), (0.0, 6.0), (-1e-3, 2.5), (-7.25, 7.25), (0.0, 0.0), (0.0, 1e-37)]


@pytest.mark.parametrize("lo,hi", RANGES)
@pytest.mark.parametrize("symmetric", [True, False])
def test_quant_params_match_onnxruntime(lo, hi, symmetric):
    qmin, qmax = get_qmin_qmax_for_qType(TensorProto.INT8 if symmetric else TensorProto.UINT8, symmetric=symmetric)
    zp, scale = compute_scale_zp(np.float32(lo), np.float32(hi), qmin, qmax, symmetric=symmetric)
    ours = quant_params(lo, hi, symmetric)
    assert ours == (float(scale), int(zp))
    assert isinstance(ours[0], float) and isinstance(ours[1], int)


def test_errors():
    with pytest.raises(ValueError, match="minmax, percentile, entropy"):
        RangeObserver("kl")
    with pytest.raises(ValueError, match="percentile"):
        RangeObserver("percentile", percentile=0)
    with pytest.raises(ValueError, match="bins"):
        RangeObserver("entropy", bins=64)
    obs = RangeObserver("entropy")
    obs.observe(torch.randn(10))
    with pytest.raises(RuntimeError, match="needs the histogram pass"):
        obs.range(True)
    with pytest.raises(ValueError, match="NaN/inf"):
        obs.observe(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="same batches"):
        obs.observe_histogram(torch.full((3,), 100.0))
