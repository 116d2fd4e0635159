"""insar-synthetic (generator physics, determinism, options) and insar-folder (layout checks)."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from PIL import Image

from compressor.data import build_data, make_loader
from compressor.data.insar import PHASE_PER_MM, speckle
from compressor.errors import ConfigError, DataError

SMALL = {"n_train": 12, "n_val": 6, "n_test": 6, "size": 32}


# ---------------------------------------------------------------------------------------------
# insar-synthetic
# ---------------------------------------------------------------------------------------------
def test_bundle_metadata_and_shapes():
    b = build_data("insar-synthetic", SMALL)
    assert b.name == "insar-synthetic"
    assert b.task.kind == "segmentation" and b.task.num_classes == 1
    assert b.input_shape == (2, 32, 32)
    assert b.input_range == pytest.approx((-math.pi, math.pi))
    assert b.sizes() == {"train": 12, "val": 6, "test": 6}
    x, y = b.train[0]
    assert x.shape == (2, 32, 32) and x.dtype == torch.float32
    assert y.shape == (1, 32, 32) and y.dtype == torch.float32


def test_default_size_is_isslide_like():
    b = build_data("insar-synthetic", {"n_train": 3, "n_val": 1, "n_test": 1})
    assert b.input_shape == (2, 100, 100)
    assert b.train[2][0].shape == (2, 100, 100)


def test_deterministic_per_seed_and_index():
    a = build_data("insar-synthetic", {**SMALL, "cache": False}, seed=3)
    b = build_data("insar-synthetic", SMALL, seed=3)
    for i in (0, 5, 11):
        xa, ya = a.train[i]
        xb, yb = b.train[i]
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # access order does not matter
    assert torch.equal(a.train[7][0], a.train[7][0])
    c = build_data("insar-synthetic", SMALL, seed=4)
    assert not torch.equal(a.train[0][0], c.train[0][0])


def test_cache_returns_copies():
    b = build_data("insar-synthetic", SMALL)
    x, _ = b.train[1]
    ref = x.clone()
    x.zero_()
    assert torch.equal(b.train[1][0], ref)


def test_splits_are_disjoint():
    b = build_data("insar-synthetic", SMALL)
    samples = [b.split(s)[i][0] for s in ("train", "val", "test") for i in range(6)]
    for i in range(len(samples)):
        for j in range(i + 1, len(samples)):
            assert not torch.equal(samples[i], samples[j])


def test_value_ranges():
    b = build_data("insar-synthetic", {**SMALL, "size": 48})
    for i in range(len(b.train)):
        x, y = b.train[i]
        coh, pha = x[0], x[1]
        assert coh.min() >= 0.0 and coh.max() <= 1.0
        assert pha.min() >= -math.pi - 1e-6 and pha.max() <= math.pi + 1e-6
        assert set(torch.unique(y).tolist()) <= {0.0, 1.0}
        assert torch.isfinite(x).all()


def test_foreground_fraction_in_target_range():
    b = build_data("insar-synthetic", {"n_train": 150, "n_val": 1, "n_test": 1, "cache": False})
    fractions = np.array([b.train[i][1].mean().item() for i in range(150)])
    assert 0.05 < fractions.mean() < 0.20          # measured ~0.11 with the defaults
    assert (fractions == 0).mean() < 0.35           # most samples hold a landslide
    assert fractions.max() < 0.6


def test_landslide_probability_extremes():
    none = build_data("insar-synthetic", {**SMALL, "landslide_prob": 0.0})
    assert all(none.train[i][1].sum() == 0 for i in range(12))
    always = build_data("insar-synthetic", {**SMALL, "landslide_prob": 1.0})
    assert all(always.train[i][1].sum() > 0 for i in range(12))


def test_baseline_assignment():
    b = build_data("insar-synthetic", SMALL)
    assert [b.train.baseline(i) for i in range(6)] == [6, 12, 18, 6, 12, 18]
    c = build_data("insar-synthetic", {**SMALL, "baselines": [5, 10]})
    assert [c.val.baseline(i) for i in range(4)] == [5, 10, 5, 10]
    assert c.val.sample(3)["baseline"] == 10


def test_coherence_falls_with_baseline():
    b = build_data("insar-synthetic", {"n_train": 90, "n_val": 1, "n_test": 1, "size": 64, "cache": False})
    means = {6: [], 12: [], 18: []}
    for i in range(90):
        means[b.train.baseline(i)].append(b.train[i][0][0].mean().item())
    m6, m12, m18 = (np.mean(means[k]) for k in (6, 12, 18))
    assert m6 > m12 > m18
    assert m6 - m18 > 0.05


def test_vegetation_lowers_coherence():
    bare = build_data("insar-synthetic", {**SMALL, "vegetation": 0.0})
    green = build_data("insar-synthetic", {**SMALL, "vegetation": 0.8})
    coh = lambda b: np.mean([b.train[i][0][0].mean().item() for i in range(12)])  # noqa: E731
    assert coh(bare) > coh(green) + 0.05


def test_mask_marks_moving_ground():
    b = build_data("insar-synthetic", {**SMALL, "landslide_prob": 1.0, "max_slides": 1})
    for i in range(6):
        s = b.train.sample(i)
        d = np.abs(s["displacement_mm"])
        m = s["mask"] > 0
        assert m.any()
        # inside: at least mask_fraction of the peak; the peak lies inside the mask
        assert d[m].min() >= 0.2 * d.max() - 1e-4
        assert m.flat[np.argmax(d)]
        assert np.array_equal(s["mask"][None], b.train[i][1].numpy())


def test_fringes_are_not_aliased():
    b = build_data("insar-synthetic", {**SMALL, "size": 64, "landslide_prob": 1.0, "max_slides": 1,
                                       "min_velocity": 50.0, "max_velocity": 60.0})
    for i in range(6):
        phase = b.train.sample(i)["displacement_mm"] * PHASE_PER_MM
        grad = max(np.abs(np.diff(phase, axis=0)).max(), np.abs(np.diff(phase, axis=1)).max())
        assert grad <= 1.5 * 1.05


def test_speckle_matches_explicit_looks():
    """The Wishart shortcut has the statistics of s1 = n1, s2 = g e^{-j phi} n1 + sqrt(1-g^2) n2."""
    rng = np.random.default_rng(0)
    n, looks = 20000, 9
    for g, ph in ((0.2, 0.0), (0.6, 2.0), (0.9, -1.0)):
        coh, pha = speckle(rng, np.full(n, g, np.float32), np.full(n, ph, np.float32), looks)
        n1, n2 = ((rng.standard_normal((looks, n)) + 1j * rng.standard_normal((looks, n))) / math.sqrt(2)
                  for _ in range(2))
        s1, s2 = n1, g * np.exp(-1j * ph) * n1 + math.sqrt(1 - g * g) * n2
        inter = (s1 * np.conj(s2)).sum(0)
        coh_ref = np.abs(inter) / np.sqrt((np.abs(s1) ** 2).sum(0) * (np.abs(s2) ** 2).sum(0))
        err = lambda p: np.angle(np.exp(1j * (p - ph)))  # noqa: E731
        assert coh.mean() == pytest.approx(coh_ref.mean(), abs=0.01)
        assert coh.std() == pytest.approx(coh_ref.std(), abs=0.01)
        assert err(pha).std() == pytest.approx(err(np.angle(inter)).std(), rel=0.05)
        assert abs(err(pha).mean()) < 0.05


def test_more_looks_less_phase_noise():
    rng = np.random.default_rng(1)
    gamma, phase = np.full(20000, 0.5, np.float32), np.zeros(20000, np.float32)
    _, p4 = speckle(rng, gamma, phase, 4)
    _, p25 = speckle(rng, gamma, phase, 25)
    assert p25.std() < p4.std()


def test_generation_is_fast():
    b = build_data("insar-synthetic", {"n_train": 40, "n_val": 1, "n_test": 1, "cache": False})
    b.train[0]
    start = time.perf_counter()
    for i in range(40):
        b.train[i]
    per_sample = (time.perf_counter() - start) / 40
    assert per_sample < 0.02  # ~2 ms on one core; loose for loaded CI machines


def test_index_errors():
    b = build_data("insar-synthetic", SMALL)
    with pytest.raises(IndexError):
        b.train[12]
    assert torch.equal(b.train[-1][0], b.train[11][0])


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"size": 4}, "[16, 1024]"),
        ({"n_trian": 5}, "did you mean 'n_train'"),
        ({"looks": 1}, "looks"),
        ({"landslide_prob": 1.5}, "[0, 1]"),
        ({"baselines": []}, "baselines"),
        ({"baselines": [0, 6]}, "baselines"),
        ({"min_velocity": 5.0, "max_velocity": 1.0}, "min_velocity"),
        ({"min_sigma": 0.2, "max_sigma": 0.1}, "min_sigma"),
        ({"cache": "yes"}, "true or false"),
        ({"size": 50.5}, "integer"),
    ],
)
def test_option_errors(raw, needle):
    with pytest.raises(ConfigError) as info:
        build_data("insar-synthetic", raw)
    assert needle in str(info.value)
    assert "data insar-synthetic" in str(info.value)


def test_empty_split_is_a_data_error():
    with pytest.raises(DataError, match="split 'val' is empty"):
        build_data("insar-synthetic", {**SMALL, "n_val": 0})


def test_loader_batches_and_shuffles_deterministically():
    b = build_data("insar-synthetic", SMALL)
    x, y = next(iter(make_loader(b.train, 5)))
    assert x.shape == (5, 2, 32, 32) and y.shape == (5, 1, 32, 32)

    def order(seed):
        return torch.cat([xb[:, 1, 0, 0] for xb, _ in make_loader(b.train, 4, shuffle=True, seed=seed)])

    assert torch.equal(order(1), order(1))
    assert not torch.equal(order(1), order(2))
    assert len(make_loader(b.train, 5, drop_last=True)) == 2


# ---------------------------------------------------------------------------------------------
# insar-folder
# ---------------------------------------------------------------------------------------------
def _write(path, arr, kind):
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "npy":
        np.save(path.with_suffix(".npy"), arr)
    else:
        Image.fromarray(arr).save(path.with_suffix(".png"))


def make_folder(root, ids=None, size=(6, 5)):
    """train: float npy; val: 8-bit png; test: 16-bit png."""
    rng = np.random.default_rng(0)
    h, w = size
    ids = ids or {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    for split, names in ids.items():
        for name in names:
            base = root / split
            if split == "train":
                _write(base / "coherence" / name, rng.uniform(0, 1, size).astype(np.float32), "npy")
                _write(base / "phase" / name, rng.uniform(-math.pi, math.pi, size).astype(np.float32), "npy")
                _write(base / "mask" / name, (rng.uniform(size=size) > 0.5).astype(np.uint8), "npy")
            elif split == "val":
                ramp = np.tile(np.linspace(0, 255, w).round().astype(np.uint8), (h, 1))
                _write(base / "coherence" / name, ramp, "png")
                _write(base / "phase" / name, ramp, "png")
                _write(base / "mask" / name, (ramp > 128).astype(np.uint8) * 255, "png")
            else:
                ramp16 = np.tile(np.linspace(0, 65535, w).round().astype(np.uint16), (h, 1))
                _write(base / "coherence" / name, ramp16, "png")
                _write(base / "phase" / name, ramp16, "png")
                _write(base / "mask" / name, (ramp16 > 0).astype(np.uint8), "png")
    return root


def test_folder_good_case(tmp_path):
    root = make_folder(tmp_path / "isslide")
    b = build_data("insar-folder", {"root": str(root)})
    assert b.task.kind == "segmentation"
    assert b.input_shape == (2, 6, 5)
    assert b.input_range == pytest.approx((-math.pi, math.pi))
    assert b.sizes() == {"train": 2, "val": 1, "test": 1}
    assert b.train.ids() == ["a", "b"]
    ref = np.load(root / "train" / "coherence" / "b.npy")
    x, y = b.train[1]
    assert np.allclose(x[0].numpy(), ref)
    assert set(torch.unique(y).tolist()) <= {0.0, 1.0}
    x, y = b.val[0]
    assert x.dtype == torch.float32 and y.shape == (1, 6, 5)
    assert x[0, 0, 0] == 0.0 and x[0, 0, -1] == pytest.approx(1.0)
    assert x[1, 0, 0] == pytest.approx(-math.pi) and x[1, 0, -1] == pytest.approx(math.pi)
    assert y[0, 0, 0] == 0.0 and y[0, 0, -1] == 1.0
    x, y = b.test[0]  # 16-bit
    assert x[0, 0, -1] == pytest.approx(1.0) and x[1, 0, 0] == pytest.approx(-math.pi)
    assert x[0].min() >= 0 and x[0].max() <= 1
    xb, yb = next(iter(make_loader(b.train, 2)))
    assert xb.shape == (2, 2, 6, 5)


def test_folder_missing_root(tmp_path):
    with pytest.raises(DataError) as info:
        build_data("insar-folder", {"root": str(tmp_path / "nope")})
    msg = str(info.value)
    assert "nope" in msg and "{train,val,test}" in msg


def test_folder_root_is_required():
    with pytest.raises(ConfigError, match="missing required option 'root'"):
        build_data("insar-folder", {})


def test_folder_missing_split(tmp_path):
    root = make_folder(tmp_path / "r", ids={"train": ["a"], "val": ["b"]})
    with pytest.raises(DataError, match="test"):
        build_data("insar-folder", {"root": str(root)})


def test_folder_missing_channel_folder(tmp_path):
    root = make_folder(tmp_path / "r")
    for f in (root / "val" / "mask").iterdir():
        f.unlink()
    (root / "val" / "mask").rmdir()
    with pytest.raises(DataError, match="mask"):
        build_data("insar-folder", {"root": str(root)})


def test_folder_id_missing_in_one_channel(tmp_path):
    root = make_folder(tmp_path / "r")
    (root / "train" / "phase" / "b.npy").unlink()
    with pytest.raises(DataError) as info:
        build_data("insar-folder", {"root": str(root)})
    msg = str(info.value)
    assert "'b'" in msg and "phase" in msg


def test_folder_shape_mismatch(tmp_path):
    root = make_folder(tmp_path / "r")
    np.save(root / "train" / "mask" / "a.npy", np.zeros((7, 5), np.uint8))
    with pytest.raises(DataError, match="share one size"):
        build_data("insar-folder", {"root": str(root)})


def test_folder_3d_array_rejected(tmp_path):
    root = make_folder(tmp_path / "r")
    np.save(root / "train" / "coherence" / "a.npy", np.zeros((1, 6, 5), np.float32))
    with pytest.raises(DataError, match="2-D"):
        build_data("insar-folder", {"root": str(root)})


def test_folder_empty_split(tmp_path):
    root = make_folder(tmp_path / "r")
    for channel in ("coherence", "phase", "mask"):
        for f in (root / "val" / channel).iterdir():
            f.unlink()
    with pytest.raises(DataError, match="split 'val'.*empty"):
        build_data("insar-folder", {"root": str(root)})


def test_folder_duplicate_id(tmp_path):
    root = make_folder(tmp_path / "r")
    Image.fromarray(np.zeros((6, 5), np.uint8)).save(root / "train" / "mask" / "a.png")
    with pytest.raises(DataError, match="one file per id"):
        build_data("insar-folder", {"root": str(root)})


def test_folder_values_out_of_range(tmp_path):
    root = make_folder(tmp_path / "r")
    np.save(root / "train" / "phase" / "a.npy", np.full((6, 5), 90.0, np.float32))
    b = build_data("insar-folder", {"root": str(root)})
    with pytest.raises(DataError, match="degrees"):
        b.train[0]
