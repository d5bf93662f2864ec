"""Tests of the real-anatomy corpus (tests/realdata.py), read back with nibabel alone.

They hold the corpus to what its docstring promises (layouts, label grids, atlas value
gaps, varied orientations and stored types, the 255 mask, determinism, one build under
concurrency, clear errors) and check that anatomy and labels line up with a fact of T1
images that no code here computes: white matter is brighter than grey matter.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import realdata as rd

MSD_TASKS = ("tissue", "atlas", "aal", "grid")
SEG_TASKS = (*MSD_TASKS, "labels255")


def _load(path: Path) -> nib.Nifti1Image:
    img = nib.load(path)
    assert isinstance(img, nib.Nifti1Image), path
    return img


def _scaling(img: nib.Nifti1Image) -> tuple[float, float]:
    """The stored scl_slope/scl_inter (nibabel moves them from the header to the proxy)."""
    proxy = img.dataobj
    assert isinstance(proxy, nib.arrayproxy.ArrayProxy)
    return float(proxy.slope), float(proxy.inter)


def _seg_pairs(root: Path, name: str) -> list[tuple[Path, Path]]:
    """(image, label) paths of a segmentation task, as its layout lists them."""
    folder = root / name
    if name == "labels255":
        return [(p, folder / "labelsTr" / p.name) for p in sorted((folder / "imagesTr").iterdir())]
    meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    return [(folder / e["image"], folder / e["label"]) for e in meta["training"]]


def _mixed_rows(root: Path) -> list[dict[str, str]]:
    with open(root / "mixed" / "mixed.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _images(root: Path, name: str) -> list[Path]:
    if name == "mixed":
        return [root / "mixed" / r["image"] for r in _mixed_rows(root)]
    return [image for image, _ in _seg_pairs(root, name)]


# ---------------------------------------------------------------- layout and grids


@pytest.mark.parametrize("name", SEG_TASKS)
def test_labels_are_integers_on_the_image_grid(realdata: Path, name: str) -> None:
    pairs = _seg_pairs(realdata, name)
    assert pairs
    for image_path, label_path in pairs:
        image, labels = _load(image_path), _load(label_path)
        assert image.shape == labels.shape, image_path.name
        assert np.allclose(image.affine, labels.affine, atol=1e-3), image_path.name
        assert labels.get_data_dtype().kind in "iu", label_path
        # Labels are stored unscaled: what is on disk is the label value.
        assert _scaling(labels) == (1.0, 0.0), label_path
        values = np.asanyarray(labels.dataobj)
        assert values.min() == 0 and values.max() > 0, label_path
        assert np.prod(image.shape) <= 100 * 120 * 100 and max(image.shape) <= 120, image_path
        assert np.ptp(image.get_fdata()) > 0, image_path


@pytest.mark.parametrize("name", MSD_TASKS)
def test_dataset_json_lists_existing_cases_and_names_background(realdata: Path, name: str) -> None:
    meta = json.loads((realdata / name / "dataset.json").read_text(encoding="utf-8"))
    assert meta["labels"]["0"] == "background"
    assert meta["modality"] == {"0": "T1"}
    assert meta["numTraining"] == len(meta["training"]) > 0
    for entry in meta["training"]:
        assert entry["image"].startswith("./imagesTr/") and entry["label"].startswith("./labelsTr/")
        assert (realdata / name / entry["image"]).is_file()
        assert (realdata / name / entry["label"]).is_file()


def test_task_paths_and_unknown_names(realdata: Path) -> None:
    assert rd.task("tissue") == realdata / "tissue"
    assert rd.task("mixed") == realdata / "mixed" / "mixed.csv"
    with pytest.raises(ValueError, match="unknown realdata task 'nope'"):
        rd.task("nope")
    assert set(json.loads((realdata / "SOURCES.json").read_text())) == set(rd.SOURCES)


# ---------------------------------------------------------------- anatomy


@pytest.mark.parametrize("name", ("tissue", "grid", "labels255"))
def test_white_matter_is_brighter_than_grey_matter(realdata: Path, name: str) -> None:
    # A T1 fact independent of this code: it fails if a mask is flipped or shifted
    # against its image (e.g. an orientation applied to one of the two only).
    for image_path, label_path in _seg_pairs(realdata, name):
        image = _load(image_path).get_fdata()
        labels = np.asanyarray(_load(label_path).dataobj)
        white, grey = np.median(image[labels == 2]), np.median(image[labels == 1])
        other = np.median(image[labels == 0])
        assert white - grey > 0.15 * (white - other) > 0, image_path.name


@pytest.mark.parametrize("name", ("atlas", "aal"))
def test_atlas_labels_lie_on_the_brain(realdata: Path, name: str) -> None:
    for image_path, label_path in _seg_pairs(realdata, name):
        image = _load(image_path).get_fdata()
        labels = np.asanyarray(_load(label_path).dataobj)
        floor = image.min()  # stored offsets differ between cases
        inside, outside = image[labels > 0] - floor, image[labels == 0] - floor
        assert inside.mean() > 1.5 * outside.mean(), image_path.name


def test_tissue_labels_and_subjects(realdata: Path) -> None:
    meta = json.loads((realdata / "tissue" / "dataset.json").read_text(encoding="utf-8"))
    assert meta["labels"] == {"0": "background", "1": "gray matter", "2": "white matter"}
    with open(realdata / "tissue" / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["case_id"] for r in rows] == [Path(e["image"]).name.removesuffix(".nii.gz")
                                           for e in meta["training"]]
    subjects = [r["subject"] for r in rows]
    assert len(set(subjects)) < len(subjects)  # some cases share a subject


def test_atlas_has_hundreds_of_sparse_values_all_declared(realdata: Path) -> None:
    meta = json.loads((realdata / "atlas" / "dataset.json").read_text(encoding="utf-8"))
    declared = {int(k) for k in meta["labels"]}
    per_case = [set(np.unique(np.asanyarray(_load(lab).dataobj)).tolist())
                for _, lab in _seg_pairs(realdata, "atlas")]
    present = set().union(*per_case)
    assert len(present) > 200 and max(present) > 1000
    assert len(present) < max(present) + 1  # values have gaps
    assert present <= declared
    assert any(declared - values for values in per_case)  # declared labels absent from a case
    assert all(meta["labels"][str(v)] == f"NeuroMaps_{v}" for v in declared - {0})


def test_aal_names_come_from_the_atlas_text(realdata: Path) -> None:
    meta = json.loads((realdata / "aal" / "dataset.json").read_text(encoding="utf-8"))
    assert len(meta["labels"]) == 117
    assert meta["labels"]["1"] == "Precentral_L" and meta["labels"]["116"] == "Vermis_10"


# ---------------------------------------------------------------- variety


@pytest.mark.parametrize(("name", "orientations"), [
    ("tissue", 5), ("atlas", 5), ("aal", 5), ("mixed", 3), ("grid", 2), ("labels255", 3)])
def test_cases_differ_in_orientation_and_storage(realdata: Path, name: str, orientations: int) -> None:
    images = [_load(p) for p in _images(realdata, name)]
    axcodes = {nib.aff2axcodes(img.affine) for img in images}
    assert len(axcodes) >= orientations, axcodes
    if name != "grid":  # grid is one scan stored twice
        assert len({img.shape for img in images}) > 1
        storage = {(img.get_data_dtype().name, _scaling(img) != (1.0, 0.0)) for img in images}
        assert len(storage) >= 3, storage
    if name in ("tissue", "atlas", "aal", "mixed"):
        assert any(_scaling(img) != (1.0, 0.0) for img in images)


def test_a_coronal_or_permuted_case_exists(realdata: Path) -> None:
    codes = {nib.aff2axcodes(_load(p).affine) for p in _images(realdata, "tissue")}
    assert any(c[2] not in "SI" for c in codes), codes


def test_labels255_has_one_mask_with_255(realdata: Path) -> None:
    assert not (realdata / "labels255" / "dataset.json").exists()
    values = [set(np.unique(np.asanyarray(_load(lab).dataobj)).tolist())
              for _, lab in _seg_pairs(realdata, "labels255")]
    assert len(values) == 4
    assert sum(255 in v for v in values) == 1
    assert all(v - {255} == {0, 1, 2} for v in values)


def test_mixed_csv_mixes_species_spacings_and_types(realdata: Path) -> None:
    rows = _mixed_rows(realdata)
    assert list(rows[0]) == ["case_id", "image", "label", "subject"]
    classes = [r["label"] for r in rows]
    assert {c: classes.count(c) for c in set(classes)} == {"human": 6, "macaque": 4, "human-2mm": 2}
    assert len({r["subject"] for r in rows}) < len(rows)
    images = [_load(realdata / "mixed" / r["image"]) for r in rows]
    assert not any(Path(r["image"]).is_absolute() or ".." in r["image"] for r in rows)
    assert {round(float(img.header.get_zooms()[0]), 1) for img in images} == {0.5, 1.0, 2.0}
    assert len({img.get_data_dtype().name for img in images}) >= 3


# ---------------------------------------------------------------- building


def test_rebuilding_gives_byte_identical_files(realdata: Path, tmp_path: Path) -> None:
    rebuilt = rd.build(tmp_path / "corpus")
    for name in rd.TASKS:
        assert _digest(rebuilt / name) == _digest(realdata / name), (
            f"{name}: a fresh build differs from the cached corpus: if realdata.py changed what "
            f"it builds, bump realdata.VERSION (now {rd.VERSION})")
    assert (rebuilt / "COMPLETE").read_bytes() == (realdata / "COMPLETE").read_bytes()


@pytest.mark.slow
def test_concurrent_builds_make_one_corpus(realdata: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "src").symlink_to(rd.base_dir() / "src")  # cached sources: no download
    env = {**os.environ, rd.ENV: str(base)}
    script = Path(rd.__file__)
    procs = [subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert {p.name for p in base.iterdir()} == {".lock", rd.VERSION, "src"}  # no temp folder left
    for name in rd.TASKS:
        assert _digest(base / rd.VERSION / name) == _digest(realdata / name)


def test_a_source_that_cannot_be_fetched_is_named(
        realdata: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", "network unreachable")

    monkeypatch.setattr(rd, "_run", offline)
    monkeypatch.setattr(rd, "SYSTEM_TEMPLATES", tmp_path / "no-mricron")
    monkeypatch.setenv(rd.ENV, str(tmp_path / "base"))
    with pytest.raises(RuntimeError, match=r"nilearn==0\.14\.1 wheel.*network unreachable"):
        rd.corpus()
    # With the wheel in place, the Debian package is the one missing.
    wheel = rd.base_dir() / "src" / rd.NILEARN_WHEEL
    wheel.symlink_to(realdata.parent / "src" / rd.NILEARN_WHEEL)
    with pytest.raises(RuntimeError, match="Debian package mricron-data"):
        rd.corpus()
    assert not (rd.base_dir() / rd.VERSION).exists()


def test_an_installed_mricron_data_is_used_without_downloading(
        realdata: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = realdata.parent / "src" / "mricron" / "usr" / "share" / "mricron" / "templates"
    monkeypatch.setattr(rd, "SYSTEM_TEMPLATES", cached if cached.is_dir() else rd.SYSTEM_TEMPLATES)
    monkeypatch.setattr(rd, "_run", lambda cmd, cwd: pytest.fail(f"ran {cmd}"))
    src = tmp_path / "src"
    src.mkdir()
    (src / rd.NILEARN_WHEEL).symlink_to(realdata.parent / "src" / rd.NILEARN_WHEEL)
    sources = rd._read_sources(src)
    assert set(sources) == set(rd.SOURCES)
    assert sorted(p.name for p in src.iterdir()) == [rd.NILEARN_WHEEL]
