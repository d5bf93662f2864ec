"""Tests of volprep.cases: dataset discovery on real tiny files written into tmp_path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from volprep.cases import Case, Dataset, discover, safe_case_id, strip_extension
from volprep.errors import DatasetError


def write_nifti(path: Path, value: int = 0) -> Path:
    """A real 4x4x4 int16 NIfTI file (discovery only looks at names, but keep files honest)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(np.full((4, 4, 4), value, np.int16), np.eye(4)).to_filename(path)
    return path


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def make_msd(root: Path, ids: list[str], *, labels_csv: str | None = None) -> Path:
    for i, case_id in enumerate(ids):
        write_nifti(root / "imagesTr" / f"{case_id}.nii.gz", i)
        write_nifti(root / "labelsTr" / f"{case_id}.nii.gz")
    write_json(root / "dataset.json", {
        "name": "tiny",
        "labels": {"0": "background", "1": "tumour"},
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ids],
        "test": [],
    })
    if labels_csv is not None:
        write_text(root / "labels.csv", labels_csv)
    return root


def ids(dataset: Dataset) -> list[str]:
    return [c.case_id for c in dataset.cases]


# ---------------------------------------------------------------- MSD dataset.json


def test_msd_dataset_json(tmp_path: Path) -> None:
    root = make_msd(tmp_path / "Task01", ["b_002", "a_001", "c_003"])
    ds = discover(root)
    assert ds.layout == "msd"
    assert ds.root == root.absolute()
    assert ids(ds) == ["a_001", "b_002", "c_003"]
    assert ds.label_names == {0: "background", 1: "tumour"}
    assert ds.class_names is None
    assert ds.problems == ()
    first = ds.cases[0]
    assert first == Case("a_001", "a_001", (root / "imagesTr" / "a_001.nii.gz",),
                         root / "labelsTr" / "a_001.nii.gz", None)


def test_msd_multichannel_list_and_relative_dot_paths(tmp_path: Path) -> None:
    for ch in (0, 1):
        write_nifti(tmp_path / "imagesTr" / f"x_{ch:04d}.nii.gz")
    write_nifti(tmp_path / "labelsTr" / "x.nii.gz")
    write_json(tmp_path / "dataset.json", {"training": [{
        "image": ["./imagesTr/x_0000.nii.gz", "imagesTr/sub/../x_0001.nii.gz"],
        "label": "./labelsTr/x.nii.gz",
    }]})
    (case,) = discover(tmp_path).cases
    assert case.case_id == "x"
    assert case.images == (tmp_path / "imagesTr/x_0000.nii.gz", tmp_path / "imagesTr/x_0001.nii.gz")


def test_nnunet_v1_json_lists_unsuffixed_names_of_channel_files(tmp_path: Path) -> None:
    for ch in (1, 0):  # written out of order on purpose
        write_nifti(tmp_path / "imagesTr" / f"la_003_{ch:04d}.nii.gz")
    write_nifti(tmp_path / "labelsTr" / "la_003.nii.gz")
    write_json(tmp_path / "dataset.json", {
        "modality": {"0": "T1", "1": "T2"},
        "training": [{"image": "./imagesTr/la_003.nii.gz", "label": "./labelsTr/la_003.nii.gz"}],
    })
    (case,) = discover(tmp_path).cases
    assert case.case_id == "la_003"
    assert [p.name for p in case.images] == ["la_003_0000.nii.gz", "la_003_0001.nii.gz"]


def test_nnunet_v2_json_without_training_pairs_imagestr(tmp_path: Path) -> None:
    for case_id in ("b", "a"):
        for ch in (0, 1):
            write_nifti(tmp_path / "imagesTr" / f"{case_id}_{ch:04d}.nii.gz")
        write_nifti(tmp_path / "labelsTr" / f"{case_id}.nii.gz")
    write_json(tmp_path / "dataset.json", {
        "channel_names": {"0": "T1", "1": "FLAIR"},
        "labels": {"background": 0, "edema": 1, "whole": [1, 2]},
        "file_ending": ".nii.gz",
    })
    ds = discover(tmp_path)
    assert ds.layout == "imagesTr"
    assert ids(ds) == ["a", "b"]
    assert ds.label_names == {0: "background", 1: "edema"}
    assert ds.cases[1].mask == tmp_path / "labelsTr" / "b.nii.gz"


# ---------------------------------------------------------------- imagesTr without dataset.json


