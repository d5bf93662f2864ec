"""Direct reads: the loader's way to local shards, one copy of every byte after the read.

TensorFlow's own TFRecord path costs three passes over every voxel beyond the kernel's
copy from the page cache: TF's CRC32C (its portable code, ~3 GB/s here), then
``parse_example``'s copy of each feature into a string and ``decode_raw``'s copy into the
batch. Records of a local shard are read here instead, by random access (the index of
:mod:`volprep.readers.index`, built on first use): each record is read with one
``os.preadv`` into a per-thread buffer, both TFRecord CRCs are checked with hardware
CRC32C (``crc32c``, ~24 GB/s, GIL released), its features are found in place
(:func:`volprep.records.feature_views`: views, no copy), and each ``raw`` array is
copied once, straight into its slot of a 64-byte aligned batch array (TensorFlow takes
an aligned array without copying). Other encodings (deflate, wavelets) leave here as the
bytes of their payload and are decoded by the same TF decoders as parsed records
(:func:`volprep.schema_tf.decode_batch`); ``int64`` and ``float`` lists are decoded here.

A batch is read in a ``tf.numpy_function``: Python holds the GIL only to walk a few
protobuf headers a record (~20 us); the read, the CRC and the copy release it, so the
loader's parallel map reads batches on every core. Measured (benchmarks/bench_load.py):
see the README's "Speed" table.

A record that cannot be used is ``tf.errors.InvalidArgumentError`` naming the file and
the record: a CRC mismatch or a truncated file (where ``TFRecordDataset`` raises
``DataLossError``; ``tf.numpy_function`` can only pass on InvalidArgument, so the message
ends in ``[DataLossError]``), or a payload whose size disagrees with the manifest
("feature <name>: the record bytes do not match the manifest").
"""

from __future__ import annotations

import math
import os
import struct
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from volprep import storage
from volprep.errors import DataError
from volprep.readers.index import FOOTER_BYTES, HEADER_BYTES, ShardIndex, open_shard, shard_index
from volprep.records import bytes_value, decode_feature, feature_views, masked_crc
from volprep.schema import Feature, Schema

ALIGN = 64
"""Batch arrays start on this boundary (Eigen's largest alignment), so TF wraps them uncopied."""

_DIRECT_ENCODINGS = ("raw", "int64", "float")
"""Encodings decoded here; any other leaves as its payload's bytes for the TF decoders."""


def usable(where: storage.Location) -> bool:
    """True when shards at ``where`` are local files and this OS has ``os.preadv``."""
    return not storage.scheme(where) and hasattr(os, "preadv")


