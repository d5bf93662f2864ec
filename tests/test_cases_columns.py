"""Tests of the table rows discovery keeps (Case.columns, subset_from_column) and of user splits
(a ``split`` column, nnU-Net ``splits_final.json``), on tiny files written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cases import ids, make_msd, write_json, write_nifti, write_text

from volprep.cases import discover, read_split_file, subset_from_column
from volprep.errors import DatasetError

# ---------------------------------------------------------------- subset_from_column


@pytest.mark.parametrize("table", [
    # raw ids as written by a person: "Case 1" is discovery's "Case_1"
    "case_id,label,subset\nCase 1,a,yes\nCase 2,b,no\nCase 3,a,TRUE\n",
    # keyed by image instead of case_id
    "image,label,subset\nCase_1.nii.gz,a,Y\nCase_2.nii.gz,b,\nCase_3.nii.gz,a,1\n",
    # a byte-order mark before the header (Excel's "CSV UTF-8")
    "\ufeffcase_id,label,subset\nCase_1,a,1\nCase_2,b,0\nCase_3,a,true\n",
    # upper-case column names
    "CASE_ID,Label,Subset\nCase_1,a,1\nCase_2,b,false\nCase_3,a,Yes\n",
], ids=["spaces", "image-keyed", "bom", "upper-case"])
def test_subset_from_column_resolves_the_same_ids(tmp_path: Path, table: str) -> None:
    for n in (1, 2, 3):
        write_nifti(tmp_path / f"Case_{n}.nii.gz")
    write_text(tmp_path / "labels.csv", table)
    ds = discover(tmp_path)
    assert ids(ds) == ["Case_1", "Case_2", "Case_3"]
    assert subset_from_column(ds, "subset") == {"Case_1", "Case_3"}
    assert subset_from_column(ds, " Subset ") == {"Case_1", "Case_3"}


def test_case_and_dataset_carry_the_table_row(tmp_path: Path) -> None:
    root = make_msd(tmp_path, ["c1", "c2"], labels_csv="Case_ID,Label,Site\nc1, a ,Berlin\nc2,b,\n")
    ds = discover(root)
    assert ds.columns == ("case_id", "label", "site")
    assert ds.table == root / "labels.csv"
    c1, c2 = ds.cases
    assert c1.columns == (("case_id", "c1"), ("label", "a"), ("site", "Berlin"))
    assert c1.column("SITE") == "Berlin" and c1.column("nope") is None
    assert c2.column("site") == ""


def test_csv_layout_columns_are_the_csvs(tmp_path: Path) -> None:
    write_nifti(tmp_path / "a.nii.gz")
    write_nifti(tmp_path / "b.nii.gz")
    table = write_text(tmp_path / "cases.tsv", "Image\tHard\na.nii.gz\t1\nb.nii.gz\tno\n")
    ds = discover(table)
    assert ds.columns == ("image", "hard") and ds.table == table
    assert subset_from_column(ds, "hard") == {"a"}


def test_subset_from_a_missing_column_names_the_table_and_its_columns(tmp_path: Path) -> None:
    root = make_msd(tmp_path, ["c1"], labels_csv="case_id,label\nc1,a\n")
    with pytest.raises(DatasetError, match=r"labels\.csv: no column 'subset'.*columns: case_id, label"):
        subset_from_column(discover(root), "subset")
    bare = make_msd(tmp_path / "bare", ["c1"])
    with pytest.raises(DatasetError, match="no table"):
        subset_from_column(discover(bare), "subset")


def test_subset_value_neither_true_nor_false_is_refused(tmp_path: Path) -> None:
    root = make_msd(tmp_path, ["c1", "c2"], labels_csv="case_id,label,subset\nc1,a,1\nc2,b,maybe\n")
    with pytest.raises(DatasetError, match=r"labels\.csv: case 'c2': subset = 'maybe'"):
        subset_from_column(discover(root), "subset")


# ---------------------------------------------------------------- a split column


def test_split_column_sets_case_split(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        write_nifti(tmp_path / f"{name}.nii.gz")
    table = write_text(tmp_path / "cases.csv", "image,split\na.nii.gz,Train\nb.nii.gz, val \nc.nii.gz,\n")
    assert [(c.case_id, c.split) for c in discover(table).cases] == [("a", "train"), ("b", "val"), ("c", None)]


def test_split_column_in_labels_csv_merges(tmp_path: Path) -> None:
    root = make_msd(tmp_path, ["c1", "c2"], labels_csv="case_id,label,split\nc1,a,test\nc2,b,train_2\n")
    assert [c.split for c in discover(root).cases] == ["test", "train_2"]


@pytest.mark.parametrize("value", ["hold-out", "1st", "val set"])
def test_bad_split_value_names_the_line(tmp_path: Path, value: str) -> None:
    write_nifti(tmp_path / "a.nii.gz")
    write_nifti(tmp_path / "b.nii.gz")
    table = write_text(tmp_path / "cases.csv", f"image,split\na.nii.gz,train\nb.nii.gz,{value}\n")
    with pytest.raises(DatasetError, match=rf"cases\.csv: line 3: split '{value}'"):
        discover(table)


# ---------------------------------------------------------------- split files


def test_nnunet_splits_final_folds(tmp_path: Path) -> None:
    path = write_json(tmp_path / "splits_final.json", [
        {"train": ["a", "b"], "val": ["case 3"]},
        {"train": ["case 3", "b"], "val": ["a"]},
    ])
    assert read_split_file(path) == {"a": "train", "b": "train", "case_3": "val"}
    assert read_split_file(str(path), fold=1) == {"case_3": "train", "b": "train", "a": "val"}


def test_single_split_object_with_test(tmp_path: Path) -> None:
    path = write_json(tmp_path / "split.json", {"train": ["a"], "val": ["b"], "test": ["c"]})
    assert read_split_file(path) == {"a": "train", "b": "val", "c": "test"}


def test_split_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nope\.json"):
        read_split_file(tmp_path / "nope.json")
    bad = write_text(tmp_path / "bad.json", '[{"train": ["a"],}]')
    with pytest.raises(DatasetError, match=r"bad\.json: not valid JSON: line 1"):
        read_split_file(bad)
    folds = write_json(tmp_path / "folds.json", [{"train": ["a"], "val": ["b"]}] * 2)
    with pytest.raises(DatasetError, match=r"folds\.json: fold 2 is out of range: the file has 2 folds \(0\.\.1\)"):
        read_split_file(folds, fold=2)
    with pytest.raises(DatasetError, match="fold -1"):
        read_split_file(folds, fold=-1)
    twice = write_json(tmp_path / "twice.json", [{"train": ["a", "b"], "val": ["c"]}, {"train": ["x"], "val": ["y", "x "]}])
    with pytest.raises(DatasetError, match=r"twice\.json: fold 1: case 'x' is in both 'train' and 'val'"):
        read_split_file(twice, fold=1)
    single = write_json(tmp_path / "single.json", {"train": ["a"], "val": ["b"]})
    with pytest.raises(DatasetError, match=r"single\.json: fold 1"):
        read_split_file(single, fold=1)
    shape = write_json(tmp_path / "shape.json", [{"train": "a"}])
    with pytest.raises(DatasetError, match=r"shape\.json: fold 0: 'train'"):
        read_split_file(shape)
    name = write_json(tmp_path / "name.json", {"Hold-out": ["a"]})
    with pytest.raises(DatasetError, match=r"name\.json: split 'Hold-out'"):
        read_split_file(name)
