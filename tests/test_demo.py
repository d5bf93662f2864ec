"""Tests of volprep.demo: the demo dataset's layout, classes, geometry and determinism."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from volprep import demo, phantoms

SHAPE = (32, 32, 20)
SEED = 7


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo.write_demo(tmp_path_factory.mktemp("demo"), n_cases=30, shape=SHAPE, seed=SEED)


def _rows(root: Path) -> list[dict[str, str]]:
    with open(root / "labels.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _load(path: Path) -> nib.Nifti1Image:
    img = nib.load(path)
    assert isinstance(img, nib.Nifti1Image)
    return img


def _world(img: nib.Nifti1Image, voxels: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of voxel indices (n, 3)."""
    return nib.affines.apply_affine(img.affine, voxels)


# --------------------------------------------------------------------------- layout


def test_dataset_json_lists_every_case_with_existing_files(demo_dir: Path) -> None:
    meta = json.loads((demo_dir / "dataset.json").read_text())
    assert meta["tensorImageSize"] == "3D"
    assert meta["labels"] == {"0": "background", "1": "glioma", "2": "meningioma",
                              "3": "metastasis"}
    assert meta["numTraining"] == len(meta["training"]) == 30
    assert meta["test"] == []
    assert set(meta["modality"]) == {"0"}
    for entry in meta["training"]:
        for key in ("image", "label"):
            assert entry[key].startswith("./")
            assert (demo_dir / entry[key]).is_file()
    ids = [Path(e["image"]).name.removesuffix(".nii.gz") for e in meta["training"]]
    assert ids == [r["case_id"] for r in _rows(demo_dir)]
    assert sorted(p.name for p in (demo_dir / "imagesTr").iterdir()) == [f"{i}.nii.gz" for i in ids]


def test_labels_csv_has_exact_imbalanced_classes(demo_dir: Path) -> None:
    rows = _rows(demo_dir)
    assert list(rows[0]) == ["case_id", "subject", "label"]
    assert Counter(r["label"] for r in rows) == {"meningioma": 18, "glioma": 9, "metastasis": 3}
    assert all(re.fullmatch(r"demo_\d{3}[a-h]?", r["case_id"]) for r in rows)
    assert len({r["case_id"] for r in rows}) == len(rows)


def test_some_subjects_have_two_scans_of_one_class(demo_dir: Path) -> None:
    rows = _rows(demo_dir)
    by_subject: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_subject.setdefault(r["subject"], []).append(r)
    pairs = [scans for scans in by_subject.values() if len(scans) > 1]
    assert pairs, "no subject with two scans: grouped splits would not be exercised"
    for scans in pairs:
        assert len({s["label"] for s in scans}) == 1
        assert [s["case_id"] for s in scans] == [scans[0]["subject"] + "a",
                                                 scans[0]["subject"] + "b"]


def test_class_names_sort_like_class_ids() -> None:
    # Discovery numbers classes by sorted name; mask value - 1 must be that same id.
    assert list(demo.CLASS_NAMES) == sorted(demo.CLASS_NAMES)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 30, 31, 100])
def test_class_counts_follow_fractions_and_sum_to_n(n: int) -> None:
    counts = demo._class_counts(n)
    assert sum(counts) == n
    assert all(abs(c - n * f) < 1 for c, f in zip(counts, demo.CLASS_FRACTIONS, strict=True))
    cases = demo.plan_demo(n, SHAPE, seed=1)
    assert Counter(c.class_index for c in cases) == {
        i: c for i, c in enumerate(counts) if c
    }


# --------------------------------------------------------------------------- files


def test_images_and_masks_load_with_shared_geometry(demo_dir: Path) -> None:
    for row in _rows(demo_dir):
        img = _load(demo_dir / "imagesTr" / f"{row['case_id']}.nii.gz")
        msk = _load(demo_dir / "labelsTr" / f"{row['case_id']}.nii.gz")
        assert img.shape == msk.shape == SHAPE
        assert img.get_data_dtype() == np.int16
        assert msk.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(img.affine, msk.affine)
        header = img.header
        assert int(header["qform_code"]) == 1 and int(header["sform_code"]) == 2
        assert header.get_xyzt_units()[0] == "mm"
        np.testing.assert_allclose(img.get_qform(), img.affine, atol=1e-4)
        data = np.asarray(img.dataobj)
        assert data.max() > 500 and data.min() >= 0


