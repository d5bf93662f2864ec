"""The TensorFlow wavelet decoder against pywt and the numpy decoder (imports TF)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import pywt
import tensorflow as tf

from volprep.preprocess import wavelet
from volprep.preprocess.wavelet_tf import decode_batch, waverec3


def _coeffs(volume: np.ndarray, name: str, level: int) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return pywt.wavedecn(volume, name, mode="periodization", level=level)


def _waverecn(coeffs: list, name: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return pywt.waverecn(coeffs, name, mode="periodization")


@pytest.mark.parametrize("name", ["haar", "db2", "sym4"])
@pytest.mark.parametrize("level", [1, 2, 3])
def test_tf_inverse_matches_pywt(name: str, level: int) -> None:
    rng = np.random.default_rng([17, level])
    # batch of 2 volumes x 2 channels = 4 independent rows, anisotropic shape
    volumes = rng.normal(size=(4, 16, 16, 24)).astype(np.float32)
    coeffs = [_coeffs(v, name, level) for v in volumes]
    approx = tf.constant(np.stack([c[0] for c in coeffs]))
    details = [{key: tf.constant(np.stack([c[i][key] for c in coeffs])) for key in coeffs[0][i]}
               for i in range(1, level + 1)]
    got = waverec3(approx, details, name).numpy()
    want = np.stack([_waverecn(c, name) for c in coeffs])
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    np.testing.assert_allclose(got, volumes, atol=1e-4 * np.abs(volumes).max())


@pytest.mark.parametrize("name,level,keep", [("haar", 1, 0.02), ("db2", 2, 0.05), ("sym4", 3, 0.2), ("db2", 3, 1.0)])
def test_decode_batch_equals_numpy_decode(name: str, level: int, keep: float) -> None:
    rng = np.random.default_rng([18, level])
    shape = (16, 8, 16, 2)
    volumes = [rng.normal(size=shape).astype(np.float32) for _ in range(2)]
    spec = wavelet.layout(shape, name, level, keep)
    blobs = [wavelet.encode(v, name, level, keep) for v in volumes]
    want = np.stack([wavelet.decode(b, spec) for b in blobs])
    got = decode_batch(tf.constant(blobs), spec).numpy()
    assert got.shape == (2, *shape)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_decode_batch_in_tf_function_and_int8() -> None:
    shape = (8, 8, 8, 1)
    spec = wavelet.layout(shape, "db2", 1, 0.5, values="int8")
    volume = np.random.default_rng(19).normal(size=shape).astype(np.float32)
    blob = wavelet.encode(volume, "db2", 1, 0.5, values="int8")
    fn = tf.function(lambda data: decode_batch(data, spec))
    got = fn(tf.constant([blob, blob, blob])).numpy()
    np.testing.assert_allclose(got[2], wavelet.decode(blob, spec), atol=1e-5)
