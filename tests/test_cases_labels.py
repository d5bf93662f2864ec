"""Tests of class labels in discovery: a labels table that lists the cases, unlabelled cases in a
classification dataset, and class ids (0..N-1, or declared in dataset.json / classes.csv)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cases import ids, make_msd, write_json, write_nifti, write_text

from volprep.cases import discover
from volprep.errors import DatasetError

# ---------------------------------------------------------------- a labels table listing the cases


def test_labels_csv_image_column_points_into_a_subfolder(tmp_path: Path) -> None:
    write_nifti(tmp_path / "images" / "x.nii.gz")
    write_nifti(tmp_path / "images" / "y.nii.gz")
    write_text(tmp_path / "labels.csv", "image,label,subject\nimages/x.nii.gz,benign,s1\n./images/y.nii.gz,malignant,s1\n")
    ds = discover(tmp_path)
    assert ds.layout == "folder" and ds.problems == ()
    assert [(c.case_id, c.images, c.label, c.subject) for c in ds.cases] == [
        ("x", (tmp_path / "images" / "x.nii.gz",), 0, "s1"),
        ("y", (tmp_path / "images" / "y.nii.gz",), 1, "s1"),
    ]
    assert ds.class_names == ("benign", "malignant")


def test_labels_csv_listing_follows_the_csv_path_rules(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_nifti(root / "images" / "x.nii.gz")
    write_nifti(root / "images" / "._y.nii.gz")
    write_nifti(tmp_path / "secret.nii.gz")
    write_text(root / "labels.csv", "image\nimages/x.nii.gz\nimages/._y.nii.gz\n../secret.nii.gz\n")
    ds = discover(root)
    assert ids(ds) == ["x"]
    why = {case_id: problem for case_id, _, problem in ds.problems}
    assert "hidden file" in why["__y"] and "labels.csv line 3" in why["__y"]
    assert "climbs out of the dataset folder" in why["secret"]


def test_labels_csv_listing_and_volumes_of_the_folder_itself(tmp_path: Path) -> None:
    write_nifti(tmp_path / "images" / "x.nii.gz")
    write_nifti(tmp_path / "top.nii.gz")       # listed by its name: one case, not two
    write_nifti(tmp_path / "extra.nii.gz")     # not listed: a case without a row
    write_text(tmp_path / "labels.csv", "image,case_id\nimages/x.nii.gz,\ntop.nii.gz,renamed\n")
    ds = discover(tmp_path)
    assert [(c.case_id, c.images[0].relative_to(tmp_path).as_posix()) for c in ds.cases] == [
        ("extra", "extra.nii.gz"), ("renamed", "top.nii.gz"), ("x", "images/x.nii.gz"),
    ]
    assert ds.class_names is None and ds.problems == ()

    write_nifti(tmp_path / "x.nii.gz")  # the folder's own x and the listed images/x: ambiguous
    with pytest.raises(DatasetError, match=r"duplicate case id 'x': x\.nii\.gz and labels\.csv line 2"):
        discover(tmp_path)


def test_labels_csv_image_row_merged_by_case_id_when_image_empty(tmp_path: Path) -> None:
    write_nifti(tmp_path / "images" / "x.nii.gz")
    write_nifti(tmp_path / "y.nii.gz")
    write_text(tmp_path / "labels.csv", "case_id,image,label\nx,images/x.nii.gz,a\ny,,b\n")
    ds = discover(tmp_path)
    assert [(c.case_id, c.label) for c in ds.cases] == [("x", 0), ("y", 1)]


# ---------------------------------------------------------------- unlabelled cases


def test_unlabelled_cases_fail_by_default(tmp_path: Path) -> None:
    root = make_msd(tmp_path, ["c1", "c2", "c3", "c4"], labels_csv="case_id,label\nc1,a\nc3,b\n")
    ds = discover(root)
    assert ids(ds) == ["c1", "c3"]
    why = "no row in labels.csv (a classification dataset: every case needs a class label)"
    assert ds.problems == (("c2", str(root / "labels.csv"), why), ("c4", str(root / "labels.csv"), why))
    assert ds.class_names == ("a", "b") and ds.notes == ()


def test_unlabelled_cases_skipped_on_request(tmp_path: Path) -> None:
    write_nifti(tmp_path / "p1.nii.gz")
    write_nifti(tmp_path / "p2.nii.gz")
    write_nifti(tmp_path / "p3.nii.gz")
    write_text(tmp_path / "labels.tsv", "case_id\tlabel\np2\t0\n")
    ds = discover(tmp_path, unlabelled="skip")
    assert ids(ds) == ["p2"] and ds.problems == ()
    assert ds.notes == ('2 case(s) without a row in labels.tsv excluded ([job] unlabelled = "skip")',)
    assert ds.class_names == ("0",)


def test_empty_label_cell_in_a_csv_is_unlabelled(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        write_nifti(tmp_path / f"{name}.nii.gz")
    table = write_text(tmp_path / "cases.csv", "image,label\na.nii.gz,x\nb.nii.gz,\nc.nii.gz,y\n")
    ds = discover(table)
    assert ids(ds) == ["a", "c"]
    assert ds.problems == (("b", str(table), "no class label in cases.csv line 3 "
                            "(a classification dataset: every case needs a class label)"),)
    ds = discover(table, unlabelled="skip")
    assert ids(ds) == ["a", "c"]
    assert ds.notes == ('1 case(s) without a class label in cases.csv excluded ([job] unlabelled = "skip")',)


def test_dataset_without_class_labels_is_unaffected(tmp_path: Path) -> None:
    root = make_msd(tmp_path, ["c1", "c2", "c3"], labels_csv="case_id,subject\nc1,s1\n")
    ds = discover(root)
    assert ids(ds) == ["c1", "c2", "c3"] and ds.problems == () and ds.notes == ()
    assert ds.class_names is None and [c.subject for c in ds.cases] == ["s1", "c2", "c3"]


def test_unlabelled_policy_is_checked(tmp_path: Path) -> None:
    write_nifti(tmp_path / "a.nii.gz")
    with pytest.raises(ValueError, match="unlabelled"):
        discover(tmp_path, unlabelled="ignore")


# ---------------------------------------------------------------- class ids


@pytest.mark.parametrize(("labels", "bad"), [(["0", "1", "65535"], ("4", "65535")),
                                              (["0", "2", "2"], ("3", "2"))])
def test_class_ids_beyond_n_minus_1_are_refused(tmp_path: Path, labels: list[str], bad: tuple[str, str]) -> None:
    for name in ("a", "b", "c"):
        write_nifti(tmp_path / f"{name}.nii.gz")
    table = write_text(tmp_path / "cases.csv", "image,label\n" + "".join(
        f"{n}.nii.gz,{v}\n" for n, v in zip("abc", labels, strict=True)))
    line, value = bad
    with pytest.raises(DatasetError, match=rf"cases\.csv line {line}: class id {value}.*class names.*classes\.csv") as err:
        discover(table)
    assert str(table) in str(err.value)


def test_classes_declared_in_dataset_json(tmp_path: Path) -> None:
    root = make_msd(tmp_path, ["c1", "c2", "c3"], labels_csv="case_id,label\nc1,0\nc2,3\nc3,1\n")
    meta_path = root / "dataset.json"
    meta = json.loads(meta_path.read_text())
    write_json(meta_path, {**meta, "classes": {"0": "normal", "1": "tumour", "3": "cyst"}})
    ds = discover(root)
    assert ds.class_names == ("normal", "tumour", "2", "cyst")
    assert [c.label for c in ds.cases] == [0, 3, 1]

    write_text(root / "labels.csv", "case_id,label\nc1,0\nc2,7\nc3,1\n")
    with pytest.raises(DatasetError, match=r"labels\.csv line 3: class id 7 is not declared in .*dataset\.json \[classes\]"):
        discover(root)
    write_json(meta_path, {**meta, "classes": {"zero": "normal"}})
    with pytest.raises(DatasetError, match=r"dataset\.json: \[classes\.zero\]"):
        discover(root)


def test_classes_csv_beside_the_table(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_nifti(tmp_path / f"{name}.nii.gz")
    table = write_text(tmp_path / "cases.csv", "image,label\na.nii.gz,normal\nb.nii.gz,tumour\n")
    write_text(tmp_path / "classes.csv", "ID,Name\n2,tumour\n0,normal\n")
    ds = discover(table)
    assert ds.class_names == ("normal", "1", "tumour")
    assert [c.label for c in ds.cases] == [0, 2]
    write_text(table, "image,label\na.nii.gz,normal\nb.nii.gz,cyst\n")
    with pytest.raises(DatasetError, match=r"cases\.csv line 3: class 'cyst' is not declared in .*classes\.csv"):
        discover(table)


@pytest.mark.parametrize(("text", "match"), [
    ("id,name\n0,a\n0,b\n", r"classes\.csv: line 3: class id 0 declared twice"),
    ("id,name\n0,a\n1,a\n", r"classes\.csv: line 3: class name 'a' declared twice"),
    ("id,name\nx,a\n", r"classes\.csv: line 2: class id 'x'"),
    ("id,name\n0,\n", r"classes\.csv: line 2: empty class name"),
    ("id,name\n0,a\n65535,b\n", r"classes\.csv: line 3: class id 65535 is above 9999"),
    ("number,name\n0,a\n", r"classes\.csv: needs columns 'id' and 'name'; columns: number, name"),
])
def test_bad_classes_csv_names_file_and_line(tmp_path: Path, text: str, match: str) -> None:
    write_nifti(tmp_path / "a.nii.gz")
    write_text(tmp_path / "labels.csv", "case_id,label\na,0\n")
    write_text(tmp_path / "classes.csv", text)
    with pytest.raises(DatasetError, match=match):
        discover(tmp_path)


def test_classes_declared_twice_is_refused(tmp_path: Path) -> None:
    root = make_msd(tmp_path, ["c1"], labels_csv="case_id,label\nc1,0\n")
    meta = json.loads((root / "dataset.json").read_text())
    write_json(root / "dataset.json", {**meta, "classes": {"0": "normal"}})
    write_text(root / "classes.csv", "id,name\n0,normal\n")
    with pytest.raises(DatasetError, match=r"classes declared twice.*keep one"):
        discover(root)