def test_mask_holds_exactly_the_case_class_value(demo_dir: Path) -> None:
    value_of = {name: i + 1 for i, name in enumerate(demo.CLASS_NAMES)}
    for row in _rows(demo_dir):
        mask = np.asarray(_load(demo_dir / "labelsTr" / f"{row['case_id']}.nii.gz").dataobj)
        assert set(np.unique(mask).tolist()) == {0, value_of[row["label"]]}, row


def test_spacing_is_anisotropic_and_varies_with_an_origin_offset(demo_dir: Path) -> None:
    zooms, origins = [], []
    for row in _rows(demo_dir):
        img = _load(demo_dir / "imagesTr" / f"{row['case_id']}.nii.gz")
        z = img.header.get_zooms()
        assert z[0] == z[1] and z[2] > 1.5 * z[0]  # thick slices along the last file axis
        zooms.append(z)
        origins.append(_world(img, np.array([(np.array(SHAPE) - 1) / 2]))[0])
    assert len(set(zooms)) > 10
    assert np.abs(np.asarray(origins)).max() > 5.0  # grid centres are not all at the origin


# --------------------------------------------------------------------------- orientation


def test_non_ras_cases_are_present(demo_dir: Path) -> None:
    codes = Counter(
        "".join(nib.aff2axcodes(_load(demo_dir / "imagesTr" / f"{r['case_id']}.nii.gz").affine))
        for r in _rows(demo_dir)
    )
    assert codes["RAS"] > 0
    assert {"LAS", "LPS", "LSA"} <= set(codes)  # a flip, two flips, and a permuted (coronal) scan


def test_canonical_orientation_gives_back_the_ras_phantom(demo_dir: Path) -> None:
    for case in demo.plan_demo(30, SHAPE, SEED):
        img = _load(demo_dir / "imagesTr" / f"{case.case_id}.nii.gz")
        msk = _load(demo_dir / "labelsTr" / f"{case.case_id}.nii.gz")
        assert "".join(nib.aff2axcodes(img.affine)) == case.orientation
        canon, canon_mask = nib.as_closest_canonical(img), nib.as_closest_canonical(msk)
        assert nib.aff2axcodes(canon.affine) == ("R", "A", "S")
        image, mask, affine = demo.render_case(case, SEED)
        np.testing.assert_array_equal(np.asarray(canon.dataobj), image)
        np.testing.assert_array_equal(np.asarray(canon_mask.dataobj), mask)
        np.testing.assert_allclose(canon.affine, affine, atol=1e-4)


def test_every_head_is_upright_with_the_fiducial_on_its_right(demo_dir: Path) -> None:
    # Independent of render_case: the brightest voxel is the capsule taped on the right of
    # the head, so in world space it must lie right (+x) of the head's centre.
    for row in _rows(demo_dir):
        img = nib.as_closest_canonical(
            _load(demo_dir / "imagesTr" / f"{row['case_id']}.nii.gz"))
        data = np.asarray(img.dataobj)
        head = np.argwhere(data > 0.3 * np.percentile(data, 99))
        centre = _world(img, head).mean(axis=0)
        half_width = np.ptp(_world(img, head)[:, 0]) / 2
        fiducial = _world(img, np.argwhere(data == data.max())[:1])[0]
        assert fiducial[0] - centre[0] > 0.6 * half_width, row["case_id"]
        assert abs(fiducial[1] - centre[1]) < 0.5 * half_width, row["case_id"]