def aligned_empty(shape: Sequence[int], dtype: Any) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an :data:`ALIGN` boundary."""
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    raw = np.empty(size + ALIGN, np.uint8)
    start = (-raw.ctypes.data) % ALIGN
    return raw[start:start + size].view(dtype).reshape(tuple(shape))


class DirectReader:
    """Reads batches of records of one split's shard files into numpy arrays.

    Args:
        paths: the split's shard files (local paths), indexed by the rows' file column.
        counts: each file's record count (the manifest's; checked when a file is indexed).
        sizes: each file's byte size (the manifest's; checked likewise), or None.
        schema: the manifest's record schema.
        names: the features to read, in the order :meth:`read` returns them.

    Descriptors are opened on first use and closed when the reader is collected; a file
    replaced after it was opened is still read through its old descriptor (the manifest
    the loader opened describes it), never half-and-half.
    """

    def __init__(self, paths: Sequence[str], counts: Sequence[int], sizes: Sequence[int | None],
                 schema: Schema, names: Sequence[str]) -> None:
        self.paths = [str(p) for p in paths]
        self.counts = list(counts)
        self.sizes = list(sizes)
        self.schema = schema
        self.features = [schema[n] for n in names]
        self._lock = threading.Lock()
        self._open: dict[int, tuple[int, ShardIndex]] = {}
        self._local = threading.local()
        weakref.finalize(self, _close_all, self._open)

    def outputs(self) -> list[tuple[str, tuple[int, ...]]]:
        """``(numpy dtype or "bytes", per-record shape)`` of each array :meth:`read` returns."""
        out: list[tuple[str, tuple[int, ...]]] = []
        for f in self.features:
            if f.encoding == "raw":
                out.append((f.dtype, tuple(f.shape)))
            elif f.encoding == "int64":
                out.append(("int64", tuple(f.shape)))
            elif f.encoding == "float":
                out.append(("float32", tuple(f.shape)))
            else:
                out.append(("bytes", ()))
        return out

    def _file(self, file: int) -> tuple[int, ShardIndex]:
        with self._lock:
            opened = self._open.get(file)
        if opened is not None:
            return opened
        try:
            fd = open_shard(self.paths[file])
        except DataError as err:
            raise _error("NotFoundError", str(err)) from None
        try:
            index = shard_index(self.paths[file], num_records=self.counts[file], num_bytes=self.sizes[file], fd=fd)
        except DataError as err:
            os.close(fd)
            raise _error("DataLossError", str(err)) from None
        except BaseException:
            os.close(fd)
            raise
        with self._lock:
            if file in self._open:  # another thread opened it meanwhile
                os.close(fd)
                return self._open[file]
            self._open[file] = (fd, index)
        return fd, index

    def _buffer(self, size: int) -> memoryview:
        buf = getattr(self._local, "buf", None)
        if buf is None or len(buf) < size:
            buf = bytearray(max(size, 1 << 20))
            self._local.buf = buf
        return memoryview(buf)[:size]

    def read(self, rows: np.ndarray) -> list[np.ndarray]:
        """The features of the records ``rows`` (``[B, 2]`` ``(file, record)``), batched.

        Returns:
            One array per feature: ``[B, *shape]`` for raw (stored dtype), int64 and float
            features, ``[B]`` of bytes (the payload) for the other encodings.

        Raises:
            RecordError: a CRC mismatch or a truncated frame, a record that lacks a
                feature or holds one whose size or kind disagrees with the manifest.
        """
        rows = np.asarray(rows, np.int64).reshape(-1, 2)
        outs: list[np.ndarray] = []
        for dtype, shape in self.outputs():
            if dtype == "bytes":
                outs.append(np.empty(len(rows), object))
            else:
                outs.append(aligned_empty((len(rows), *shape), dtype))
        tail = bytearray(FOOTER_BYTES)
        for i, (file, record) in enumerate(rows.tolist()):
            fd, index = self._file(file)
            path = self.paths[file]
            data = self._record(fd, index, record, tail)
            try:
                views = feature_views(data, {f.name for f in self.features})
            except (ValueError, IndexError) as err:
                raise _error("DataLossError", f"{path}: record {record}: not a tf.train.Example ({err})") from None
            for j, feature in enumerate(self.features):
                view = views.get(feature.name)
                if view is None:
                    raise _error("InvalidArgumentError", f"{path}: record {record} has no feature {feature.name!r}")
                _store(outs[j], i, view, feature, path, record)
        return outs

    def _record(self, fd: int, index: ShardIndex, record: int, tail: bytearray) -> memoryview:
        """Record ``record``'s data in this thread's buffer, both CRCs checked."""
        offset, length = int(index.offsets[record]), int(index.lengths[record])
        head = bytearray(HEADER_BYTES)
        data = self._buffer(length)
        got = os.preadv(fd, [head, data, tail], offset)
        path = index.path
        if got != HEADER_BYTES + length + FOOTER_BYTES:
            raise _error("DataLossError", f"{path}: record {record}: truncated (the file changed after it was indexed)")
        if (struct.unpack_from("<Q", head)[0] != length
                or struct.unpack_from("<I", head, 8)[0] != masked_crc(memoryview(head)[:8])):
            raise _error("DataLossError", f"{path}: record {record}: length CRC mismatch (the shard is corrupt)")
        if struct.unpack("<I", tail)[0] != masked_crc(data):
            raise _error("DataLossError", f"{path}: record {record}: data CRC mismatch (the shard is corrupt; "
                                          "`volprep verify` checks every shard)")
        return data


def _store(out: np.ndarray, i: int, view: memoryview, feature: Feature, path: str, record: int) -> None:
    """Puts one record's feature into row ``i`` of its batch array."""
    if feature.encoding in ("int64", "float"):
        values = decode_feature(view)
        expected = math.prod(feature.shape)
        if not isinstance(values, np.ndarray) or values.size != expected:
            raise _error("InvalidArgumentError", f"feature {feature.name}: {path}: record {record} holds "
                                                 f"{_count(values)} values, the manifest says {expected}")
        out[i] = values.reshape(feature.shape)
        return
    try:
        payload = bytes_value(view)
    except ValueError as err:
        raise _error("InvalidArgumentError", f"feature {feature.name}: {path}: record {record}: {err}") from None
    if feature.encoding != "raw":
        out[i] = bytes(payload)
        return
    expected = out[i].nbytes
    if len(payload) != expected:
        raise _error("InvalidArgumentError",
                     f"feature {feature.name}: the record bytes do not match the manifest ({feature.dtype} "
                     f"{list(feature.shape)} = {expected} bytes a record; {path}: record {record} holds {len(payload)})")
    out[i] = np.frombuffer(payload, np.dtype(feature.dtype).newbyteorder("<")).reshape(feature.shape)


