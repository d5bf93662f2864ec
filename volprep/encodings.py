"""How a feature's values become bytes in a record, and back: one unit per encoding.

An encoding is named in the manifest's feature spec (``"raw"``, ``"deflate"``,
``"deflate-shuffle"``, ``"int64"``, ``"float"``, ``"bytes"``, ``"wavelet-compress"``) and
knows both directions in numpy; TensorFlow's batched decoders live beside them in
:mod:`volprep.schema_tf`. ``ENCODINGS`` is the one table: a new encoding is a new unit and
one line there.

The wire form follows the contract (README "Records"): "raw" is the bytes of a C-order
little-endian array of the feature's dtype and shape, in a ``bytes_list`` of one element;
"deflate" is those bytes as one zlib stream (RFC 1950: TensorFlow's
``tf.io.decode_compressed(x, "ZLIB")``); "deflate-shuffle" is one zlib stream of the same
bytes regrouped into byte planes, plane ``k`` holding byte ``k`` (little-endian, ``k = 0``
least significant) of every element in C order (for 1-byte dtypes, "deflate"'s bytes).
Their ``layout`` may say ``{"level": L}``, the zlib level the writer used (decoding does
not need it); the same zlib build writes the same bytes, another (zlib-ng) other valid
ones. "int64" / "float" are an ``int64_list`` / ``float_list`` of the feature's shape;
"bytes" a ``bytes_list`` of one element; "wavelet-compress" documents its own layout in
the feature (``layout``; see :mod:`volprep.preprocess.wavelet`).

The array encodings ("raw", "deflate", "deflate-shuffle"; ``ARRAY_ENCODINGS``) decode to
exactly the array that was encoded, bit for bit; a payload that does not decode to the
feature's byte size is refused, naming the feature.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from volprep.preprocess import wavelet


class FeatureLike(Protocol):
    """What an encoding needs to know of a feature (read-only)."""

    @property
    def name(self) -> str: ...

    @property
    def dtype(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def layout(self) -> Mapping[str, Any] | None: ...


class Encoding(Protocol):
    """One encoding: its name, and numpy encode/decode of one record's value.

    ``array`` says that it gives back exactly the array of the feature's dtype and shape
    that was encoded, bit for bit (what a config may choose for images and label volumes).
    """

    name: str
    array: bool

    def encode(self, value: Any, feature: FeatureLike) -> Any:
        """The value as :func:`volprep.records.encode_example` takes it."""

    def decode(self, value: Any, feature: FeatureLike) -> Any:
        """The value from :func:`volprep.records.decode_example`'s output, checked."""


def one_bytes(value: Any, name: str) -> bytes:
    """The single bytes element of a ``bytes_list`` (ValueError naming the feature otherwise)."""
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], bytes):
        kind = (f"{len(value)} values" if isinstance(value, list) and len(value) != 1 else
                type(value[0] if isinstance(value, list) else value).__name__)
        raise ValueError(f"feature {name!r} should hold one bytes value, the record has {kind}")
    return value[0]


def array_bytes(value: Any, feature: FeatureLike) -> bytes:
    """The "raw" bytes of ``value``: C-order little-endian, the feature's dtype and shape."""
    array = np.asarray(value)
    if tuple(array.shape) != tuple(feature.shape):
        raise ValueError(f"feature {feature.name!r}: shape {array.shape}, the schema says {list(feature.shape)}")
    if feature.dtype == "float16" and array.dtype == np.float32:
        from volprep import kernels  # compiled: only the converter encodes

        return kernels.to_float16(array).tobytes()  # numpy's rounding, ~2.5x faster
    return np.ascontiguousarray(array, dtype=np.dtype(feature.dtype).newbyteorder("<")).tobytes()


def array_from_bytes(data: bytes, feature: FeatureLike, what: str = "bytes") -> np.ndarray:
    """``data`` ("raw" bytes) as the feature's array; ValueError naming it on a size mismatch."""
    dtype = np.dtype(feature.dtype).newbyteorder("<")
    need = dtype.itemsize * math.prod(feature.shape)
    if len(data) != need:
        raise ValueError(f"feature {feature.name!r} has {len(data)} {what}, the manifest's "
                         f"{feature.dtype} {list(feature.shape)} needs {need}")
    return np.frombuffer(data, dtype=dtype).reshape(feature.shape)


class Raw:
    """A C-order little-endian array of the feature's dtype and shape, as bytes."""

    name = "raw"
    array = True

    def encode(self, value: Any, feature: FeatureLike) -> bytes:
        return array_bytes(value, feature)

    def decode(self, value: Any, feature: FeatureLike) -> np.ndarray:
        return array_from_bytes(one_bytes(value, feature.name), feature)


DEFAULT_LEVEL = 6  # zlib's own default; masks gain 1.5-2x over level 1, level 9 costs 5-20x more time


def zlib_level(feature: FeatureLike) -> int:
    """The zlib level a deflate feature is written with (its ``layout``'s ``level``)."""
    level = (feature.layout or {}).get("level", DEFAULT_LEVEL)
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9:
        raise ValueError(f"feature {feature.name!r}: zlib level {level!r} is not an integer 0..9")
    return level


