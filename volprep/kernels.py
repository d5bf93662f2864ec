"""Compiled kernels (numba) for the per-voxel passes that dominate conversion time.

Each kernel does in one pass what numpy does in several, and each is held to a numpy
reference by the tests, bit for bit:

* :func:`block2_mean`: the 2x2x2 block mean of a 3D volume in any memory order and any
  numeric dtype, written C-ordered as float32 (numpy: two strided int32/float32 sums per
  axis, then a transposing copy: ~15 ms a 256x256x160 head, this: ~6 ms);
* :func:`to_float16` / :func:`from_float16`: IEEE float32 <-> float16 conversion (round to
  nearest even, numpy's exact rules), since numba has no float16 arithmetic; numpy's own
  cast takes ~2.5 ns a value here, this ~1;
* :func:`normalize16`: ``(clip(x, lo, hi) - sub) / div`` per channel, float16 or float32
  in, float16 out, with float32 arithmetic (what :func:`volprep.preprocess.normalize`
  computes, then casts).

Kernels are compiled once per machine and cached (``cache=True``: numba keeps the machine
code beside the module, or in ``NUMBA_CACHE_DIR``); ``nogil=True`` lets threads run them in
parallel.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _block2(x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    i2n, j2n, k2n = out.shape
    for k2 in range(k2n):
        k = 2 * k2
        for j2 in range(j2n):
            j = 2 * j2
            for i2 in range(i2n):
                i = 2 * i2
                s = (np.float32(x[i, j, k]) + np.float32(x[i + 1, j, k])
                     + np.float32(x[i, j + 1, k]) + np.float32(x[i + 1, j + 1, k])
                     + np.float32(x[i, j, k + 1]) + np.float32(x[i + 1, j, k + 1])
                     + np.float32(x[i, j + 1, k + 1]) + np.float32(x[i + 1, j + 1, k + 1]))
                out[i2, j2, k2] = s * np.float32(0.125)


def block2_mean(volume: np.ndarray) -> np.ndarray:
    """2x2x2 block mean of ``(i, j, k[, c])`` (trailing odd voxels dropped), float32 C-order.

    The sum of each block is taken in float32 in a fixed order (i, then j, then k pairs),
    so the result is a pure function of the input values, whatever the memory order.
    """
    extra = volume.shape[3:]
    out = np.empty((volume.shape[0] // 2, volume.shape[1] // 2, volume.shape[2] // 2, *extra), np.float32)
    if not extra:
        _block2(volume, out)
    elif extra[0] == 1:  # [..., 1] C-ordered is a contiguous 3D array
        _block2(volume[..., 0], out.reshape(out.shape[:3]))
    else:
        for c in range(extra[0]):
            plane = np.empty(out.shape[:3], np.float32)
            _block2(volume[..., c], plane)
            out[..., c] = plane
    return out


@numba.njit(cache=True, nogil=True)
def _f32_to_f16_bits(f: np.uint32) -> np.uint16:  # pragma: no cover - compiled
    """numpy's npy_floatbits_to_halfbits (round half to even), one value."""
    h_sgn = np.uint16((f & np.uint32(0x80000000)) >> np.uint32(16))
    f_exp = f & np.uint32(0x7F800000)
    if f_exp >= np.uint32(0x47800000):  # overflow, inf, nan
        if f_exp == np.uint32(0x7F800000):
            f_sig = f & np.uint32(0x007FFFFF)
            if f_sig != np.uint32(0):
                ret = np.uint16(0x7C00) + np.uint16(f_sig >> np.uint32(13))
                if ret == np.uint16(0x7C00):
                    ret += np.uint16(1)
                return h_sgn + ret
            return h_sgn + np.uint16(0x7C00)
        return h_sgn + np.uint16(0x7C00)
    if f_exp <= np.uint32(0x38000000):  # subnormal or zero in half precision
        if f_exp < np.uint32(0x33000000):
            return h_sgn
        f_exp = f_exp >> np.uint32(23)
        f_sig = np.uint32(0x00800000) + (f & np.uint32(0x007FFFFF))
        f_sig = f_sig >> (np.uint32(113) - f_exp)
        # ties to even; the shift may have dropped up to 11 bits: numpy checks them in f
        if (f_sig & np.uint32(0x00003FFF)) != np.uint32(0x00001000) or (f & np.uint32(0x000007FF)) != np.uint32(0):
            f_sig += np.uint32(0x00001000)
        h_sig = np.uint16(f_sig >> np.uint32(13))
        return h_sgn + h_sig
    h_exp = np.uint16((f_exp - np.uint32(0x38000000)) >> np.uint32(13))
    f_sig = f & np.uint32(0x007FFFFF)
    if (f_sig & np.uint32(0x00003FFF)) != np.uint32(0x00001000):
        f_sig += np.uint32(0x00001000)
    h_sig = np.uint16(f_sig >> np.uint32(13))
    # a carry out of the significand bumps the exponent (up to inf), as numpy does
    return np.uint16(h_sgn + np.uint16(h_exp + h_sig))