def test_two_scans_of_a_subject_place_the_lesion_at_the_same_spot(demo_dir: Path) -> None:
    cases = demo.plan_demo(30, SHAPE, SEED)
    by_subject: dict[str, list[demo.DemoCase]] = {}
    for c in cases:
        by_subject.setdefault(c.subject, []).append(c)
    compared = 0
    for scans in by_subject.values():
        if len(scans) < 2 or scans[0].orientation == scans[1].orientation:
            continue
        spots = []
        for c in scans:
            msk = _load(demo_dir / "labelsTr" / f"{c.case_id}.nii.gz")
            lesion = _world(msk, np.argwhere(np.asarray(msk.dataobj) > 0))
            spots.append(lesion.mean(axis=0) - np.asarray(c.offset_mm))
        tolerance = max(max(c.file_spacing) for c in scans)
        assert np.linalg.norm(spots[0] - spots[1]) < tolerance
        compared += 1
    assert compared > 0, "no subject scanned twice in different orientations"


def test_reorient_ras_keeps_world_positions() -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 100, (4, 5, 6)).astype(np.int16)
    affine = demo._ras_affine(data.shape, (1.0, 2.0, 3.0), (10.0, -5.0, 2.0))
    for codes in ("RAS", "LAS", "LPS", "LSA", "PIR"):
        stored, stored_affine = demo.reorient_ras(data, affine, codes)
        assert "".join(nib.aff2axcodes(stored_affine)) == codes
        # every stored voxel sits at the world position of the RAS voxel holding its value
        idx = np.argwhere(np.ones(stored.shape, bool))
        world = nib.affines.apply_affine(stored_affine, idx)
        back = np.rint(nib.affines.apply_affine(np.linalg.inv(affine), world)).astype(int)
        np.testing.assert_array_equal(stored[tuple(idx.T)], data[tuple(back.T)])


# --------------------------------------------------------------------------- determinism


