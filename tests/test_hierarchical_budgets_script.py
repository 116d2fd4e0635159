"""benchmarks/hierarchical_budgets.py: the noisy-digits stand-in and the budget table's helpers (no search here)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import hierarchical_budgets as hb  # noqa: E402


def test_no_noise_gives_the_digits_bundle_exactly():
    from compressor.data import build_data

    plain, ours = build_data("digits", seed=0), hb.noisy_digits(0.0)
    assert ours.input_shape == (1, 8, 8) and ours.task.num_classes == 10 and ours.input_range == (0.0, 1.0)
    for split in ("train", "val", "test"):
        assert torch.equal(ours.split(split).x, plain.split(split).x)
        assert torch.equal(ours.split(split).y, plain.split(split).y)


def test_noise_is_fixed_per_image_clipped_and_copied_for_val_and_test():
    from sklearn.datasets import load_digits

    from compressor.data import build_data

    plain = build_data("digits", seed=0)
    a, b = hb.noisy_digits(0.4), hb.noisy_digits(0.4, eval_copies=3)
    # the same images in every build, copy 0 whatever the number of copies
    assert torch.equal(a.train.x, hb.noisy_digits(0.4).train.x)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.x, b.test.x[:len(a.test)])
    n = len(plain.test)
    assert len(b.test) == 3 * n and len(b.val) == 3 * len(plain.val) and len(b.train) == len(plain.train)
    assert tuple(b.test.x.shape[1:]) == (1, 8, 8) and b.test.x.dtype == torch.float32
    assert torch.equal(b.test.y, plain.test.y.repeat(3))
    assert not torch.equal(b.test.x[:n], b.test.x[n:2 * n])  # the copies draw their own noise
    assert float(b.test.x.min()) == 0.0 and float(b.test.x.max()) == 1.0
    # by hand: image i gets clip(image + σ·N(0, 1) from the generator seeded (salt, noise seed, i, copy), 0, 1)
    images = load_digits().images.astype(np.float32) / 16.0
    i = int(np.flatnonzero((images.reshape(len(images), -1) == plain.train.x[5].numpy().reshape(-1)).all(1))[0])
    noise = np.random.default_rng([hb.NOISE_SALT, 0, i, 0]).standard_normal((8, 8)).astype(np.float32)
    np.testing.assert_allclose(a.train.x[5, 0].numpy(), np.clip(images[i] + 0.4 * noise, 0, 1), rtol=0, atol=1e-6)
    # another noise seed, other images
    assert not torch.equal(a.train.x, hb.noisy_digits(0.4, noise_seed=1).train.x)
    with pytest.raises(ValueError, match="sigma >= 0 and eval_copies >= 1"):
        hb.noisy_digits(0.4, eval_copies=0)


def test_trend_words():
    rows = [{"winner": {"macs": 1.0}, "x": v} for v in (0.5, 0.6, 0.7)]
    assert hb.trend(rows, "x") == "rises with every budget"
    rows[2]["x"] = 0.6
    assert hb.trend(rows, "x") == "never falls, flat between two budgets"
    rows[2]["x"] = 0.55
    assert hb.trend(rows, "x") == "falls at a larger budget"
