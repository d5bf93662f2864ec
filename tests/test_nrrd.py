"""NRRD volumes (.nrrd, .nhdr + detached data) against pynrrd, and the reader's refusals.

pynrrd writes and reads the same files: voxels must be equal, and the affine must be
pynrrd's ``space directions``/``space origin`` taken from the header's space to RAS. The
detached data file goes through ``companion_path`` (absolute paths and ``..`` refused).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nrrd
import numpy as np
import pytest
from test_formats_registry import _takers

from volprep.cases import discover
from volprep.config import ReadConfig
from volprep.errors import DataError, HeaderError
from volprep.io import read_header, read_volume
from volprep.io.formats import FORMATS

CFG = ReadConfig()
DIRECTIONS = np.array([[0.9, 0.1, 0.0], [0.0, 1.8, 0.3], [0.2, 0.0, 2.5]])  # one row an axis
ORIGIN = np.array([12.0, -7.5, 30.0])
TO_RAS = {"left-posterior-superior": np.diag([-1.0, -1.0, 1.0]),
          "right-anterior-superior": np.eye(3), "left-anterior-superior": np.diag([-1.0, 1.0, 1.0])}


def _data(shape: tuple[int, ...] = (7, 6, 5), dtype: str = "int16") -> np.ndarray:
    return (np.random.default_rng(len(shape)).normal(0, 300, shape)).astype(dtype)


def _write(path: Path, data: np.ndarray, space: str = "left-posterior-superior", **fields: object) -> Path:
    header = {"space": space, "space directions": DIRECTIONS, "space origin": ORIGIN, **fields}
    nrrd.write(str(path), data, header, detached_header=path.suffix == ".nhdr")
    return path


@pytest.mark.parametrize("name,encoding,space,dtype", [
    ("a.nrrd", "raw", "left-posterior-superior", "int16"),
    ("a.nrrd", "gzip", "right-anterior-superior", "float32"),
    ("a.nhdr", "raw", "left-anterior-superior", "uint8"),
    ("a.nhdr", "gzip", "left-posterior-superior", ">i4"),
])
def test_agrees_with_pynrrd(tmp_path: Path, name: str, encoding: str, space: str, dtype: str) -> None:
    data = _data(dtype=dtype)
    path = _write(tmp_path / name, data, space, encoding=encoding)
    theirs, header = nrrd.read(str(path))
    volume = read_volume(path, CFG)
    np.testing.assert_array_equal(volume.data, theirs)
    expected = np.eye(4)
    expected[:3, :3] = TO_RAS[space] @ np.asarray(header["space directions"]).T
    expected[:3, 3] = TO_RAS[space] @ np.asarray(header["space origin"])
    np.testing.assert_allclose(volume.header.affine, expected, atol=1e-12)
    assert _takers(path, FORMATS) == ["nrrd"]


def test_vector_axis_is_read_as_channels(tmp_path: Path) -> None:
    data = _data((3, 7, 6, 5), "float32")  # axis 0: a vector per voxel (no space direction)
    nrrd.write(str(tmp_path / "v.nrrd"), data, {
        "space": "left-posterior-superior", "kinds": ["vector", "domain", "domain", "domain"],
        "space directions": np.vstack([np.full(3, np.nan), DIRECTIONS]), "space origin": ORIGIN})
    volume = read_volume(tmp_path / "v.nrrd", CFG)
    np.testing.assert_array_equal(volume.data, np.moveaxis(data, 0, -1))


def test_discovery_takes_headers_not_their_data_files(tmp_path: Path) -> None:
    _write(tmp_path / "a.nhdr", _data())  # and a.raw
    _write(tmp_path / "b.nrrd", _data())
    dataset = discover(tmp_path)
    assert [(c.case_id, c.images[0].name) for c in dataset.cases] == [("a", "a.nhdr"), ("b", "b.nrrd")]
    assert dataset.problems == ()


def _header(path: Path, data_file: str, encoding: str = "raw", extra: str = "") -> Path:
    path.write_text("NRRD0004\ntype: int16\ndimension: 3\nsizes: 7 6 5\nendian: little\n"
                    f"encoding: {encoding}\nspacings: 1 1 1\n{extra}data file: {data_file}\n")
    return path


def refused(path: Path, message: str, cfg: ReadConfig = CFG, error: type[Exception] = HeaderError) -> None:
    with pytest.raises(error) as info:
        read_volume(path, cfg)
    assert str(info.value) == message


def test_detached_data_file_stays_beside_its_header(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    secret = tmp_path / "secret.raw"
    secret.write_bytes(_data().tobytes(order="F"))
    h = _header(tmp_path / "sub" / "abs.nhdr", str(secret))
    refused(h, f"{h}: absolute data file path {str(secret)!r} refused: a data file must sit beside its header")
    h = _header(tmp_path / "sub" / "up.nhdr", "../secret.raw")
    refused(h, f"{h}: data file '../secret.raw' climbs out of the header's folder through '..': refused")
    h = _header(tmp_path / "sub" / "none.nhdr", "missing.raw")
    refused(h, f"{h}: NRRD data file 'missing.raw' not found next to the header")
    os.mkfifo(tmp_path / "sub" / "fifo.raw")
    h = _header(tmp_path / "sub" / "fifo.nhdr", "fifo.raw")
    refused(h, f"{tmp_path / 'sub' / 'fifo.raw'}: not a regular file (a FIFO)")
    (tmp_path / "sub" / "ok.raw").write_bytes(_data().tobytes(order="F"))
    np.testing.assert_array_equal(read_volume(_header(tmp_path / "sub" / "ok.nhdr", "ok.raw"), CFG).data, _data())


def test_refusals(tmp_path: Path) -> None:
    (tmp_path / "d.raw").write_bytes(_data().tobytes(order="F")[:-10])
    h = _header(tmp_path / "short.nhdr", "d.raw")
    refused(h, f"{h}: file d.raw is truncated: header claims 420 bytes of voxels from offset 0, the file holds 410")
    h = _header(tmp_path / "bz.nhdr", "d.raw", encoding="bzip2")
    refused(h, f"{h}: NRRD encoding = 'bzip2' is not supported (raw or gzip)")
    h = _header(tmp_path / "list.nhdr", "LIST")
    refused(h, f"{h}: NRRD data file = 'LIST': only one data file is supported")
    h = _header(tmp_path / "big.nhdr", "d.raw")
    refused(h, f"{h}: header claims shape (7, 6, 5) int16: 420 B, more than read.max_bytes 100 B",
            ReadConfig(max_bytes=100))
    (tmp_path / "g.raw.gz").write_bytes(gzip.compress(_data().tobytes(order="F"))[:-30])
    h = _header(tmp_path / "gz.nhdr", "g.raw.gz", encoding="gzip")
    with pytest.raises(DataError):
        read_volume(h, CFG)
    bad = tmp_path / "bad.nrrd"
    bad.write_bytes(b"NRRD0004\ntype: int16\nsizes: 7 6 5\nencoding: raw\nendian: little\n\n")
    refused(bad, f"{bad}: data offset 64 is past the end of the file (64 bytes)")
    assert read_header(_write(tmp_path / "ok.nrrd", _data()), CFG).shape == (7, 6, 5)
