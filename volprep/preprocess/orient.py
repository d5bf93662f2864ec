"""Reorientation of voxel arrays to a canonical axis orientation (RAS by default).

This module owns the one geometric step that never resamples: axes are permuted and
flipped (nibabel's ``io_orientation`` / ``ornt_transform`` / ``apply_orientation``) so the
voxel axes follow ``PreprocessConfig.orientation``, and the affine is fixed so every voxel
keeps its world position. For ``"RAS"`` the result equals ``nibabel.as_closest_canonical``.
The returned array is a *view* (no copy), so the reduction that follows can read it in
the reader's memory order and only the small result is made C-contiguous.
"""

from __future__ import annotations

import numpy as np
from nibabel import orientations as nio


def orientation_transform(affine: np.ndarray, orientation: str) -> np.ndarray:
    """The nibabel orientation transform from an affine's axes to ``orientation``.

    Args:
        affine: 4x4 voxel-to-world matrix (RAS+ world, NIfTI convention).
        orientation: target axis codes such as ``"RAS"`` or ``"LPS"``.

    Returns:
        A ``(3, 2)`` nibabel ``ornt`` array (target axis, flip) for ``apply_orientation``.
    """
    start = nio.io_orientation(np.asarray(affine, dtype=np.float64))
    end = nio.axcodes2ornt(tuple(orientation.upper()))
    return nio.ornt_transform(start, end)


def reoriented_geometry(
    shape: tuple[int, ...], affine: np.ndarray, orientation: str
) -> tuple[tuple[int, int, int], np.ndarray]:
    """The spatial shape and affine a volume has after :func:`reorient`, from its header.

    Args:
        shape: the array shape as read, ``(i, j, k[, c])``; only the first three count.
        affine: its 4x4 voxel-to-world matrix.
        orientation: target axis codes.

    Returns:
        ``(shape, affine)`` of the reoriented grid.
    """
    spatial = tuple(int(n) for n in shape[:3])
    ornt = orientation_transform(affine, orientation)
    new_shape = [0, 0, 0]
    for axis, (target, _flip) in enumerate(ornt):
        new_shape[int(target)] = spatial[axis]
    new_affine = np.asarray(affine, dtype=np.float64) @ nio.inv_ornt_aff(ornt, spatial)
    return (new_shape[0], new_shape[1], new_shape[2]), new_affine


def reorient(
    array: np.ndarray, affine: np.ndarray, orientation: str
) -> tuple[np.ndarray, np.ndarray]:
    """Permutes/flips the first three axes of ``array`` to ``orientation``.

    Args:
        array: ``(i, j, k)`` or ``(i, j, k, c)`` voxels in any memory order.
        affine: its 4x4 voxel-to-world matrix.
        orientation: target axis codes, e.g. ``"RAS"``.

    Returns:
        ``(view, affine)``: a view of ``array`` (no copy) in the target orientation and the
        affine of that view (world positions of the voxels unchanged).
    """
    ornt = orientation_transform(affine, orientation)
    view = nio.apply_orientation(array, ornt)
    new_affine = np.asarray(affine, dtype=np.float64) @ nio.inv_ornt_aff(ornt, array.shape[:3])
    return view, new_affine


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing (mm) along each voxel axis: the column norms of the affine."""
    norms = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    return float(norms[0]), float(norms[1]), float(norms[2])
