"""Record encoding: ``tf.train.Example`` wire format and TFRecord framing, without TensorFlow.

Converter workers never import TensorFlow (2.3 s and ~0.5 GB a process). A
``tf.train.Example`` is a small protobuf (``Example{features: Features{feature: map<string,
Feature>}}``, ``Feature`` one of ``bytes_list`` = 1, ``float_list`` = 2, ``int64_list`` =
3), so it is written here directly, with map entries sorted by key so the same features
always give the same bytes. A TFRecord is ``uint64 length, masked crc32c(length), data,
masked crc32c(data)`` (little-endian). The tests hold both to TensorFlow's own parser and
reader; :func:`decode_example` and :func:`iter_records` read them back for tools that
should not need TensorFlow (report, inspect).
"""

from __future__ import annotations

import struct
from collections.abc import Container, Iterator, Mapping, Sequence
from pathlib import Path

import crc32c
import numpy as np

from volprep import storage
from volprep.errors import DataError

FeatureValue = bytes | str | int | float | np.ndarray | Sequence[int] | Sequence[float]

_MASK_DELTA = 0xA282EAD8


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 is encoded as its two's-complement uint64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


# A message under construction: its chunks (joined once at the end) and their total
# length. Nesting only prepends small headers, so a multi-MB volume is copied once.
_Parts = tuple[list[bytes], int]


def _wrap(number: int, parts: _Parts) -> _Parts:
    chunks, length = parts
    head = _varint((number << 3) | 2) + _varint(length)
    return [head, *chunks], len(head) + length


def _feature(value: FeatureValue) -> _Parts:
    """One ``Feature`` message from a Python value (bytes/str -> bytes_list, ints, floats)."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value) if not isinstance(value, bytes) else value
        return _wrap(1, _wrap(1, ([raw], len(raw))))
    array = np.asarray(value)
    if array.dtype.kind in "iub":
        packed = b"".join(_varint(int(v)) for v in array.reshape(-1))
    elif array.dtype.kind == "f":
        packed = array.astype("<f4").reshape(-1).tobytes()
    else:
        raise TypeError(f"cannot encode a feature of dtype {array.dtype}")
    inner = _wrap(1, ([packed], len(packed))) if packed else ([], 0)
    return _wrap(3 if array.dtype.kind in "iub" else 2, inner)


def encode_example(features: Mapping[str, FeatureValue]) -> bytes:
    """Serialises features as a ``tf.train.Example``; keys sorted, so bytes are deterministic.

    Args:
        features: name -> bytes/str (a ``bytes_list`` of one element), int or int array
            (``int64_list``), float or float array (``float_list``).
    """
    chunks: list[bytes] = []
    length = 0
    for name in sorted(features):
        key = _field(1, name.encode("utf-8"))
        value_chunks, value_len = _wrap(2, _feature(features[name]))
        entry_chunks, entry_len = _wrap(1, ([key, *value_chunks], len(key) + value_len))
        chunks.extend(entry_chunks)
        length += entry_len
    out_chunks, _ = _wrap(1, (chunks, length))
    return b"".join(out_chunks)


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, memoryview | int]]:
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 2:
            size, pos = _read_varint(buf, pos)
            yield number, buf[pos:pos + size]
            pos += size
        elif wire == 0:
            value, pos = _read_varint(buf, pos)
            yield number, value
        elif wire == 5:
            yield number, buf[pos:pos + 4]
            pos += 4
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")


def decode_example(data: bytes) -> dict[str, list[bytes] | np.ndarray]:
    """Parses a serialised ``tf.train.Example`` into name -> list of bytes / int64 / float32 array.

    Raises:
        ValueError: the bytes are not an Example (IndexError on truncated protobuf as is).
    """
    return {name: _decode_feature(view) for name, view in feature_views(data).items()}


def feature_views(data: bytes | bytearray | memoryview, names: Container[str] | None = None) -> dict[str, memoryview]:
    """The ``Feature`` message of each feature of a serialised Example (of those named in
    ``names``; None: all), as views into ``data`` (nothing copied; a multi-MB payload stays
    where it was read). A map entry without a value gives an empty view.

    Raises:
        ValueError: the bytes are not an Example (IndexError on truncated protobuf is raised as is).
    """
    out: dict[str, memoryview] = {}
    for _, features in _fields(memoryview(data)):
        if not isinstance(features, memoryview):
            raise ValueError("not a tf.train.Example")
        for _, entry in _fields(features):
            if not isinstance(entry, memoryview):
                raise ValueError("not a tf.train.Example")
            name, value = "", memoryview(b"")
            for number, part in _fields(entry):
                if not isinstance(part, memoryview):
                    raise ValueError("not a tf.train.Example")
                if number == 1:
                    name = bytes(part).decode("utf-8")
                else:
                    value = part
            if names is None or name in names:
                out[name] = value
    return out


def bytes_value(feature: memoryview) -> memoryview:
    """The one value of a ``bytes_list`` Feature (a view of :func:`feature_views`), uncopied.

    Raises:
        ValueError: the Feature is not a bytes_list of one value.
    """
    for kind, payload in _fields(feature):
        if kind == 1 and isinstance(payload, memoryview):
            values = [v for _, v in _fields(payload)]
            if len(values) == 1 and isinstance(values[0], memoryview):
                return values[0]
            raise ValueError(f"a bytes_list of {len(values)} values, not one")
    raise ValueError("not a bytes_list")


def decode_feature(feature: memoryview) -> list[bytes] | np.ndarray:
    """A ``Feature`` message's values: a list of bytes, or an int64 or float32 array."""
    return _decode_feature(feature)


