"""DICOM series read against an independent converter (dcm2niix) and every refusal's message.

Series are written by the tests with pydicom (``dicom_corpus``) from real anatomy (the
MNI152 T1 of realdata's "grid" task), resampled onto an oblique grid, under shuffled file
names with InstanceNumber running backwards and a wrong SliceThickness, with rescale
slope/intercept; plus pydicom's own test files (a CT series, an Enhanced CT and an RT dose
multi-frame, and the broken series of its DICOMDIR tests). dcm2niix converts the same
files; both volumes are put in RAS with nibabel and compared: voxels equal, affines within
1e-3 mm.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_corpus import (
    convert_with_dcm2niix,
    in_ras,
    oblique_head,
    stored_values,
    write_non_image,
    write_series,
)
from pydicom.data import get_testdata_file
from pydicom.uid import JPEGLSLossless, RLELossless
from realdata import task

import volprep.io.dicom_pixels
from volprep.config import ReadConfig
from volprep.errors import HeaderError
from volprep.io import read_header, read_volume

CFG = ReadConfig()
SLOPE, INTER = 0.5, -100.0
PYDICOM_FILES = Path(get_testdata_file("CT_small.dcm")).parent
DIRTESTS = PYDICOM_FILES / "dicomdirtests"


@pytest.fixture(scope="module")
def head() -> tuple[np.ndarray, np.ndarray]:
    """int16 stored values of an oblique MNI152 head, and its affine."""
    source = sorted((task("grid") / "imagesTr").glob("*.nii.gz"))[0]
    values, affine = oblique_head(source)
    return stored_values(values, SLOPE, INTER), affine


def _agree(ours: tuple[np.ndarray, np.ndarray], theirs: tuple[np.ndarray, np.ndarray]) -> float:
    """Asserts equal voxels in RAS and returns the largest affine difference (mm)."""
    a_data, a_aff = in_ras(*ours)
    b_data, b_aff = in_ras(*theirs)
    assert a_data.shape == b_data.shape
    np.testing.assert_array_equal(a_data.astype(np.float64), b_data.astype(np.float64))
    return float(np.max(np.abs(a_aff - b_aff)))


@pytest.mark.parametrize("multiframe", [False, True], ids=["slices", "enhanced-multiframe"])
def test_oblique_head_agrees_with_dcm2niix(tmp_path: Path, head: tuple[np.ndarray, np.ndarray],
                                           multiframe: bool) -> None:
    stored, affine = head
    write_series(tmp_path / "s", stored, affine, slope=SLOPE, inter=INTER, multiframe=multiframe)
    volume = read_volume(tmp_path / "s", CFG)
    expected = stored.astype(np.float32) * np.float32(SLOPE) + np.float32(INTER)
    np.testing.assert_array_equal(volume.data, expected)  # rescaled, in (column, row, slice)
    assert np.max(np.abs(volume.header.affine - affine)) < 1e-4  # spacing from positions
    nifti = convert_with_dcm2niix(tmp_path / "s", tmp_path / "nii")
    gap = _agree((volume.data, volume.header.affine), (nifti.get_fdata(), nifti.affine))
    assert gap < 1e-3


def test_compressed_series_read_like_the_native_one(tmp_path: Path, head: tuple[np.ndarray, np.ndarray]) -> None:
    stored, affine = head
    small = np.ascontiguousarray(stored[::2, ::2, ::4])
    for syntax in (RLELossless, JPEGLSLossless):
        write_series(tmp_path / syntax, small, affine, syntax=syntax)
        np.testing.assert_array_equal(read_volume(tmp_path / syntax, CFG).data, small)


def test_pydicom_ct_series_agrees_with_dcm2niix(tmp_path: Path) -> None:
    """Five CT slices whose file names run against their positions."""
    series = DIRTESTS / "98892001" / "CT5N"
    volume = read_volume(series, CFG)
    assert volume.header.shape == (16, 16, 5) and volume.header.spacing[2] == pytest.approx(2.5)
    nifti = convert_with_dcm2niix(series, tmp_path / "nii")
    assert _agree((volume.data, volume.header.affine), (nifti.get_fdata(), nifti.affine)) < 1e-3


def test_pydicom_enhanced_ct_multiframe_agrees_with_dcm2niix(tmp_path: Path) -> None:
    folder = tmp_path / "ect"
    folder.mkdir()
    shutil.copy(get_testdata_file("eCT_Supplemental.dcm"), folder)
    volume = read_volume(folder, CFG)
    assert volume.header.shape == (512, 512, 2) and volume.header.spacing[2] == pytest.approx(10.0)
    nifti = convert_with_dcm2niix(folder, tmp_path / "nii")
    assert _agree((volume.data, volume.header.affine), (nifti.get_fdata(), nifti.affine)) < 1e-3


def test_pydicom_rt_dose_multiframe(tmp_path: Path) -> None:
    """GridFrameOffsetVector frames and DoseGridScaling (dcm2niix cannot tell its slice
    direction, so the reference is pydicom's own pixel_array and the header's geometry)."""
    folder = tmp_path / "dose"
    folder.mkdir()
    path = Path(shutil.copy(get_testdata_file("rtdose.dcm"), folder))
    volume = read_volume(folder, CFG)
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array.astype(np.float32) * np.float32(ds.DoseGridScaling)
    np.testing.assert_array_equal(volume.data, expected.transpose(2, 1, 0))
    origin = np.diag([-1, -1, 1]) @ np.array([float(v) for v in ds.ImagePositionPatient])
    np.testing.assert_allclose(volume.header.affine[:3, 3], origin)
    assert volume.header.spacing == pytest.approx((float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0]), 5.0))


def test_non_images_in_the_folder_are_skipped(tmp_path: Path, head: tuple[np.ndarray, np.ndarray]) -> None:
    stored, affine = head
    small = np.ascontiguousarray(stored[::4, ::4, ::4])
    write_series(tmp_path / "s", small, affine)
    report = write_non_image(tmp_path / "s" / "SR0001")
    shutil.copy(get_testdata_file("test-SR.dcm"), tmp_path / "s")
    np.testing.assert_array_equal(read_volume(tmp_path / "s", CFG).data, small)
    refused(report, f"{report}: DICOM file is not an image (a report, presentation state, "
                    "segmentation or other non-image object)")


# ---------------------------------------------------------------- refusals, exact messages


def refused(path: Path, message: str, cfg: ReadConfig = CFG) -> None:
    with pytest.raises(HeaderError) as info:
        read_header(path, cfg)
    assert str(info.value) == message


@pytest.fixture
def broken(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return tmp_path, rng.integers(0, 900, (12, 10, 8)).astype(np.int16), np.diag([1.0, 1.0, 2.0, 1.0])


def test_missing_slice(broken: tuple[Path, np.ndarray, np.ndarray]) -> None:
    folder, stored, affine = broken
    files = write_series(folder / "s", stored, affine, drop=(3,))
    after = min(files, key=lambda p: abs(float(pydicom.dcmread(p).ImagePositionPatient[2]) - 4.0))
    refused(folder / "s", f"{after}: DICOM series 3 (7 files): missing slices: a gap of 4 mm after "
                          "slice 3 of 7 where the spacing is 2 mm (about 1 missing)")


def test_duplicate_slice(broken: tuple[Path, np.ndarray, np.ndarray]) -> None:
    folder, stored, affine = broken
    files = write_series(folder / "s", stored, affine, repeat=(5,))
    twins = sorted((p for p in files if float(pydicom.dcmread(p).ImagePositionPatient[2]) == 10.0),
                   key=str)
    refused(folder / "s", f"{twins[1]}: DICOM series 3 (9 files): duplicate slices: {twins[0].name} and "
                          f"{twins[1].name} share a position (1 duplicate(s))")


def test_uneven_spacing(broken: tuple[Path, np.ndarray, np.ndarray]) -> None:
    folder, stored, affine = broken
    files = write_series(folder / "s", stored, affine, shift={4: 0.3})
    first = min(files, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    refused(folder / "s", f"{first}: DICOM series 3 (8 files): uneven slice spacing (1.7 to 2.3 mm, "
                          "more than 1% from 2 mm)")


def test_mixed_orientations_and_sizes(broken: tuple[Path, np.ndarray, np.ndarray]) -> None:
    folder, stored, affine = broken
    files = write_series(folder / "turned", stored, affine, turn=(2,))
    refused(folder / "turned", f"{sorted(files)[0]}: DICOM series 3 (8 files): mixed orientations (2 different "
                               "ImageOrientationPatient): a localizer or several stacks, not one volume")
    files = write_series(folder / "sized", stored, affine, resize=(2,))
    refused(folder / "sized", f"{sorted(files)[0]}: DICOM series 3 (8 files): mixed image sizes (8x12 and 10x12 "
                              "rows x columns)")


def test_pydicom_broken_series() -> None:
    """pydicom's DICOMDIR test series: a CT with a 202 mm gap, a radial MR localizer."""
    ct2 = DIRTESTS / "77654033" / "CT2"
    refused(ct2, f"{ct2 / '17106'}: DICOM series 2 (4 files): missing slices: a gap of 202.5 mm after "
                 "slice 1 of 4 where the spacing is 1.25 mm (about 161 missing)")
    radial = DIRTESTS / "98892003" / "MR700"
    refused(radial, f"{radial / '4467'}: DICOM series 700 (7 files): mixed orientations (7 different "
                    "ImageOrientationPatient): a localizer or several stacks, not one volume")


