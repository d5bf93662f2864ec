"""A job over DICOM series: good and broken series mixed, labels on the DICOM grid, no
patient identifier anywhere.

The dataset is an ``imagesTr``/``labelsTr`` folder whose images are DICOM series folders
(oblique MNI152 heads written with pydicom, carrying a distinctive PatientName, PatientID
and birth date, and the name in SeriesDescription too), one folder holding two series
(split into two cases), and broken series (a slice missing, a slice repeated). Labels are
NIfTI tissue masks on the DICOM grid, one of them stored in dcm2niix's voxel order
(rows flipped). The job must exit 3 with one line per broken series, shard the good ones
(``volprep verify`` passes), and no file under OUT nor the job's output may hold the
patient's identifiers.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_corpus import (
    BIRTH_DATE,
    PATIENT_ID,
    PATIENT_NAME,
    oblique_head,
    stored_values,
    write_series,
)
from realdata import task

from volprep.cases import discover
from volprep.cli import main
from volprep.manifest import read_manifest

SHAPE, SPACING = (30, 34, 26), (2.0, 2.0, 2.4)


def _dataset(root: Path) -> dict[str, Path]:
    """imagesTr/ of DICOM series folders and labelsTr/ of NIfTI masks; the broken series'
    first files (what their failure lines name)."""
    grid = task("grid")
    image = sorted((grid / "imagesTr").glob("*.nii.gz"))[0]
    mask = sorted((grid / "labelsTr").glob("*.nii.gz"))[0]
    images, labels = root / "imagesTr", root / "labelsTr"
    labels.mkdir(parents=True)
    broken = {}
    for n, degrees in enumerate([(10.0, 0.0, 5.0), (-6.0, 8.0, 0.0), (0.0, -12.0, 15.0), (4.0, 4.0, -9.0)]):
        values, affine = oblique_head(image, SHAPE, SPACING, degrees)
        tissue, _ = oblique_head(mask, SHAPE, SPACING, degrees, order=0)
        stored = stored_values(values, 0.25, -50.0)
        name = f"head{n}"
        write_series(images / name, stored, affine, slope=0.25, inter=-50.0, seed=n)
        labelled = tissue.astype(np.uint8)
        if n == 0:  # dcm2niix's order: rows flipped, the affine to match
            flip = np.eye(4)
            flip[1, 1], flip[1, 3] = -1, SHAPE[1] - 1
            labelled, affine = labelled[:, ::-1, :], affine @ flip
        nib.save(nib.Nifti1Image(labelled, affine), labels / f"{name}.nii.gz")
        if n == 1:  # the same head again, with two breakages and as a two-series folder
            broken["gap"] = min(write_series(images / "gap", stored, affine, drop=(9,)))
            broken["dup"] = min(write_series(images / "dup", stored, affine, repeat=(4,)))
            for tag, number in (("s4", 4), ("s5", 5)):
                write_series(images / "two", stored, affine, number=number, prefix=f"N{number}_")
                nib.save(nib.Nifti1Image(labelled, affine), labels / f"two_{tag}.nii.gz")
            for name in ("gap", "dup"):
                nib.save(nib.Nifti1Image(labelled, affine), labels / f"{name}.nii.gz")
    return broken


@pytest.mark.slow
def test_job_mixing_good_and_broken_series(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    broken = _dataset(tmp_path / "data")
    ids = [c.case_id for c in discover(tmp_path / "data").cases]
    assert ids == ["dup", "gap", "head0", "head1", "head2", "head3", "two_s4", "two_s5"]
    config = tmp_path / "job.toml"
    config.write_text('[job]\nseed = 3\nsplits = { train = 0.5, val = 0.5 }\n'
                      '[preprocess]\nreduce = "downsample"\nfactor = 2\n')
    out = tmp_path / "out"
    code = main(["shards", str(tmp_path / "data"), "--out", str(out), "--config", str(config),
                 "--workers", "2"])
    captured = capfd.readouterr()
    assert code == 3, captured.err
    lines = [line for line in captured.err.splitlines() if line.startswith("case ")]
    assert lines == [
        f"case dup: {broken['dup'].parent / _twin(broken['dup'])}: DICOM series 3 (27 files): "
        f"duplicate slices: {_pair(broken['dup'])} share a position (1 duplicate(s))",
        f"case gap: {_before_gap(broken['gap'])}: DICOM series 3 (25 files): missing slices: a gap "
        "of 4.8 mm after slice 9 of 25 where the spacing is 2.4 mm (about 1 missing)",
    ]
    manifest = read_manifest(out)
    assert sorted(f.case for f in manifest.failures) == ["dup", "gap"]
    assert sum(s.num_records for s in manifest.splits.values()) >= 6  # the good ones (and copies)
    assert main(["verify", str(out)]) == 0
    identifiers = [PATIENT_NAME, PATIENT_ID, BIRTH_DATE, *PATIENT_NAME.split("^")]
    leaks = [f"{path}: {word}" for path in sorted(out.rglob("*")) if path.is_file()
             for word in identifiers if word.encode() in path.read_bytes()]
    output = captured.out + captured.err + capfd.readouterr().out
    leaks += [f"job output: {word}" for word in identifiers if word in output]
    assert leaks == []


def _positions(first: Path) -> list[tuple[float, str]]:
    import pydicom

    series = first.parent
    normal = None
    found = []
    for path in sorted(series.iterdir()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        cosines = np.array([float(v) for v in ds.ImageOrientationPatient])
        normal = np.cross(cosines[:3], cosines[3:]) if normal is None else normal
        found.append((round(float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)), 3),
                      path.name))
    return sorted(found)


def _pair(first: Path) -> str:
    found = _positions(first)
    twins = next([a, b] for a, b in zip(found, found[1:], strict=False) if a[0] == b[0])
    return f"{twins[0][1]} and {twins[1][1]}"


def _twin(first: Path) -> str:
    return _pair(first).split(" and ")[1]


def _before_gap(first: Path) -> Path:
    found = _positions(first)
    return first.parent / found[8][1]


def test_series_can_be_named_after_their_uid_not_their_folder(tmp_path: Path) -> None:
    """Exports name folders after patients: ``dicom_case_id = "series_uid"`` names each case
    after a hash of its SeriesInstanceUID (computed here with hashlib, from pydicom's read)."""
    import hashlib

    import pydicom

    grid = task("grid")
    image = sorted((grid / "imagesTr").glob("*.nii.gz"))[0]
    values, affine = oblique_head(image, (20, 22, 12), SPACING, (5.0, 0.0, 0.0))
    stored = stored_values(values, 0.25, -50.0)
    data = tmp_path / "data"
    write_series(data / "DOE_JOHN", stored, affine, slope=0.25, inter=-50.0, seed=1)
    write_series(data / "ROE_JANE", stored, affine, slope=0.25, inter=-50.0, seed=2)
    write_series(data / "ROE_JANE", stored, affine, number=7, seed=3, prefix="B")  # a second series
    expected = set()
    for path in data.rglob("*"):
        if path.is_file():
            uid = str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
            expected.add("dcm-" + hashlib.sha256(uid.encode()).hexdigest()[:12])
    assert len(expected) == 3
    assert {c.case_id for c in discover(data).cases} == {"DOE_JOHN", "ROE_JANE_s3", "ROE_JANE_s7"}
    assert {c.case_id for c in discover(data, folder_ids="uid").cases} == expected
    config = tmp_path / "job.toml"
    config.write_text('[job]\nsplits = { train = 1.0 }\n[read]\ndicom_case_id = "series_uid"\n')
    out = tmp_path / "out"
    assert main(["shards", str(data), "--out", str(out), "--config", str(config), "--workers", "1",
                 "--quiet", "--no-report"]) == 0
    from volprep.records import iter_records

    manifest = read_manifest(out)
    found = {manifest.features.decode(record, ("case_id",))["case_id"]
             for shard in manifest.splits["train"].shards for record in iter_records(out / shard.file)}
    assert {c.decode() if isinstance(c, bytes) else c for c in found} == expected
    # What is shared with the data (the manifest and the shards) names no folder; the cache,
    # local working state, keeps each entry's source path for messages.
    shared = [out / "manifest.json", *(out / s.file for s in manifest.splits["train"].shards)]
    assert [str(p) for p in shared if b"DOE" in p.read_bytes() or b"ROE_" in p.read_bytes()] == []
