"""The bad-input corpus: every broken file gives one InputError subclass, naming the file."""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from io_corpus import patch_fields, phantom, write_metaimage, write_nifti, write_raw

from volprep.config import ReadConfig
from volprep.errors import DataError, HeaderError, InputError
from volprep.io import read_header, read_volume

CFG = ReadConfig()
SHAPE = (12, 10, 8)


def refused(path: Path, error: type[InputError], phrase: str,
            cfg: ReadConfig = CFG, header_only: bool = False) -> InputError:
    """Reads ``path`` and checks the error's class, phrase, path and one-line message."""
    with pytest.raises(error) as info:
        (read_header if header_only else read_volume)(path, cfg)
    message = str(info.value)
    assert phrase in message, message
    assert str(path) in message
    assert "\n" not in message
    return info.value


def test_missing_and_empty_file(tmp_path: Path) -> None:
    refused(tmp_path / "nope.nii", HeaderError, "file not found")
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    refused(empty, HeaderError, "file is empty")


def test_unknown_content(tmp_path: Path) -> None:
    junk = tmp_path / "junk.nii"
    junk.write_bytes(b"hello world" * 100)
    refused(junk, HeaderError, "not a volume volprep reads")
    gz_junk = tmp_path / "junk.nii.gz"
    gz_junk.write_bytes(gzip.compress(b"hello world" * 100))
    refused(gz_junk, HeaderError, "gzip file holds no NIfTI header")


def test_truncated_gzip_is_data_error(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "t.nii.gz", phantom(SHAPE))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    read_header(path, CFG)  # the header itself is intact
    refused(path, DataError, "truncated")
    path.write_bytes(blob[:-4])  # all voxels there, the gzip trailer cut
    refused(path, DataError, "truncated")
    corrupt = bytearray(blob)
    corrupt[-8] ^= 0xFF  # CRC
    path.write_bytes(bytes(corrupt))
    refused(path, DataError, "corrupt")


def test_truncated_uncompressed_refused_before_reading(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "t.nii", phantom(SHAPE))
    blob = path.read_bytes()
    path.write_bytes(blob[:-10])
    refused(path, HeaderError, "truncated", header_only=True)
    pair = write_nifti(tmp_path / "p.hdr", phantom(SHAPE))
    img = pair.with_suffix(".img")
    img.write_bytes(img.read_bytes()[:100])
    refused(pair, HeaderError, "p.img is truncated")
    img.unlink()
    refused(pair, HeaderError, "image file (.img)")


def test_huge_dims_refused_before_allocation(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "h.nii", phantom(SHAPE), version=2,
                       fields={"dim": [3, 100000, 100000, 100000, 1, 1, 1, 1]})
    tracemalloc.start()
    try:
        error = refused(path, HeaderError, "more than read.max_bytes")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "1.8 PiB" in error.problem and "4.0 GiB" in error.problem
    assert peak < 4 << 20
    gz = write_nifti(tmp_path / "h.nii.gz", phantom(SHAPE), fields={"dim": [3, 2000, 2000, 2000, 1, 1, 1, 1]})
    refused(gz, HeaderError, "more than read.max_bytes", ReadConfig(max_bytes="1GiB"))


def test_gzip_claiming_more_than_it_holds(tmp_path: Path) -> None:
    """A small stream that claims a bigger volume: truncated, never zero-filled."""
    path = write_nifti(tmp_path / "c.nii.gz", phantom(SHAPE),
                       fields={"dim": [3, 12, 10, 80, 1, 1, 1, 1]})
    refused(path, DataError, "truncated")


def test_bad_magic(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "m.nii", phantom(SHAPE), fields={"magic": b"xyz"})
    refused(path, HeaderError, "bad NIfTI-1 magic")
    path = write_nifti(tmp_path / "m2.nii.gz", phantom(SHAPE), version=2,
                       fields={"magic": b"n+3"})
    refused(path, HeaderError, "bad NIfTI-2 magic")


def test_data_offset_past_eof(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "o.nii", phantom(SHAPE), fields={"vox_offset": 1 << 20})
    refused(path, HeaderError, "past the end of the file", header_only=True)
    path = write_nifti(tmp_path / "o2.nii", phantom(SHAPE), fields={"vox_offset": 352.5})
    refused(path, HeaderError, "vox_offset = 352.5")