def test_two_runs_write_byte_identical_files(demo_dir: Path, tmp_path: Path) -> None:
    again = demo.write_demo(tmp_path / "again", n_cases=30, shape=SHAPE, seed=SEED)
    first = sorted(p.relative_to(demo_dir) for p in demo_dir.rglob("*") if p.is_file())
    second = sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert first == second and len(first) == 2 * 30 + 2
    for rel in first:
        assert (demo_dir / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_another_seed_gives_other_data(demo_dir: Path, tmp_path: Path) -> None:
    other = demo.write_demo(tmp_path / "other", n_cases=30, shape=SHAPE, seed=SEED + 1)
    name = "imagesTr/demo_000.nii.gz"
    assert (demo_dir / name).read_bytes() != (other / name).read_bytes()


def test_write_case_nifti_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    affine = np.diag([-0.9, 0.9, 3.0, 1.0])
    affine[:3, 3] = [40.0, -30.0, 12.5]
    a = demo.write_case_nifti(tmp_path / "a.nii.gz", data, affine)
    b = demo.write_case_nifti(tmp_path / "b.nii.gz", data, affine)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes()[:2] == b"\x1f\x8b" and a.read_bytes()[4:8] == b"\0\0\0\0"  # mtime 0
    img = _load(a)
    np.testing.assert_array_equal(np.asarray(img.dataobj), data)
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    plain = demo.write_case_nifti(tmp_path / "c.nii", data, affine)
    np.testing.assert_array_equal(np.asarray(_load(plain).dataobj), data)


# --------------------------------------------------------------------------- phantoms


@pytest.mark.parametrize("lesion_class", [None, 0, 1, 2])
def test_head_phantom_types_and_mask_values(lesion_class: int | None) -> None:
    shape = (40, 44, 24)
    image, mask = phantoms.head_phantom(shape, (1.5, 1.5, 3.0), np.random.default_rng(3), lesion_class)
    assert image.shape == mask.shape == shape
    assert image.dtype == np.int16 and mask.dtype == np.uint8
    assert image.flags.c_contiguous
    values = set(np.unique(mask).tolist())
    assert values == ({0} if lesion_class is None else {0, lesion_class + 1})


def test_head_phantom_is_a_function_of_its_rng() -> None:
    args = ((24, 24, 16), (2.0, 2.0, 4.0))
    a = phantoms.head_phantom(*args, np.random.default_rng([1, 2]), 1)
    b = phantoms.head_phantom(*args, np.random.default_rng([1, 2]), 1)
    c = phantoms.head_phantom(*args, np.random.default_rng([1, 3]), 1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_head_phantom_has_tissue_layers_and_a_dark_background() -> None:
    shape = (64, 64, 48)
    rng = np.random.default_rng(11)
    anatomy = phantoms.sample_anatomy(rng, (128.0, 128.0, 144.0), None)
    image, _ = phantoms.head_phantom(shape, (2.0, 2.0, 3.0), rng, anatomy=anatomy)
    tissue, _ = phantoms._render_anatomy(anatomy, shape, (2.0, 2.0, 3.0))
    wm = np.median(image[tissue == 1.0])
    gm = np.median(image[np.isclose(tissue, 0.62)])
    csf = np.median(image[np.isclose(tissue, 0.22)])
    air = np.median(image[tissue == 0.0])
    assert wm > 1.3 * gm > 1.3 * 2 * csf > 1.3 * 2 * air
    assert (tissue == 0.0).mean() > 0.2  # the head does not fill the field of view


def test_lesion_classes_look_different() -> None:
    shape, spacing = (64, 64, 48), (2.0, 2.0, 3.0)
    looks = {}
    for cls in range(3):
        rng = np.random.default_rng([5, cls])
        anatomy = phantoms.sample_anatomy(rng, (128.0, 128.0, 144.0), cls)
        tissue, mask = phantoms._render_anatomy(anatomy, shape, spacing)
        looks[cls] = (int((mask > 0).sum()), sorted({round(float(x), 2) for x in tissue[mask > 0]}))
    glioma, meningioma, metastasis = (looks[demo.CLASS_NAMES.index(n)]
                                      for n in ("glioma", "meningioma", "metastasis"))
    assert metastasis[0] < meningioma[0] and metastasis[0] < glioma[0]  # small spots
    assert {0.35, 1.45} <= set(glioma[1])  # necrotic core, bright ring
    assert meningioma[1] == [1.3]  # homogeneous


def test_anatomy_is_shared_by_a_second_scan() -> None:
    anatomy = phantoms.sample_anatomy(np.random.default_rng(0), (120.0, 120.0, 120.0), 2)
    _, m1 = phantoms.head_phantom((40, 40, 40), (3.0, 3.0, 3.0), np.random.default_rng(1),
                              anatomy=anatomy)
    _, m2 = phantoms.head_phantom((40, 40, 40), (3.0, 3.0, 3.0), np.random.default_rng(2),
                              anatomy=anatomy)
    np.testing.assert_array_equal(m1, m2)
    with pytest.raises(ValueError, match="disagrees"):
        phantoms.head_phantom((8, 8, 8), (1.0, 1.0, 1.0), np.random.default_rng(0), 1,
                          anatomy=anatomy)


@pytest.mark.parametrize("bad", [3, -1])
def test_unknown_lesion_class_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="lesion_class"):
        phantoms.head_phantom((8, 8, 8), (1.0, 1.0, 1.0), np.random.default_rng(0), bad)


def test_bad_demo_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_cases"):
        demo.write_demo(tmp_path, n_cases=0)
    with pytest.raises(ValueError, match="seed"):
        demo.write_demo(tmp_path, seed=-1)


def test_tiny_lesions_still_mark_a_voxel() -> None:
    # A metastasis far smaller than a voxel must still leave a mask (and so a class) behind.
    _, mask = phantoms.head_phantom((12, 12, 8), (12.0, 12.0, 20.0), np.random.default_rng(4), 2)
    assert (mask == 3).any()


def test_write_big_heads_writes_ras_1mm_int16(tmp_path: Path) -> None:
    paths = demo.write_big_heads(tmp_path, 2, shape=(24, 24, 16), seed=1)
    assert [p.name for p in paths] == ["head_000.nii.gz", "head_001.nii.gz"]
    for p in paths:
        img = _load(p)
        assert img.shape == (24, 24, 16) and img.get_data_dtype() == np.int16
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        assert img.header.get_zooms() == (1.0, 1.0, 1.0)
    assert paths[0].read_bytes() != paths[1].read_bytes()


def test_default_demo_writes_the_documented_dataset(tmp_path: Path) -> None:
    root = demo.write_demo(tmp_path / "d", n_cases=5)
    img = _load(root / "imagesTr" / "demo_000.nii.gz")
    assert img.shape == demo.DEFAULT_SHAPE
    assert len(_rows(root)) == 5
