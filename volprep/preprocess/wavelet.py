"""Wavelet reductions: the approximation band ("approx") and thresholded, quantised
detail coefficients ("compress") that the loader reconstructs.

This module owns the numpy side of both wavelet modes and the byte format of a
compressed record. Transforms use pywavelets with ``mode="periodization"`` so each level
exactly halves each axis (inputs must have every axis a multiple of ``2**level``;
:func:`pad_to_multiple` pads with edge values). "approx" keeps the level-``L`` approximation
band divided by ``sqrt(2)**(3L)`` (an orthonormal transform's DC gain), i.e. a wavelet
downsample in intensity units. "compress" keeps, per channel, the float32 approximation
band plus the ``K = ceil(keep * n_detail)`` largest-magnitude detail coefficients over all
detail bands, each quantised as ``q * scale_of_its_band`` (int16 by default, int8 on
request; the band scale is its largest kept magnitude over ``qmax``). Kept positions are
coded as a bitmap over the detail coefficients or as sorted uint32 flat indices,
whichever is smaller (bitmap wins when ``keep > 1/32``). ``K`` depends only on the shape and
``keep``, so every record of a dataset has the same byte length and the layout
(:func:`layout`, JSON-able) describes them all; :func:`decode` inverts :func:`encode` with
``pywt.waverecn`` and ``volprep.preprocess.wavelet_tf.decode_batch`` does it batched in
TensorFlow. All multi-byte values are little-endian.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pywt

FORMAT = "volprep-wavelet-v1"
_VALUE_DTYPES = {"int8": 127, "int16": 32767}


def shape_multiple_for(level: int) -> int:
    """Every axis of a wavelet-coded volume must be a multiple of this (``2**level``)."""
    return 1 << int(level)


def pad_to_multiple(
    volume: np.ndarray, multiple: int, mode: str = "edge"
) -> tuple[np.ndarray, list[list[int]]]:
    """Pads the first three axes up to a multiple (at the end), returning the padding."""
    pad = [[0, (-int(n)) % multiple] for n in volume.shape[:3]]
    if not any(after for _, after in pad):
        return volume, pad
    widths = [tuple(p) for p in pad] + [(0, 0)] * (volume.ndim - 3)
    return np.pad(volume, widths, mode=mode), pad  # type: ignore[call-overload]


def approx_phase(wavelet: str, level: int) -> float:
    """Where approximation coefficient ``n`` is centred, in input voxels minus ``2**level * n``.

    The centroid of the equivalent low-pass filter (0.5 for haar level 1, the block
    centre; -0.37 for db2 level 1). Measured on a ramp, away from the periodic edges.
    """
    step = 1 << level
    ramp = np.arange(64 * step, dtype=np.float64)
    band = pywt.wavedec(ramp, wavelet, mode="periodization", level=level)[0] / math.sqrt(2) ** level
    middle = band.size // 2
    return float(band[middle] - step * middle)


def approximation(volume: np.ndarray, wavelet: str, level: int) -> np.ndarray:
    """The level-``level`` approximation band of each channel, in intensity units.

    Equal to ``pywt.wavedecn(x, wavelet, mode="periodization", level=level)[0] /
    sqrt(2)**(3*level)`` but computed axis by axis keeping only the low-pass branch.

    Args:
        volume: ``(i, j, k, c)``, every spatial axis a multiple of ``2**level``.
        wavelet: a discrete pywt wavelet name.
        level: decomposition level (>= 1).

    Returns:
        float32 C-contiguous ``(i/2**L, j/2**L, k/2**L, c)``.

    Raises:
        ValueError: an axis that is not a multiple of ``2**level``.
    """
    _check_multiple(volume.shape, level)
    band = np.asarray(volume, dtype=np.float32)
    for _ in range(level):
        for axis in range(3):
            band = pywt.dwt(band, wavelet, mode="periodization", axis=axis)[0]
    band = band * np.float32(1.0 / math.sqrt(2) ** (3 * level))
    return np.ascontiguousarray(band, dtype=np.float32)


def _check_multiple(shape: tuple[int, ...], level: int) -> None:
    multiple = shape_multiple_for(level)
    if any(int(n) % multiple for n in shape[:3]):
        raise ValueError(f"wavelet level {level} needs every axis a multiple of {multiple}, got shape {tuple(shape[:3])}")


def layout(
    shape: tuple[int, int, int, int] | list[int], wavelet: str, level: int, keep: float,
    values: str = "int16",
) -> dict[str, Any]:
    """The JSON-able description of every record :func:`encode` writes for this shape.

    Args:
        shape: ``[D, H, W, C]`` of the volume (spatial axes multiples of ``2**level``).
        wavelet: a discrete pywt wavelet name.
        level: decomposition level.
        keep: fraction of detail coefficients kept per channel, in (0, 1].
        values: quantised value type, ``"int16"`` or ``"int8"``.

    Returns:
        A dict with ``format``, ``shape``, ``wavelet``, ``level``, ``keep``, ``k`` (kept
        coefficients per channel), ``approx_shape``, ``n_detail``, ``bands`` (``level``,
        ``key``, ``shape``, ``offset`` into the concatenated detail coefficients, coarsest
        level first, keys in pywt's sorted order), ``index_coding`` (``"bitmap"`` or
        ``"uint32"``), ``value_dtype``, ``qmax``, ``sections`` (per section: byte
        ``offset``, ``nbytes``, ``dtype``, ``shape``; each section holds all channels),
        ``nbytes`` (the record length) and ``byteorder``.

    Raises:
        ValueError: a bad shape, keep or value type.
    """
    if values not in _VALUE_DTYPES:
        raise ValueError(f"values must be one of {sorted(_VALUE_DTYPES)}, got {values!r}")
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep!r}")
    dims = tuple(int(n) for n in shape[:3])
    channels = int(shape[3])
    _check_multiple(dims, level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        shapes = pywt.wavedecn_shapes(dims, wavelet, mode="periodization", level=level)
    approx_shape = [int(n) for n in shapes[0]]
    bands = []
    offset = 0
    for index, table in enumerate(shapes[1:]):
        for key in sorted(table):
            band_shape = [int(n) for n in table[key]]
            bands.append({"level": level - index, "key": key, "shape": band_shape, "offset": offset})
            offset += math.prod(band_shape)
    n_detail = offset
    k = max(1, min(n_detail, math.ceil(keep * n_detail)))
    bitmap_bytes = (n_detail + 7) // 8
    index_coding = "bitmap" if bitmap_bytes < 4 * k else "uint32"
    value_size = np.dtype(values).itemsize
    sections: dict[str, dict[str, Any]] = {}
    cursor = 0
    # Four-byte sections first, so every section starts at a multiple of its item size.
    plan = [
        ("approx", "float32", [channels, *approx_shape]),
        ("scales", "float32", [channels, len(bands)]),
    ]
    if index_coding == "uint32":
        plan.append(("indices", "uint32", [channels, k]))
    else:
        plan.append(("indices", "bitmap", [channels, bitmap_bytes]))
    plan.append(("values", values, [channels, k]))
    for name, dtype, section_shape in plan:
        item = 1 if dtype == "bitmap" else np.dtype(dtype).itemsize
        nbytes = item * math.prod(section_shape)
        sections[name] = {"offset": cursor, "nbytes": nbytes, "dtype": dtype, "shape": section_shape}
        cursor += nbytes
    return {
        "format": FORMAT,
        "shape": [*dims, channels],
        "wavelet": wavelet,
        "level": int(level),
        "keep": float(keep),
        "k": k,
        "approx_shape": approx_shape,
        "n_detail": n_detail,
        "bands": bands,
        "index_coding": index_coding,
        "value_dtype": values,
        "value_size": value_size,
        "qmax": _VALUE_DTYPES[values],
        "sections": sections,
        "nbytes": cursor,
        "byteorder": "little",
    }


def band_offsets(spec: dict[str, Any]) -> np.ndarray:
    """Start of each detail band in the concatenated detail coefficients (int64)."""
    return np.asarray([band["offset"] for band in spec["bands"]], dtype=np.int64)


def encode(
    volume: np.ndarray, wavelet: str, level: int, keep: float, values: str = "int16"
) -> bytes:
    """Wavelet-compresses a ``[D, H, W, C]`` float volume into one fixed-length record.

    Args:
        volume: float ``[D, H, W, C]``, spatial axes multiples of ``2**level``.
        wavelet: a discrete pywt wavelet name.
        level: decomposition level.
        keep: fraction of detail coefficients kept per channel.
        values: ``"int16"`` or ``"int8"`` quantised values.

    Returns:
        ``layout(volume.shape, ...)["nbytes"]`` bytes.
    """
    spec = layout(volume.shape, wavelet, level, keep, values)  # type: ignore[arg-type]
    k, n_detail, qmax = spec["k"], spec["n_detail"], spec["qmax"]
    starts = band_offsets(spec)
    channels = volume.shape[3]
    approx = np.empty(spec["sections"]["approx"]["shape"], dtype="<f4")
    scales = np.empty(spec["sections"]["scales"]["shape"], dtype="<f4")
    quant = np.empty((channels, k), dtype=np.dtype(values).newbyteorder("<"))
    index_parts = []
    for c in range(channels):
        coeffs = _wavedecn(np.asarray(volume[..., c], dtype=np.float32), wavelet, level)
        approx[c] = coeffs[0]
        detail = np.concatenate([coeffs[1 + spec["level"] - band["level"]][band["key"]].ravel() for band in spec["bands"]])
        magnitude = np.abs(detail)
        kept = np.sort(np.argpartition(magnitude, n_detail - k)[n_detail - k:]) if k < n_detail else np.arange(n_detail)
        band_of = np.searchsorted(starts, kept, side="right") - 1
        top = np.zeros(len(starts), dtype=np.float64)
        np.maximum.at(top, band_of, magnitude[kept])
        scale = np.where(top > 0, top / qmax, 1.0).astype(np.float32)
        scales[c] = scale
        quant[c] = np.clip(np.rint(detail[kept] / scale[band_of]), -qmax, qmax)
        if spec["index_coding"] == "uint32":
            index_parts.append(kept.astype("<u4").tobytes())
        else:
            bits = np.zeros(n_detail, dtype=bool)
            bits[kept] = True
            index_parts.append(np.packbits(bits, bitorder="big").tobytes())
    blob = approx.tobytes() + scales.tobytes() + b"".join(index_parts) + quant.tobytes()
    if len(blob) != spec["nbytes"]:  # a bug, not a user error
        raise RuntimeError(f"encoded {len(blob)} bytes, layout says {spec['nbytes']}")
    return blob


def _wavedecn(channel: np.ndarray, wavelet: str, level: int) -> list[Any]:
    # pywt warns when a level is "too high" for the filter length; with periodization
    # the transform stays exact and orthogonal, so the warning is noise here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return pywt.wavedecn(channel, wavelet, mode="periodization", level=level)


def _section(data: bytes, spec: dict[str, Any], name: str) -> np.ndarray:
    sec = spec["sections"][name]
    dtype = np.uint8 if sec["dtype"] == "bitmap" else np.dtype(sec["dtype"]).newbyteorder("<")
    arr = np.frombuffer(data, dtype=dtype, count=math.prod(sec["shape"]), offset=sec["offset"])
    return arr.reshape(sec["shape"])


def kept_indices(data: bytes, spec: dict[str, Any]) -> np.ndarray:
    """The ``[C, K]`` flat detail-coefficient indices a record keeps (sorted per channel)."""
    raw = _section(data, spec, "indices")
    if spec["index_coding"] == "uint32":
        return raw.astype(np.int64)
    bits = np.unpackbits(raw, axis=1, count=spec["n_detail"], bitorder="big")
    return np.stack([np.flatnonzero(row) for row in bits])


def decode(data: bytes, spec: dict[str, Any]) -> np.ndarray:
    """Reconstructs the ``[D, H, W, C]`` float32 volume of one :func:`encode` record.

    Args:
        data: the record bytes.
        spec: its :func:`layout`.

    Returns:
        float32 C-contiguous ``spec["shape"]``.

    Raises:
        ValueError: ``data`` has the wrong length for ``spec``.
    """
    if len(data) != spec["nbytes"]:
        raise ValueError(f"a wavelet record of this layout has {spec['nbytes']} bytes, got {len(data)}")
    dims, channels, level = spec["shape"][:3], spec["shape"][3], spec["level"]
    approx = _section(data, spec, "approx")
    scales = _section(data, spec, "scales").astype(np.float32)
    quant = _section(data, spec, "values").astype(np.float32)
    indices = kept_indices(data, spec)
    starts = band_offsets(spec)
    out = np.empty((*dims, channels), dtype=np.float32)
    for c in range(channels):
        detail = np.zeros(spec["n_detail"], dtype=np.float32)
        band_of = np.searchsorted(starts, indices[c], side="right") - 1
        detail[indices[c]] = quant[c] * scales[c][band_of]
        coeffs: list[Any] = [approx[c].astype(np.float32)] + [{} for _ in range(level)]
        for band in spec["bands"]:
            size = math.prod(band["shape"])
            piece = detail[band["offset"]: band["offset"] + size].reshape(band["shape"])
            coeffs[1 + level - band["level"]][band["key"]] = piece
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out[..., c] = pywt.waverecn(coeffs, spec["wavelet"], mode="periodization")
    return out
