"""Tests of the numpy executor (offline augmentation)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from volprep.augment import numpy_kernels, numpy_ops
from volprep.augment.spec import Augment, Params, affine_matrix, pull_passes, sample

SHAPE = (24, 20, 16)


def smooth_volume(seed: int, shape: tuple[int, ...] = SHAPE, channels: int = 2) -> np.ndarray:
    """A smooth random [D, H, W, C] float32 volume, channels on different scales."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((*shape, channels))
    vol = scipy.ndimage.gaussian_filter(noise, (2.5, 2.5, 2.5, 0))
    return (vol * np.arange(1, channels + 1) * 10 + np.arange(channels) * 100).astype(np.float32)


def label_volume(image: np.ndarray) -> np.ndarray:
    return (image[..., 0] > np.median(image[..., 0])).astype(np.int16) * 3 + (image[..., 0] > 0)


FULL = Augment(flip_axes=[0, 1, 2], rotate_deg=15, scale=[0.9, 1.1], shear=0.05, shift_vox=2,
               fourier_shift_vox=0.8, intensity_scale=[0.8, 1.2], intensity_shift=5.0, gamma=[0.7, 1.4],
               noise_std=0.5)


def test_replay_from_json_reproduces_the_same_bytes() -> None:
    image = smooth_volume(0)
    mask = label_volume(image)
    params = sample(FULL, (3, "case", 1), SHAPE)
    out1, lab1 = numpy_ops.apply(params, image, mask)
    out2, lab2 = numpy_ops.apply(Params.from_json(params.to_json()), image.copy(), mask.copy())
    assert out1.dtype == np.float32 and out1.shape == image.shape
    assert out1.tobytes() == out2.tobytes() and lab1.tobytes() == lab2.tobytes()
    assert not np.allclose(out1, image)


def test_flips_and_quarter_turns_are_exact() -> None:
    image = smooth_volume(1, (16, 16, 12))
    mask = label_volume(image)
    params = Params(shape=(16, 16, 12), ops={"flip": {"axes": [0, 2]}, "rot90": {"k": 3, "axes": [0, 1]}})
    out, lab = numpy_ops.apply(params, image, mask)
    expect = np.rot90(image[::-1, :, ::-1], 3, axes=(0, 1))
    assert np.array_equal(out, expect)
    assert np.array_equal(lab, np.rot90(mask[::-1, :, ::-1], 3, axes=(0, 1)))


def test_identity_params_change_nothing() -> None:
    image = smooth_volume(2)
    out, _ = numpy_ops.apply(Params(shape=SHAPE), image)
    assert out.tobytes() == image.tobytes()


def test_integer_fourier_shift_equals_roll() -> None:
    image = smooth_volume(4)
    mask = label_volume(image)
    params = Params(shape=SHAPE, ops={"fourier_shift": {"shift": [3.0, -2.0, 5.0]}})
    out, lab = numpy_ops.apply(params, image, mask)
    expect = np.roll(image, (3, -2, 5), axis=(0, 1, 2))
    assert np.abs(out - expect).max() < 1e-4 * np.ptp(image)
    assert np.array_equal(lab, np.roll(mask, (3, -2, 5), axis=(0, 1, 2)))


def test_fractional_fourier_shift_of_a_band_limited_signal_is_exact() -> None:
    d, h, w = SHAPE
    i, j, k = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    s = (0.3, -1.7, 0.45)

    def wave(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        return np.cos(2 * np.pi * (2 * a / d + b / h)) + np.sin(2 * np.pi * 3 * c / w)

    out = numpy_kernels.fourier_shift(wave(i, j, k)[..., None].astype(np.float32), s)
    np.testing.assert_allclose(out[..., 0], wave(i - s[0], j - s[1], k - s[2]), atol=1e-4)


def test_integer_translation_is_an_exact_shift() -> None:
    image = smooth_volume(5)
    params = Params(shape=SHAPE, ops={"affine": {"matrix": np.eye(3).tolist(), "translation": [2.0, -1.0, 0.0]}})
    out, _ = numpy_ops.apply(params, image)
    np.testing.assert_array_equal(out[2:, :-1], image[:-2, 1:])
    np.testing.assert_array_equal(out[:2], np.broadcast_to(image.min(axis=(0, 1, 2)), out[:2].shape))


def test_three_passes_are_exact_on_a_linear_ramp_and_close_to_trilinear() -> None:
    i, j, k = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in SHAPE), indexing="ij")
    ramp = (0.5 * i - 0.3 * j + 0.2 * k)[..., None].astype(np.float32)
    matrix = affine_matrix(np.radians([12, -8, 10]), [0.03, 0, -0.02, 0.01, 0, 0.02], 1.05)
    translation = np.array([1.3, -0.6, 0.4])
    out = numpy_ops.warp_image(ramp, _rows(matrix, translation))
    ref = numpy_ops.reference_affine(ramp, matrix, translation)
    inner = (slice(5, -5),) * 3
    np.testing.assert_allclose(out[inner], ref[inner], atol=1e-4)
    smooth = smooth_volume(6)
    out = numpy_ops.warp_image(smooth, _rows(matrix, translation))
    ref = numpy_ops.reference_affine(smooth, matrix, translation)
    assert np.abs(out - ref)[inner].max() < 0.02 * np.ptp(smooth)


def _rows(matrix: np.ndarray, translation: np.ndarray) -> np.ndarray:
    return pull_passes(matrix, translation, SHAPE)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16])
def test_labels_keep_dtype_and_label_set(dtype: type) -> None:
    image = smooth_volume(7)
    mask = label_volume(image).astype(dtype)
    for i in range(5):
        params = sample(FULL, (i, "case", 1), SHAPE)
        _, lab = numpy_ops.apply(params, image, mask)
        assert lab.dtype == dtype and lab.shape == mask.shape
        assert set(np.unique(lab)) <= set(np.unique(mask)) | {0}
        assert len(np.unique(lab)) >= 2


def test_gamma_keeps_min_and_max() -> None:
    image = smooth_volume(8)
    out = numpy_kernels.gamma_curve(image, 1.7)
    np.testing.assert_allclose(out.min(axis=(0, 1, 2)), image.min(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(out.max(axis=(0, 1, 2)), image.max(axis=(0, 1, 2)), rtol=1e-6)
    assert not np.allclose(out, image)
    flat = np.full((4, 4, 4, 1), 3.0, np.float32)
    assert np.array_equal(numpy_kernels.gamma_curve(flat, 2.0), flat)


def test_noise_follows_noise_seed() -> None:
    image = smooth_volume(9)
    a, _ = numpy_ops.apply(Params(shape=SHAPE, ops={"noise": {"std": 1.0, "seed": 11}}), image)
    b, _ = numpy_ops.apply(Params(shape=SHAPE, ops={"noise": {"std": 1.0, "seed": 12}}), image)
    assert 0.9 < float(np.std(a - image)) < 1.1
    assert not np.array_equal(a, b)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="does not match"):
        numpy_ops.apply(Params(shape=(8, 8, 8)), smooth_volume(0))
