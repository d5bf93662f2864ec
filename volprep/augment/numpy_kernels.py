"""numpy kernels of the offline executor: resampling, Fourier shift, intensity curves.

Pure functions of arrays, shared by the op modules (:mod:`volprep.augment.ops`); the
executor that runs the ops is :mod:`volprep.augment.numpy_ops`. Images are ``[D, H, W, C]``
float32, masks ``[D, H, W]`` integer label volumes; every kernel returns new arrays.

The affine is resampled with linear interpolation as three 1D passes (see
:func:`volprep.augment.ops.affine.pull_passes`), one along each axis, rather than one
trilinear pass: both executors use this same decomposition (one spec, two executors, equal
results), and it is what makes the TF executor fast (1D gathers along lines instead of 8-tap
3D gathers). It is exact for images linear along lines and differs from direct trilinear
interpolation (``scipy.ndimage.affine_transform(order=1)``, kept as
:func:`volprep.augment.numpy_ops.reference_affine`) by a second-order term of the same size as trilinear's own error. Outside the grid each
image channel is filled with its own minimum (the same convention in TF), blending at the
border like scipy's ``mode="grid-constant"``. Masks are resampled by the same passes with
nearest neighbour (``floor(x + 0.5)``) and filled with 0, so they keep their dtype and their
label set.

The Fourier shift multiplies the ``rfftn`` of each channel by a phase ramp (frequencies of
``np.fft.fftfreq``, so the Nyquist bin of an even axis gets the real part of its ramp, as
``irfftn`` keeps it): exact for band-limited data, circular, and an integer shift is
``np.roll``. Masks cannot be shifted by a fraction: they are rolled by the rounded shift
(``floor(s + 0.5)``).
"""

from __future__ import annotations

import numpy as np


def _pass_coords(row: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``row . (q, 1)`` on the grid, as float32 (the precision the TF executor uses)."""
    i, j, k = (np.arange(n, dtype=np.float32) for n in shape[:3])
    r = row.astype(np.float32)
    return ((r[0] * i)[:, None, None] + (r[1] * j)[None, :, None] + (r[2] * k)[None, None, :]) + r[3]


def _flat_base(shape: tuple[int, ...], axis: int) -> tuple[np.ndarray, int]:
    """Flat indices of a [D, H, W] grid with the coordinate along ``axis`` zeroed, and its stride."""
    d, h, w = shape[:3]
    strides = (h * w, w, 1)
    idx = [np.arange(n, dtype=np.int64) * s for n, s in zip(shape[:3], strides, strict=True)]
    idx[axis] = np.zeros(shape[axis], dtype=np.int64)
    return idx[0][:, None, None] + idx[1][None, :, None] + idx[2][None, None, :], strides[axis]


def _lerp_axis(x: np.ndarray, coord: np.ndarray, axis: int, fill: np.ndarray) -> np.ndarray:
    """``x`` ([D, H, W, C]) sampled along ``axis`` at ``coord`` ([D, H, W]).

    A tap outside the grid reads ``fill`` ([C]); the weight of the outside taps is added
    explicitly (not ``x - fill`` then ``+ fill``), so integer positions copy values exactly.
    Gathers rows of the flat ``[D*H*W, C]`` array (``np.take`` on flat indices is 2-4x
    faster than ``take_along_axis`` here).
    """
    n = x.shape[axis]
    base, stride = _flat_base(x.shape, axis)
    flat = np.ascontiguousarray(x).reshape(-1, x.shape[3])
    floor = np.floor(coord)
    frac = coord - floor
    i0 = floor.astype(np.int64)
    i1 = i0 + 1
    in0 = (i0 >= 0) & (i0 < n)
    in1 = (i1 >= 0) & (i1 < n)
    one, zero = np.float32(1), np.float32(0)
    w0 = np.where(in0, one - frac, zero)[..., None]
    w1 = np.where(in1, frac, zero)[..., None]
    wout = (np.where(in0, zero, one - frac) + np.where(in1, zero, frac))[..., None]
    v0 = np.take(flat, base + np.clip(i0, 0, n - 1) * stride, axis=0)
    v1 = np.take(flat, base + np.clip(i1, 0, n - 1) * stride, axis=0)
    return (w0 * v0 + w1 * v1 + wout * fill).astype(np.float32, copy=False)


def _nearest_axis(x: np.ndarray, coord: np.ndarray, axis: int) -> np.ndarray:
    """``x`` ([D, H, W]) at the nearest index along ``axis``; 0 outside."""
    n = x.shape[axis]
    base, stride = _flat_base(x.shape, axis)
    idx = np.floor(coord + np.float32(0.5)).astype(np.int64)
    inside = (idx >= 0) & (idx < n)
    values = np.take(np.ascontiguousarray(x).reshape(-1), base + np.clip(idx, 0, n - 1) * stride)
    return np.where(inside, values, np.zeros((), dtype=x.dtype))


def warp_image(image: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Resamples ``[D, H, W, C]`` through the three passes ``rows`` (linear, fill = channel min)."""
    low = image.min(axis=(0, 1, 2)).astype(np.float32)
    out = image
    for axis in range(3):
        out = _lerp_axis(out, _pass_coords(rows[axis], image.shape), axis, low)
    return out


def warp_mask(mask: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Resamples a ``[D, H, W]`` label volume through the passes ``rows`` (nearest, fill 0)."""
    out = mask
    for axis in range(3):
        out = _nearest_axis(out, _pass_coords(rows[axis], mask.shape), axis)
    return out


def fourier_shift(image: np.ndarray, shift: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """Circularly shifts ``[D, H, W, C]`` by ``shift`` voxels with an ``rfftn`` phase ramp."""
    spatial = image.shape[:3]
    spectrum = np.fft.rfftn(image, axes=(0, 1, 2))
    ramp = np.ones((1, 1, 1), dtype=np.complex128)
    for axis, (n, s) in enumerate(zip(spatial, shift, strict=True)):
        freq = np.fft.rfftfreq(n) if axis == 2 else np.fft.fftfreq(n)
        phase = np.exp(-2j * np.pi * freq * float(s))
        ramp = ramp * phase.reshape([-1 if a == axis else 1 for a in range(3)])
    spectrum = spectrum * ramp[..., None].astype(spectrum.dtype)
    return np.fft.irfftn(spectrum, s=spatial, axes=(0, 1, 2)).astype(np.float32)


def roll_mask(mask: np.ndarray, shift: tuple[float, float, float]) -> np.ndarray:
    """Rolls a label volume by the rounded ``shift`` (``floor(s + 0.5)``), circularly."""
    steps = tuple(int(np.floor(float(s) + 0.5)) for s in shift)
    return np.roll(mask, steps, axis=(0, 1, 2))


def scale_shift(image: np.ndarray, scale: float, shift: float) -> np.ndarray:
    """``x * scale + shift`` in float32."""
    return (image * np.float32(scale) + np.float32(shift)).astype(np.float32, copy=False)


def gamma_curve(image: np.ndarray, gamma: float) -> np.ndarray:
    """Gamma on the per-channel min-max normalised values, mapped back to the same min and max:
    ``lo + (hi - lo) * ((x - lo) / (hi - lo)) ** gamma``; a constant channel is left alone."""
    low = image.min(axis=(0, 1, 2), keepdims=True)
    span = image.max(axis=(0, 1, 2), keepdims=True) - low
    safe = np.where(span > 0, span, np.float32(1))
    unit = np.clip((image - low) / safe, 0, 1)
    return np.where(span > 0, low + span * unit ** np.float32(gamma), image).astype(np.float32, copy=False)