def test_zero_and_negative_dims(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "z.nii", phantom(SHAPE), fields={"dim": [3, 0, 64, 64, 1, 1, 1, 1]})
    error = refused(path, HeaderError, "every dimension must be >= 1")
    assert "(0, 64, 64)" in error.problem
    path = write_nifti(tmp_path / "d0.nii", phantom(SHAPE), fields={"dim": [9, 12, 10, 8, 1, 1, 1, 1]})
    refused(path, HeaderError, "dim[0] = 9")


@pytest.mark.parametrize("name", ["n.nii", "n.nii.gz", "n.raw"])
def test_non_finite_voxels_both_policies(tmp_path: Path, name: str) -> None:
    data = phantom(SHAPE, "float32")
    data[1, 2, 3] = np.nan
    data[4, 5, 6] = np.inf
    data[0, 0, 0] = -np.inf
    path = (write_raw(tmp_path / name, data) if name.endswith(".raw")
            else write_nifti(tmp_path / name, data))
    refused(path, DataError, "3 of 960 voxels are NaN or Inf")
    volume = read_volume(path, ReadConfig(non_finite="zero"))
    assert np.isfinite(volume.data).all()
    assert volume.data[1, 2, 3] == 0 and volume.data[4, 5, 6] == 0 and volume.data[0, 0, 0] == 0
    expected = np.where(np.isfinite(data), data, 0)
    np.testing.assert_array_equal(volume.data, expected)
    assert "3 non-finite voxels (NaN/Inf) set to 0" in volume.header.notes


def test_scaling_overflow_to_inf_is_caught(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "o.nii", phantom(SHAPE), fields={"scl_slope": 1e38})
    refused(path, DataError, "NaN or Inf")


def test_singular_affines_fall_back_with_a_note(tmp_path: Path) -> None:
    srow_singular = {"srow_x": [0, 0, 0, 1], "srow_y": [0, 0, 0, 2], "srow_z": [0, 0, 0, 3]}
    path = write_nifti(tmp_path / "s.nii", phantom(SHAPE), qform_code=1, fields=srow_singular)
    header = read_header(path, CFG)
    assert "affine from qform (sform unusable)" in header.notes
    path = write_nifti(tmp_path / "s3.nii", phantom(SHAPE), qform_code=1,
                       fields={**srow_singular, "quatern_b": 2.0, "quatern_c": 2.0})
    header = read_header(path, CFG)
    assert "affine from pixdim (sform and qform unusable)" in header.notes
    np.testing.assert_allclose(np.diag(header.affine), [1.5, 2.0, 2.5, 1.0], rtol=1e-6)
    path = write_nifti(tmp_path / "s4.nii", phantom(SHAPE), qform_code=0,
                       fields={**srow_singular, "pixdim": [1, 0, 2, 2, 1, 1, 1, 1]})
    refused(path, HeaderError, "no usable affine")
    path = write_nifti(tmp_path / "s5.nii", phantom(SHAPE),
                       fields={"srow_x": [np.nan, 0, 0, 0], "pixdim": [1, 1, 1, 1, 1, 1, 1, 1]})
    assert "affine from pixdim (sform unusable)" in read_header(path, CFG).notes


def test_content_extension_mismatch_both_ways(tmp_path: Path) -> None:
    """A NIfTI named .mha and a MetaImage named .nii are read by content."""
    data = phantom(SHAPE)
    nii_as_mha = write_nifti(tmp_path / "x.nii", data).rename(tmp_path / "x.mha")
    np.testing.assert_array_equal(read_volume(nii_as_mha, CFG).data, data)
    mha_as_nii = write_metaimage(tmp_path / "y.mha", data).rename(tmp_path / "y.nii.gz")
    np.testing.assert_array_equal(read_volume(mha_as_nii, CFG).data, data)


@pytest.mark.parametrize(("dims", "phrase"), [
    ([2, 12, 10, 1, 1, 1, 1, 1], "a 2D image"),
    ([5, 12, 10, 8, 2, 3, 1, 1], "5D"),
])
def test_2d_and_5d_refused(tmp_path: Path, dims: list[int], phrase: str) -> None:
    path = write_nifti(tmp_path / "d.nii", phantom(SHAPE), fields={"dim": dims})
    refused(path, HeaderError, phrase, header_only=True)


def test_5d_with_trailing_ones_is_3d(tmp_path: Path) -> None:
    data = phantom(SHAPE)
    path = write_nifti(tmp_path / "d.nii", data, fields={"dim": [5, 12, 10, 8, 1, 1, 1, 1]})
    np.testing.assert_array_equal(read_volume(path, CFG).data, data)


def test_complex_refused(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "c.nii", phantom(SHAPE, "float32").astype(np.complex64))
    refused(path, HeaderError, "datatype 32 (complex64) is not supported")


