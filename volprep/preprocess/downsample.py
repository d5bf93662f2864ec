"""Integer-factor downsampling: block mean for images, majority vote for label volumes.

This module owns the cheapest reduction. A block of ``f0 x f1 x f2`` voxels becomes one
voxel; trailing voxels that do not fill a whole block are dropped (an axis shorter than
its factor is left unreduced). The block mean is computed as separable strided sums
(``x[0::f] + x[1::f] + ...`` along one axis at a time, the first sum already in float32),
which reads the input once in whatever memory order it has (a reader's Fortran-ordered
array included) and is ~9x faster than ``reshape(...).mean(...)``; only the small result
is made C-contiguous. Labels take the most frequent value of their block; a tie goes to
the smallest non-zero label, and background (0) wins only with a strict majority, so thin
structures are not erased by a tie. The output affine places each output voxel at the
centre of its block.
"""

from __future__ import annotations

import numpy as np

from volprep import kernels


def effective_factors(
    shape: tuple[int, ...], factors: tuple[int, int, int]
) -> tuple[int, int, int]:
    """Per-axis factors actually applied: an axis shorter than its factor is kept (factor 1)."""
    out = tuple(int(f) if int(n) >= int(f) else 1 for n, f in zip(shape[:3], factors, strict=True))
    return out[0], out[1], out[2]


def downsampled_shape(
    shape: tuple[int, ...], factors: tuple[int, int, int]
) -> tuple[int, int, int]:
    """Spatial shape after :func:`block_mean` / :func:`block_majority` (floor division)."""
    eff = effective_factors(shape, factors)
    out = tuple(int(n) // f for n, f in zip(shape[:3], eff, strict=True))
    return out[0], out[1], out[2]


def _take(array: np.ndarray, axis: int, offset: int, step: int, count: int) -> np.ndarray:
    """A strided view: elements ``offset, offset + step, ...`` (``count`` of them) along ``axis``."""
    index: list[slice] = [slice(None)] * array.ndim
    index[axis] = slice(offset, offset + step * count, step)
    return array[tuple(index)]


def _block_sum(array: np.ndarray, factors: tuple[int, int, int], dtype: type) -> np.ndarray:
    """Separable strided block sums over the first three axes, in ``dtype``.

    Each axis is summed as ``f`` strided slices; the ufunc keeps the input's memory
    layout (order 'K'), so a Fortran-ordered input is never transposed. The axis with the
    largest stride goes first: its slices are whole planes, read contiguously.
    """
    out = array
    axes = sorted(range(3), key=lambda a: -abs(array.strides[a]))
    for axis in axes:
        f = factors[axis]
        if f == 1 and out.dtype == np.dtype(dtype):
            continue
        n = out.shape[axis] // f
        parts = [_take(out, axis, offset, f, n) for offset in range(f)]
        acc = np.add(parts[0], 0, dtype=dtype) if f == 1 else np.add(parts[0], parts[1], dtype=dtype)
        for part in parts[2:]:
            np.add(acc, part, out=acc, dtype=dtype)
        out = acc
    return out


def block_mean(volume: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Block mean of an ``(i, j, k[, c])`` volume by integer factors.

    Args:
        volume: any numeric dtype, any memory order.
        factors: per-axis integer factors (an axis shorter than its factor is kept).

    Returns:
        float32, C-contiguous, shape :func:`downsampled_shape` (plus channels).
    """
    eff = effective_factors(volume.shape, factors)
    if eff == (2, 2, 2):  # the common case: one compiled pass, any memory order
        return kernels.block2_mean(volume)
    summed = _block_sum(volume, eff, np.float32)
    scale = np.float32(1.0 / (eff[0] * eff[1] * eff[2]))
    return np.ascontiguousarray(np.multiply(summed, scale, dtype=np.float32))


def block_mean_reference(volume: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """The textbook block mean (crop, reshape, mean): the reference the tests hold to."""
    eff = effective_factors(volume.shape, factors)
    out = downsampled_shape(volume.shape, factors)
    extra = volume.shape[3:]
    cropped = np.asarray(volume[: out[0] * eff[0], : out[1] * eff[1], : out[2] * eff[2]], dtype=np.float64)
    blocks = cropped.reshape(out[0], eff[0], out[1], eff[1], out[2], eff[2], *extra)
    return blocks.mean(axis=(1, 3, 5)).astype(np.float32)


def label_values(labels: np.ndarray) -> np.ndarray:
    """The sorted distinct values of a label volume (bincount when the range allows)."""
    flat = labels.ravel(order="K")
    if flat.size and np.issubdtype(flat.dtype, np.integer):
        lo, hi = int(flat.min()), int(flat.max())
        if lo >= 0 and hi < 1 << 16:
            counts = np.bincount(flat.astype(np.int64, copy=False) if flat.dtype.itemsize > 2 else flat)
            return np.flatnonzero(counts).astype(labels.dtype)
    return np.unique(flat)


def block_majority(labels: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Majority vote over blocks of a ``(i, j, k)`` label volume.

    Ties go to the smallest non-zero label; background (0) wins only with a strict
    majority. Output values are always a subset of the input values.

    Args:
        labels: integer label volume, any memory order.
        factors: per-axis integer factors, as for :func:`block_mean`.

    Returns:
        C-contiguous array of ``labels.dtype``, shape :func:`downsampled_shape`.
    """
    eff = effective_factors(labels.shape, factors)
    out_shape = downsampled_shape(labels.shape, factors)
    values = label_values(labels)
    total = eff[0] * eff[1] * eff[2]
    count_dtype: type = np.uint8 if total <= 255 else np.int32
    best = np.zeros(out_shape, dtype=labels.dtype)
    best_count: np.ndarray = np.zeros(out_shape, dtype=count_dtype)
    if values.size == 1:
        best[...] = values[0]
        return best
    nonzero_total: np.ndarray = np.zeros(out_shape, dtype=count_dtype)
    for value in values:
        if value == 0:
            continue
        count = _block_sum(labels == value, eff, count_dtype)
        nonzero_total += count
        better = count > best_count
        best[better] = value
        best_count[better] = count[better]
    if 0 in values:
        zero_wins = (total - nonzero_total.astype(np.int32)) > best_count
        best[zero_wins] = 0
    return np.ascontiguousarray(best)


def block_affine(
    affine: np.ndarray, factors: tuple[int, int, int], start: tuple[float, float, float] = (0.0, 0.0, 0.0)
) -> np.ndarray:
    """Affine of a block-reduced grid: output voxel ``n`` sits at the centre of its block.

    Args:
        affine: 4x4 affine of the input grid.
        factors: per-axis block sizes (the effective ones).
        start: input-voxel index where block 0 starts, per axis (0 normally).

    Returns:
        The 4x4 affine of the output grid.
    """
    scale = np.eye(4)
    for axis, f in enumerate(factors):
        scale[axis, axis] = f
        scale[axis, 3] = start[axis] + (f - 1) / 2.0
    return np.asarray(affine, dtype=np.float64) @ scale
