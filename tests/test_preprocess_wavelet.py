"""Tests of the wavelet reductions: approx band, compress/decode, and the TF decoder."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import pywt

from volprep.config import PreprocessConfig
from volprep.preprocess import prepare_case, wavelet

WAVELETS = ["haar", "db2", "sym4"]
LEVELS = [1, 2, 3]


def _volume(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng([13, seed])
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape[:3]], indexing="ij"))
    smooth = 100 * np.exp(-(grid**2).sum(axis=0) * 2)[..., None]
    return (smooth + rng.normal(0, 3, shape)).astype(np.float32)


def _pywt(*args: object, **kwargs: object) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return args[0](*args[1:], **kwargs)  # type: ignore[operator]


@pytest.mark.parametrize("name", WAVELETS)
@pytest.mark.parametrize("level", LEVELS)
def test_approx_equals_pywt_band_scaled(name: str, level: int) -> None:
    volume = _volume((16, 16, 24, 2), level)
    band = wavelet.approximation(volume, name, level)
    for c in range(2):
        ref = _pywt(pywt.wavedecn, volume[..., c].astype(np.float64), name, mode="periodization", level=level)[0]
        np.testing.assert_allclose(band[..., c], ref / np.sqrt(2) ** (3 * level), rtol=1e-5, atol=1e-4)


def test_approx_keeps_intensity_units() -> None:
    flat = np.full((8, 8, 8, 1), 42.0, np.float32)
    np.testing.assert_allclose(wavelet.approximation(flat, "db2", 2), 42.0, rtol=1e-6)


@pytest.mark.parametrize("name", WAVELETS)
@pytest.mark.parametrize("level", LEVELS)
def test_encode_decode_roundtrip_and_fixed_length(name: str, level: int) -> None:
    shape = (16, 16, 16, 2)
    spec = wavelet.layout(shape, name, level, 1.0)
    volume = _volume(shape, 20 + level)
    blob = wavelet.encode(volume, name, level, 1.0)
    assert len(blob) == spec["nbytes"]
    np.testing.assert_allclose(wavelet.decode(blob, spec), volume, atol=1e-3 * np.abs(volume).max())
    lossy = [wavelet.encode(_volume(shape, s), name, level, 0.05) for s in (1, 2)]
    assert len(lossy[0]) == len(lossy[1]) == wavelet.layout(shape, name, level, 0.05)["nbytes"]


@pytest.mark.parametrize("keep", [0.02, 0.2])  # uint32 indices / bitmap
def test_compress_keeps_largest_coefficients(keep: float) -> None:
    shape = (16, 16, 16, 1)
    volume = _volume(shape, 30)
    spec = wavelet.layout(shape, "db2", 2, keep)
    assert spec["index_coding"] == ("uint32" if keep < 1 / 32 else "bitmap")
    blob = wavelet.encode(volume, "db2", 2, keep)
    coeffs = _pywt(pywt.wavedecn, volume[..., 0], "db2", mode="periodization", level=2)
    detail = np.concatenate([coeffs[1 + 2 - b["level"]][b["key"]].ravel() for b in spec["bands"]])
    kept = wavelet.kept_indices(blob, spec)[0]
    threshold = np.sort(np.abs(detail))[-spec["k"]]
    assert len(kept) == spec["k"] and np.all(np.abs(detail[kept]) >= threshold - 1e-6)
    decoded = wavelet.decode(blob, spec)
    err = np.sqrt(np.mean((decoded - volume) ** 2))
    dropped = np.sqrt(np.sum(np.sort(detail**2)[: -spec["k"]]) / volume.size)  # Parseval
    assert err == pytest.approx(dropped, rel=0.05)


def test_compress_needs_multiples() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        wavelet.layout((16, 10, 16, 1), "db2", 2, 0.1)
    cfg = PreprocessConfig(reduce="wavelet", mode="compress", level=2)
    with pytest.raises(ValueError, match="multiple"):
        prepare_case(np.zeros((16, 16, 16, 1)), np.eye(4), None, cfg, (16, 14, 16))
    # the cache keeps the full grid (no padding): the record's window, a multiple of 4, is
    # cut when shards are written, so every reduction of a case lands on the same grid
    out = prepare_case(_volume((15, 13, 16, 1), 3), np.eye(4), None, cfg, None)
    assert out.image.shape == (15, 13, 16, 1) and out.meta["fidelity"]["psnr"] > 20
