"""Tests of per-channel statistics, their pooling, and every normaliser."""

from __future__ import annotations

import numpy as np
import pytest

from volprep.config import PreprocessConfig
from volprep.preprocess import channel_stats, dataset_statistics, normalize, prepare_case
from volprep.preprocess.fidelity import psnr, ssim

NORMALISERS = [
    {"normalize": "zscore", "zscore_over": "foreground"},
    {"normalize": "zscore", "zscore_over": "all"},
    {"normalize": "percentile", "percentile_scale": "unit"},
    {"normalize": "percentile", "percentile_scale": "zscore"},
    {"normalize": "ct", "ct_window": [-100, 300]},
    {"normalize": "none"},
]


@pytest.mark.parametrize("kwargs", NORMALISERS, ids=lambda k: "-".join(str(v) for v in k.values()))
@pytest.mark.parametrize("value", [0.0, 123.0])
def test_constant_volume_survives_every_normaliser(kwargs: dict, value: float) -> None:
    cfg = PreprocessConfig(reduce="downsample", **kwargs)
    prepared = prepare_case(np.full((8, 8, 8, 1), value, np.float32), np.eye(4), None, cfg, (6, 6, 6))
    out = normalize(prepared.image, prepared.meta["stats"], cfg)
    assert out.dtype == np.float32 and out.shape == (6, 6, 6, 1)
    assert np.all(np.isfinite(out))
    # A constant carries no contrast; every normaliser must keep it constant.
    assert np.ptp(out) == 0


def _two_tissue(seed: int) -> np.ndarray:
    rng = np.random.default_rng([11, seed])
    image = np.zeros((16, 16, 16, 1), dtype=np.float32)
    image[4:12, 4:12, 4:12] = 100 + rng.normal(0, 10, (8, 8, 8, 1))
    return image


def test_zscore_foreground_gives_unit_foreground() -> None:
    image = _two_tissue(0)
    stats = channel_stats(image, 1, 99)
    assert stats[0]["fg_fraction"] == pytest.approx(512 / 4096)
    out = normalize(image, stats, PreprocessConfig(normalize="zscore"))
    fg = out[4:12, 4:12, 4:12]
    assert fg.mean() == pytest.approx(0, abs=1e-5) and fg.std() == pytest.approx(1, abs=1e-4)
    assert np.all(out[0] == out[0, 0, 0, 0]) and out[0, 0, 0, 0] < -5  # background kept, z-scored


def test_percentile_unit_range_and_ct_window() -> None:
    image = _two_tissue(1)
    stats = channel_stats(image, 5, 95)
    out = normalize(image, stats, PreprocessConfig(normalize="percentile"))
    assert out.min() == 0 and out.max() == pytest.approx(1)
    ct = np.linspace(-2000, 2000, 4096, dtype=np.float32).reshape(16, 16, 16, 1)
    out_ct = normalize(ct, channel_stats(ct, 1, 99), PreprocessConfig(normalize="ct", ct_window=[-1000, 1000]))
    assert out_ct.min() == 0 and out_ct.max() == 1
    assert out_ct[8, 0, 0, 0] == pytest.approx((ct[8, 0, 0, 0] + 1000) / 2000)


def test_dataset_statistics_pools_exactly() -> None:
    a, b = _two_tissue(2), _two_tissue(3) * 3
    pooled = dataset_statistics([channel_stats(a, 1, 99), channel_stats(b, 1, 99)])[0]
    both = np.concatenate([a, b])
    assert pooled["mean"] == pytest.approx(both.mean(), rel=1e-5)
    assert pooled["std"] == pytest.approx(both.std(), rel=1e-5)
    fg = np.concatenate([a[4:12, 4:12, 4:12], b[4:12, 4:12, 4:12]])
    assert pooled["fg_mean"] == pytest.approx(fg.mean(), rel=1e-5)
    assert pooled["fg_std"] == pytest.approx(fg.std(), rel=1e-4)
    assert pooled["n"] == 2 * 4096 and pooled["max"] == pytest.approx(b.max())


def test_dataset_stats_replace_case_stats() -> None:
    image = _two_tissue(4)
    cfg = PreprocessConfig(normalize="zscore", zscore_over="all")
    fake = [{**channel_stats(image, 1, 99)[0], "mean": 50.0, "std": 2.0}]
    out = normalize(image, channel_stats(image, 1, 99), cfg, dataset_stats=fake)
    np.testing.assert_allclose(out, (image - 50) / 2, rtol=1e-6)


