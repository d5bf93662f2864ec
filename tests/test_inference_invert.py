"""``volprep.invert``'s rules on tiny phantom grids: the map, the window's edge, the outside.

Scan infos are built by hand; expected values come from nibabel (``apply_orientation``)
or are written out literally. The real-anatomy round trips are in test_inference.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations as nio

from volprep.errors import UsageError
from volprep.geometry import Grid
from volprep.inference import (
    INFO_FORMAT,
    PredictionError,
    ScanInfo,
    invert,
    outputs,
    read_info,
    save_nifti,
    write_info,
)

LPS_ODD = np.array([[-1.5, 0, 0, 10], [0, -1.5, 0, 20], [0, 0, 2.0, -5], [0, 0, 0, 1]])


def info_for(scan: Grid, record: Grid, path: str = "/data/scan.nii.gz") -> ScanInfo:
    return ScanInfo(like="shards", scan_paths=(path,), scan=scan, scan_orientation="".join(nib.aff2axcodes(scan.affine)),
                    record=record, orientation="RAS", channels=1, reduction={"reduce": "none"})


def reoriented(data: np.ndarray, affine: np.ndarray, codes: str) -> tuple[np.ndarray, np.ndarray]:
    """nibabel's reorientation of an array and its affine (the independent route)."""
    ornt = nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(tuple(codes)))
    return nio.apply_orientation(data, ornt), affine @ nio.inv_ornt_aff(ornt, data.shape[:3])


@pytest.mark.parametrize("codes", ["RAS", "LPS", "PIR", "SAL"])
def test_labels_and_probabilities_come_back_through_a_reorientation(codes: str) -> None:
    rng = np.random.default_rng([5, len(codes)])
    scan_labels = rng.integers(0, 4, size=(5, 6, 7)).astype(np.uint8)
    permuted = np.array([[0, 0, 2.0, 3], [1.5, 0, 0, -4], [0, -1.5, 0, 7], [0, 0, 0, 1]])  # a PIR-like scan
    record_labels, record_affine = reoriented(scan_labels, permuted, codes)
    info = info_for(Grid((5, 6, 7), permuted), Grid(record_labels.shape, record_affine))
    back = invert(record_labels, info)
    assert back.dtype == np.uint8 and np.array_equal(back, scan_labels)
    onehot = np.eye(4, dtype=np.float32)[record_labels]
    probabilities = invert(onehot, info)
    assert probabilities.shape == (5, 6, 7, 4) and np.array_equal(probabilities, np.eye(4, dtype=np.float32)[scan_labels])


def test_outside_the_window_is_background() -> None:
    scan = Grid((6, 5, 4), LPS_ODD)
    record = scan.box((2, 1, -1), (3, 3, 3))  # crops i and j, pads k before
    labels = np.arange(1, 28, dtype=np.int16).reshape(3, 3, 3)
    back = invert(labels, info_for(scan, record))
    expected = np.zeros((6, 5, 4), dtype=np.int16)
    expected[2:5, 1:4, 0:2] = labels[:, :, 1:3]  # scan k 0..1 are record k 1..2
    assert back.dtype == np.int16 and np.array_equal(back, expected)
    probabilities = np.zeros((3, 3, 3, 3), dtype=np.float32)
    probabilities[..., 2] = 1  # the model says class 2 everywhere in the window
    out = invert(probabilities, info_for(scan, record))
    inside = expected > 0
    assert (out[inside] == (0, 0, 1)).all() and (out[~inside] == (1, 0, 0)).all()


def test_edge_voxels_of_a_coarser_record_are_inside_its_cells() -> None:
    # A 2x coarser record whose voxel 0 is the centre of scan voxels 0 and 1 (a block mean's
    # grid): scan voxels 0..3 sit at record positions -0.25, 0.25, 0.75, 1.25, all inside
    # the record voxels' cells; scan voxel 4 (position 1.75) is beyond them.
    scan = Grid((5, 1, 1), np.eye(4))
    coarse = np.diag([2.0, 1, 1, 1])
    coarse[0, 3] = 0.5
    info = info_for(scan, Grid((2, 1, 1), coarse))
    labels = np.array([3, 7], dtype=np.uint8).reshape(2, 1, 1)
    assert invert(labels, info).ravel().tolist() == [3, 3, 7, 7, 0]
    ramp = np.zeros((2, 1, 1, 2), dtype=np.float32)
    ramp[:, 0, 0, 1] = [0.2, 0.6]
    ramp[..., 0] = 1 - ramp[..., 1]
    out = invert(ramp, info)[:, 0, 0, 1]
    # held at the edge value in the outer half cells, linear between the centres, 0 beyond
    np.testing.assert_allclose(out, [0.2, 0.3, 0.5, 0.6, 0.0], atol=1e-6)


