"""Round trips: every format volprep reads gives back the array written, with its geometry."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from io_corpus import AFFINE, phantom, write_metaimage, write_nifti, write_raw

from volprep.config import ReadConfig
from volprep.io import estimate_working_bytes, read_header, read_volume

CFG = ReadConfig()
SHAPE = (12, 10, 8)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz", "v.hdr", "v.hdr.gz"])
@pytest.mark.parametrize("endian", ["<", ">"])
def test_nifti_round_trip(tmp_path: Path, version: int, name: str, endian: str) -> None:
    data = phantom(SHAPE, "int16", seed=version)
    path = write_nifti(tmp_path / name, data, version=version, endian=endian)
    volume = read_volume(path, CFG)
    assert volume.data.dtype == np.int16 and volume.data.dtype.isnative
    np.testing.assert_array_equal(volume.data, data)
    header = volume.header
    assert header.shape == SHAPE and header.dtype == np.int16
    assert header.nbytes == data.nbytes == volume.data.nbytes
    np.testing.assert_allclose(header.affine, AFFINE, atol=1e-5)
    np.testing.assert_allclose(header.spacing, (1.5, 2.0, 2.5), rtol=1e-6)
    assert "affine from sform" in header.notes
    assert volume.data.flags.f_contiguous  # nibabel's memory order, no copy


def test_read_header_matches_volume(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "v.nii.gz", phantom(SHAPE))
    header = read_header(path, CFG)
    volume = read_volume(path, CFG)
    assert header.shape == volume.header.shape and header.dtype == volume.data.dtype
    np.testing.assert_array_equal(header.affine, volume.header.affine)
    assert not header.affine.flags.writeable


@pytest.mark.parametrize("version", [1, 2])
def test_scaled_nifti_is_float32(tmp_path: Path, version: int) -> None:
    data = phantom(SHAPE, "int16")
    path = write_nifti(tmp_path / "s.nii.gz", data, version=version,
                       fields={"scl_slope": 0.5, "scl_inter": -3.0})
    volume = read_volume(path, CFG)
    assert volume.data.dtype == np.float32 and volume.header.dtype == np.float32
    assert volume.header.nbytes == data.size * 4
    np.testing.assert_allclose(volume.data, data * 0.5 - 3.0, rtol=1e-6)


@pytest.mark.parametrize("slope", [0.0, np.nan])
def test_slope_zero_or_nan_means_unscaled(tmp_path: Path, slope: float) -> None:
    data = phantom(SHAPE, "uint8")
    path = write_nifti(tmp_path / "u.nii", data, fields={"scl_slope": slope, "scl_inter": 9.0})
    volume = read_volume(path, CFG)
    assert volume.data.dtype == np.uint8
    np.testing.assert_array_equal(volume.data, data)


def test_float64_becomes_float32(tmp_path: Path) -> None:
    data = phantom(SHAPE, "float64")
    volume = read_volume(write_nifti(tmp_path / "f.nii", data, endian=">"), CFG)
    assert volume.data.dtype == np.float32
    np.testing.assert_allclose(volume.data, data.astype(np.float32))
    assert any("float32" in note for note in volume.header.notes)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int32", "uint32", "int64", "float32"])
def test_nifti_dtypes(tmp_path: Path, dtype: str) -> None:
    data = phantom(SHAPE, dtype)
    volume = read_volume(write_nifti(tmp_path / "d.nii.gz", data), CFG)
    assert volume.data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(volume.data, data)


def test_4d_nifti_gives_channels_and_4th_dim_1_gives_3d(tmp_path: Path) -> None:
    data = phantom((*SHAPE, 3))
    volume = read_volume(write_nifti(tmp_path / "c.nii.gz", data), CFG)
    assert volume.header.shape == (*SHAPE, 3)
    np.testing.assert_array_equal(volume.data, data)
    single = phantom((*SHAPE, 1))
    volume = read_volume(write_nifti(tmp_path / "one.nii", single), CFG)
    assert volume.header.shape == SHAPE and volume.data.shape == SHAPE
    np.testing.assert_array_equal(volume.data, single[..., 0])


def test_qform_only_and_pixdim_fallback(tmp_path: Path) -> None:
    data = phantom(SHAPE)
    path = write_nifti(tmp_path / "q.nii", data, qform_code=1, fields={"sform_code": 0})
    header = read_header(path, CFG)
    assert "affine from qform" in header.notes
    np.testing.assert_allclose(header.affine, AFFINE, atol=1e-5)
    path = write_nifti(tmp_path / "p.nii", data, fields={"sform_code": 0, "qform_code": 0})
    header = read_header(path, CFG)
    assert "affine from pixdim" in header.notes
    np.testing.assert_allclose(header.affine, np.diag([1.5, 2.0, 2.5, 1.0]), atol=1e-6)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("byte_order", ["little", "big"])
@pytest.mark.parametrize("gz", [False, True])
def test_raw_round_trip(tmp_path: Path, order: str, byte_order: str, gz: bool) -> None:
    data = phantom(SHAPE, "int16")
    path = write_raw(tmp_path / ("r.raw.gz" if gz else "r.raw"), data, order=order,
                     byte_order=byte_order, offset=16)
    volume = read_volume(path, CFG)
    np.testing.assert_array_equal(volume.data, data)
    assert volume.data.dtype.isnative
    np.testing.assert_allclose(volume.header.affine, np.diag([1.0, 2.0, 3.0, 1.0]))
    assert volume.header.spacing == (1.0, 2.0, 3.0)


def test_raw_4d_with_affine_and_via_sidecar_path(tmp_path: Path) -> None:
    data = phantom((*SHAPE, 2), "float32")
    path = write_raw(tmp_path / "m.raw", data, affine=AFFINE)
    for named in (path, path.with_suffix(".json")):
        volume = read_volume(named, CFG)
        np.testing.assert_array_equal(volume.data, data)
        np.testing.assert_allclose(volume.header.affine, AFFINE)
        assert "affine from sidecar affine" in volume.header.notes


LPS_DIRECTION = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("name", ["m.mha", "m.mhd"])
@pytest.mark.parametrize("msb", [False, True])
@pytest.mark.parametrize("compressed", [False, True])
def test_metaimage_round_trip(tmp_path: Path, name: str, msb: bool, compressed: bool) -> None:
    data = phantom(SHAPE, "int16")
    path = write_metaimage(tmp_path / name, data, msb=msb, compressed=compressed,
                           direction=LPS_DIRECTION)
    volume = read_volume(path, CFG)
    np.testing.assert_array_equal(volume.data, data)
    # LPS world: x = origin + D @ (spacing * ijk); RAS flips the first two rows.
    lps = np.eye(4)
    lps[:3, :3] = LPS_DIRECTION * np.array([1.0, 2.0, 3.0])
    lps[:3, 3] = (5.0, -6.0, 7.0)
    np.testing.assert_allclose(volume.header.affine, np.diag([-1, -1, 1, 1]) @ lps)
    assert volume.header.spacing == (1.0, 2.0, 3.0)


def test_metaimage_multichannel_and_types(tmp_path: Path) -> None:
    data = phantom((*SHAPE, 3), "float32")
    volume = read_volume(write_metaimage(tmp_path / "c.mha", data, channels=3), CFG)
    assert volume.header.shape == (*SHAPE, 3)
    np.testing.assert_array_equal(volume.data, data)
    data = phantom(SHAPE, "uint8")
    volume = read_volume(write_metaimage(tmp_path / "u.mhd", data, compressed=True), CFG)
    np.testing.assert_array_equal(volume.data, data)


def test_content_sniffing_beats_extension(tmp_path: Path) -> None:
    data = phantom(SHAPE)
    gz_under_nii = write_nifti(tmp_path / "a.nii", data, gz=True)
    plain_under_gz = tmp_path / "b.nii.gz"
    write_nifti(tmp_path / "b.nii", data).rename(plain_under_gz)
    assert gzip.decompress(gz_under_nii.read_bytes())  # really gzip under .nii
    for path in (gz_under_nii, plain_under_gz):
        np.testing.assert_array_equal(read_volume(path, CFG).data, data)


def test_pair_named_by_its_img(tmp_path: Path) -> None:
    data = phantom(SHAPE)
    write_nifti(tmp_path / "p.hdr", data)
    volume = read_volume(tmp_path / "p.img", CFG)
    np.testing.assert_array_equal(volume.data, data)


def test_matches_nibabel_on_scaled_big_endian(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "n.nii.gz", phantom(SHAPE), endian=">",
                       fields={"scl_slope": 1.25, "scl_inter": 2.0})
    expected = np.asanyarray(nib.load(path).dataobj)
    np.testing.assert_allclose(read_volume(path, CFG).data, expected, rtol=1e-6)


def test_estimate_working_bytes(tmp_path: Path) -> None:
    header = read_header(write_nifti(tmp_path / "e.nii", phantom(SHAPE)), CFG)
    voxels = int(np.prod(SHAPE))
    estimate = estimate_working_bytes(header)
    assert estimate == header.nbytes + 4 * voxels * 4
    assert estimate >= 4 * voxels * 4


def test_analyze_pair_reads_like_nibabel(tmp_path: Path) -> None:
    data = phantom(SHAPE, "int16")
    path = tmp_path / "a.hdr"
    nib.AnalyzeImage(data, np.diag([2.0, 2.0, 3.0, 1.0])).to_filename(path)
    volume = read_volume(path, CFG)
    np.testing.assert_allclose(volume.data, np.asanyarray(nib.load(path).dataobj))
    assert volume.header.spacing == (2.0, 2.0, 3.0)
    assert any(note.startswith("affine from Analyze") for note in volume.header.notes)


def test_bitpix_disagreement_is_noted(tmp_path: Path) -> None:
    data = phantom(SHAPE)
    volume = read_volume(write_nifti(tmp_path / "b.nii", data, fields={"bitpix": 8}), CFG)
    np.testing.assert_array_equal(volume.data, data)
    assert "bitpix 8 disagrees with datatype 4; datatype used" in volume.header.notes
