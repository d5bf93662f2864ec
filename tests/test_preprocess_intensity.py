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


def test_fidelity_metrics() -> None:
    ref = _two_tissue(5)
    assert psnr(ref, ref) == float("inf") and ssim(ref, ref) == pytest.approx(1)
    noisy = ref + np.random.default_rng(12).normal(0, 1, ref.shape).astype(np.float32)
    span = float(ref.max() - ref.min())
    assert psnr(ref, noisy) == pytest.approx(20 * np.log10(span / 1.0), abs=0.3)
    assert ssim(ref, noisy) < 1
