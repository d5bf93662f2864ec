"""Checks that a label (segmentation) volume fits the image it labels.

This module owns :func:`check_label`: a label volume must lie on its image's grid (same
spatial shape, affines equal within ``read.affine_tolerance`` mm), hold whole,
non-negative values (float storage is accepted when every value is integral), and, when
the dataset declares its labels, only declared values. It returns the labels as
``uint8`` (``int16`` when a value exceeds 255), keeping the file's memory order.
Every refusal is a one-line :class:`~volprep.errors.LabelError` naming the label file.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

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
    if data.shape != grid:
        raise LabelError(
            path, f"label shape {data.shape} differs from image shape {grid} ({image.path.name})"
        )
    gap = float(np.max(np.abs(np.asarray(mask.header.affine) - np.asarray(image.affine))))
    if not gap <= cfg.affine_tolerance:
        raise LabelError(
            path, f"label affine differs from the image's by {gap:.3g} mm "
            f"(read.affine_tolerance = {cfg.affine_tolerance:g}; {image.path.name})",
        )
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