def ssim_oracle(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """SSIM of Wang et al. (2004) in plain numpy, the test's own route to the figure.

    An 11-tap Gaussian window (sigma 1.5, radius 5, normalised), applied separably with
    ``np.convolve`` over symmetrically padded edges; K1 = 0.01, K2 = 0.03; the SSIM map's
    mean over all voxels. No scipy.ndimage, nothing from volprep.
    """
    taps = np.arange(-5, 6, dtype=np.float64)
    kernel = np.exp(-taps**2 / (2 * 1.5**2))
    kernel /= kernel.sum()

    def blur(v: np.ndarray) -> np.ndarray:
        for axis in range(3):
            v = np.pad(v, [(5, 5) if a == axis else (0, 0) for a in range(3)], mode="symmetric")
            v = np.apply_along_axis(lambda row: np.convolve(row, kernel, mode="valid"), axis, v)
        return v

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    ssim_map = (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(ssim_map.mean())


def test_psnr_of_a_literal_array_is_the_formula() -> None:
    ref = np.array([[[0.0, 4.0], [8.0, 16.0]]], dtype=np.float32)  # data range 16
    test = ref + np.array([[[2.0, 0.0], [0.0, 0.0]]], dtype=np.float32)  # MSE = 4 / 4 = 1
    assert psnr(ref, test) == pytest.approx(10 * np.log10(16**2 / 1), abs=1e-9)  # 24.08 dB
    assert psnr(ref, test) == pytest.approx(24.0823996531, abs=1e-6)
    assert psnr(ref, test, data_range=255) == pytest.approx(10 * np.log10(255**2), abs=1e-6)
    # MSE 9 / 4 (a single error of 3): 10 log10(256 / 2.25) = 20.56 dB
    worse = ref + np.array([[[0.0, 0.0], [3.0, 0.0]]], dtype=np.float32)
    assert psnr(ref, worse) == pytest.approx(10 * np.log10(256 / 2.25), abs=1e-6)
    assert psnr(ref, ref) == float("inf") and psnr(ref, ref.copy()) == float("inf")
    # the order is (reference, test): the range is the reference's
    assert psnr(test, ref) == pytest.approx(10 * np.log10(14**2 / 1), abs=1e-6)  # 2..16


def test_psnr_of_unit_noise_is_the_range_in_db() -> None:
    ref = _two_tissue(5)
    noise = np.random.default_rng(12).normal(0, 1, ref.shape).astype(np.float32)
    mse = float(np.mean(noise.astype(np.float64) ** 2))  # ~1, measured rather than assumed
    span = float(ref.max() - ref.min())
    assert psnr(ref, ref + noise) == pytest.approx(10 * np.log10(span**2 / mse), abs=1e-3)


def test_ssim_of_a_constant_offset_is_the_closed_form() -> None:
    # On a constant volume every local variance is 0 and every local mean is the value,
    # so SSIM reduces to the luminance term: (2 a b + C1) / (a^2 + b^2 + C1).
    a, b, data_range = 10.0, 12.0, 100.0
    c1 = (0.01 * data_range) ** 2  # = 1
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # 241 / 245
    got = ssim(np.full((9, 8, 7), a, np.float32), np.full((9, 8, 7), b, np.float32), data_range)
    assert got == pytest.approx(241 / 245, abs=1e-6) and got == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name", ["identical", "scaled-offset", "noisy", "flipped"])
def test_ssim_matches_an_independent_implementation(name: str) -> None:
    from scipy import ndimage

    rng = np.random.default_rng([13, 1])
    x = ndimage.gaussian_filter(rng.normal(0, 1, (14, 12, 10)), 2.0) * 400 + 50
    y = {
        "identical": x,
        "scaled-offset": 0.5 * x + 20,
        "noisy": x + rng.normal(0, 0.5 * np.ptp(x), x.shape),
        "flipped": x[::-1],
    }[name]
    expected = ssim_oracle(x, y, float(np.ptp(x)))
    got = ssim(x.astype(np.float32), y.astype(np.float32))
    assert got == pytest.approx(expected, abs=2e-5)
    if name == "identical":
        assert got == pytest.approx(1.0, abs=1e-6)
    elif name == "noisy":
        assert got < 0.3  # heavy noise (half the range) leaves little structure
    else:
        assert got < 0.95


def test_ssim_averages_channels() -> None:
    rng = np.random.default_rng([13, 2])
    x = rng.normal(100, 10, (8, 8, 8, 2))
    y = x.copy()
    y[..., 1] = 0.25 * x[..., 1]
    span = float(np.ptp(x))
    expected = (1.0 + ssim_oracle(x[..., 1], y[..., 1], span)) / 2
    assert ssim(x, y) == pytest.approx(expected, abs=2e-5)