def test_imagestr_channel_suffix_pairing(tmp_path: Path) -> None:
    for case_id in ("case2", "case1"):
        for ch in (2, 0, 1):
            write_nifti(tmp_path / "imagesTr" / f"{case_id}_{ch:04d}.nii.gz", ch)
        write_nifti(tmp_path / "labelsTr" / f"{case_id}.nii.gz")
    ds = discover(tmp_path)
    assert ds.layout == "imagesTr"
    assert ids(ds) == ["case1", "case2"]
    assert [p.name for p in ds.cases[0].images] == ["case1_0000.nii.gz", "case1_0001.nii.gz", "case1_0002.nii.gz"]
    assert ds.cases[0].mask == tmp_path / "labelsTr" / "case1.nii.gz"
    assert ds.problems == ()


def test_imagestr_numbered_names_with_same_named_labels_are_not_channels(tmp_path: Path) -> None:
    for case_id in ("patient_0001", "patient_0002"):
        write_nifti(tmp_path / "imagesTr" / f"{case_id}.nii.gz")
        write_nifti(tmp_path / "labelsTr" / f"{case_id}.nii.gz")
    ds = discover(tmp_path)
    assert ids(ds) == ["patient_0001", "patient_0002"]
    assert all(len(c.images) == 1 for c in ds.cases)


def test_imagestr_gaps_missing_and_orphan_labels_are_problems(tmp_path: Path) -> None:
    for ch in (0, 1):
        write_nifti(tmp_path / "imagesTr" / f"good_{ch:04d}.nii.gz")
        write_nifti(tmp_path / "imagesTr" / f"nolabel_{ch:04d}.nii.gz")
    write_nifti(tmp_path / "imagesTr" / "gap_0000.nii.gz")
    write_nifti(tmp_path / "imagesTr" / "gap_0002.nii.gz")
    for case_id in ("good", "gap", "orphan"):
        write_nifti(tmp_path / "labelsTr" / f"{case_id}.nii.gz")
    ds = discover(tmp_path)
    assert ids(ds) == ["good"]
    problems = {case_id: problem for case_id, _, problem in ds.problems}
    assert set(problems) == {"gap", "nolabel", "orphan"}
    assert "without gaps" in problems["gap"]
    assert "no label volume" in problems["nolabel"]
    assert "without an image" in problems["orphan"]


# ---------------------------------------------------------------- CSV / TSV


