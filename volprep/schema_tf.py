"""The record schema in TensorFlow: a parse spec and batched decoders.

The TF binding of :mod:`volprep.schema`: the same :class:`~volprep.schema.Schema` (from
the manifest) becomes the ``tf.io.parse_example`` spec of the features asked for
(:func:`parse_spec`) and the batched decoders that give them static shapes
(:func:`decode_batch`). Every raw feature's byte length is checked in the graph against
the schema: a record that disagrees raises ``InvalidArgumentError`` naming the feature
and the expected size, never a silently re-batched reshape.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import tensorflow as tf

from volprep.schema import Feature, Schema


def parse_spec(schema: Schema, names: Iterable[str] | None = None) -> dict[str, Any]:
    """``tf.io.parse_example`` features for ``names`` (default: every feature)."""
    spec: dict[str, Any] = {}
    for name in names if names is not None else schema:
        feature = schema[name]
        if feature.encoding == "int64":
            spec[name] = tf.io.FixedLenFeature(list(feature.shape), tf.int64)
        elif feature.encoding == "float":
            spec[name] = tf.io.FixedLenFeature(list(feature.shape), tf.float32)
        else:  # raw, bytes, wavelet-*: one bytes element
            spec[name] = tf.io.FixedLenFeature([], tf.string)
    return spec


def decode_batch(parsed: dict[str, Any], schema: Schema) -> dict[str, Any]:
    """Decodes a parsed batch: raw arrays to their static shapes, wavelets reconstructed."""
    return {name: _decode(value, schema[name]) for name, value in parsed.items()}


def _decode(value: Any, feature: Feature) -> Any:
    if feature.encoding == "raw":
        return _raw(value, feature)
    if feature.encoding == "wavelet-compress":
        from volprep.preprocess.wavelet_tf import decode_batch as wavelet_decode

        return tf.ensure_shape(wavelet_decode(value, dict(feature.layout or {})), [value.shape[0], *feature.shape])
    return value


def _raw(value: Any, feature: Feature) -> Any:
    dtype = tf.dtypes.as_dtype(feature.dtype)
    shape = list(feature.shape)
    expected = math.prod(shape) * dtype.size
    check = tf.debugging.assert_equal(
        tf.strings.length(value), tf.constant(expected, tf.int32),
        message=(f"feature {feature.name}: the record bytes do not match the manifest "
                 f"({feature.dtype} {shape} = {expected} bytes a record)"))
    with tf.control_dependencies([check]):
        flat = tf.io.decode_raw(value, dtype, little_endian=True)
    out = tf.reshape(flat, [tf.shape(value)[0], *shape])
    return tf.ensure_shape(out, [value.shape[0], *shape])