def _count(values: Any) -> int:
    return int(values.size) if isinstance(values, np.ndarray) else len(values)


class RecordError(ValueError):
    """A record the loader cannot use: corrupt, truncated, or not what the manifest says.

    A ``ValueError``, because ``tf.numpy_function`` reports those as
    ``tf.errors.InvalidArgumentError`` (any other class becomes ``UnknownError``); the
    message names the file and the record.
    """


def _error(kind: str, message: str) -> RecordError:
    """The error of a bad record; ``kind`` says what TFRecordDataset would have raised."""
    return RecordError(message if kind == "InvalidArgumentError" else f"{message} [{kind}]")


def _close_all(opened: dict[int, tuple[int, ShardIndex]]) -> None:
    for fd, _ in opened.values():
        os.close(fd)
    opened.clear()


def dataset(tf: Any, reader: DirectReader, rows: np.ndarray, num_records: int, batch: int, *,
            shuffle: bool, seed: int | None, drop_remainder: bool, ordered: bool) -> Any:
    """Batches of decoded features (a dict by name), ``num_records`` records an epoch.

    ``rows`` (``[M, 2]``, ``M >= num_records``) are the host's records in the unshuffled
    order; unshuffled, an epoch is the first ``num_records`` of them; shuffled, the first
    ``num_records`` of a fresh permutation of all ``M`` each epoch (seeded by ``seed``).
    """
    from volprep.schema_tf import decode_batch

    table = tf.constant(np.asarray(rows, np.int64).reshape(-1, 2))
    ids = tf.data.Dataset.range(len(rows))
    if shuffle and len(rows) > 1:
        ids = ids.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    ids = ids.take(num_records).batch(batch, drop_remainder=drop_remainder)
    outputs = reader.outputs()
    types = [tf.string if dt == "bytes" else tf.dtypes.as_dtype(dt) for dt, _ in outputs]
    names = [f.name for f in reader.features]
    size = batch if drop_remainder else None

    def read(positions: Any) -> dict[str, Any]:
        arrays = tf.numpy_function(reader.read, [tf.gather(table, positions)], types, stateful=False,
                                   name="volprep_direct_read")
        decoded: dict[str, Any] = {}
        encoded: dict[str, Any] = {}
        for name, array, (dt, shape) in zip(names, arrays, outputs, strict=True):
            if dt == "bytes":
                encoded[name] = tf.ensure_shape(array, [size])
            else:
                decoded[name] = tf.ensure_shape(array, [size, *shape])
        decoded.update(decode_batch(encoded, reader.schema))
        return decoded

    plain = tf.autograph.experimental.do_not_convert
    return ids.map(plain(read), num_parallel_calls=tf.data.AUTOTUNE, deterministic=ordered)
