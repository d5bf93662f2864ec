"""Patch origins, batched crops and sliding-window blending, against numpy.

Crops are compared with numpy slices of the volume padded by the fill value; origins are
checked by what they promise (foreground patches centred on a voxel of a chosen label,
uniform ones inside the volume, reproducible from the seed); the sliding window against a
direct numpy accumulation of the same tiles and weights, and by invariants (a model that
returns its input gives the input back).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf
from realdata import task

from volprep.locations import sample_locations
from volprep.patches import crop, importance, sample_starts, sliding_window, tile_starts


def _numpy_crop(volume: np.ndarray, start: np.ndarray, patch: tuple[int, int, int], fill: float) -> np.ndarray:
    margin = max(patch) + int(np.abs(start).max()) + 1
    padded = np.pad(volume, [(margin, margin)] * 3 + [(0, 0)] * (volume.ndim - 3), constant_values=fill)
    z, y, x = start + margin
    return padded[z:z + patch[0], y:y + patch[1], x:x + patch[2]]


@pytest.mark.parametrize("channels", [None, 2])
def test_crops_equal_numpy_slices_with_padding(channels: int | None) -> None:
    rng = np.random.default_rng(0)
    shape = (9, 11, 7) + ((channels,) if channels else ())
    volumes = rng.normal(size=(3, *shape)).astype(np.float32)
    patch = (5, 6, 8)  # the last axis is longer than the volume's
    starts = rng.integers(-6, 10, size=(3, 4, 3)).astype(np.int32)
    fill = np.array([[-1.5, -2.5], [0.5, 1.5], [3.0, 4.0]][:3], np.float32)
    fill = fill if channels else -7.0
    got = crop(tf.constant(volumes), tf.constant(starts), patch, tf.constant(fill)).numpy()
    assert got.shape == (12, *patch, *((channels,) if channels else ()))
    for i in range(3):
        for j in range(4):
            if channels:
                expected = np.stack([_numpy_crop(volumes[i][..., c], starts[i, j], patch, fill[i, c])
                                     for c in range(channels)], axis=-1)
            else:
                expected = _numpy_crop(volumes[i], starts[i, j], patch, fill)
            np.testing.assert_array_equal(got[i * 4 + j], expected)


def _mask(name: str) -> tuple[np.ndarray, tuple[int, ...]]:
    path = sorted((task(name) / "labelsTr").glob("*.nii.gz"))[0]
    mask = np.asarray(nib.load(path).dataobj).astype(np.int16)
    return mask, tuple(int(v) for v in np.unique(mask) if v)


def _tissue() -> tuple[np.ndarray, tuple[int, ...]]:
    return _mask("tissue")


def _locations(masks: list[np.ndarray], labels: tuple[int, ...]) -> tuple[tf.Tensor, tf.Tensor]:
    pairs = [sample_locations(m, labels, 600, 1, str(i)) for i, m in enumerate(masks)]
    return tf.constant(np.stack([p[0] for p in pairs])), tf.constant(np.stack([p[1] for p in pairs]))


def test_foreground_patches_are_centred_on_a_voxel_of_the_chosen_label() -> None:
    mask, labels = _tissue()
    empty = np.zeros_like(mask)
    coords, counts = _locations([mask, mask, empty], labels)
    patch = (16, 16, 16)
    starts = sample_starts(tf.constant([4, 2]), mask.shape, patch, 50, 1.0, coords, counts).numpy()
    centres = starts[:2] + 8
    assert (mask[tuple(centres.reshape(-1, 3).T)] > 0).all()  # every patch of a labelled volume
    # a volume with no foreground gets uniform patches, inside the volume
    assert (starts[2] >= 0).all() and (starts[2] + patch <= np.array(mask.shape)).all()
    again = sample_starts(tf.constant([4, 2]), mask.shape, patch, 50, 1.0, coords, counts).numpy()
    other = sample_starts(tf.constant([4, 3]), mask.shape, patch, 50, 1.0, coords, counts).numpy()
    np.testing.assert_array_equal(starts, again)
    assert not np.array_equal(starts, other)


def test_class_weights_pick_the_rare_label() -> None:
    mask, labels = _mask("atlas")  # hundreds of sparse labels
    sizes = np.array([np.count_nonzero(mask == v) for v in labels])
    rare = int(np.argmin(sizes))
    coords, counts = _locations([mask] * 4, labels)
    patch = (8, 8, 8)
    weights = np.zeros(len(labels), np.float32)
    weights[rare] = 1.0
    starts = sample_starts(tf.constant([1, 1]), mask.shape, patch, 64, 1.0, coords, counts, weights).numpy()
    assert (mask[tuple((starts + 4).reshape(-1, 3).T)] == labels[rare]).all()
    # uniform over labels: the smaller half of the labels is centred about half the time,
    # far more than its share of foreground voxels
    small = np.array(labels)[sizes <= np.median(sizes)]
    starts = sample_starts(tf.constant([1, 1]), mask.shape, patch, 500, 1.0, coords, counts).numpy()
    share = np.mean(np.isin(mask[tuple((starts + 4).reshape(-1, 3).T)], small))
    voxel_share = sizes[sizes <= np.median(sizes)].sum() / sizes.sum()
    assert abs(share - np.mean(sizes <= np.median(sizes))) < 0.06 and share > 2 * voxel_share


def test_the_foreground_fraction_is_honoured() -> None:
    mask, labels = _tissue()
    coords, counts = _locations([mask] * 8, labels)
    patch = (4, 4, 4)
    starts = sample_starts(tf.constant([9, 9]), mask.shape, patch, 250, 0.0, coords, counts).numpy()
    dims = np.array(mask.shape)
    assert (starts >= 0).all() and (starts + 4 <= dims).all()
    assert starts[..., 0].min() == 0 and starts[..., 0].max() == dims[0] - 4  # the whole range
    starts = sample_starts(tf.constant([9, 9]), mask.shape, patch, 250, 0.5, coords, counts).numpy()
    background_share = np.mean(mask[tuple((starts + 2).reshape(-1, 3).T)] == 0)
    uniform_background = np.mean(mask == 0)
    assert abs(background_share - 0.5 * uniform_background) < 0.05


def test_tile_starts_cover_the_axis() -> None:
    assert tile_starts(10, 10, 0.5) == [0]
    assert tile_starts(6, 10, 0.5) == [-2]
    starts = tile_starts(100, 32, 0.5)
    assert starts[0] == 0 and starts[-1] == 68
    assert all(b - a <= 16 for a, b in zip(starts, starts[1:], strict=False))
    with pytest.raises(ValueError):
        tile_starts(10, 4, 1.0)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_a_model_returning_its_input_gives_the_input_back(blend: str) -> None:
    image = np.random.default_rng(1).normal(size=(21, 13, 9, 2)).astype(np.float32)
    out = sliding_window(image, lambda tiles: tiles, (8, 8, 12), overlap=0.5, blend=blend, batch_size=3)
    np.testing.assert_allclose(out.numpy(), image, rtol=1e-5, atol=1e-5)


def test_blending_equals_a_numpy_accumulation() -> None:
    image = np.random.default_rng(2).normal(size=(20, 15, 11, 1)).astype(np.float32)
    patch = (8, 8, 8)

    def predict(tiles: tf.Tensor) -> tf.Tensor:  # depends on the position in the tile
        ramp = tf.reshape(tf.range(8, dtype=tf.float32), [1, 8, 1, 1, 1])
        return tf.concat([tiles * ramp, tiles ** 2], axis=-1)

    got = sliding_window(image, predict, patch, overlap=0.25, blend="gaussian", batch_size=4).numpy()
    weights = importance(patch)
    summed = np.zeros((*image.shape[:3], 2))
    norm = np.zeros(image.shape[:3])
    for z in tile_starts(20, 8, 0.25):
        for y in tile_starts(15, 8, 0.25):
            for x in tile_starts(11, 8, 0.25):
                tile = image[z:z + 8, y:y + 8, x:x + 8]
                pred = np.concatenate([tile * np.arange(8).reshape(8, 1, 1, 1), tile ** 2], axis=-1)
                summed[z:z + 8, y:y + 8, x:x + 8] += pred * weights[..., None]
                norm[z:z + 8, y:y + 8, x:x + 8] += weights
    np.testing.assert_allclose(got, summed / norm[..., None], rtol=1e-4, atol=1e-5)


def test_importance_is_a_centred_gaussian() -> None:
    w = importance((9, 9, 9))
    assert w.max() == 1.0 and w[4, 4, 4] == 1.0 and w.min() > 0
    np.testing.assert_allclose(w, w[::-1, ::-1, ::-1])
    assert w[0, 4, 4] < w[2, 4, 4] < w[3, 4, 4]
