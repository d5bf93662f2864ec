"""Foreground cropping and centred crop/pad to a target shape.

This module owns the last geometric step of preprocessing. ``foreground_box`` is the
bounding box of voxels that are foreground (``intensity.foreground_mask``) in any channel
or labelled (> 0) in the mask; ``centre_crop_pad`` cuts or pads each axis symmetrically
(an odd surplus goes to the end) so every case has the target shape, padding images with
a per-channel fill (the channel minimum: background) and masks with 0. Both return what
they did, in voxels of their input grid, so the affine and the manifest can follow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from volprep.preprocess.intensity import foreground_mask


def foreground_box(image: np.ndarray, mask: np.ndarray | None = None) -> list[list[int]] | None:
    """``[[start, stop], ...]`` per spatial axis of the foreground, or None when there is none."""
    fg = np.zeros(image.shape[:3], dtype=bool)
    for c in range(image.shape[3]):
        fg |= foreground_mask(image[..., c])
    if mask is not None:
        fg |= mask > 0
    if not fg.any():
        return None
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(fg.any(axis=other))
        box.append([int(hits[0]), int(hits[-1]) + 1])
    return box


def crop_to_box(array: np.ndarray, box: list[list[int]]) -> np.ndarray:
    """The sub-volume of ``array`` inside ``box`` (a view)."""
    return array[box[0][0]: box[0][1], box[1][0]: box[1][1], box[2][0]: box[2][1]]


def centre_crop_pad_plan(
    shape: tuple[int, ...], target: tuple[int, int, int]
) -> dict[str, list[list[int]]]:
    """Per axis, the ``crop`` ``[start, stop]`` in the input and ``pad`` ``[before, after]``."""
    crop, pad = [], []
    for n, t in zip(shape[:3], target, strict=True):
        if n >= t:
            start = (n - t) // 2
            crop.append([start, start + t])
            pad.append([0, 0])
        else:
            before = (t - n) // 2
            crop.append([0, n])
            pad.append([before, t - n - before])
    return {"crop": crop, "pad": pad}


def centre_crop_pad(
    array: np.ndarray, plan: dict[str, Any], fill: np.ndarray | float
) -> np.ndarray:
    """Applies a :func:`centre_crop_pad_plan` to ``(i, j, k[, c])``, filling with ``fill``.

    Args:
        array: image (channels last) or label volume.
        plan: from :func:`centre_crop_pad_plan`.
        fill: scalar, or one value per channel for images.

    Returns:
        A new C-contiguous array of the target shape and ``array``'s dtype.
    """
    cropped = crop_to_box(array, plan["crop"])
    pad = plan["pad"]
    out_shape = tuple(cropped.shape[a] + pad[a][0] + pad[a][1] for a in range(3)) + cropped.shape[3:]
    out = np.empty(out_shape, dtype=array.dtype)
    out[...] = np.asarray(fill, dtype=array.dtype)
    out[pad[0][0]: pad[0][0] + cropped.shape[0],
        pad[1][0]: pad[1][0] + cropped.shape[1],
        pad[2][0]: pad[2][0] + cropped.shape[2]] = cropped
    return out


def shift_affine(affine: np.ndarray, offset: list[int] | np.ndarray) -> np.ndarray:
    """Affine of a grid whose voxel 0 is input voxel ``offset`` (a crop start, minus padding)."""
    step = np.eye(4)
    step[:3, 3] = np.asarray(offset, dtype=np.float64)
    return np.asarray(affine, dtype=np.float64) @ step
