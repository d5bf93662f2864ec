"""Random access into a TFRecord shard: an index of record offsets, and checked reads.

A TFRecord file has no index of its own: it is a run of frames ``uint64 length, masked
crc32c(length), data, masked crc32c(data)`` (:mod:`volprep.records`). :func:`shard_index`
builds one on first use by walking the frame headers (12 bytes read, then a seek past the
data: a 64 MB shard of 5 MB records costs ~13 reads), checking each length CRC, that the
file ends on a frame boundary, and, when the manifest's figures are given, the record
count and byte size. Indices live in memory, per process, keyed by the file's identity
(device, inode, size, mtime): a rewritten file is re-indexed, and DataLoader or Grain
workers forked after the first read inherit the parent's indices. Nothing is written
beside the shards: the publisher counts files it did not write as foreign and never
deletes them (``volprep.publish``), so a sidecar index would outlive its shard.

:func:`read_record` reads one frame with ``os.pread`` (positional: safe on a descriptor
shared by forked workers) and checks both CRCs. :func:`verify_sha256` hashes a whole file
against the manifest's sha256. Every failure is a :class:`volprep.errors.DataError` naming
the file and, where there is one, the record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
import threading
from pathlib import Path

import numpy as np

from volprep.errors import DataError
from volprep.records import masked_crc

HEADER_BYTES = 12  # uint64 length + uint32 masked CRC of the length
FOOTER_BYTES = 4  # uint32 masked CRC of the data
_HASH_CHUNK = 1 << 22
_MAX_CACHED = 4096  # indices kept per process (a few KB each for typical shards)

FileKey = tuple[int, int, int, int]
"""``(st_dev, st_ino, st_size, st_mtime_ns)``: a file's identity for the caches."""


@dataclasses.dataclass(frozen=True)
class ShardIndex:
    """Where each record of one shard file starts, and its length.

    Attributes:
        path: the shard file.
        key: the file's identity when it was indexed (:data:`FileKey`).
        offsets: byte offset of each record's frame (its 12-byte header), int64.
        lengths: each record's data length in bytes, int64.
    """

    path: str
    key: FileKey
    offsets: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets)


_indices: dict[FileKey, ShardIndex] = {}
_verified: set[tuple[FileKey, str]] = set()
_lock = threading.Lock()


def open_shard(path: str | Path) -> int:
    """A read-only descriptor of a shard (``DataError`` naming the file if it cannot be opened)."""
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise DataError(path, f"cannot open the shard ({err.strerror or err})") from None


def fd_key(fd: int) -> FileKey:
    """The identity of the file an open descriptor refers to."""
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def shard_index(path: str | Path, *, num_records: int | None = None, num_bytes: int | None = None,
                fd: int | None = None) -> ShardIndex:
    """The record offsets of a shard file, built on first use and cached in memory.

    Args:
        path: a TFRecord file.
        num_records: the record count the manifest gives, checked when not None.
        num_bytes: the file size the manifest gives, checked when not None.
        fd: an open descriptor of the file to index (so the index describes the very file
            that descriptor reads, even if ``path`` is replaced meanwhile); default: the
            file now at ``path``.

    Returns:
        The file's :class:`ShardIndex` (the same object while the file is unchanged).

    Raises:
        DataError: the file is missing, a frame header is truncated or fails its CRC, the
            file does not end on a frame boundary, or its size or record count differs
            from the manifest's (each names the file, and the record where there is one).
    """
    if fd is None:
        own = open_shard(path)
        try:
            return shard_index(path, num_records=num_records, num_bytes=num_bytes, fd=own)
        finally:
            os.close(own)
    key = fd_key(fd)
    with _lock:
        cached = _indices.get(key)
    if cached is None:
        cached = _build(fd, str(path), key)
        with _lock:
            if len(_indices) >= _MAX_CACHED:
                _indices.pop(next(iter(_indices)))
            _indices[key] = cached
    if num_bytes is not None and key[2] != num_bytes:
        raise DataError(path, f"the shard has {key[2]} bytes, the manifest says {num_bytes} "
                              "(a replaced or truncated file; rerun `volprep shards`)")
    if num_records is not None and len(cached) != num_records:
        raise DataError(path, f"the shard holds {len(cached)} records, the manifest says {num_records}")
    return cached