def _decode_feature(feature: memoryview) -> list[bytes] | np.ndarray:
    for kind, payload in _fields(feature):
        assert isinstance(payload, memoryview)
        values = [v for _, v in _fields(payload)]
        if kind == 1:
            return [bytes(v) for v in values if isinstance(v, memoryview)]
        if kind == 2:
            floats = [np.frombuffer(v, "<f4") for v in values if isinstance(v, memoryview)]
            return np.concatenate(floats) if floats else np.zeros(0, np.float32)
        ints: list[int] = []
        for v in values:
            if isinstance(v, int):
                ints.append(v)
            else:
                pos = 0
                while pos < len(v):
                    n, pos = _read_varint(v, pos)
                    ints.append(n)
        return np.array([n - (1 << 64) if n >= 1 << 63 else n for n in ints], np.int64)
    return []


def masked_crc(data: bytes | bytearray | memoryview) -> int:
    """TFRecord's masked CRC32C (hardware CRC32C instructions where the CPU has them, ~24
    GB/s here; any buffer, no copy; the GIL is released for large buffers)."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_parts(data: bytes) -> tuple[bytes, bytes, bytes]:
    """A TFRecord frame as ``(head, data, tail)``, to write without joining (no copy of a
    multi-MB record): head = length + masked CRC of the length; tail = masked CRC of data."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)), data, struct.pack("<I", masked_crc(data))


def frame_record(data: bytes) -> bytes:
    """One TFRecord frame: length, masked CRC of the length, data, masked CRC of the data."""
    return b"".join(frame_parts(data))


def iter_records(path: str | Path, *, check_crc: bool = True) -> Iterator[bytes]:
    """Yields the records of a TFRecord file (or object, at a URL), checking every CRC.

    Raises:
        DataError: a truncated frame or a CRC mismatch (names the file and the record index).
    """
    with storage.open_read(storage.location(path)) as fh:
        index = 0
        while True:
            head = fh.read(12)
            if not head:
                return
            if len(head) < 12:
                raise DataError(path, f"record {index}: truncated length header")
            (length,) = struct.unpack("<Q", head[:8])
            if check_crc and struct.unpack("<I", head[8:])[0] != masked_crc(head[:8]):
                raise DataError(path, f"record {index}: length CRC mismatch")
            data = fh.read(length)
            tail = fh.read(4)
            if len(data) < length or len(tail) < 4:
                raise DataError(path, f"record {index}: truncated data")
            if check_crc and struct.unpack("<I", tail)[0] != masked_crc(data):
                raise DataError(path, f"record {index}: data CRC mismatch")
            yield data
            index += 1