@numba.njit(cache=True, nogil=True)
def _to_f16(src: np.ndarray, dst: np.ndarray) -> None:  # pragma: no cover - compiled
    bits = src.view(np.uint32)
    for n in range(bits.size):
        dst[n] = _f32_to_f16_bits(bits[n])


def to_float16(values: np.ndarray) -> np.ndarray:
    """``values.astype(np.float16)`` (same bits), for float32 input; C-order out."""
    src = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    out = np.empty(values.shape, np.float16)
    _to_f16(src, out.reshape(-1).view(np.uint16))
    return out


def _half_table() -> np.ndarray:
    return np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


F16_TABLE = _half_table()
"""float32 value of every float16 bit pattern (numpy's exact conversion)."""


@numba.njit(cache=True, nogil=True)
def _from_f16(src: np.ndarray, table: np.ndarray, dst: np.ndarray) -> None:  # pragma: no cover - compiled
    for n in range(src.size):
        dst[n] = table[src[n]]


def from_float16(values: np.ndarray) -> np.ndarray:
    """``values.astype(np.float32)`` for float16 input; C-order out."""
    src = np.ascontiguousarray(values, dtype=np.float16).reshape(-1).view(np.uint16)
    out = np.empty(values.shape, np.float32)
    _from_f16(src, F16_TABLE, out.reshape(-1))
    return out


@numba.njit(cache=True, nogil=True)
def _normalize16_from16(src: np.ndarray, table: np.ndarray, channels: int, lo: np.ndarray, hi: np.ndarray,
                        sub: np.ndarray, div: np.ndarray, dst: np.ndarray) -> None:  # pragma: no cover
    tmp = np.empty(src.size, np.float32)
    for c in range(channels):  # a simple loop a channel (vectorised), then the rounding
        lo_c, hi_c, sub_c, div_c = lo[c], hi[c], sub[c], div[c]
        for n in range(c, src.size, channels):
            tmp[n] = (min(max(table[src[n]], lo_c), hi_c) - sub_c) / div_c
    bits = tmp.view(np.uint32)
    for n in range(src.size):
        dst[n] = _f32_to_f16_bits(bits[n])


@numba.njit(cache=True, nogil=True)
def _normalize16_from32(src: np.ndarray, channels: int, lo: np.ndarray, hi: np.ndarray,
                        sub: np.ndarray, div: np.ndarray, dst: np.ndarray) -> None:  # pragma: no cover
    tmp = np.empty(src.size, np.float32)
    for c in range(channels):
        lo_c, hi_c, sub_c, div_c = lo[c], hi[c], sub[c], div[c]
        for n in range(c, src.size, channels):
            tmp[n] = (min(max(src[n], lo_c), hi_c) - sub_c) / div_c
    bits = tmp.view(np.uint32)
    for n in range(src.size):
        dst[n] = _f32_to_f16_bits(bits[n])


