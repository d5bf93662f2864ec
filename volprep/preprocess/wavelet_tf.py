"""Batched, in-graph decoding of wavelet-compressed records in TensorFlow.

This module owns the loader side of ``encode`` in :mod:`volprep.preprocess.wavelet`:
``decode_batch`` turns a batch of fixed-length records into ``[B, D, H, W, C]`` float32
with plain TF ops (no ``numpy_function``), so it runs on CPU or GPU inside ``tf.data``.
Kept coefficients are scattered into dense detail bands, then each level applies the
inverse periodized DWT separably, one axis at a time, in polyphase form: output samples
``2m + p`` are ``sum_j h[2j + p] * a[m - j]`` (circular), i.e. a few ``tf.roll``s weighted by
the synthesis filter taps. The taps are the impulse responses of
``pywt.idwt(..., mode="periodization")`` at the level's exact length, so the result
matches ``pywt.waverecn`` (filters shorter or longer than the axis alike).
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import numpy as np
import pywt
import tensorflow as tf

_TAP_EPS = 1e-12


@functools.lru_cache(maxsize=256)
def polyphase_taps(
    wavelet: str, n_in: int
) -> tuple[tuple[tuple[tuple[int, float], ...], ...], tuple[tuple[tuple[int, float], ...], ...]]:
    """Synthesis taps for one inverse periodized DWT step from ``n_in`` to ``2 * n_in``.

    Returns:
        ``(lo, hi)``: for each phase ``p`` in (0, 1), the ``(shift j, weight)`` pairs with
        ``out[2m + p] = sum weight * band[(m - j) mod n_in]``.
    """
    delta = np.zeros(n_in)
    delta[0] = 1.0
    zero = np.zeros(n_in)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        h_lo = pywt.idwt(delta, zero, wavelet, mode="periodization")
        h_hi = pywt.idwt(zero, delta, wavelet, mode="periodization")

    def taps(h: np.ndarray) -> tuple[tuple[tuple[int, float], ...], ...]:
        return tuple(
            tuple((j, float(h[2 * j + p])) for j in range(n_in) if abs(h[2 * j + p]) > _TAP_EPS)
            for p in (0, 1)
        )

    return taps(h_lo), taps(h_hi)


def _idwt_axis(lo: tf.Tensor, hi: tf.Tensor, wavelet: str, axis: int) -> tf.Tensor:
    """Inverse periodized DWT along ``axis`` of ``[N, d, h, w]`` tensors: doubles that axis."""
    n_in = int(lo.shape[axis])
    taps_lo, taps_hi = polyphase_taps(wavelet, n_in)
    phases = []
    for p in (0, 1):
        acc = None
        for band, taps in ((lo, taps_lo[p]), (hi, taps_hi[p])):
            for shift, weight in taps:
                term = (tf.roll(band, shift=shift, axis=axis) if shift else band) * weight
                acc = term if acc is None else acc + term
        phases.append(acc if acc is not None else tf.zeros_like(lo))
    stacked = tf.stack(phases, axis=axis + 1)
    shape = tf.unstack(tf.shape(lo))
    shape[axis] = shape[axis] * 2
    out = tf.reshape(stacked, tf.stack(shape))
    static = lo.shape.as_list()
    static[axis] = 2 * n_in
    return tf.ensure_shape(out, static)


def idwt3(approx: tf.Tensor, details: dict[str, tf.Tensor], wavelet: str) -> tf.Tensor:
    """One inverse 3D periodized DWT level on ``[N, d, h, w]``; ``details`` keyed like pywt."""
    bands = {"aaa": approx, **details}
    for axis in range(3):
        merged = {}
        for key in sorted({k[1:] for k in bands}):
            merged[key] = _idwt_axis(bands["a" + key], bands["d" + key], wavelet, axis + 1)
        bands = merged
    return bands[""]


def waverec3(approx: tf.Tensor, details: list[dict[str, tf.Tensor]], wavelet: str) -> tf.Tensor:
    """Multilevel inverse 3D periodized DWT, like ``pywt.waverecn(..., mode="periodization")``.

    Args:
        approx: ``[N, d, h, w]`` approximation band (batch of independent volumes).
        details: per level, coarsest first (pywt's order), dicts keyed ``"aad"``...``"ddd"``.
        wavelet: a discrete pywt wavelet name.

    Returns:
        ``[N, d * 2**L, h * 2**L, w * 2**L]``.
    """
    current = approx
    for level_details in details:
        current = idwt3(current, level_details, wavelet)
    return current


def _section(raw: tf.Tensor, spec: dict[str, Any], name: str, dtype: tf.DType) -> tf.Tensor:
    sec = spec["sections"][name]
    chunk = raw[:, sec["offset"]: sec["offset"] + sec["nbytes"]]
    if dtype.size == 1:
        return tf.bitcast(chunk, dtype) if dtype != tf.uint8 else chunk
    return tf.bitcast(tf.reshape(chunk, [-1, sec["nbytes"] // dtype.size, dtype.size]), dtype)


def decode_batch(data: tf.Tensor, spec: dict[str, Any]) -> tf.Tensor:
    """Decodes a batch of wavelet records into volumes, in graph.

    Args:
        data: ``tf.string`` tensor ``[B]`` of records written by ``wavelet.encode`` with
            this layout (every record ``spec["nbytes"]`` long).
        spec: the records' ``wavelet.layout`` dict (as stored in the manifest).

    Returns:
        float32 ``[B, D, H, W, C]``.
    """
    dims, channels = spec["shape"][:3], spec["shape"][3]
    k, n_detail, level = spec["k"], spec["n_detail"], spec["level"]
    n_bands = len(spec["bands"])
    raw = tf.io.decode_raw(data, tf.uint8)  # [B, nbytes]; fixed length by construction
    batch = tf.shape(raw)[0]
    rows = batch * channels  # one row per (record, channel)

    approx = tf.reshape(_section(raw, spec, "approx", tf.float32), [-1, *spec["approx_shape"]])
    scales = tf.reshape(_section(raw, spec, "scales", tf.float32), [-1, n_bands])
    values_dtype = tf.int16 if spec["value_dtype"] == "int16" else tf.int8
    values = tf.reshape(tf.cast(_section(raw, spec, "values", values_dtype), tf.float32), [-1, k])
    if spec["index_coding"] == "uint32":
        indices = tf.cast(tf.reshape(_section(raw, spec, "indices", tf.uint32), [-1, k]), tf.int64)
    else:
        packed = tf.reshape(_section(raw, spec, "indices", tf.uint8), [-1, spec["sections"]["indices"]["shape"][1]])
        shifts = tf.constant([7, 6, 5, 4, 3, 2, 1, 0], dtype=tf.uint8)
        bits = tf.bitwise.bitwise_and(tf.bitwise.right_shift(packed[:, :, None], shifts), 1)
        bits = tf.reshape(bits, [rows, -1])[:, :n_detail]
        # Each row has exactly K set bits; tf.where lists them row-major, so row r's
        # positions are where(...)[r*K:(r+1)*K], already sorted.
        indices = tf.reshape(tf.where(bits > 0)[:, 1], [-1, k])

    starts = tf.constant([band["offset"] for band in spec["bands"]], dtype=tf.int64)
    band_of = tf.searchsorted(tf.tile(starts[None, :], [rows, 1]), indices, side="right") - 1
    updates = values * tf.gather(scales, band_of, batch_dims=1)
    flat = indices + tf.range(tf.cast(rows, tf.int64), dtype=tf.int64)[:, None] * n_detail
    dense = tf.scatter_nd(tf.reshape(flat, [-1, 1]), tf.reshape(updates, [-1]),
                          tf.cast(tf.reshape(rows * n_detail, [1]), tf.int64))
    dense = tf.reshape(dense, [-1, n_detail])

    details: list[dict[str, tf.Tensor]] = [{} for _ in range(level)]
    for band in spec["bands"]:
        size = math.prod(band["shape"])
        piece = dense[:, band["offset"]: band["offset"] + size]
        details[level - band["level"]][band["key"]] = tf.reshape(piece, [-1, *band["shape"]])
    current = waverec3(approx, details, spec["wavelet"])
    volumes = tf.reshape(current, [-1, channels, *dims])
    return tf.transpose(volumes, [0, 2, 3, 4, 1])
