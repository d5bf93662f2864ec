"""How a feature's values become bytes in a record, and back: one unit per encoding.

An encoding is named in the manifest's feature spec (``"raw"``, ``"int64"``, ``"float"``,
``"bytes"``, ``"wavelet-compress"``) and knows both directions in numpy; TensorFlow's
batched decoders live beside them in :mod:`volprep.schema_tf`. ``ENCODINGS`` is the one
table: a new encoding (a compact mask format, say) is a new unit and one line there.

The wire form follows the contract (README "Records"): "raw" is the bytes of a C-order
little-endian array of the feature's dtype and shape, in a ``bytes_list`` of one element;
"int64" / "float" an ``int64_list`` / ``float_list`` of the feature's shape; "bytes" a
``bytes_list`` of one element; "wavelet-compress" documents its own layout in the feature
(``layout``; see :mod:`volprep.preprocess.wavelet`).
"""

from __future__ import annotations

import math
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
    """One encoding: its name, and numpy encode/decode of one record's value."""

    name: str

    def encode(self, value: Any, feature: FeatureLike) -> Any:
        """The value as :func:`volprep.records.encode_example` takes it."""

    def decode(self, value: Any, feature: FeatureLike) -> Any:
        """The value from :func:`volprep.records.decode_example`'s output, checked."""


def one_bytes(value: Any, name: str) -> bytes:
    """The single bytes element of a ``bytes_list`` (ValueError naming the feature otherwise)."""
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], bytes):
        kind = f"{len(value)} values" if isinstance(value, list) else type(value).__name__
        raise ValueError(f"feature {name!r} should hold one bytes value, the record has {kind}")
    return value[0]


class Raw:
    """A C-order little-endian array of the feature's dtype and shape, as bytes."""

    name = "raw"

    def encode(self, value: Any, feature: FeatureLike) -> bytes:
        array = np.asarray(value)
        if tuple(array.shape) != tuple(feature.shape):
            raise ValueError(f"feature {feature.name!r}: shape {array.shape}, the schema says {list(feature.shape)}")
        if feature.dtype == "float16" and array.dtype == np.float32:
            from volprep import kernels  # compiled: only the converter encodes

            return kernels.to_float16(array).tobytes()  # numpy's rounding, ~2.5x faster
        return np.ascontiguousarray(array, dtype=np.dtype(feature.dtype).newbyteorder("<")).tobytes()

    def decode(self, value: Any, feature: FeatureLike) -> np.ndarray:
        data = one_bytes(value, feature.name)
        dtype = np.dtype(feature.dtype).newbyteorder("<")
        need = dtype.itemsize * math.prod(feature.shape)
        if len(data) != need:
            raise ValueError(f"feature {feature.name!r} has {len(data)} bytes, the manifest's "
                             f"{feature.dtype} {list(feature.shape)} needs {need}")
        return np.frombuffer(data, dtype=dtype).reshape(feature.shape)


class Int64:
    """An ``int64_list`` of the feature's shape (a scalar for shape ``[]``)."""

    name = "int64"

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

    def encode(self, value: Any, feature: FeatureLike) -> Any:
        return value

    def decode(self, value: Any, feature: FeatureLike) -> Any:
        data = one_bytes(value, feature.name)
        return data.decode("utf-8") if feature.dtype == "string" else data


class WaveletCompress:
    """Approximation band plus the largest detail coefficients, quantised (its ``layout``)."""

    name = "wavelet-compress"

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


ENCODINGS: dict[str, Encoding] = {e.name: e for e in (Raw(), Int64(), Float(), Bytes(), WaveletCompress())}
"""Every encoding a manifest may name, by name: the one table."""