def normalize16(image: np.ndarray, lo: np.ndarray, hi: np.ndarray, sub: np.ndarray, div: np.ndarray) -> np.ndarray:
    """``((clip(image, lo, hi) - sub) / div).astype(float16)`` per channel (last axis).

    ``image`` is float16 or float32 ``[..., C]``; every parameter is float32 ``[C]`` (use
    -inf/inf for no clipping); arithmetic in float32, then numpy's rounding to float16.
    """
    out = np.empty(image.shape, np.float16)
    dst = out.reshape(-1).view(np.uint16)
    params = [np.ascontiguousarray(p, dtype=np.float32) for p in (lo, hi, sub, div)]
    flat = np.ascontiguousarray(image).reshape(-1)
    if flat.dtype == np.float16:
        _normalize16_from16(flat.view(np.uint16), F16_TABLE, image.shape[-1], *params, dst)  # type: ignore[call-arg]
    else:
        _normalize16_from32(np.ascontiguousarray(flat, dtype=np.float32), image.shape[-1], *params, dst)  # type: ignore[call-arg]
    return out


@numba.njit(cache=True, nogil=True)
def _moments(x: np.ndarray, pivot: float, threshold: float) -> tuple:  # pragma: no cover - compiled
    n = x.size
    s = 0.0
    ss = 0.0
    lo = np.inf
    hi = -np.inf
    fn = 0
    fs = 0.0
    fss = 0.0
    for i in range(n):
        v = np.float64(x[i])
        d = v - pivot
        s += d
        ss += d * d
        if v < lo:
            lo = v
        if v > hi:
            hi = v
        if v > threshold:
            fn += 1
            fs += d
            fss += d * d
    return s, ss, lo, hi, fn, fs, fss


def moments(channel: np.ndarray, pivot: float, threshold: float) -> dict[str, float]:
    """One pass over a channel: mean, std, min, max of all voxels and of those > threshold.

    Sums are taken in float64 around ``pivot`` (any value near the data: it keeps the
    variance free of cancellation when the mean is large against the spread).
    """
    flat = np.ascontiguousarray(channel).reshape(-1)
    s, ss, lo, hi, fn, fs, fss = _moments(flat, float(pivot), float(threshold))
    n = flat.size
    mean = s / n
    out = {"n": n, "mean": pivot + mean, "std": float(np.sqrt(max(ss / n - mean * mean, 0.0))),
           "min": lo, "max": hi, "fg_n": fn}
    if fn:
        fmean = fs / fn
        out["fg_mean"] = pivot + fmean
        out["fg_std"] = float(np.sqrt(max(fss / fn - fmean * fmean, 0.0)))
    return out


@numba.njit(cache=True, nogil=True)
def _label_counts(flat: np.ndarray, lut: np.ndarray, counts: np.ndarray) -> None:  # pragma: no cover - compiled
    for i in range(flat.size):
        v = flat[i]
        if 0 <= v < lut.size and lut[v] >= 0:
            counts[lut[v]] += 1


@numba.njit(cache=True, nogil=True)
def _pick_ranks(flat: np.ndarray, lut: np.ndarray, ranks: np.ndarray, starts: np.ndarray,
                ends: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    seen = np.zeros(starts.size, np.int64)
    at = starts.copy()
    for i in range(flat.size):
        v = flat[i]
        if 0 <= v < lut.size:
            li = lut[v]
            if li >= 0:
                p = at[li]
                if p < ends[li] and ranks[p] == seen[li]:
                    out[p] = i
                    at[li] = p + 1
                seen[li] += 1


def label_counts(flat: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Voxels of each label: ``counts[lut[v]]`` for every value ``v`` of ``flat`` with
    ``lut[v] >= 0`` (values outside ``lut`` and ``lut[v] < 0`` are not counted); int64."""
    counts = np.zeros(int(lut.max(initial=-1)) + 1, np.int64)
    _label_counts(flat, lut, counts)
    return counts


def pick_ranks(flat: np.ndarray, lut: np.ndarray, ranks: np.ndarray, starts: np.ndarray,
               ends: np.ndarray) -> np.ndarray:
    """The flat indices of chosen voxels of each label, in one pass.

    Label ``l`` (= ``lut[v]``) wants its voxels of ranks ``ranks[starts[l]:ends[l]]``
    (sorted; rank r is its (r+1)-th voxel in flat order); returns, at the same positions,
    their indices into ``flat`` (int64).
    """
    out = np.zeros(ranks.size, np.int64)
    _pick_ranks(flat, lut, ranks.astype(np.int64), starts.astype(np.int64), ends.astype(np.int64), out)
    return out
