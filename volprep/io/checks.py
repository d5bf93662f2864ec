"""Checks that a label (segmentation) volume fits the image it labels.

This module owns :func:`check_label`: a label volume must lie on its image's grid (same
spatial shape, affines equal within ``read.affine_tolerance`` mm; the same grid stored in
another voxel order, axes permuted or flipped, is reordered to the image's; a DICOM-SEG,
which may leave empty slices out, may cover part of the grid at a whole-voxel offset), hold whole,
non-negative values (float storage is accepted when every value is integral), and, when
the dataset declares its labels, only declared values. It returns the labels as
``uint8`` (``int16`` when a value exceeds 255), keeping the file's memory order.
Every refusal is a one-line :class:`~volprep.errors.LabelError` naming the label file.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
from nibabel import orientations

from volprep.config import ReadConfig
from volprep.errors import LabelError
from volprep.io.base import Header, Volume, refuse_non_finite_labels

INT16_MAX = int(np.iinfo(np.int16).max)


def _values(path: object, data: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The labels as an integer array (no copy for integer input), with min and max."""
    if data.dtype.kind == "f":
        refuse_non_finite_labels(str(path), data)
        rounded = np.rint(data)
        off = rounded != data
        if off.any():
            example = float(data[off].flat[0])
            raise LabelError(
                str(path), f"label volume holds {int(off.sum())} non-integer values "
                f"(e.g. {example:g}): labels must be whole numbers",
            )
        data = rounded
    elif data.dtype.kind == "b":
        data = data.view(np.uint8)
    elif data.dtype.kind not in "iu":
        raise LabelError(str(path), f"label dtype {data.dtype} is not numeric")
    lo, hi = data.min(), data.max()
    return data, int(lo), int(hi)


def check_label(mask: Volume, image: Header, cfg: ReadConfig,
                declared: Collection[int] | None) -> np.ndarray:
    """Checks a label volume against its image and returns it as integer labels.

    Args:
        mask: the label volume as :func:`~volprep.io.read_label_volume` returned it
            (``read_volume`` under ``read.non_finite = "zero"`` has already turned NaN
            labels into background, which no check here can see).
        image: the image's header (3D or 4D; its first three axes are the grid).
        cfg: the ``[read]`` config (``affine_tolerance``, in mm).
        declared: the label values the dataset declares, or None to accept any.

    Returns:
        ``(i, j, k)`` labels, ``uint8`` or ``int16`` when a value exceeds 255.

    Raises:
        LabelError: another grid, NaN/Inf, non-integer, negative or undeclared values, or
            a value above 32767.
    """
    path = mask.header.path
    data = mask.data
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise LabelError(path, f"label volume has shape {data.shape}: expected 3D")
    grid = tuple(image.shape[:3])
    gap = float(np.max(np.abs(np.asarray(mask.header.affine) - np.asarray(image.affine))))
    if data.shape != grid or not gap <= cfg.affine_tolerance:
        placed = _onto_grid(data, mask.header, image, cfg.affine_tolerance)
        if placed is None and data.shape != grid:
            raise LabelError(
                path, f"label shape {data.shape} differs from image shape {grid} ({image.path.name})"
            )
        if placed is None:
            raise LabelError(
                path, f"label affine differs from the image's by {gap:.3g} mm "
                f"(read.affine_tolerance = {cfg.affine_tolerance:g}; {image.path.name})",
            )
        data = placed
    values, lo, hi = _values(path, data)
    if lo < 0:
        raise LabelError(path, f"label values must be >= 0, found {lo}")
    if hi > INT16_MAX:
        raise LabelError(path, f"label value {hi} exceeds {INT16_MAX} (int16)")
    dtype = np.dtype(np.uint8) if hi <= 255 else np.dtype(np.int16)
    labels = values.astype(dtype, order="K", copy=values.dtype != dtype)
    if declared is not None:
        present = np.flatnonzero(np.bincount(labels.ravel(order="K")))
        allowed = {int(v) for v in declared}
        extra = [int(v) for v in present if int(v) not in allowed]
        if extra:
            shown = ", ".join(map(str, extra[:8])) + (", ..." if len(extra) > 8 else "")
            raise LabelError(
                path, f"label values {{{shown}}} are not among the declared labels "
                f"{sorted(allowed)}",
            )
    return labels


def _onto_grid(data: np.ndarray, label: Header, image: Header, tolerance: float) -> np.ndarray | None:
    """The label voxels in the image's voxel order, or None when they are not on its grid.

    A label stored in another voxel order of the same grid (axes permuted or flipped, as
    dcm2niix writes a DICOM series) is reordered; a ``subgrid`` label (a DICOM-SEG without
    its empty frames) lying on the image's grid at a whole-voxel offset is placed there,
    zero elsewhere. Affines are compared within ``tolerance`` mm, as for a label on the grid.
    """
    transform = orientations.ornt_transform(orientations.io_orientation(label.affine),
                                            orientations.io_orientation(image.affine))
    moved = orientations.apply_orientation(data, transform)
    affine = np.asarray(label.affine) @ orientations.inv_ornt_aff(transform, data.shape)
    target = np.asarray(image.affine, dtype=np.float64)
    if not np.max(np.abs(affine[:3, :3] - target[:3, :3])) <= tolerance:
        return None
    start = np.rint(np.linalg.solve(target[:3, :3], affine[:3, 3] - target[:3, 3])).astype(int)
    if not np.max(np.abs(target[:3, :3] @ start + target[:3, 3] - affine[:3, 3])) <= tolerance:
        return None
    grid = tuple(int(n) for n in image.shape[:3])
    end = start + np.array(moved.shape)
    if not label.subgrid:
        return np.asfortranarray(moved) if not start.any() and moved.shape == grid else None
    if (start < 0).any() or (end > np.array(grid)).any():
        return None
    out = np.zeros(grid, dtype=moved.dtype, order="F")
    out[start[0]:end[0], start[1]:end[1], start[2]:end[2]] = moved
    return out
