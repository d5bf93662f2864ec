"""check_label and read_case_images: labels on their image's grid, channels stacked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from io_corpus import AFFINE, phantom, write_nifti, write_raw

from volprep.config import ReadConfig
from volprep.errors import DataError, HeaderError, LabelError
from volprep.io import check_label, read_case_images, read_header, read_volume

CFG = ReadConfig()
SHAPE = (12, 10, 8)


def labels(max_label: int = 3, dtype: str = "uint8", seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng([seed])
    return np.asfortranarray(rng.integers(0, max_label + 1, SHAPE).astype(dtype))


def image_header(tmp_path: Path, affine: np.ndarray = AFFINE):
    return read_header(write_nifti(tmp_path / "img.nii.gz", phantom(SHAPE), affine), CFG)


def label_error(tmp_path: Path, mask: np.ndarray, phrase: str, *,
                affine: np.ndarray = AFFINE, declared: set[int] | None = None) -> None:
    path = write_nifti(tmp_path / "lab.nii.gz", mask, affine)
    with pytest.raises(LabelError) as info:
        check_label(read_volume(path, CFG), image_header(tmp_path), CFG, declared)
    assert phrase in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("dtype", ["uint8", "int16", "int32", "float32", "float64"])
def test_good_labels_become_uint8(tmp_path: Path, dtype: str) -> None:
    mask = labels(dtype=dtype)
    volume = read_volume(write_nifti(tmp_path / "lab.nii.gz", mask), CFG)
    out = check_label(volume, image_header(tmp_path), CFG, declared={0, 1, 2, 3})
    assert out.dtype == np.uint8 and out.shape == SHAPE
    np.testing.assert_array_equal(out, mask.astype(np.uint8))


def test_large_label_values_become_int16(tmp_path: Path) -> None:
    mask = labels(dtype="int32")
    mask[0, 0, 0] = 300
    out = check_label(read_volume(write_nifti(tmp_path / "l.nii", mask), CFG),
                      image_header(tmp_path), CFG, None)
    assert out.dtype == np.int16 and out[0, 0, 0] == 300


def test_label_against_4d_image_header(tmp_path: Path) -> None:
    image = read_case_images([write_nifti(tmp_path / "i.nii", phantom((*SHAPE, 2)))], CFG)
    mask = labels()
    out = check_label(read_volume(write_nifti(tmp_path / "l.nii", mask), CFG), image.header,
                      CFG, None)
    np.testing.assert_array_equal(out, mask)


def test_label_shape_mismatch(tmp_path: Path) -> None:
    label_error(tmp_path, labels()[:, :, :6], "label shape (12, 10, 6) differs from image shape")


def test_label_affine_mismatch(tmp_path: Path) -> None:
    shifted = AFFINE.copy()
    shifted[0, 3] += 0.5
    label_error(tmp_path, labels(), "label affine differs from the image's by 0.5 mm",
                affine=shifted)


def test_label_affine_within_tolerance(tmp_path: Path) -> None:
    nudged = AFFINE.copy()
    nudged[0, 3] += 1e-4
    path = write_nifti(tmp_path / "l.nii", labels(), nudged)
    out = check_label(read_volume(path, CFG), image_header(tmp_path), CFG, None)
    np.testing.assert_array_equal(out, labels())


def test_float_non_integral_labels(tmp_path: Path) -> None:
    mask = labels(dtype="float32")
    mask[2, 2, 2] = 1.5
    label_error(tmp_path, mask, "non-integer values (e.g. 1.5)")


def test_negative_labels(tmp_path: Path) -> None:
    mask = labels(dtype="int16")
    mask[1, 1, 1] = -2
    label_error(tmp_path, mask, "label values must be >= 0, found -2")


def test_labels_outside_declared_set(tmp_path: Path) -> None:
    mask = labels(max_label=2)
    mask[0, 0, 0] = 7
    label_error(tmp_path, mask, "label values {7} are not among the declared labels [0, 1, 2]",
                declared={0, 1, 2})


def test_channels_stacked_from_3d_files(tmp_path: Path) -> None:
    chans = [phantom(SHAPE, "int16", seed=1), phantom(SHAPE, "float32", seed=2)]
    paths = [write_nifti(tmp_path / "c0.nii.gz", chans[0]),
             write_raw(tmp_path / "c1.raw", chans[1], affine=AFFINE)]
    volume = read_case_images(paths, CFG)
    assert volume.data.shape == (*SHAPE, 2) and volume.data.dtype == np.float32
    assert volume.header.shape == (*SHAPE, 2) and volume.header.nbytes == volume.data.nbytes
    for n, chan in enumerate(chans):
        np.testing.assert_array_equal(volume.data[..., n], chan)
    np.testing.assert_allclose(volume.header.affine, AFFINE, atol=1e-5)


def test_single_3d_file_gets_a_channel_axis(tmp_path: Path) -> None:
    data = phantom(SHAPE)
    volume = read_case_images([write_nifti(tmp_path / "a.nii", data)], CFG)
    assert volume.data.shape == (*SHAPE, 1) and volume.header.shape == (*SHAPE, 1)
    np.testing.assert_array_equal(volume.data[..., 0], data)


def test_channels_on_different_grids(tmp_path: Path) -> None:
    a = write_nifti(tmp_path / "a.nii", phantom(SHAPE))
    b = write_nifti(tmp_path / "b.nii", phantom((12, 10, 9)))
    with pytest.raises(DataError, match="channel 2 grid") as info:
        read_case_images([a, b], CFG)
    assert str(b) in str(info.value)
    moved = AFFINE.copy()
    moved[2, 3] += 5
    c = write_nifti(tmp_path / "c.nii", phantom(SHAPE), moved)
    with pytest.raises(DataError, match="channel 2 grid"):
        read_case_images([a, c], CFG)


def test_4d_among_several_files_refused(tmp_path: Path) -> None:
    a = write_nifti(tmp_path / "a.nii", phantom(SHAPE))
    b = write_nifti(tmp_path / "b.nii", phantom((*SHAPE, 2)))
    with pytest.raises(DataError, match="channel 2 is 4D"):
        read_case_images([a, b], CFG)


def test_channels_together_over_max_bytes(tmp_path: Path) -> None:
    paths = [write_nifti(tmp_path / f"c{n}.nii", phantom(SHAPE)) for n in range(3)]
    cfg = ReadConfig(max_bytes=2 * int(np.prod(SHAPE)) * 2 + 1)
    with pytest.raises(HeaderError, match="3 channels of shape"):
        read_case_images(paths, cfg)
