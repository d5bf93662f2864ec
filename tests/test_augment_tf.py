"""Tests of the TensorFlow executor, held to the numpy executor."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from volprep.augment import numpy_ops, tf_ops
from volprep.augment.spec import Augment, Params, sample

SHAPE = (24, 20, 16)
CUBE = (16, 16, 16)
SPATIAL = Augment(flip_axes=[0, 1, 2], rotate_deg=[20, 15, 25], scale=[0.85, 1.15], shear=0.08,
                  shift_vox=3, p=0.9)
ALL = dataclasses.replace(SPATIAL, rot90_axes=(0, 2), fourier_shift_vox=1.5, intensity_scale=(0.8, 1.2),
                          intensity_shift=3.0, gamma=(0.7, 1.5), noise_std=0.0)


def smooth_volume(seed: int, shape: tuple[int, ...], channels: int = 2) -> np.ndarray:
    """A smooth random [D, H, W, C] float32 volume, channels on different scales."""
    noise = np.random.default_rng(seed).standard_normal((*shape, channels))
    vol = scipy.ndimage.gaussian_filter(noise, (2.5, 2.5, 2.5, 0))
    return (vol * np.arange(1, channels + 1) * 10 + np.arange(channels) * 100).astype(np.float32)


def label_volume(image: np.ndarray) -> np.ndarray:
    return (image[..., 0] > np.median(image[..., 0])).astype(np.uint8) * 3 + (image[..., 0] > 0)


def _batch(shape: tuple[int, int, int], n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    images = np.stack([smooth_volume(10 + i, shape) for i in range(n)])
    masks = np.stack([label_volume(im) for im in images]).astype(np.uint8)
    return images, masks


@pytest.mark.parametrize(("aug", "shape"), [(SPATIAL, SHAPE), (ALL, CUBE)])
def test_tf_executor_matches_numpy(aug: Augment, shape: tuple[int, int, int]) -> None:
    images, masks = _batch(shape)
    params = [sample(aug, (5, "case", i), shape) for i in range(len(images))]
    assert any("affine" in p.ops for p in params)
    out, lab = tf_ops.apply_params_batch(tf.constant(images), tf.constant(masks), params)
    assert out.dtype == tf.float32 and lab.dtype == tf.uint8
    inner = (slice(2, -2),) * 3
    for b, p in enumerate(params):
        ref, ref_lab = numpy_ops.apply(p, images[b], masks[b])
        span = float(np.ptp(ref))
        assert np.abs(out.numpy()[b] - ref)[inner].max() < 1e-3 * span
        assert (lab.numpy()[b] == ref_lab).mean() > 0.99  # nearest: only coordinate ties may differ


def test_tf_flips_and_quarter_turns_are_exact() -> None:
    images, masks = _batch(CUBE, 4)
    params = [Params(shape=CUBE, ops={"flip": {"axes": f}, "rot90": {"k": k, "axes": (1, 2)}})
              for f, k in [((), 1), ((0,), 2), ((1, 2), 3), ((0, 2), 0)]]
    out, lab = tf_ops.apply_params_batch(tf.constant(images), tf.constant(masks), params)
    for b, p in enumerate(params):
        ref, ref_lab = numpy_ops.apply(p, images[b], masks[b])
        assert np.array_equal(out.numpy()[b], ref) and np.array_equal(lab.numpy()[b], ref_lab)


def test_tf_integer_fourier_shift_equals_roll() -> None:
    images, masks = _batch(SHAPE, 2)
    params = [Params(shape=SHAPE, ops={"fourier_shift": {"shift": s}}) for s in ((2.0, -3.0, 1.0), (0.0, 4.0, -5.0))]
    out, lab = tf_ops.apply_params_batch(tf.constant(images), tf.constant(masks), params)
    for b, p in enumerate(params):
        steps = tuple(int(s) for s in p.ops["fourier_shift"]["shift"])
        expect = np.roll(images[b], steps, axis=(0, 1, 2))
        assert np.abs(out.numpy()[b] - expect).max() < 1e-4 * np.ptp(images[b])
        assert np.array_equal(lab.numpy()[b], np.roll(masks[b], steps, axis=(0, 1, 2)))


def test_augment_batch_labels_stay_in_their_set() -> None:
    images, masks = _batch(CUBE)
    out, lab = tf_ops.augment_batch(tf.constant(images), tf.constant(masks.astype(np.int16)), ALL,
                                    tf.constant([3, 4], tf.int64))
    assert lab.dtype == tf.int16 and out.shape == images.shape
    assert set(np.unique(lab.numpy())) <= set(np.unique(masks)) | {0}


def test_augment_batch_is_stateless() -> None:
    images, masks = _batch(SHAPE)
    aug = dataclasses.replace(SPATIAL, noise_std=0.1, intensity_shift=1.0)
    a = tf_ops.augment_batch(images, masks, aug, tf.constant([1, 7]))
    b = tf_ops.augment_batch(images, masks, aug, tf.constant([1, 7]))
    c = tf_ops.augment_batch(images, masks, aug, tf.constant([1, 8]))
    assert np.array_equal(a[0].numpy(), b[0].numpy()) and np.array_equal(a[1].numpy(), b[1].numpy())
    assert not np.array_equal(a[0].numpy(), c[0].numpy())
    assert not np.array_equal(a[0].numpy()[0], a[0].numpy()[1] - images[1] + images[0])  # per-example draws
    with pytest.raises(TypeError, match="seed"):
        tf_ops.augment_batch(images, masks, aug, None)


def test_tf_sampling_matches_the_numpy_distribution() -> None:
    """Same bounds, same gating; the means of many draws agree with numpy's."""
    aug = dataclasses.replace(ALL, p=0.5, noise_std=0.2)
    draws = tf_ops.sample_batch(aug, tf.constant([0, 1]), 4000, CUBE)
    assert set(draws) == {"flip", "rot90", "affine", "fourier_shift", "intensity", "gamma", "noise"}
    ref = [sample(aug, (0, "case", i), CUBE).ops for i in range(4000)]
    applied = ~np.all(np.isclose(draws["affine"]["matrix"].numpy(), np.eye(3)), axis=(1, 2))
    assert abs(applied.mean() - 0.5) < 0.05
    assert abs(np.mean(["affine" in p for p in ref]) - 0.5) < 0.05
    for op, key, identity in (("intensity", "scale", 1.0), ("intensity", "shift", 0.0), ("gamma", "gamma", 1.0),
                              ("noise", "std", 0.0)):
        got = draws[op][key].numpy()
        want = np.array([p[op][key] if op in p else identity for p in ref])
        assert got.min() >= want.min() - 0.02 and got.max() <= want.max() + 0.02, key
        assert abs(got.mean() - want.mean()) < 0.05 * (want.max() - want.min()), key
    dets = np.linalg.det(draws["affine"]["matrix"].numpy()[applied])
    want = np.linalg.det(np.array([p["affine"]["matrix"] for p in ref if "affine" in p]))
    assert abs(dets.mean() - want.mean()) < 0.02
    k = draws["rot90"]["k"].numpy()
    assert set(np.unique(k)) == {0, 1, 2, 3}
    assert abs(np.mean([p.get("rot90", {"k": 0})["k"] for p in ref]) - k.mean()) < 0.1
    flips = draws["flip"]["flip"].numpy()
    assert abs(flips[:, 0].mean() - 0.5) < 0.05 and abs(np.mean([0 in p.get("flip", {"axes": ()})["axes"] for p in ref]) - 0.5) < 0.05
    assert np.abs(draws["fourier_shift"]["shift"].numpy()).max() <= 1.5