def _build(fd: int, path: str, key: FileKey) -> ShardIndex:
    """Walks the frame headers of the file ``fd`` reads (positional reads only)."""
    size = key[2]
    offsets: list[int] = []
    lengths: list[int] = []
    pos = 0
    while pos < size:
        head = os.pread(fd, HEADER_BYTES, pos)
        record = len(offsets)
        if len(head) < HEADER_BYTES:
            raise DataError(path, f"record {record}: truncated length header at byte {pos}")
        (length,) = struct.unpack("<Q", head[:8])
        if struct.unpack("<I", head[8:])[0] != masked_crc(head[:8]):
            raise DataError(path, f"record {record}: length CRC mismatch at byte {pos} (the shard is corrupt)")
        end = pos + HEADER_BYTES + length + FOOTER_BYTES
        if end > size:
            raise DataError(path, f"record {record}: truncated data ({length} bytes announced at byte {pos}, "
                                  f"the file ends at {size})")
        offsets.append(pos)
        lengths.append(length)
        pos = end
    return ShardIndex(path, key, np.asarray(offsets, np.int64), np.asarray(lengths, np.int64))


def read_record(fd: int, index: ShardIndex, record: int) -> bytes:
    """The data of record ``record`` of an indexed shard, both CRCs checked.

    Args:
        fd: an open descriptor of ``index.path`` (read with ``os.pread``; no shared offset).
        index: the shard's index.
        record: 0-based record number in the file.

    Raises:
        IndexError: ``record`` out of range.
        DataError: a short read or a CRC mismatch (names the file and the record).
    """
    if not 0 <= record < len(index):
        raise IndexError(f"{index.path}: record {record} out of range (0..{len(index) - 1})")
    offset, length = int(index.offsets[record]), int(index.lengths[record])
    # Three positional reads (header, data, footer) rather than one and two slices: a
    # multi-MB record is copied once, by the kernel.
    head = os.pread(fd, HEADER_BYTES, offset)
    data = os.pread(fd, length, offset + HEADER_BYTES)
    tail = os.pread(fd, FOOTER_BYTES, offset + HEADER_BYTES + length)
    if len(head) != HEADER_BYTES or len(data) != length or len(tail) != FOOTER_BYTES:
        raise DataError(index.path, f"record {record}: truncated data (the file changed after it was indexed)")
    if (struct.unpack("<Q", head[:8])[0] != length
            or struct.unpack("<I", head[8:])[0] != masked_crc(head[:8])):
        raise DataError(index.path, f"record {record}: length CRC mismatch (the shard is corrupt or was rewritten)")
    if struct.unpack("<I", tail)[0] != masked_crc(data):
        raise DataError(index.path, f"record {record}: data CRC mismatch (the shard is corrupt; "
                                    "`volprep verify` checks every shard)")
    return data


def verify_sha256(path: str | Path, expected: str) -> None:
    """Hashes a whole shard and compares it with the manifest's sha256 (once per file version).

    Raises:
        DataError: the file cannot be opened, or the digests differ (names the file and both).
    """
    fd = open_shard(path)
    try:
        key = fd_key(fd)
        with _lock:
            if (key, expected) in _verified:
                return
        digest = hashlib.sha256()
        pos = 0
        while chunk := os.pread(fd, _HASH_CHUNK, pos):
            digest.update(chunk)
            pos += len(chunk)
    finally:
        os.close(fd)
    got = digest.hexdigest()
    if got != expected:
        raise DataError(path, f"sha256 {got[:16]}..., the manifest says {expected[:16]}... (the shard is corrupt "
                              "or was replaced)")
    with _lock:
        _verified.add((key, expected))


def clear_caches() -> None:
    """Forgets every index and sha256 verification of this process (tests, long-lived servers)."""
    with _lock:
        _indices.clear()
        _verified.clear()