def inflate(data: bytes, size: int, name: str) -> bytes:
    """One whole zlib stream of exactly ``size`` bytes (never inflates more than ``size + 1``).

    Raises:
        ValueError: not a zlib stream, a damaged or truncated one (its Adler-32 checked),
            bytes after it, or another size; the message names the feature.
    """
    stream = zlib.decompressobj()
    try:
        out = stream.decompress(data, size + 1)
    except zlib.error as err:
        raise ValueError(f"feature {name!r}: not a valid zlib stream ({err})") from None
    if len(out) > size or stream.unconsumed_tail:
        problem = f"more than {size} bytes"
    elif not stream.eof:
        problem = f"a truncated stream ({len(out)} bytes)"
    elif stream.unused_data:
        problem = f"{len(stream.unused_data)} bytes after the stream"
    elif len(out) != size:
        problem = f"{len(out)} bytes"
    else:
        return out
    raise ValueError(f"feature {name!r}: the zlib payload holds {problem}, the manifest's shape needs {size} bytes")


def shuffle_bytes(data: bytes, itemsize: int) -> bytes:
    """Byte planes: byte ``k`` of every ``itemsize``-byte element, for ``k = 0 .. itemsize-1``."""
    if itemsize == 1:
        return data
    return np.frombuffer(data, np.uint8).reshape(-1, itemsize).T.tobytes()


def unshuffle_bytes(data: bytes, itemsize: int) -> bytes:
    """The inverse of :func:`shuffle_bytes`."""
    if itemsize == 1:
        return data
    return np.frombuffer(data, np.uint8).reshape(itemsize, -1).T.tobytes()


class Deflate:
    """The "raw" bytes as one zlib stream ("deflate"), or their byte planes ("deflate-shuffle").

    Shuffling puts the slowly varying high bytes of neighbouring values side by side,
    which helps deflate on smooth multi-byte data; 1-byte dtypes have one plane.
    """

    array = True

    def __init__(self, shuffle: bool = False) -> None:
        self.shuffle = shuffle
        self.name = "deflate-shuffle" if shuffle else "deflate"

    def encode(self, value: Any, feature: FeatureLike) -> bytes:
        data = array_bytes(value, feature)
        if self.shuffle:
            data = shuffle_bytes(data, np.dtype(feature.dtype).itemsize)
        return zlib.compress(data, zlib_level(feature))

    def decode(self, value: Any, feature: FeatureLike) -> np.ndarray:
        itemsize = np.dtype(feature.dtype).itemsize
        data = inflate(one_bytes(value, feature.name), itemsize * math.prod(feature.shape), feature.name)
        if self.shuffle:
            data = unshuffle_bytes(data, itemsize)
        return array_from_bytes(data, feature, "bytes inflated")


class Int64:
    """An ``int64_list`` of the feature's shape (a scalar for shape ``[]``)."""

    name = "int64"
    array = False

    def encode(self, value: Any, feature: FeatureLike) -> Any:
        return np.asarray(value, dtype=np.int64) if feature.shape else int(value)

    def decode(self, value: Any, feature: FeatureLike) -> Any:
        array = np.asarray(value, dtype=np.int64)
        if array.size != max(1, math.prod(feature.shape)):
            raise ValueError(f"feature {feature.name!r} holds {array.size} values, shape {list(feature.shape)}")
        return array.reshape(feature.shape) if feature.shape else int(array[0])


class Float:
    """A ``float_list`` of the feature's shape."""

    name = "float"
    array = False

    def encode(self, value: Any, feature: FeatureLike) -> Any:
        return np.asarray(value, dtype=np.float32).reshape(-1) if feature.shape else float(value)

    def decode(self, value: Any, feature: FeatureLike) -> Any:
        array = np.asarray(value, dtype=np.float32)
        if array.size != max(1, math.prod(feature.shape)):
            raise ValueError(f"feature {feature.name!r} holds {array.size} values, shape {list(feature.shape)}")
        return array.reshape(feature.shape) if feature.shape else float(array[0])


class Bytes:
    """One ``bytes`` (or UTF-8 text) element; decoded as ``str`` for dtype "string"."""

    name = "bytes"
    array = False

    def encode(self, value: Any, feature: FeatureLike) -> Any:
        return value

    def decode(self, value: Any, feature: FeatureLike) -> Any:
        data = one_bytes(value, feature.name)
        return data.decode("utf-8") if feature.dtype == "string" else data


class WaveletCompress:
    """Approximation band plus the largest detail coefficients, quantised (its ``layout``)."""

    name = "wavelet-compress"
    array = False

    def encode(self, value: Any, feature: FeatureLike) -> bytes:
        layout = self._layout(feature)
        return wavelet.encode(np.ascontiguousarray(value, np.float32), layout["wavelet"], int(layout["level"]),
                              float(layout["keep"]), values=layout["value_dtype"])

    def decode(self, value: Any, feature: FeatureLike) -> np.ndarray:
        data = one_bytes(value, feature.name)
        return np.asarray(wavelet.decode(data, dict(self._layout(feature))), dtype=np.float32).reshape(feature.shape)

    @staticmethod
    def _layout(feature: FeatureLike) -> Mapping[str, Any]:
        if not feature.layout:
            raise ValueError(f"feature {feature.name!r}: encoding 'wavelet-compress' without a layout")
        return feature.layout


ENCODINGS: dict[str, Encoding] = {e.name: e for e in (Raw(), Deflate(), Deflate(shuffle=True), Int64(), Float(),
                                                       Bytes(), WaveletCompress())}
"""Every encoding a manifest may name, by name: the one table."""

ARRAY_ENCODINGS: tuple[str, ...] = tuple(name for name, e in ENCODINGS.items() if e.array)
"""The exact array encodings, in table order: "raw", "deflate", "deflate-shuffle"."""