def test_single_slice_and_no_geometry(tmp_path: Path) -> None:
    for name in ("CT_small.dcm", "emri_small.dcm"):
        (tmp_path / name).mkdir()
        shutil.copy(get_testdata_file(name), tmp_path / name)
    one = tmp_path / "CT_small.dcm" / "CT_small.dcm"
    refused(one.parent, f"{one}: DICOM series 1 (1 file): 1 slice: a 2D image, not a volume")
    flat = tmp_path / "emri_small.dcm" / "emri_small.dcm"
    refused(flat.parent, f"{flat}: DICOM series 301 (1 file): emri_small.dcm has no usable "
                         "ImagePositionPatient/ImageOrientationPatient/PixelSpacing: no position in space")


def test_several_series_in_one_folder(tmp_path: Path) -> None:
    stored = np.zeros((6, 5, 4), np.int16)
    a = write_series(tmp_path / "mixed", stored, np.eye(4), number=4, prefix="A")
    b = write_series(tmp_path / "mixed", stored, np.eye(4), number=7, prefix="B")
    first_a, first_b = sorted(a)[0], sorted(b)[0]
    listed = f"series 4: 4 files from {first_a.name}; series 7: 4 files from {first_b.name}"
    refused(tmp_path / "mixed", f"{tmp_path / 'mixed'}: DICOM folder holds 2 series ({listed}): name one "
                                "file of the series wanted, or give each series its own folder")
    assert read_header(first_b, CFG).shape == (6, 5, 4)  # a file stands for its series
    refused(first_b, f"{tmp_path / 'mixed'}: DICOM folder holds 2 series ({listed}): "
                     "[read] dicom_series = \"refuse\"", ReadConfig(dicom_series="refuse"))


