"""Builders for the DICOM and NRRD tests: series written with pydicom from known volumes.

:func:`oblique_head` resamples the real MNI152 T1 of ``realdata``'s task "grid" onto a
rotated (oblique) grid with scipy, as a scanner would acquire it; :func:`write_series`
writes any ``(column, row, slice)`` volume as a DICOM series (one file a slice, in shuffled
order under unsorted names, or one Enhanced MR multi-frame file), with rescale
slope/intercept and a distinctive patient name and ID, and options that break it the ways
real exports break (a slice missing, repeated, moved, turned or resized). Everything is
deterministic (seeded), so a test can compare voxels exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

PATIENT_NAME = "Zzyzx^Quentavious"  # distinctive: a test greps every output for them
PATIENT_ID = "PID-7731-QXZ"
BIRTH_DATE = "19450317"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def rotation(degrees: tuple[float, float, float]) -> np.ndarray:
    """A 3x3 rotation: about x, then y, then z (degrees)."""
    out = np.eye(3)
    for axis, deg in enumerate(degrees):
        c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
        a, b = [n for n in range(3) if n != axis]
        r = np.eye(3)
        r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
        out = r @ out
    return out


def oblique_head(source: Path, shape: tuple[int, int, int] = (48, 56, 40),
                 spacing: tuple[float, float, float] = (1.2, 1.1, 1.5),
                 degrees: tuple[float, float, float] = (12.0, -8.0, 20.0),
                 order: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The NIfTI ``source`` resampled (spline ``order``: 1 linear, 0 nearest for labels) onto
    an oblique grid centred on its centre.

    Returns:
        ``(values, affine)``: float64 values on the new ``(column, row, slice)`` grid and its
        voxel -> RAS affine.
    """
    img = nib.load(source)
    data = np.asarray(img.dataobj, dtype=np.float64)
    centre = img.affine @ np.array([*((np.array(data.shape[:3]) - 1) / 2), 1.0])
    affine = np.eye(4)
    affine[:3, :3] = rotation(degrees) @ np.diag(spacing)
    affine[:3, 3] = centre[:3] - affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    to_source = np.linalg.inv(img.affine) @ affine
    values = ndimage.affine_transform(data, to_source[:3, :3], to_source[:3, 3], output_shape=shape,
                                      order=order, mode="constant", cval=0.0)
    return values, affine


def stored_values(values: np.ndarray, slope: float, inter: float) -> np.ndarray:
    """int16 stored values whose ``stored * slope + inter`` is the volume to expect."""
    return np.clip(np.rint((values - inter) / slope), -32768, 32767).astype(np.int16)


