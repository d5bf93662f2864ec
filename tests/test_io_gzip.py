"""gzipfast: bounded isal inflation, truncation and corruption detection; the gzip benchmark."""

from __future__ import annotations

import gzip
import importlib.util
import json
import zlib
from pathlib import Path

import pytest

from volprep.io import gzipfast

PAYLOAD = bytes(range(256)) * 4000


def write(tmp_path: Path, blob: bytes) -> Path:
    path = tmp_path / "s.gz"
    path.write_bytes(blob)
    return path


def test_inflate_exact_and_clean_end(tmp_path: Path) -> None:
    path = write(tmp_path, gzip.compress(PAYLOAD))
    out = gzipfast.inflate_exact(path, len(PAYLOAD))
    assert bytes(out.data) == PAYLOAD and not out.trailing
    out.data[0] = 1  # writable: numpy views of it can be edited in place


def test_inflate_fewer_bytes_than_stream_reports_trailing(tmp_path: Path) -> None:
    path = write(tmp_path, gzip.compress(PAYLOAD))
    out = gzipfast.inflate_exact(path, 1000)
    assert bytes(out.data) == PAYLOAD[:1000] and out.trailing


def test_concatenated_members(tmp_path: Path) -> None:
    path = write(tmp_path, gzip.compress(PAYLOAD[:5000]) + gzip.compress(PAYLOAD[5000:]))
    assert bytes(gzipfast.inflate_exact(path, len(PAYLOAD)).data) == PAYLOAD


@pytest.mark.parametrize(("cut", "phrase"), [(0.5, "ends after"), (-4, "no end-of-stream")])
def test_truncated_stream(tmp_path: Path, cut: float, phrase: str) -> None:
    blob = gzip.compress(PAYLOAD)
    end = int(len(blob) * cut) if isinstance(cut, float) else cut
    path = write(tmp_path, blob[:end])
    with pytest.raises(gzipfast.StreamError, match=phrase):
        gzipfast.inflate_exact(path, len(PAYLOAD))


def test_bad_crc(tmp_path: Path) -> None:
    blob = bytearray(gzip.compress(PAYLOAD))
    blob[-7] ^= 0x55
    with pytest.raises(gzipfast.StreamError, match="corrupt"):
        gzipfast.inflate_exact(write(tmp_path, bytes(blob)), len(PAYLOAD))


def test_zlib_wrapper_with_offset(tmp_path: Path) -> None:
    path = write(tmp_path, b"HEADER" + zlib.compress(PAYLOAD))
    out = gzipfast.inflate_exact(path, len(PAYLOAD), gzipfast.ZLIB_WBITS, offset=6)
    assert bytes(out.data) == PAYLOAD


def test_read_prefix_is_bounded(tmp_path: Path) -> None:
    path = write(tmp_path, gzip.compress(PAYLOAD))
    assert gzipfast.read_prefix(path, 540) == PAYLOAD[:540]
    assert gzipfast.read_prefix(path, 10**9) == PAYLOAD


def test_bench_gzip_quick(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gzip.py"
    spec = importlib.util.spec_from_file_location("bench_gzip", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "bench.json"
    assert module.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["quick"] and result["runs"] >= 5
    assert set(result["median_ms"]) >= {"volprep read_volume", "nibabel asanyarray(dataobj)"}
