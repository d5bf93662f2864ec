"""The cache is never trusted blindly: a damaged entry is recomputed, said so, never used.

Each test damages one cache entry the way a disk, a user or a crash can (a deleted chunk
reads back as zarr's fill value; flipped bytes; edited metadata; a truncated chunk; a
garbled header; a missing folder; a file where a folder should be), reruns the job and
asserts: exit 0, the summary says an entry was recomputed, and the shards and manifest
are byte-identical to those of the undamaged run (so nothing of the damaged entry
reached them).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import outputs

from volprep.cli import main

CASE = "demo_004"


@pytest.fixture(scope="module")
def reference(demo_data: Path, pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cache-ref") / "out"
    assert main(_args(demo_data, out, pipeline)) == 0
    return out


def _args(data: Path, out: Path, pipeline: Path) -> list[str]:
    return ["shards", str(data), "--out", str(out), "--config", str(pipeline), "--workers", "1",
            "--quiet", "--no-report"]


def _chunk(entry: Path, array: str) -> Path:
    chunks = [p for p in (entry / array / "c").rglob("*") if p.is_file()]
    assert chunks, f"no chunk files under {entry / array}"
    return sorted(chunks)[0]


def _delete_image_chunk(entry: Path) -> None:
    _chunk(entry, "image").unlink()


def _delete_mask_chunk(entry: Path) -> None:
    _chunk(entry, "mask").unlink()


def _flip_two_bytes(entry: Path) -> None:
    chunk = _chunk(entry, "image")
    data = bytearray(chunk.read_bytes())
    for at in (len(data) // 3, 2 * len(data) // 3):
        data[at] ^= 0x10
    chunk.write_bytes(bytes(data))


def _truncate_chunk(entry: Path) -> None:
    chunk = _chunk(entry, "image")
    chunk.write_bytes(chunk.read_bytes()[: len(chunk.read_bytes()) // 2])


def _edit_stats(entry: Path) -> None:
    meta_file = entry / "zarr.json"
    doc = json.loads(meta_file.read_text())
    doc["attributes"]["meta"]["stats"][0]["fg_mean"] += 1.0
    meta_file.write_text(json.dumps(doc))


def _garble_header(entry: Path) -> None:
    (entry / "image" / "zarr.json").write_text("{ not json")


def _garble_group(entry: Path) -> None:
    (entry / "zarr.json").write_bytes(b"\x00\x01garbage")


def _file_instead_of_folder(entry: Path) -> None:
    shutil.rmtree(entry)
    entry.write_text("not a zarr group")


DAMAGE: dict[str, Callable[[Path], None]] = {
    "deleted image chunk": _delete_image_chunk,
    "deleted mask chunk": _delete_mask_chunk,
    "two flipped bytes": _flip_two_bytes,
    "truncated chunk": _truncate_chunk,
    "edited statistics": _edit_stats,
    "garbled array header": _garble_header,
    "garbled group header": _garble_group,
    "a file instead of the entry": _file_instead_of_folder,
}


@pytest.mark.parametrize("how", list(DAMAGE))
def test_a_damaged_entry_is_recomputed_and_said_so(how: str, reference: Path, demo_data: Path,
                                                   pipeline: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    DAMAGE[how](out / "cache.zarr" / "cases" / CASE)
    capsys.readouterr()
    assert main(_args(demo_data, out, pipeline)) == 0
    printed = capsys.readouterr().out
    assert "damaged entry recomputed" in printed, printed
    assert "Traceback" not in printed
    assert outputs(out) == outputs(reference)
    # and the entry is whole again: a second rerun reuses every case without a note
    assert main(_args(demo_data, out, pipeline)) == 0
    again = capsys.readouterr().out
    assert "recomputed" not in again and "12 reused from cache" in again


def test_a_missing_entry_is_simply_recomputed(reference: Path, demo_data: Path, pipeline: Path,
                                              tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    shutil.rmtree(out / "cache.zarr" / "cases" / CASE)
    capsys.readouterr()
    assert main(_args(demo_data, out, pipeline)) == 0
    assert "11 reused from cache" in capsys.readouterr().out
    assert outputs(out) == outputs(reference)
