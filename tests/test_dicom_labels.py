"""Labels on a DICOM series' grid: NIfTI and NRRD volumes, and a DICOM-SEG (highdicom).

The label check holds a label to its image's grid (shape, affine within
``read.affine_tolerance``). On DICOM images a label may arrive in another voxel order of
the same grid (dcm2niix flips the rows) and is reordered; a DICOM-SEG, written here with
highdicom with its empty frames left out (its default), covers only the slices it labels
and is placed on the image grid at its offset. A label off the grid is still refused.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import nibabel as nib
import nrrd
import numpy as np
import pydicom
import pytest
from dicom_corpus import convert_with_dcm2niix, write_series

from volprep.config import ReadConfig
from volprep.errors import LabelError
from volprep.io import check_label, read_label_volume, read_volume

CFG = ReadConfig()
SHAPE = (24, 20, 16)  # columns, rows, slices


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """An oblique series and the label volume expected on its grid."""
    folder = tmp_path_factory.mktemp("dicom") / "img"
    rng = np.random.default_rng(4)
    affine = np.eye(4)
    c, s = np.cos(0.3), np.sin(0.3)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([1.1, 0.9, 2.0])
    affine[:3, 3] = (-12.0, 7.0, 30.0)
    write_series(folder, rng.integers(0, 500, SHAPE).astype(np.int16), affine)
    labels = np.zeros(SHAPE, np.uint8)
    labels[5:15, 4:12, 6:10] = 1
    labels[8:10, 6:9, 7:9] = 2
    return folder, labels, affine


def test_nifti_label_in_dcm2niix_voxel_order_is_reordered(tmp_path: Path, series: tuple[Path, np.ndarray, np.ndarray]) -> None:
    folder, labels, affine = series
    image = read_volume(folder, CFG)
    converted = convert_with_dcm2niix(folder, tmp_path / "nii")  # its grid, its voxel order
    ours_in_theirs = nib.orientations.apply_orientation(labels, nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.io_orientation(converted.affine)))
    nib.save(nib.Nifti1Image(ours_in_theirs.astype(np.uint8), converted.affine), tmp_path / "l.nii.gz")
    assert not np.allclose(converted.affine, image.header.affine, atol=1e-3)  # another order
    checked = check_label(read_label_volume(tmp_path / "l.nii.gz", CFG), image.header, CFG, None)
    np.testing.assert_array_equal(checked, labels)


def test_nrrd_label_on_the_grid(tmp_path: Path, series: tuple[Path, np.ndarray, np.ndarray]) -> None:
    folder, labels, affine = series
    image = read_volume(folder, CFG)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.header.affine
    nrrd.write(str(tmp_path / "l.nrrd"), labels, {"space": "left-posterior-superior",
                                                 "space directions": lps[:3, :3].T, "space origin": lps[:3, 3]})
    checked = check_label(read_label_volume(tmp_path / "l.nrrd", CFG), image.header, CFG, None)
    np.testing.assert_array_equal(checked, labels)


def test_label_off_the_grid_is_still_refused(tmp_path: Path, series: tuple[Path, np.ndarray, np.ndarray]) -> None:
    folder, labels, affine = series
    image = read_volume(folder, CFG)
    moved = image.header.affine.copy()
    moved[:3, 3] += 0.5
    nib.save(nib.Nifti1Image(labels, moved), tmp_path / "l.nii.gz")
    with pytest.raises(LabelError) as info:
        check_label(read_label_volume(tmp_path / "l.nii.gz", CFG), image.header, CFG, None)
    assert str(info.value) == (f"{tmp_path / 'l.nii.gz'}: label affine differs from the image's by "
                               "0.5 mm (read.affine_tolerance = 0.001; img)")


def _seg(folder: Path, labels: np.ndarray, out: Path) -> Path:
    sources = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    z = [float(ds.ImagePositionPatient[2]) for ds in sources]
    sources = [sources[n] for n in np.argsort(z)]  # slice k of the series is sources[k]
    frames = np.ascontiguousarray(labels.transpose(2, 1, 0))  # (slices, rows, columns)
    brain = hd.sr.CodedConcept("12738006", "SCT", "Brain")
    described = [hd.seg.SegmentDescription(
        segment_number=n, segment_label=f"label {n}", algorithm_type="MANUAL",
        segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
        segmented_property_type=brain) for n in (1, 2)]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=frames, segmentation_type="BINARY",
        segment_descriptions=described, series_instance_uid=hd.UID(), series_number=90,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="volprep tests",
        manufacturer_model_name="t", software_versions="1", device_serial_number="1")
    seg.save_as(out)
    return out


def test_dicom_seg_label_lands_on_the_image_grid(tmp_path: Path, series: tuple[Path, np.ndarray, np.ndarray]) -> None:
    folder, labels, _ = series
    image = read_volume(folder, CFG)
    path = _seg(folder, labels, tmp_path / "seg.dcm")
    mask = read_label_volume(path, CFG)
    assert mask.header.shape == (24, 20, 4)  # only the 4 labelled slices are stored
    assert mask.header.subgrid
    np.testing.assert_array_equal(check_label(mask, image.header, CFG, {0, 1, 2}), labels)