def _base(series_uid: str, number: int, sop_class: str, study_uid: str, frame_uid: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientSex = "O"
    ds.StudyDate = "20240229"
    ds.StudyTime = "101010"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "volprep tests"
    ds.Modality = "MR"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.SeriesNumber = number
    ds.SeriesDescription = f"T1 of {PATIENT_NAME}"  # operators do type names here
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    return ds


def _save(ds: Dataset, path: Path, syntax: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax)
    ds.save_as(path, enforce_file_format=True)


def write_series(folder: Path, stored: np.ndarray, affine: np.ndarray, *, slope: float = 1.0,
                 inter: float = 0.0, number: int = 3, multiframe: bool = False, seed: int = 0,
                 syntax: str = ExplicitVRLittleEndian, series_uid: str | None = None,
                 drop: tuple[int, ...] = (), repeat: tuple[int, ...] = (),
                 shift: dict[int, float] | None = None, turn: tuple[int, ...] = (),
                 resize: tuple[int, ...] = (), prefix: str = "IM") -> list[Path]:
    """Writes ``stored`` (int16, ``(column, row, slice)``) on ``affine`` (voxel -> RAS) as DICOM.

    Files are named ``<prefix><random number>`` in shuffled order and ``InstanceNumber``
    runs backwards, so neither sorts the slices. Breakages (slice indices): ``drop`` leaves
    a slice out, ``repeat`` writes it twice, ``shift`` moves it along the normal by mm,
    ``turn`` tilts its orientation, ``resize`` crops its rows.

    Returns:
        The files written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS @ affine
    row = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    col = lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    spacing = [float(np.linalg.norm(lps[:3, 1])), float(np.linalg.norm(lps[:3, 0]))]
    normal = np.cross(row, col)
    uids = (series_uid or generate_uid(), generate_uid(), generate_uid())
    rng = np.random.default_rng(seed)
    count = stored.shape[2]
    if multiframe:
        ds = _base(uids[0], number, ENHANCED_MR, uids[1], uids[2])
        order = rng.permutation(count)
        ds.NumberOfFrames = count
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[0]
        shared = Dataset()
        shared.PlaneOrientationSequence = Sequence([_item(ImageOrientationPatient=[*row, *col])])
        # dcm2niix takes an Enhanced file's slice spacing from here: the true one, as scanners write
        thickness = f"{np.linalg.norm(lps[:3, 2]):.6f}"
        shared.PixelMeasuresSequence = Sequence([_item(PixelSpacing=spacing, SliceThickness=thickness,
                                                       SpacingBetweenSlices=thickness)])
        shared.PixelValueTransformationSequence = Sequence([_item(
            RescaleSlope=f"{slope:.10g}", RescaleIntercept=f"{inter:.10g}", RescaleType="US")])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
        ds.PerFrameFunctionalGroupsSequence = Sequence([
            _item(PlanePositionSequence=Sequence([_item(ImagePositionPatient=list(lps[:3, 3] + k * lps[:3, 2]))]))
            for k in order])
        ds.PixelData = np.ascontiguousarray(stored[:, :, order].transpose(2, 1, 0)).tobytes()
        path = folder / f"{prefix}{rng.integers(10**6)}"
        _save(ds, path, syntax)
        return [path]
    slices = [k for k in range(count) if k not in drop] + list(repeat)
    paths = []
    for n, k in enumerate(rng.permutation(len(slices))):
        k = slices[k]
        ds = _base(uids[0], number, MR_IMAGE, uids[1], uids[2])
        ds.InstanceNumber = count - k
        position = lps[:3, 3] + k * lps[:3, 2] + (shift or {}).get(k, 0.0) * normal
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        cosines = [*row, *col] if k not in turn else [*rotation((0, 0, 30)) @ row, *rotation((0, 0, 30)) @ col]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in cosines]
        ds.PixelSpacing = [f"{v:.8f}" for v in spacing]
        ds.SliceThickness = "9.99"  # wrong on purpose: spacing comes from positions
        ds.RescaleSlope = f"{slope:.10g}"
        ds.RescaleIntercept = f"{inter:.10g}"
        plane = stored[:, :, k].T
        if k in resize:
            plane = plane[:-2]
        ds.Rows, ds.Columns = plane.shape
        ds.PixelData = np.ascontiguousarray(plane).tobytes()
        path = folder / f"{prefix}{rng.integers(10**6):06d}{n}"
        _save(ds, path, syntax)
        paths.append(path)
    return paths


def _item(**values: Any) -> Dataset:
    item = Dataset()
    for key, value in values.items():
        setattr(item, key, value)
    return item


def write_non_image(path: Path, series_uid: str | None = None) -> Path:
    """A Basic Text SR (a non-image object) with the same patient, for skipping tests."""
    ds = _base(series_uid or generate_uid(), 99, "1.2.840.10008.5.1.4.1.1.88.11",
               generate_uid(), generate_uid())
    ds.Modality = "SR"
    for name in ("SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored",
                 "HighBit", "PixelRepresentation"):
        delattr(ds, name)
    _save(ds, path, ExplicitVRLittleEndian)
    return path


def dcm2niix() -> str:
    """The ``dcm2niix`` program; installed with apt-get when missing and running as root.

    ``make testdata`` installs it (Debian package ``dcm2niix``); without it the oracle tests
    fail (never skip) with this message.
    """
    import os
    import shutil
    import subprocess

    import pytest

    found = shutil.which("dcm2niix")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        for step in (["apt-get", "install", "-y", "-q", "dcm2niix"], ["apt-get", "update", "-q"],
                     ["apt-get", "install", "-y", "-q", "dcm2niix"]):
            subprocess.run(step, capture_output=True, timeout=300, check=False)
            if shutil.which("dcm2niix"):
                break
        found = shutil.which("dcm2niix")
    if found is None:
        pytest.fail("dcm2niix is not installed and could not be installed with apt-get: the DICOM "
                    "oracle tests need it (`apt-get install dcm2niix`, or `make testdata` as root)")
    return found


def convert_with_dcm2niix(series: Path, out: Path) -> nib.Nifti1Image:
    """dcm2niix's NIfTI of the one series in ``series`` (a folder), loaded with nibabel."""
    import subprocess

    out.mkdir(parents=True, exist_ok=True)
    run = subprocess.run([dcm2niix(), "-z", "n", "-b", "n", "-f", "%s", "-o", str(out), str(series)],
                         capture_output=True, text=True, timeout=120)
    made = sorted(out.glob("*.nii"))
    assert run.returncode == 0 and len(made) == 1, run.stdout + run.stderr
    return nib.load(made[0])


def in_ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A volume reoriented to the closest canonical (RAS) voxel order, with its affine."""
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data), affine))
    return np.asarray(img.dataobj), img.affine
