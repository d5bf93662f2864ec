"""Tests of reorientation, downsampling, resampling and prepare_case's geometry."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from test_preprocess_intensity import ssim_oracle  # tests/ is on sys.path (like io_corpus)

from volprep.config import PreprocessConfig
from volprep.preprocess import prepare_case, reduced_shape, window_case
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


# _case() is (20, 18, 16) voxels of 1 x 1.2 x 0.8 mm once reoriented (RAS flips axis 0
# only), 5760 voxels. Per reduction, by hand: the spatial shape it produces and the
# storage ratio (float16 of the unreduced volume over the bytes stored: for everything but
# "compress", float16 of the reduced volume, i.e. 5760 over its voxel count).
EXPECTED_SHAPE_AND_RATIO = {
    "none": ((20, 18, 16), None),
    "downsample-2": ((10, 9, 8), 5760 / 720),                    # n // 2
    "downsample-[3, 2, 1]": ((6, 9, 16), 5760 / 864),            # 20 // 3 = 6
    # round(extent / spacing): 20 mm / 1.7 = 11.8, 21.6 / 2.1 = 10.3, 12.8 / 1.3 = 9.8
    "resample-[1.7, 2.1, 1.3]": ((12, 10, 10), 5760 / 1200),
    "resample-[9, 7, 6]-cubic": ((9, 7, 6), 5760 / 378),
    "wavelet-approx-db2-1": ((10, 9, 8), 5760 / 720),            # every axis even: / 2
    "wavelet-approx-haar-2": ((5, 5, 4), 5760 / 100),            # edge-padded to (20, 20, 16), / 4
    # full resolution; stored (the module docstring's format), padded to (20, 20, 16):
    # approx band (5, 5, 4) float32 = 400 B, K = ceil(0.1 * 6300 details) = 630 int16 =
    # 1260 B, a 6300-bit bitmap = 788 B, 14 band scales float32 = 56 B: 2504 B for
    # float16 of the padded 6400 voxels = 12800 B.
    "wavelet-compress-db2-2-0.1": ((20, 18, 16), 12800 / 2504),
}


@pytest.mark.parametrize("kwargs", REDUCTIONS, ids=lambda k: "-".join(str(v) for v in k.values()))
def test_every_reduction_keeps_label_values_and_contract(kwargs: dict, request: pytest.FixtureRequest) -> None:
    image, labels, affine = _case()
    cfg = PreprocessConfig(**kwargs)
    out = prepare_case(image, affine, labels, cfg, None)
    shape, ratio = EXPECTED_SHAPE_AND_RATIO[request.node.callspec.id]
    assert out.image.shape == (*shape, 1) and out.meta["reduced_shape"] == list(shape)
    assert out.mask is not None and out.mask.shape == shape
    # Labels are chosen, never interpolated: only values the input holds.
    assert set(np.unique(out.mask).tolist()) <= set(np.unique(labels).tolist())
    assert 0 in np.unique(out.mask) and 1 in np.unique(out.mask)  # background and body survive
    assert out.mask.dtype == np.uint8 and out.image.dtype == np.float32
    assert out.image.flags.c_contiguous and out.mask.flags.c_contiguous
    assert out.meta["shape_before"] == [20, 18, 16]
    if ratio is None:
        assert out.meta["fidelity"] is None
        return
    fid = out.meta["fidelity"]
    assert fid["ratio"] == pytest.approx(ratio, rel=1e-9)
    assert math.isfinite(fid["psnr"]) and math.isfinite(fid["ssim"])


# A smooth phantom for what a reduction loses: a Gaussian blob (peak A, sigma in voxels),
# nearly 0 at the faces (exp(-11.5**2 / 32) = 1.6% of A), on a 1 x 1.2 x 0.8 mm RAS grid.
SMOOTH_SHAPE, SIGMA, PEAK = (24, 24, 24), 4.0, 1000.0
SMOOTH_AFFINE = np.diag([1.0, 1.2, 0.8, 1.0])


def _blob() -> np.ndarray:
    axes = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in SMOOTH_SHAPE], indexing="ij")
    return PEAK * np.exp(-sum(a**2 for a in axes) / (2 * SIGMA**2))


def _block_mean(volume: np.ndarray, f: tuple[int, int, int]) -> np.ndarray:
    s = volume.shape
    return volume.reshape(s[0] // f[0], f[0], s[1] // f[1], f[1], s[2] // f[2], f[2]).mean(axis=(1, 3, 5))


def _upsample(small: np.ndarray, f: tuple[int, int, int], shape: tuple[int, ...]) -> np.ndarray:
    """Linear interpolation back: fine voxel x sits at coarse coordinate (x - (f-1)/2) / f."""
    coords = np.meshgrid(*[(np.arange(n) - (fa - 1) / 2) / fa for n, fa in zip(shape, f, strict=True)],
                         indexing="ij")
    return ndimage.map_coordinates(small, coords, order=1, mode="nearest")


def _psnr(reference: np.ndarray, test: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(reference, np.float64) - test) ** 2))
    return float(10 * np.log10(np.ptp(reference) ** 2 / mse))


# Block means, so their fidelity has an independent route: numpy block mean, linear
# interpolation back with scipy, PSNR by the formula, SSIM by the test's numpy SSIM.
BLOCK_MEANS = [
    ({"reduce": "downsample", "factor": 2}, (2, 2, 2)),
    ({"reduce": "downsample", "factor": [3, 2, 1]}, (3, 2, 1)),
    ({"reduce": "wavelet", "mode": "approx", "wavelet": "haar", "level": 2}, (4, 4, 4)),  # haar = 4^3 mean
]


@pytest.mark.parametrize(("kwargs", "factors"), BLOCK_MEANS, ids=["down-2", "down-321", "haar-2"])
def test_block_mean_fidelity_matches_an_independent_route(kwargs: dict, factors: tuple[int, int, int]) -> None:
    blob = _blob()
    out = prepare_case(blob[..., None].astype(np.float32), SMOOTH_AFFINE, None, PreprocessConfig(**kwargs), None)
    small = _block_mean(blob, factors)
    np.testing.assert_allclose(out.image[..., 0], small, atol=1e-3 * PEAK / 1000)
    back = _upsample(small, factors, SMOOTH_SHAPE)
    fid = out.meta["fidelity"]
    assert fid["psnr"] == pytest.approx(_psnr(blob, back), abs=1e-3)
    # the central 64^3 block is the whole 24^3 volume here
    assert fid["ssim"] == pytest.approx(ssim_oracle(blob, back, float(np.ptp(blob))), abs=1e-5)


def _floor_db(steps: np.ndarray) -> float:
    """A PSNR no reduction at these steps (input voxels a coarse voxel, per axis) may fall below.

    The error budget of a block mean followed by linear interpolation back, on a function
    whose second derivative along any axis is at most M = PEAK / SIGMA**2 (the Gaussian's
    largest curvature, at its centre): the low-pass moves a value by at most
    (h**2 - 1) / 24 * M per axis, linear interpolation errs by at most h**2 / 8 * M per axis;
    summed over axes, < sum(h**2) / 6 * M. RMS error <= max error, so PSNR >= 20 log10
    (range / that). A coarser step gives a lower floor.
    """
    max_error = float(np.sum(np.asarray(steps) ** 2)) / 6 * PEAK / SIGMA**2
    return float(20 * np.log10(np.ptp(_blob()) / max_error))


SMOOTH_REDUCTIONS = [
    {"reduce": "downsample", "factor": 2},
    {"reduce": "downsample", "factor": [3, 2, 1]},
    {"reduce": "resample", "spacing": [1.7, 2.1, 1.3]},
    {"reduce": "resample", "target_shape": [9, 7, 6], "interpolation": "cubic"},
    {"reduce": "wavelet", "mode": "approx", "wavelet": "db2", "level": 1},
    {"reduce": "wavelet", "mode": "approx", "wavelet": "haar", "level": 2},
]


@pytest.mark.parametrize("kwargs", SMOOTH_REDUCTIONS, ids=lambda k: "-".join(str(v) for v in k.values()))
def test_smooth_volume_loses_little(kwargs: dict) -> None:
    blob = _blob()
    out = prepare_case(blob[..., None].astype(np.float32), SMOOTH_AFFINE, None, PreprocessConfig(**kwargs), None)
    steps = np.asarray(out.image.shape[:3], np.float64)
    steps = np.asarray(SMOOTH_SHAPE) / steps  # input voxels a coarse voxel (edge padding aside)
    floor = _floor_db(np.ceil(steps))
    fid = out.meta["fidelity"]
    assert math.isfinite(fid["psnr"]) and fid["psnr"] > floor
    assert 0.8 < fid["ssim"] < 1.0  # structure kept, but a lossy reduction is not the identity


def test_compress_keeps_at_least_the_approximation_and_keep_1_is_near_lossless() -> None:
    import pywt

    blob = _blob()
    # Dropping every detail band (pywt on its own) is the worst "compress" can do: it keeps
    # the approximation band exactly and the largest details besides.
    coeffs = pywt.wavedecn(blob, "db2", mode="periodization", level=2)
    approx_only = pywt.waverecn([coeffs[0]] + [{k: np.zeros_like(v) for k, v in d.items()} for d in coeffs[1:]],
                                "db2", mode="periodization")
    floor = _psnr(blob, approx_only)
    figures = {}
    for keep in (0.02, 0.1, 1.0):
        cfg = PreprocessConfig(reduce="wavelet", mode="compress", wavelet="db2", level=2, keep=keep)
        out = prepare_case(blob[..., None].astype(np.float32), SMOOTH_AFFINE, None, cfg, None)
        figures[keep] = out.meta["fidelity"]
    assert floor < figures[0.02]["psnr"] < figures[0.1]["psnr"] < figures[1.0]["psnr"]
    # keep = 1: every detail kept, int16-quantised to 1/32767 of its band's peak (~90 dB
    # below it): the decoded volume is the original within quantisation noise.
    assert figures[1.0]["psnr"] > 80 and figures[1.0]["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert figures[0.1]["ssim"] < figures[1.0]["ssim"]


def test_fidelity_ssim_falls_for_a_volume_without_structure() -> None:
    """The same reduction: a smooth blob keeps its structure, white noise loses it."""
    noise = np.random.default_rng([7, 9]).normal(0, 100, SMOOTH_SHAPE)
    cfg = PreprocessConfig(reduce="downsample", factor=2)
    smooth = prepare_case(_blob()[..., None].astype(np.float32), SMOOTH_AFFINE, None, cfg, None).meta["fidelity"]
    noisy = prepare_case(noise[..., None].astype(np.float32), SMOOTH_AFFINE, None, cfg, None).meta["fidelity"]
    back = _upsample(_block_mean(noise, (2, 2, 2)), (2, 2, 2), SMOOTH_SHAPE)
    assert noisy["ssim"] == pytest.approx(ssim_oracle(noise, back, float(np.ptp(noise))), abs=1e-5)
    assert smooth["ssim"] > 0.95 and noisy["ssim"] < 0.3
    assert noisy["psnr"] == pytest.approx(_psnr(noise, back), abs=1e-3) and noisy["psnr"] < smooth["psnr"] - 10


def test_label_dtype_int16_when_large() -> None:
    image, labels, affine = _case()
    big = labels.astype(np.int32) * 100
    out = prepare_case(image, affine, big, PreprocessConfig(reduce="downsample"), None)
    assert out.mask.dtype == np.int16 and set(np.unique(out.mask)) <= set(np.unique(big))


def test_crop_pad_is_centred_and_recorded() -> None:
    image, labels, affine = _case((10, 12, 9))
    cfg = PreprocessConfig(reduce="none")
    prepared = prepare_case(image, affine, labels, cfg, fidelity_figures=False)
    out_image, out_mask, grid = window_case(prepared.image, prepared.mask, prepared.grid, prepared.anchor,
                                            (14, 8, 9), fill=[float(image.min())])
    assert out_image.shape == (14, 8, 9, 1)
    canon, canon_affine = reorient(image, affine, "RAS")
    np.testing.assert_array_equal(out_image[2:12, :, :, 0], canon[:, 2:10, :, 0])
    assert np.all(out_image[:2] == canon.min()) and np.all(out_mask[:2] == 0)
    # voxel (2, 0, 0) of the output is voxel (0, 2, 0) of the reoriented input
    np.testing.assert_allclose(grid.affine @ [2, 0, 0, 1], canon_affine @ [0, 2, 0, 1])


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
