"""Anti-aliased resampling to a target spacing (mm) or a target shape.

This module owns the reduction that changes the grid by any (non-integer) factor. The
output grid keeps the input's physical extent (``n_out * spacing_out`` equals
``n_in * spacing_in`` within one output voxel) and its centre (the world coordinate of the
grid centre is unchanged). Images are smoothed with a Gaussian of sigma ``(z - 1) / 2``
input voxels along an axis shrunk by ``z > 1`` (skimage's anti-aliasing rule) and then
interpolated with ``scipy.ndimage.affine_transform`` (order 1 "linear", or 3 "cubic" with
its spline prefilter), edges clamped. Labels are sampled at the nearest input voxel
(ties rounded up, the same way everywhere), never interpolated, so their values stay a
subset of the input's.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from volprep.preprocess.orient import voxel_spacing

_ORDERS = {"linear": 1, "cubic": 3}


def resample_grid(
    shape: tuple[int, ...],
    affine: np.ndarray,
    spacing: tuple[float, float, float] | None = None,
    target_shape: tuple[int, int, int] | None = None,
) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray]:
    """The output grid of a resampling: shape, zoom (input voxels per output voxel), offset.

    Args:
        shape: input spatial shape (extra trailing axes are ignored).
        affine: input 4x4 affine (its column norms are the input spacing).
        spacing: target spacing in mm; used when given.
        target_shape: target shape, used when ``spacing`` is None.

    Returns:
        ``(out_shape, zoom, offset)``: input voxel coordinate = ``zoom * out + offset``,
        per axis; chosen so both grids share their centre.

    Raises:
        ValueError: neither ``spacing`` nor ``target_shape`` given.
    """
    n_in = np.asarray(shape[:3], dtype=np.float64)
    if spacing is not None:
        old = np.asarray(voxel_spacing(affine))
        new = np.asarray(spacing, dtype=np.float64)
        n_out = np.maximum(1, np.round(n_in * old / new)).astype(int)
        zoom = new / old
    elif target_shape is not None:
        n_out = np.asarray(target_shape, dtype=int)
        zoom = n_in / n_out
    else:
        raise ValueError("resampling needs a target spacing or a target shape")
    offset = (n_in - 1) / 2.0 - zoom * (n_out - 1) / 2.0
    out = (int(n_out[0]), int(n_out[1]), int(n_out[2]))
    return out, zoom, offset


def grid_affine(affine: np.ndarray, zoom: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The 4x4 affine of an output grid whose voxel ``o`` sits at input voxel ``zoom*o+offset``."""
    step = np.eye(4)
    step[:3, :3] = np.diag(zoom)
    step[:3, 3] = offset
    return np.asarray(affine, dtype=np.float64) @ step


def resample_image(
    volume: np.ndarray,
    out_shape: tuple[int, int, int],
    zoom: np.ndarray,
    offset: np.ndarray,
    interpolation: str = "linear",
    antialias: bool = True,
) -> np.ndarray:
    """Resamples an ``(i, j, k, c)`` image onto the grid given by ``zoom`` and ``offset``.

    Args:
        volume: any numeric dtype and memory order, channels last.
        out_shape: output spatial shape.
        zoom: input voxels per output voxel, per axis.
        offset: input voxel coordinate of output voxel 0, per axis.
        interpolation: ``"linear"`` or ``"cubic"``.
        antialias: Gaussian pre-smoothing along shrunk axes.

    Returns:
        float32, C-contiguous ``[*out_shape, c]``.

    Raises:
        ValueError: an unknown interpolation name.
    """
    if interpolation not in _ORDERS:
        raise ValueError(f"interpolation must be one of {sorted(_ORDERS)}, got {interpolation!r}")
    order = _ORDERS[interpolation]
    sigma = np.maximum(0.0, (np.asarray(zoom) - 1.0) / 2.0)
    out = np.empty((*out_shape, volume.shape[3]), dtype=np.float32)
    for c in range(volume.shape[3]):
        channel = np.asarray(volume[..., c], dtype=np.float32)
        if antialias and np.any(sigma > 0):
            channel = ndimage.gaussian_filter(channel, sigma=sigma, mode="nearest", truncate=3.0)
        out[..., c] = ndimage.affine_transform(
            channel, np.asarray(zoom, dtype=np.float64), offset=np.asarray(offset, dtype=np.float64),
            output_shape=out_shape, order=order, mode="nearest", prefilter=order > 1,
        )
    return out


def resample_labels(
    labels: np.ndarray, out_shape: tuple[int, int, int], zoom: np.ndarray, offset: np.ndarray
) -> np.ndarray:
    """Nearest-neighbour resampling of an ``(i, j, k)`` label volume (values never mixed)."""
    index = []
    for axis in range(3):
        # floor(x + 0.5), not np.round: half-to-even would alternate the direction of exact
        # ties (every voxel of a 1 -> 3 mm grid), sampling scan voxels 2, 4, 8, 10, ...
        pos = np.floor(zoom[axis] * np.arange(out_shape[axis]) + offset[axis] + 0.5).astype(np.intp)
        index.append(np.clip(pos, 0, labels.shape[axis] - 1))
    return np.ascontiguousarray(labels[np.ix_(index[0], index[1], index[2])])


def upsample_to(
    volume: np.ndarray, small_affine: np.ndarray, big_shape: tuple[int, int, int], big_affine: np.ndarray
) -> np.ndarray:
    """Linear interpolation of a reduced ``(i, j, k, c)`` volume back onto a finer grid.

    Both grids must be axis-aligned with each other (same orientation, diagonal relation),
    which holds for every reduction here. Used to measure what a reduction lost.
    """
    rel = np.linalg.solve(np.asarray(small_affine, np.float64), np.asarray(big_affine, np.float64))
    zoom = np.diag(rel[:3, :3]).copy()
    offset = rel[:3, 3].copy()
    out = np.empty((*big_shape, volume.shape[3]), dtype=np.float32)
    for c in range(volume.shape[3]):
        out[..., c] = ndimage.affine_transform(
            np.asarray(volume[..., c], dtype=np.float32), zoom, offset=offset,
            output_shape=big_shape, order=1, mode="nearest",
        )
    return out