def test_csv_relative_absolute_channels_mask_and_columns(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_nifti(data / "a.nii.gz")
    outside = write_nifti(tmp_path / "elsewhere" / "b.nii.gz")
    write_nifti(data / "c_0000.nii.gz")
    write_nifti(data / "c_0001.nii.gz")
    write_nifti(data / "c_seg.nii.gz")
    table = write_text(data / "cases.csv", (
        "image,mask,subject,case_id\n"
        "a.nii.gz,,subj1,\n"
        f"{outside},,subj1,explicit-b\n"
        "c_0000.nii.gz;c_0001.nii.gz,c_seg.nii.gz,,\n"
    ))
    ds = discover(table)
    assert ds.layout == "csv"
    assert ds.root == data
    assert ids(ds) == ["a", "c", "explicit-b"]
    a, c, b = ds.cases
    assert a.images == (data / "a.nii.gz",) and a.subject == "subj1" and a.mask is None
    assert b.images == (outside,) and b.subject == "subj1"
    assert c.images == (data / "c_0000.nii.gz", data / "c_0001.nii.gz")
    assert c.mask == data / "c_seg.nii.gz" and c.subject == "c"
    assert ds.class_names is None and ds.label_names is None


def test_tsv_with_class_names(tmp_path: Path) -> None:
    for name in ("x1", "x2", "x3"):
        write_nifti(tmp_path / f"{name}.nii")
    table = write_text(tmp_path / "list.TSV", "Image\tLabel\nx1.nii\tglioma\nx2.nii\tmeningioma\nx3.nii\tglioma\n")
    ds = discover(table)
    assert ds.class_names == ("glioma", "meningioma")
    assert [c.label for c in ds.cases] == [0, 1, 0]


def test_integer_class_ids_are_used_directly(tmp_path: Path) -> None:
    # ids must be 0..N-1 (here 0, 1, 2); a case without a label is refused, not given None
    # (see tests/test_cases_labels.py for ids out of range and for unlabelled = "skip")
    for name in ("a", "b", "c", "d"):
        write_nifti(tmp_path / f"{name}.nii.gz")
    table = write_text(tmp_path / "cases.csv", "image,label\na.nii.gz,2\nb.nii.gz,0\nc.nii.gz,1\nd.nii.gz,\n")
    ds = discover(table)
    assert ds.class_names == ("0", "1", "2")
    assert [c.label for c in ds.cases] == [2, 0, 1]
    assert [(c, why.split(" (")[0]) for c, _, why in ds.problems] == [("d", "no class label in cases.csv line 5")]


@pytest.mark.parametrize(("labels", "bad_line"), [
    (["1", "tumour"], 3),
    (["tumour", "2"], 3),
    (["Tumour", "tumour"], 3),
    (["-1", "0"], 2),
])
def test_inconsistent_class_labels_name_the_row(tmp_path: Path, labels: list[str], bad_line: int) -> None:
    write_nifti(tmp_path / "a.nii.gz")
    write_nifti(tmp_path / "b.nii.gz")
    table = write_text(tmp_path / "cases.csv", f"image,label\na.nii.gz,{labels[0]}\nb.nii.gz,{labels[1]}\n")
    with pytest.raises(DatasetError, match=f"cases.csv line {bad_line}"):
        discover(table)


def test_csv_errors_name_file_and_line(tmp_path: Path) -> None:
    write_nifti(tmp_path / "a.nii.gz")
    table = write_text(tmp_path / "cases.csv", "image,label\na.nii.gz,1\na.nii.gz,1,extra\n")
    with pytest.raises(DatasetError, match=r"cases\.csv: line 3: 3 fields, the header has 2"):
        discover(table)
    write_text(table, "case_id,label\na,1\n")
    with pytest.raises(DatasetError, match="no 'image' column"):
        discover(table)
    write_text(table, 'image,label\n"a.nii.gz,1\n')
    with pytest.raises(DatasetError, match=r"cases\.csv: line"):
        discover(table)


# ---------------------------------------------------------------- labels.csv merge


def test_labels_csv_merges_into_msd(tmp_path: Path) -> None:
    root = make_msd(tmp_path, ["c1", "c2", "c3"], labels_csv=(
        "case_id,subject,label\nc1,s1,metastasis\nc2,s1,glioma\nc3,s2,glioma\nghost,s9,glioma\n"
    ))
    ds = discover(root)
    assert ds.layout == "msd"
    assert ds.class_names == ("glioma", "metastasis")
    assert [(c.case_id, c.subject, c.label) for c in ds.cases] == [("c1", "s1", 1), ("c2", "s1", 0), ("c3", "s2", 0)]
    assert ds.label_names == {0: "background", 1: "tumour"}
    assert [(c, Path(p).name) for c, p, _ in ds.problems] == [("ghost", "labels.csv")]


def test_labels_tsv_in_folder_by_image_name(tmp_path: Path) -> None:
    write_nifti(tmp_path / "p1.nii.gz")
    write_nifti(tmp_path / "p2.nii")
    write_text(tmp_path / "labels.tsv", "image\tlabel\np2.nii\t1\np1.nii.gz\t0\n")
    ds = discover(tmp_path)
    assert ds.layout == "folder"
    assert [(c.case_id, c.label) for c in ds.cases] == [("p1", 0), ("p2", 1)]
    assert ds.class_names == ("0", "1")


def test_labels_csv_listing_a_case_twice_is_refused(tmp_path: Path) -> None:
    root = make_msd(tmp_path, ["c1"], labels_csv="case_id,label\nc1,a\nc1,b\n")
    with pytest.raises(DatasetError, match="'c1': line 2 and line 3"):
        discover(root)


# ---------------------------------------------------------------- folder layout


def test_folder_of_mixed_formats(tmp_path: Path) -> None:
    write_nifti(tmp_path / "n1.nii.gz")
    write_nifti(tmp_path / "n2.NII")
    write_text(tmp_path / "an.hdr", "h")
    write_text(tmp_path / "an.img", "i")
    write_text(tmp_path / "meta.mhd", "ElementDataFile = meta.raw\n")
    write_text(tmp_path / "meta.raw", "r")
    write_text(tmp_path / "vol.raw", "r")
    write_text(tmp_path / "vol.json", "{}")
    write_text(tmp_path / "single.mha", "m")
    write_text(tmp_path / "README.txt", "not a volume")
    ds = discover(tmp_path)
    assert ds.layout == "folder"
    assert ids(ds) == ["an", "meta", "n1", "n2", "single", "vol"]
    assert {c.case_id: c.images[0].name for c in ds.cases}["vol"] == "vol.raw"
    assert ds.problems == ()


def test_folder_companion_problems(tmp_path: Path) -> None:
    write_nifti(tmp_path / "ok.nii.gz")
    write_text(tmp_path / "lonely.img", "i")
    write_text(tmp_path / "nosidecar.raw", "r")
    ds = discover(tmp_path)
    assert ids(ds) == ["ok"]
    assert sorted(c for c, _, _ in ds.problems) == ["lonely", "nosidecar"]


def test_nested_volumes_are_mentioned_in_the_error(tmp_path: Path) -> None:
    write_nifti(tmp_path / "sub-01" / "t1.nii.gz")
    with pytest.raises(DatasetError, match="no volumes found.*1 found in subfolders"):
        discover(tmp_path)


def test_symlinks_are_followed(tmp_path: Path) -> None:
    target = write_nifti(tmp_path / "store" / "real.nii.gz")
    (tmp_path / "data").mkdir()
    os.symlink(target, tmp_path / "data" / "linked.nii.gz")
    (case,) = discover(tmp_path / "data").cases
    assert case.case_id == "linked"
    assert case.images == (tmp_path / "data" / "linked.nii.gz",)


# ---------------------------------------------------------------- path rules


def test_dotdot_is_refused_per_case(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_nifti(tmp_path / "secret.nii.gz")
    write_nifti(root / "imagesTr" / "ok.nii.gz")
    write_json(root / "dataset.json", {"training": [
        {"image": "./imagesTr/ok.nii.gz"},
        {"image": "./imagesTr/../../secret.nii.gz"},
        {"image": "/etc/passwd.nii.gz"},
    ]})
    ds = discover(root)
    assert ids(ds) == ["ok"]
    (dotdot, _, why_dotdot), (absolute, _, why_abs) = ds.problems
    assert dotdot == "secret" and "climbs out of the dataset folder" in why_dotdot
    assert "dataset.json training[1]" in why_dotdot
    assert absolute == "passwd" and "absolute path refused" in why_abs

    table = write_text(root / "cases.csv", "image\nimagesTr/ok.nii.gz\n../secret.nii.gz\n")
    ds = discover(table)
    assert ids(ds) == ["ok"]
    assert [(c, why.split(":")[0]) for c, _, why in ds.problems] == [("secret", "cases.csv line 3")]


def test_hidden_files_skipped_in_folders_and_refused_when_listed(tmp_path: Path) -> None:
    write_nifti(tmp_path / "x.nii.gz")
    write_nifti(tmp_path / "._x.nii.gz")
    write_text(tmp_path / ".DS_Store", "junk")
    ds = discover(tmp_path)
    assert ids(ds) == ["x"] and ds.problems == ()

    table = write_text(tmp_path / "cases.csv", "image\nx.nii.gz\n._x.nii.gz\n")
    ds = discover(table)
    assert ids(ds) == ["x"]
    ((_, path, why),) = ds.problems
    assert path.endswith("._x.nii.gz") and "hidden file" in why


def test_imagestr_skips_macos_resource_forks(tmp_path: Path) -> None:
    write_nifti(tmp_path / "imagesTr" / "a.nii.gz")
    write_nifti(tmp_path / "imagesTr" / "._a.nii.gz")
    write_nifti(tmp_path / "labelsTr" / "a.nii.gz")
    write_nifti(tmp_path / "labelsTr" / "._a.nii.gz")
    ds = discover(tmp_path)
    assert ids(ds) == ["a"] and ds.problems == ()


def test_missing_files_are_problems_and_the_rest_goes_on(tmp_path: Path) -> None:
    root = make_msd(tmp_path, ["a", "b", "c"], labels_csv="case_id,label\na,x\nb,y\nc,z\n")
    (root / "imagesTr" / "b.nii.gz").unlink()
    (root / "labelsTr" / "c.nii.gz").unlink()
    ds = discover(root)
    assert ids(ds) == ["a"]
    assert [(c, Path(p).relative_to(root).as_posix(), why) for c, p, why in ds.problems] == [
        ("b", "imagesTr/b.nii.gz", "file not found"),
        ("c", "labelsTr/c.nii.gz", "file not found"),
    ]
    # class ids come from every listed case: a missing file never shifts the others' ids
    assert ds.class_names == ("x", "y", "z") and ds.cases[0].label == 0


# ---------------------------------------------------------------- ids, duplicates, errors


def test_duplicate_ids_name_both_sources(tmp_path: Path) -> None:
    write_nifti(tmp_path / "x.nii")
    write_nifti(tmp_path / "x.nii.gz")
    with pytest.raises(DatasetError, match=r"duplicate case id 'x': x\.nii and x\.nii\.gz"):
        discover(tmp_path)

    write_nifti(tmp_path / "csv" / "a.nii.gz")
    write_nifti(tmp_path / "csv" / "b.nii.gz")
    table = write_text(tmp_path / "csv" / "cases.csv", "image,case_id\na.nii.gz,same\nb.nii.gz,same\n")
    with pytest.raises(DatasetError, match=r"'same': cases\.csv line 2 and cases\.csv line 3"):
        discover(table)


def test_ids_differing_only_in_case_are_refused(tmp_path: Path) -> None:
    write_nifti(tmp_path / "Case1.nii.gz")
    write_nifti(tmp_path / "case1.nii")
    with pytest.raises(DatasetError, match="differ only in letter case"):
        discover(tmp_path)


def test_unsafe_ids_are_mapped_and_collisions_caught(tmp_path: Path) -> None:
    assert safe_case_id("patient 01/é") == "patient_01__"
    assert safe_case_id(".hidden") == "_hidden"
    assert strip_extension("x.v2.NII.GZ") == "x.v2"
    write_nifti(tmp_path / "patient 01.nii.gz")
    assert ids(discover(tmp_path)) == ["patient_01"]
    write_nifti(tmp_path / "patient_01.nii.gz")
    with pytest.raises(DatasetError, match="duplicate case id 'patient_01'"):
        discover(tmp_path)


def test_empty_and_missing_datasets(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file or folder"):
        discover(tmp_path / "nope")
    write_text(tmp_path / "notes.txt", "x")
    with pytest.raises(DatasetError, match=r"no volumes found \(looked for \.nii\.gz"):
        discover(tmp_path)
    with pytest.raises(DatasetError, match="not a dataset folder"):
        discover(tmp_path / "notes.txt")
    write_json(tmp_path / "dataset.json", {"training": []})
    with pytest.raises(DatasetError, match="no volumes found"):
        discover(tmp_path)


def test_all_cases_refused_is_an_error(tmp_path: Path) -> None:
    table = write_text(tmp_path / "cases.csv", "image\nmissing1.nii.gz\nmissing2.nii.gz\n")
    with pytest.raises(DatasetError, match="none of the 2 listed cases can be used.*file not found"):
        discover(table)


def test_bad_dataset_json_names_file_and_line_or_key(tmp_path: Path) -> None:
    write_text(tmp_path / "dataset.json", '{\n  "training": [\n    {"image": "a.nii.gz",}\n  ]\n}\n')
    with pytest.raises(DatasetError, match=r"dataset\.json: not valid JSON: line 3"):
        discover(tmp_path)
    write_json(tmp_path / "dataset.json", {"training": [{"label": "x.nii.gz"}]})
    with pytest.raises(DatasetError, match=r"\[training\[0\]\]"):
        discover(tmp_path)
    write_json(tmp_path / "dataset.json", {"training": [{"image": "a.nii.gz"}], "labels": {"x": "y"}})
    with pytest.raises(DatasetError, match=r"\[labels\.x\]"):
        discover(tmp_path)
    write_json(tmp_path / "dataset.json", {"name": "no training, no imagesTr"})
    with pytest.raises(DatasetError, match=r"\[training\] missing"):
        discover(tmp_path)


def test_discovery_is_deterministic(tmp_path: Path) -> None:
    names = ["m", "b", "z", "a", "k"]
    for name in names:
        write_nifti(tmp_path / f"{name}.nii.gz")
    forward = write_text(tmp_path / "f.csv", "image\n" + "".join(f"{n}.nii.gz\n" for n in names))
    backward = write_text(tmp_path / "b.csv", "image\n" + "".join(f"{n}.nii.gz\n" for n in reversed(names)))
    assert discover(forward).cases == discover(backward).cases
    assert ids(discover(forward)) == sorted(names)
    assert discover(tmp_path) == discover(tmp_path)