def test_memory_is_checked_before_any_pixel(broken: tuple[Path, np.ndarray, np.ndarray],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    folder, stored, affine = broken
    write_series(folder / "s", stored, affine, slope=2.0)

    def no_pixels(*args: object) -> None:
        raise AssertionError("pixels read before the memory check")

    monkeypatch.setattr(volprep.io.dicom_pixels, "read_voxels", no_pixels)
    with pytest.raises(HeaderError) as info:
        read_volume(folder / "s", ReadConfig(max_bytes=1000))
    assert str(info.value) == (f"{folder / 's'}: header claims shape (12, 10, 8) float32: 3.8 KiB, "
                               "more than read.max_bytes 1000 B")


BLOCK_DECODERS = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"gdcm", "pylibjpeg", "libjpeg", "openjpeg", "jpeg_ls", "rle"}:
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
from pathlib import Path
from volprep.config import ReadConfig
from volprep.errors import HeaderError
from volprep.io import read_header
try:
    read_header(Path(sys.argv[1]), ReadConfig())
except HeaderError as err:
    print(err)
"""


def test_compressed_series_without_a_decoder_names_the_extra(tmp_path: Path) -> None:
    """In a process where no JPEG-LS decoder can be imported (as on a plain install)."""
    files = write_series(tmp_path / "jls", np.zeros((8, 8, 3), np.int16), np.eye(4), syntax=JPEGLSLossless)
    first = sorted(files)[0]
    run = subprocess.run([sys.executable, "-c", BLOCK_DECODERS, str(tmp_path / "jls")],
                         capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == (
        f"{first}: DICOM series 3 (3 files): {first.name}: transfer syntax JPEG-LS Lossless Image "
        "Compression (1.2.840.10008.1.2.4.80) needs a decoder that is not installed: "
        "pip install 'volprep[dicom]'"), run.stderr
