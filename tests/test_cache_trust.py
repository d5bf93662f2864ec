"""The cache is never trusted blindly: a damaged entry is recomputed, said so, never used.

Each test damages one cache entry the way a disk, a user or a crash can (flipped bytes in
the image or the mask, a truncated file, edited statistics in the header, a garbled or
foreign header, a folder where the file should be), reruns the job and asserts: exit 0,
the summary says an entry was recomputed, and the shards and manifest are byte-identical
to those of the undamaged run (so nothing of the damaged entry reached them).
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import outputs

from volprep.cache import MAGIC
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


def _header(entry: Path) -> tuple[dict, int]:
    """The entry's JSON header and where its arrays start (read as the format documents it)."""
    data = entry.read_bytes()
    assert data[:8] == MAGIC
    (length,) = struct.unpack("<Q", data[8:16])
    return json.loads(data[16:16 + length]), 16 + length


def _flip(entry: Path, array: str) -> None:
    header, start = _header(entry)
    spec = header["arrays"][array]
    data = bytearray(entry.read_bytes())
    for k in (1, 2):  # two bytes inside the array
        data[start + spec["offset"] + k * spec["nbytes"] // 3] ^= 0x10
    entry.write_bytes(bytes(data))


def _flip_image(entry: Path) -> None:
    _flip(entry, "image")


def _flip_mask(entry: Path) -> None:
    _flip(entry, "mask")


def _truncate(entry: Path) -> None:
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size - 1000])


def _edit_stats(entry: Path) -> None:
    header, start = _header(entry)
    header["meta"]["stats"][0]["fg_mean"] += 1.0
    text = json.dumps(header, sort_keys=True).encode()
    text += b" " * (start - 16 - len(text))  # same length: the arrays stay where they were
    data = bytearray(entry.read_bytes())
    data[16:start] = text
    entry.write_bytes(bytes(data))


def _garble_header(entry: Path) -> None:
    data = bytearray(entry.read_bytes())
    data[20:40] = b"{ not json at all   "
    entry.write_bytes(bytes(data))


def _foreign_file(entry: Path) -> None:
    entry.write_bytes(b"\x00\x01garbage, not a volprep cache entry")


def _folder_instead_of_file(entry: Path) -> None:
    entry.unlink()
    entry.mkdir()
    (entry / "zarr.json").write_text("{}")


DAMAGE: dict[str, Callable[[Path], None]] = {
    "two flipped bytes in the image": _flip_image,
    "two flipped bytes in the mask": _flip_mask,
    "truncated file": _truncate,
    "edited statistics": _edit_stats,
    "garbled header": _garble_header,
    "a foreign file": _foreign_file,
    "a folder instead of the entry": _folder_instead_of_file,
}


@pytest.mark.parametrize("how", list(DAMAGE))
def test_a_damaged_entry_is_recomputed_and_said_so(how: str, reference: Path, demo_data: Path,
                                                   pipeline: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    DAMAGE[how](out / "cache" / "cases" / f"{CASE}.vpc")
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
    (out / "cache" / "cases" / f"{CASE}.vpc").unlink()
    capsys.readouterr()
    assert main(_args(demo_data, out, pipeline)) == 0
    assert "11 reused from cache" in capsys.readouterr().out
    assert outputs(out) == outputs(reference)
