"""The mirror of a dataset URL (``volprep.inputs.stage``) on fsspec's in-memory store.

What the cache needs of it: an unchanged object is not downloaded again (same mtime), a
changed one is, and its file then looks changed (its mtime moves on) even when the store
gives no modification time and the size is the same; an object gone is removed.
"""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest

from volprep import inputs
from volprep.errors import UsageError


@pytest.fixture
def store() -> fsspec.AbstractFileSystem:
    fs = fsspec.filesystem("memory")
    fs.pipe({"/vp-inputs/ds/dataset.json": b"{}", "/vp-inputs/ds/imagesTr/a.nii": b"0123",
             "/vp-inputs/ds/imagesTr/b.nii": b"4567"})
    yield fs
    fs.rm("/vp-inputs", recursive=True)


def test_stage_mirrors_then_follows_changes(store: fsspec.AbstractFileSystem, tmp_path: Path) -> None:
    first = inputs.stage("memory://vp-inputs/ds", tmp_path)
    assert first.local == tmp_path / "ds" and first.downloaded == 3
    a = first.local / "imagesTr" / "a.nii"
    assert a.read_bytes() == b"0123"
    before = a.stat().st_mtime_ns
    again = inputs.stage("memory://vp-inputs/ds", tmp_path)
    assert (again.downloaded, a.stat().st_mtime_ns) == (0, before)
    store.pipe_file("/vp-inputs/ds/imagesTr/a.nii", b"0124")  # same size, other bytes
    store.rm_file("/vp-inputs/ds/imagesTr/b.nii")
    changed = inputs.stage("memory://vp-inputs/ds", tmp_path)
    assert (changed.downloaded, changed.removed) == (1, 1)
    assert a.read_bytes() == b"0124" and a.stat().st_mtime_ns > before
    assert not (first.local / "imagesTr" / "b.nii").exists()
    assert changed.url_of(f"{a}: bad header") == "memory://vp-inputs/ds/imagesTr/a.nii: bad header"


def test_a_csv_url_mirrors_its_folder(store: fsspec.AbstractFileSystem, tmp_path: Path) -> None:
    store.pipe_file("/vp-inputs/ds/cases.csv", b"image\nimagesTr/a.nii\n")
    staged = inputs.stage("memory://vp-inputs/ds/cases.csv", tmp_path)
    assert staged.local == tmp_path / "ds" / "cases.csv" and staged.local.is_file()
    assert (tmp_path / "ds" / "imagesTr" / "a.nii").is_file()


def test_nothing_there_is_one_line(store: fsspec.AbstractFileSystem, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^memory://vp-inputs/none: no such dataset"):
        inputs.stage("memory://vp-inputs/none", tmp_path)


def test_a_killed_download_leaves_nothing_behind(store: fsspec.AbstractFileSystem, tmp_path: Path) -> None:
    staged = inputs.stage("memory://vp-inputs/ds", tmp_path)
    half = staged.local / "imagesTr" / ".volprep-download-4242-a.nii"
    half.write_bytes(b"01")
    inputs.stage("memory://vp-inputs/ds", tmp_path)
    assert not half.exists()


def test_an_object_gone_while_copied_is_one_line(store: fsspec.AbstractFileSystem, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    listed = inputs._listing

    def listing_then_delete(url: str) -> tuple[str, dict[str, dict[str, object]], str]:
        found = listed(url)
        store.rm_file("/vp-inputs/ds/imagesTr/b.nii")  # another process deletes it now
        return found

    monkeypatch.setattr(inputs, "_listing", listing_then_delete)
    with pytest.raises(UsageError, match=r"^memory://vp-inputs/ds: an object went away while it was copied"):
        inputs.stage("memory://vp-inputs/ds", tmp_path)
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".volprep-download-")]