def test_rgb_refused_unless_allowed(tmp_path: Path) -> None:
    import nibabel as nib

    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    values = phantom((*SHAPE, 3), "uint8")
    for n, name in enumerate("RGB"):
        rgb[name] = values[..., n]
    path = tmp_path / "rgb.nii"
    nib.Nifti1Image(rgb, np.eye(4)).to_filename(path)
    refused(path, HeaderError, "datatype 128 (RGB24) is not supported")
    volume = read_volume(path, ReadConfig(allow_rgb=True))
    assert volume.header.shape == (*SHAPE, 3) and volume.data.dtype == np.uint8
    np.testing.assert_array_equal(volume.data, values)


def test_cifti_intent_refused(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "c.nii", phantom(SHAPE), fields={"intent_code": 3001})
    refused(path, HeaderError, "not a volume")


def test_unknown_datatype(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "u.nii", phantom(SHAPE), fields={"datatype": 77})
    refused(path, HeaderError, "datatype 77")


def test_infinite_slope_refused(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "i.nii", phantom(SHAPE), fields={"scl_slope": np.inf})
    refused(path, HeaderError, "scl_slope = inf")


def test_raw_sidecar_problems(tmp_path: Path) -> None:
    data = phantom(SHAPE)
    path = write_raw(tmp_path / "r.raw", data, extra={"byteorder": "big"})
    refused(path, HeaderError, "sidecar key 'byteorder' is unknown")
    path = write_raw(tmp_path / "r2.raw", data, extra={"dtype": "complex64"})
    refused(path, HeaderError, "sidecar dtype = 'complex64'")
    path = write_raw(tmp_path / "r3.raw", data, extra={"shape": [12, 10]})
    refused(path, HeaderError, "sidecar shape")
    path = write_raw(tmp_path / "r4.raw", data)
    path.write_bytes(path.read_bytes()[:-1])
    refused(path, HeaderError, "truncated")
    path.with_suffix(".json").write_text("{not json")
    refused(path, HeaderError, "not valid JSON")
    orphan = tmp_path / "o.raw"
    orphan.write_bytes(b"\x01" * 64)
    refused(orphan, HeaderError, "not a volume volprep reads")


def test_metaimage_problems(tmp_path: Path) -> None:
    data = phantom(SHAPE)
    path = write_metaimage(tmp_path / "m.mha", data, compressed=True)
    blob = path.read_bytes()
    path.write_bytes(blob[:-20])
    refused(path, DataError, "truncated")
    path = write_metaimage(tmp_path / "t.mha", data)
    path.write_bytes(path.read_bytes()[:-20])
    refused(path, HeaderError, "truncated")
    path = write_metaimage(tmp_path / "s.mhd", data)
    path.with_suffix(".raw").unlink()
    refused(path, HeaderError, "data file 'm.raw' not found".replace("m.raw", "s.raw"))
    path = tmp_path / "e.mha"
    path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_CFLOAT\n"
                    "ElementDataFile = LOCAL\n")
    refused(path, HeaderError, "ElementType = 'MET_CFLOAT'")
    path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 2 2\nElementType = MET_SHORT\n"
                    "ElementDataFile = LOCAL\n")
    refused(path, HeaderError, "DimSize = '2 2' does not match NDims = 3")
    path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\n")
    refused(path, HeaderError, "no ElementDataFile")
    path = write_metaimage(tmp_path / "two.mha", data[:, :, 0])
    refused(path, HeaderError, "2D image")


def test_nifti_gzip_bomb_is_bounded(tmp_path: Path) -> None:
    """A stream far longer than claimed: only the claimed bytes are ever inflated."""
    data = phantom(SHAPE)
    plain = write_nifti(tmp_path / "b.nii", data)
    bomb = tmp_path / "bomb.nii.gz"
    bomb.write_bytes(gzip.compress(plain.read_bytes() + bytes(200 << 20), compresslevel=1))
    tracemalloc.start()
    try:
        volume = read_volume(bomb, CFG)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(volume.data, data)
    assert peak < 8 << 20
    assert any("longer than the header claims" in note for note in volume.header.notes)


def test_patch_helper_really_patches(tmp_path: Path) -> None:
    """Guards the corpus: a patched field is what nibabel then reads."""
    import nibabel as nib

    path = write_nifti(tmp_path / "p.nii", phantom(SHAPE))
    patch_fields(path, {"scl_slope": 3.0})
    assert float(nib.load(path).dataobj.slope) == 3.0
