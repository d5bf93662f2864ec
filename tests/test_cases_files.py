"""Tests of discovery on entries that are not regular files: dangling symbolic links, FIFOs,
sockets and devices named like volumes are reported as failed cases, in every layout, and a
FIFO is never opened (opening one blocks until a writer comes: the timeouts catch a hang)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cases import ids, write_json, write_nifti, write_text

from volprep.cases import discover
from volprep.errors import DatasetError

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)"),
]


@pytest.fixture
def short_tmp(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, or a shorter temporary folder when tmp_path is too long for a unix socket."""
    if len(str(tmp_path)) < 60:
        yield tmp_path
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="vp") as short:
        yield Path(short)


def problems_by_id(ds: object) -> dict[str, tuple[str, str]]:
    return {case_id: (path, why) for case_id, path, why in ds.problems}  # type: ignore[attr-defined]


def test_folder_reports_fifo_socket_device_and_dangling_link(short_tmp: Path) -> None:
    root = short_tmp
    write_nifti(root / "ok.nii.gz")
    os.mkfifo(root / "fifo.nii.gz")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.nii"))
    os.symlink(os.devnull, root / "dev.nii.gz")
    os.symlink(root / "gone.nii.gz", root / "dangling.nii.gz")
    os.mkfifo(root / "pipe")  # not named like a volume: not a case, ignored like README.txt
    try:
        ds = discover(root)
    finally:
        sock.close()
    assert ids(ds) == ["ok"]
    found = problems_by_id(ds)
    assert set(found) == {"fifo", "sock", "dev", "dangling"}
    assert found["fifo"] == (str(root / "fifo.nii.gz"), "not a regular file (a FIFO)")
    assert found["sock"][1] == "not a regular file (a socket)"
    assert found["dev"][1] == "not a regular file (a character device)"
    assert found["dangling"] == (str(root / "dangling.nii.gz"), f"broken symbolic link (points to {root / 'gone.nii.gz'})")


def test_imagestr_reports_fifo_and_dangling_label(tmp_path: Path) -> None:
    write_nifti(tmp_path / "imagesTr" / "a.nii.gz")
    write_nifti(tmp_path / "labelsTr" / "a.nii.gz")
    os.mkfifo(tmp_path / "imagesTr" / "b.nii.gz")
    write_nifti(tmp_path / "labelsTr" / "b.nii.gz")
    write_nifti(tmp_path / "imagesTr" / "c.nii.gz")
    os.symlink("../elsewhere/c.nii.gz", tmp_path / "labelsTr" / "c.nii.gz")
    ds = discover(tmp_path)
    assert ids(ds) == ["a"]
    assert problems_by_id(ds) == {
        "b": (str(tmp_path / "imagesTr" / "b.nii.gz"), "not a regular file (a FIFO)"),
        "c": (str(tmp_path / "labelsTr" / "c.nii.gz"), "broken symbolic link (points to ../elsewhere/c.nii.gz)"),
    }


def test_csv_and_dataset_json_refuse_a_listed_fifo(tmp_path: Path) -> None:
    write_nifti(tmp_path / "imagesTr" / "ok.nii.gz")
    os.mkfifo(tmp_path / "imagesTr" / "fifo.nii.gz")
    os.symlink(tmp_path / "missing.nii.gz", tmp_path / "imagesTr" / "dangling.nii.gz")
    write_json(tmp_path / "dataset.json", {"training": [
        {"image": f"./imagesTr/{name}.nii.gz"} for name in ("ok", "fifo", "dangling")]})
    table = write_text(tmp_path / "cases.csv", "image\nimagesTr/ok.nii.gz\nimagesTr/fifo.nii.gz\nimagesTr/dangling.nii.gz\n")
    for ds in (discover(tmp_path), discover(table)):
        assert ids(ds) == ["ok"]
        found = problems_by_id(ds)
        assert found["fifo"][1] == "not a regular file (a FIFO)"
        assert found["dangling"][1] == f"broken symbolic link (points to {tmp_path / 'missing.nii.gz'})"


def test_analyze_pair_with_a_fifo_img_is_refused(tmp_path: Path) -> None:
    write_nifti(tmp_path / "ok.nii.gz")
    write_text(tmp_path / "pair.hdr", "h")
    os.mkfifo(tmp_path / "pair.img")
    ds = discover(tmp_path)
    assert ids(ds) == ["ok"]
    assert problems_by_id(ds) == {"pair": (str(tmp_path / "pair.img"), "not a regular file (a FIFO)")}


@pytest.mark.parametrize("name", ["labels.csv", "dataset.json"])
def test_a_fifo_table_or_dataset_json_is_refused_not_opened(tmp_path: Path, name: str) -> None:
    write_nifti(tmp_path / "a.nii.gz")
    os.mkfifo(tmp_path / name)
    with pytest.raises(DatasetError, match=rf"{name}: not a regular file \(a FIFO\)"):
        discover(tmp_path)


def test_a_fifo_given_as_the_dataset_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "cases.csv")
    with pytest.raises(DatasetError, match=r"cases\.csv: not a regular file \(a FIFO\)"):
        discover(tmp_path / "cases.csv")
    os.symlink(tmp_path / "nothing", tmp_path / "link")
    with pytest.raises(DatasetError, match="broken symbolic link"):
        discover(tmp_path / "link")
