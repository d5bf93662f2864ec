"""The offline executor: renders one :class:`~volprep.augment.spec.Params` on one volume (numpy).

``apply(params, image, mask)`` is a pure, deterministic function of its arguments: the same
params give the same bytes. It runs each op recorded in ``params`` through the op's numpy
``apply``, in the order of the op table (:data:`volprep.augment.registry.OPS`: flips,
quarter turns, the affine, the Fourier shift, intensity scale/shift, gamma, noise); an op
with no entry is skipped. The TensorFlow executor (:mod:`volprep.augment.tf_ops`) runs the
same ops batched; tests hold the two to each other. The kernels live in
:mod:`volprep.augment.numpy_kernels` (re-exported here for callers of the old names);
:func:`reference_affine`, the scipy reference the three-pass resampling is measured against,
lives here so that importing the config (which imports the ops) never loads scipy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.ndimage

from volprep.augment.numpy_kernels import fourier_shift, roll_mask, warp_image, warp_mask

if TYPE_CHECKING:
    from volprep.augment.spec import Params

__all__ = ["apply", "fourier_shift", "reference_affine", "roll_mask", "warp_image", "warp_mask"]


def apply(params: Params, image: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Renders ``params`` on one volume.

    Args:
        params: sampled parameters (:func:`volprep.augment.spec.sample`, or read back with
            :meth:`~volprep.augment.spec.Params.from_json`, version 1 or 2).
        image: ``[D, H, W, C]`` (or ``[D, H, W]``) intensities; computed in float32.
        mask: optional ``[D, H, W]`` integer label volume following the image.

    Returns:
        ``(image, mask)``: the image as float32 of the input's shape; the mask of its input
        dtype (or None).

    Raises:
        ValueError: shapes that do not match each other or ``params.shape``.
    """
    squeeze = image.ndim == 3
    img = np.asarray(image, dtype=np.float32)
    if squeeze:
        img = img[..., None]
    if img.ndim != 4 or tuple(img.shape[:3]) != params.shape:
        raise ValueError(f"image of shape {image.shape} does not match params sampled for {params.shape}")
    if mask is not None and tuple(mask.shape) != params.shape:
        raise ValueError(f"mask of shape {mask.shape} does not match params sampled for {params.shape}")
    lab = None if mask is None else np.asarray(mask)
    for op in params.table:
        values = params.ops.get(op.NAME)
        if values is not None:
            img, lab = op.apply(values, img, lab)
    img = np.ascontiguousarray(img, dtype=np.float32)
    if lab is not None:
        lab = np.ascontiguousarray(lab)
    return (img[..., 0] if squeeze else img), lab


def reference_affine(image: np.ndarray, matrix: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Direct trilinear resampling (``scipy.ndimage.affine_transform``, order 1) of ``[D, H, W, C]``.

    The single-pass reference the three-pass resampling is measured against (same
    conventions: forward matrix about the centre, fill = channel minimum).
    """
    centre = (np.asarray(image.shape[:3], dtype=np.float64) - 1.0) / 2.0
    b = np.linalg.inv(np.asarray(matrix, dtype=np.float64))
    offset = centre - b @ (centre + np.asarray(translation, dtype=np.float64))
    out = np.empty(image.shape, dtype=np.float32)
    for c in range(image.shape[3]):
        low = float(image[..., c].min())
        out[..., c] = scipy.ndimage.affine_transform(image[..., c], b, offset=offset, order=1,
                                                     mode="grid-constant", cval=low)
    return out