def test_each_op_has_its_own_tf_stream() -> None:
    """An op's TF draws depend on the step seed and its name only, not on the other ops."""
    seed = tf.constant([4, 9], tf.int64)
    together = tf_ops.sample_batch(ALL, seed, 5, CUBE)
    for name, drawn in together.items():
        op = next(op for op in ALL.OPS if name == op.NAME)
        alone = Augment(**{k.name: getattr(ALL, k.name) for k in op.KEYS})
        again = tf_ops.sample_batch(alone, seed, 5, CUBE)
        assert set(again) == {name}
        for key, value in drawn.items():
            if isinstance(value, tf.Tensor):
                np.testing.assert_array_equal(again[name][key].numpy(), value.numpy(), err_msg=f"{name}.{key}")
    other = tf_ops.sample_batch(ALL, tf.constant([4, 10], tf.int64), 5, CUBE)
    assert not np.array_equal(other["affine"]["matrix"].numpy(), together["affine"]["matrix"].numpy())
    a, b = (tf_ops.op_seed(seed, n).numpy() for n in ("gamma", "noise"))
    assert not np.array_equal(a, b)


def test_augment_batch_runs_inside_tf_data() -> None:
    images, masks = _batch(CUBE, 4)
    ds = tf.data.Dataset.from_tensor_slices((images, masks)).batch(2).enumerate()
    ds = ds.map(lambda step, b: tf_ops.augment_batch(b[0], b[1], ALL, tf.stack([tf.constant(0, tf.int64), step])))
    batches = list(ds)
    assert len(batches) == 2 and batches[0][0].shape == (2, *CUBE, 2)
    eager = tf_ops.augment_batch(images[:2], masks[:2], ALL, tf.constant([0, 0], tf.int64))
    np.testing.assert_allclose(batches[0][0].numpy(), eager[0].numpy(), atol=1e-4)