def test_slabs_give_the_same_result_as_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(9)
    scan = Grid((9, 8, 7), LPS_ODD)
    record = Grid((5, 4, 4), LPS_ODD @ np.diag([1.7, 2.1, 1.9, 1.0]))
    labels = rng.integers(0, 5, size=(5, 4, 4)).astype(np.uint8)
    probabilities = rng.random((5, 4, 4, 3)).astype(np.float32)
    whole = invert(labels, info_for(scan, record)), invert(probabilities, info_for(scan, record))
    monkeypatch.setattr(outputs, "SLAB_VOXELS", 8 * 7 * 2 + 3)  # 2 rows of i a step
    sliced = invert(labels, info_for(scan, record)), invert(probabilities, info_for(scan, record))
    assert np.array_equal(whole[0], sliced[0]) and np.array_equal(whole[1], sliced[1])


def test_labels_may_be_booleans_or_whole_floats() -> None:
    scan = Grid((2, 2, 2), np.eye(4))
    info = info_for(scan, scan)
    mask = np.array([[[True, False], [False, True]], [[False, False], [True, True]]])
    assert np.array_equal(invert(mask, info), mask.astype(np.uint8))
    as_float = np.where(mask, 300.0, 0.0)
    back = invert(as_float, info)
    assert back.dtype == np.int16 and np.array_equal(back, as_float.astype(np.int16))


@pytest.mark.parametrize("prediction, words", [
    (np.zeros((2, 2, 3), np.uint8), re.escape("expected labels [2, 2, 2]")),
    (np.zeros((2, 2, 2, 1), np.float32), "K >= 2"),
    (np.zeros((2, 2, 2, 3), np.int64), "must be floats"),
    (np.full((2, 2, 2), 0.5), "whole numbers"),
    (np.zeros((2, 2, 2), np.complex64), "must be integers"),
])
def test_a_prediction_that_does_not_fit_is_refused(prediction: np.ndarray, words: str) -> None:
    scan = Grid((2, 2, 2), np.eye(4))
    with pytest.raises(PredictionError, match=words) as caught:
        invert(prediction, info_for(scan, scan))
    assert isinstance(caught.value, UsageError) and isinstance(caught.value, ValueError)
    assert "\n" not in str(caught.value)


def test_info_round_trips_through_json_exactly(tmp_path: Path) -> None:
    affine = LPS_ODD @ np.diag([1 / 3, 0.1, 7.0, 1.0])  # floats JSON must keep to the last bit
    info = info_for(Grid((4, 5, 6), affine), Grid((3, 3, 3), affine @ np.diag([3.0, 3, 3, 1])))
    back = read_info(write_info(info, tmp_path / "info.json"))
    assert np.array_equal(back.scan.affine, info.scan.affine) and np.array_equal(back.record.affine, info.record.affine)
    assert back.to_dict() == info.to_dict() and back.to_dict()["format"] == INFO_FORMAT
    assert json.loads((tmp_path / "info.json").read_text())["scan"]["orientation"] == "LPS"
    assert np.array_equal(invert(np.ones((3, 3, 3), np.uint8), tmp_path / "info.json"),
                          invert(np.ones((3, 3, 3), np.uint8), info.to_dict()))


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.update(format="other/1"), "not a volprep scan info"),
    (lambda d: d["record"].pop("affine"), "record.'affine'"),
    (lambda d: d["scan"].update(affine=[[0, 0, 0, 0]] * 4), "scan.affine is not a finite invertible"),
])
def test_a_bad_info_is_refused_in_one_line(edit: object, words: str, tmp_path: Path) -> None:
    info = info_for(Grid((2, 2, 2), np.eye(4)), Grid((2, 2, 2), np.eye(4))).to_dict()
    edit(info)  # type: ignore[operator]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(info))
    with pytest.raises(UsageError, match=words) as caught:
        read_info(path)
    assert "\n" not in str(caught.value)
    with pytest.raises(UsageError, match="no such scan info"):
        read_info(tmp_path / "missing.json")


def test_save_nifti_keeps_the_scans_affine_and_values(tmp_path: Path) -> None:
    scan = Grid((3, 4, 5), LPS_ODD @ np.array([[1, 0.125, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]))
    info = info_for(scan, scan)
    for values, dtype in ((np.arange(60, dtype=np.int64).reshape(3, 4, 5), np.uint8),
                          (np.arange(60, dtype=np.int64).reshape(3, 4, 5) * 1000, np.int32),
                          (np.random.default_rng(1).random((3, 4, 5, 2)), np.float32)):
        path = save_nifti(values, info, tmp_path / f"out-{values.ndim}-{values.max():.0f}.nii.gz")
        written = nib.load(path)
        assert np.array_equal(written.affine, scan.affine)  # sheared: the sform holds it (float32)
        assert written.get_data_dtype() == dtype
        assert np.array_equal(np.asanyarray(written.dataobj), values.astype(dtype))
    with pytest.raises(UsageError, match=r"\.nii or \.nii\.gz"):
        save_nifti(np.zeros((3, 4, 5), np.uint8), info, tmp_path / "out.png")
