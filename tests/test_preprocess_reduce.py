"""Tests of reorientation, downsampling, resampling and prepare_case's geometry."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from volprep.config import PreprocessConfig
from volprep.preprocess import prepare_case, reduced_shape, shape_multiple
from volprep.preprocess.downsample import block_majority, block_mean, block_mean_reference
from volprep.preprocess.orient import reorient
from volprep.preprocess.resample import resample_grid, resample_labels


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([7, *keys])


@pytest.mark.parametrize("shape", [(8, 8, 8, 1), (9, 7, 5, 2), (17, 16, 11, 1)])
@pytest.mark.parametrize("factors", [(2, 2, 2), (3, 2, 1), (2, 3, 4)])
@pytest.mark.parametrize("order", ["C", "F"])
def test_block_mean_equals_reshape_mean(shape: tuple[int, ...], factors: tuple[int, int, int], order: str) -> None:
    volume = np.asarray(_rng(1).integers(-500, 3000, shape).astype(np.int16), order=order)
    fast = block_mean(volume, factors)
    assert fast.dtype == np.float32 and fast.flags.c_contiguous
    np.testing.assert_allclose(fast, block_mean_reference(volume, factors), rtol=1e-6, atol=1e-3)
    assert fast.shape[:3] == tuple(n // f for n, f in zip(shape[:3], factors, strict=True))


def test_block_majority_prefers_labels_on_ties_and_keeps_values() -> None:
    labels = np.zeros((4, 2, 2), dtype=np.uint8)
    labels[0, :, :] = 3          # block 0: four 3s, four 0s -> tie -> 3
    labels[2:, :, :] = 5         # block 1: all 5
    labels[2, 0, 0] = 7
    out = block_majority(labels, (2, 2, 2))
    assert out.tolist() == [[[3]], [[5]]]
    big = _rng(2).integers(0, 4, (9, 10, 11)).astype(np.uint8)
    assert set(np.unique(block_majority(big, (2, 2, 2)))) <= set(np.unique(big))


def test_reorient_las_matches_as_closest_canonical() -> None:
    data = _rng(3).normal(size=(6, 7, 8)).astype(np.float32)
    affine = np.diag([-2.0, 1.5, 3.0, 1.0])
    affine[:3, 3] = [10, -20, 5]
    img = nib.Nifti1Image(data, affine)
    canon = nib.as_closest_canonical(img)
    view, new_affine = reorient(data, affine, "RAS")
    np.testing.assert_array_equal(view, canon.get_fdata(dtype=np.float32))
    np.testing.assert_allclose(new_affine, canon.affine)


def test_reorient_permuted_axes_keeps_world_positions() -> None:
    data = _rng(4).normal(size=(5, 6, 7))
    affine = np.array([[0, 0, -2.0, 3], [1.0, 0, 0, 4], [0, -1.5, 0, 5], [0, 0, 0, 1]])
    view, new_affine = reorient(data, affine, "RAS")
    assert nib.aff2axcodes(new_affine) == ("R", "A", "S")
    # The voxel holding a given value sits at the same world point before and after.
    src = np.unravel_index(17, data.shape)
    dst = np.argwhere(view == data[src])[0]
    np.testing.assert_allclose(affine @ [*src, 1], new_affine @ [*dst, 1])


@pytest.mark.parametrize("interp", ["linear", "cubic"])
def test_resample_preserves_extent_and_centre(interp: str) -> None:
    shape = (20, 17, 12)
    affine = np.diag([0.9, 1.1, 2.5, 1.0])
    affine[:3, 3] = [-7, 3, 11]
    image = _rng(5).normal(size=(*shape, 1)).astype(np.float32)
    cfg = PreprocessConfig(reduce="resample", spacing=(2.0, 2.0, 2.0), interpolation=interp, normalize="none")
    out = prepare_case(image, affine, None, cfg, None, fidelity_figures=False)
    old_centre = affine @ [*((np.asarray(shape) - 1) / 2), 1]
    new_centre = out.affine @ [*((np.asarray(out.image.shape[:3]) - 1) / 2), 1]
    np.testing.assert_allclose(new_centre, old_centre, atol=1e-9)
    np.testing.assert_allclose(out.meta["spacing"], [2.0, 2.0, 2.0])
    old_extent = np.asarray(shape) * [0.9, 1.1, 2.5]
    new_extent = np.asarray(out.image.shape[:3]) * 2.0
    assert np.all(np.abs(new_extent - old_extent) <= 2.0)
    assert tuple(out.image.shape[:3]) == reduced_shape(shape, affine, cfg)


def test_resample_to_target_shape_exact_extent() -> None:
    out_shape, zoom, offset = resample_grid((30, 20, 10), np.eye(4), None, (12, 8, 4))
    assert out_shape == (12, 8, 4)
    np.testing.assert_allclose(zoom * out_shape, [30, 20, 10])
    np.testing.assert_allclose(offset + zoom * (np.asarray(out_shape) - 1) / 2, (np.asarray([30, 20, 10]) - 1) / 2)


def test_resample_labels_are_nearest() -> None:
    labels = _rng(6).integers(0, 5, (13, 9, 7)).astype(np.uint8)
    out = resample_labels(labels, (5, 4, 3), np.asarray([2.6, 2.25, 7 / 3]), np.zeros(3))
    assert set(np.unique(out)) <= set(np.unique(labels))
    assert out[0, 0, 0] == labels[0, 0, 0]


def _case(shape: tuple[int, int, int] = (20, 18, 16)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = _rng(8)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    body = (grid**2).sum(axis=0) < 0.5
    image = np.where(body, 800.0, 0.0) + rng.normal(0, 5, shape)
    labels = np.where(body, 1, 0) + ((grid[0] > 0.3) & body) * 2 + ((grid[1] > 0.5) & body) * 4
    affine = np.diag([-1.0, 1.2, 0.8, 1.0])
    return np.asfortranarray(image.astype(np.int16)[..., None]), np.asfortranarray(labels.astype(np.uint8)), affine


REDUCTIONS = [
    {"reduce": "none"},
    {"reduce": "downsample", "factor": 2},
    {"reduce": "downsample", "factor": [3, 2, 1]},
    {"reduce": "resample", "spacing": [1.7, 2.1, 1.3]},
    {"reduce": "resample", "target_shape": [9, 7, 6], "interpolation": "cubic"},
    {"reduce": "wavelet", "mode": "approx", "wavelet": "db2", "level": 1},
    {"reduce": "wavelet", "mode": "approx", "wavelet": "haar", "level": 2},
    {"reduce": "wavelet", "mode": "compress", "wavelet": "db2", "level": 2, "keep": 0.1},
]


@pytest.mark.parametrize("kwargs", REDUCTIONS, ids=lambda k: "-".join(str(v) for v in k.values()))
def test_every_reduction_keeps_label_values_and_contract(kwargs: dict) -> None:
    image, labels, affine = _case()
    cfg = PreprocessConfig(**kwargs)
    out = prepare_case(image, affine, labels, cfg, None)
    assert set(np.unique(out.mask)) <= set(np.unique(labels))
    assert out.mask.dtype == np.uint8 and out.mask.shape == out.image.shape[:3]
    assert out.image.dtype == np.float32 and out.image.flags.c_contiguous and out.mask.flags.c_contiguous
    assert out.meta["shape_before"] == [20, 18, 16]
    assert all(n % shape_multiple(cfg) == 0 for n in out.image.shape[:3])
    if cfg.reduce != "wavelet" or cfg.mode != "compress":
        assert list(reduced_shape(image.shape, affine, cfg)) == out.meta["reduced_shape"]
    if cfg.reduce == "none":
        assert out.meta["fidelity"] is None
    else:
        fid = out.meta["fidelity"]
        assert fid["ratio"] > 1 and fid["psnr"] > 10 and -1 <= fid["ssim"] <= 1


def test_label_dtype_int16_when_large() -> None:
    image, labels, affine = _case()
    big = labels.astype(np.int32) * 100
    out = prepare_case(image, affine, big, PreprocessConfig(reduce="downsample"), None)
    assert out.mask.dtype == np.int16 and set(np.unique(out.mask)) <= set(np.unique(big))


def test_crop_pad_is_centred_and_recorded() -> None:
    image, labels, affine = _case((10, 12, 9))
    cfg = PreprocessConfig(reduce="none")
    out = prepare_case(image, affine, labels, cfg, (14, 8, 9), fidelity_figures=False)
    assert out.image.shape == (14, 8, 9, 1)
    assert out.meta["pad_crop"] == {"crop": [[0, 10], [2, 10], [0, 9]], "pad": [[2, 2], [0, 0], [0, 0]]}
    canon, canon_affine = reorient(image, affine, "RAS")
    np.testing.assert_array_equal(out.image[2:12, :, :, 0], canon[:, 2:10, :, 0])
    assert np.all(out.image[:2] == canon.min()) and np.all(out.mask[:2] == 0)
    # voxel (2, 0, 0) of the output is voxel (0, 2, 0) of the reoriented input
    np.testing.assert_allclose(out.affine @ [2, 0, 0, 1], canon_affine @ [0, 2, 0, 1])


def test_crop_foreground_records_box() -> None:
    image = np.zeros((16, 16, 16, 1), dtype=np.float32)
    image[4:9, 5:12, 3:7] = 100
    out = prepare_case(image, np.eye(4), None, PreprocessConfig(reduce="none", crop_foreground=True), None)
    assert out.meta["crop_box"] == [[4, 9], [5, 12], [3, 7]]
    assert out.image.shape == (5, 7, 4, 1) and np.all(out.image == 100)
    np.testing.assert_allclose(out.affine[:3, 3], [4, 5, 3])


def test_downsample_affine_centres_blocks() -> None:
    image = np.arange(4 * 4 * 4, dtype=np.float32).reshape(4, 4, 4, 1)
    out = prepare_case(image, np.eye(4), None, PreprocessConfig(reduce="downsample"), None)
    np.testing.assert_allclose(out.affine[:3, 3], [0.5, 0.5, 0.5])
    np.testing.assert_allclose(np.diag(out.affine)[:3], [2, 2, 2])
    assert out.image[0, 0, 0, 0] == pytest.approx(image[:2, :2, :2].mean())


def test_stats_recorded_per_channel() -> None:
    image, labels, affine = _case()
    two = np.concatenate([image, image * 2], axis=3)
    out = prepare_case(two, affine, labels, PreprocessConfig(reduce="downsample"), (12, 12, 12))
    stats = out.meta["stats"]
    assert len(stats) == 2
    assert stats[1]["fg_mean"] == pytest.approx(2 * stats[0]["fg_mean"], rel=1e-5)
    assert 0 < stats[0]["fg_fraction"] < 1
    assert stats[0]["p_low"] <= stats[0]["fg_mean"] <= stats[0]["p_high"]


def test_bad_mask_grid_is_label_error() -> None:
    from volprep.errors import LabelError

    image, labels, affine = _case()
    with pytest.raises(LabelError):
        prepare_case(image, affine, labels[:-1], PreprocessConfig(), None, source="case1")
