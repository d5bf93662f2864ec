"""``prepare_case``: one case's arrays through reorient, reduce, foreground crop and statistics.

This module owns the order of the preprocessing steps and the ``Prepared`` record the
cache stores; each step's arithmetic lives in its own module (orient, downsample,
resample, wavelet, intensity, fidelity) and every grid involved is a
:class:`volprep.geometry.Grid`. It is a pure function of its arrays and the config.
Memory order matters here: the reader's (often Fortran-ordered) array is reoriented as a
view and reduced in its own memory order, and only the reduced result is made
C-contiguous float32.

Two things happen later, when shards are written, from what the cache holds:
normalisation (``normalize``), and the window of the job's target shape
(:func:`window_case`, the one crop/pad of the flow), so changing either needs no re-read
of any input. The window is centred on ``Prepared.anchor``, a world point (the centre of
the reoriented scan, or of its foreground box), so every reduction of a case is cut
around the same physical point (see :mod:`volprep.geometry`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from volprep import reductions
from volprep.config import PreprocessConfig
from volprep.errors import LabelError
from volprep.geometry import Grid, foreground_box, window
from volprep.preprocess.intensity import channel_stats, foreground_mask
from volprep.preprocess.orient import reorient, reoriented_geometry, voxel_spacing


@dataclasses.dataclass
class Prepared:
    """A preprocessed case, as the cache stores it.

    Attributes:
        image: float32 ``[D, H, W, C]``, C-contiguous, reduced (and cropped to the
            foreground with ``crop_foreground``), not normalised, not windowed (for
            wavelet "compress" the full-resolution volume, encoded when shards are written).
        mask: ``[D, H, W]`` uint8 (int16 when a label exceeds 255), or None.
        grid: the grid of ``image`` (shape and affine).
        anchor: the world point (mm) the target window is centred on.
        meta: JSON-able: ``orientation``, ``reduce``, ``shape_before``, ``spacing_before``,
            ``reduced_shape``, ``shape``, ``spacing``, ``crop_box``, ``stats``,
            ``fidelity``, ``notes``, ``grid``, ``anchor`` and ``scan_grid`` (the grid of
            the scan as read, before reorientation: what predictions map back to).
    """

    image: np.ndarray
    mask: np.ndarray | None
    grid: Grid
    anchor: tuple[float, float, float]
    meta: dict[str, Any]

    @property
    def affine(self) -> np.ndarray:
        """The 4x4 affine of ``image``'s grid."""
        return self.grid.affine


def shape_multiple(cfg: PreprocessConfig) -> int:
    """Target shapes must be multiples of this (``2**level`` for wavelet "compress", else 1)."""
    return reductions.for_config(cfg).shape_multiple(cfg)


def reduced_shape(
    shape: tuple[int, ...], affine: np.ndarray, cfg: PreprocessConfig
) -> tuple[int, int, int]:
    """The spatial shape ``prepare_case`` produces, from a header alone.

    Takes the *original* affine because reorientation permutes axes (the header survey
    estimates each case's memory from it).

    Args:
        shape: the array shape as read, ``(i, j, k[, c])``.
        affine: its 4x4 affine.
        cfg: the preprocess config.

    Returns:
        ``(D, H, W)`` after reorientation and reduction (with ``crop_foreground`` the
        real shape is smaller and only known after reading).
    """
    dims, new_affine = reoriented_geometry(tuple(shape), affine, cfg.orientation)
    return reductions.for_config(cfg).output_shape(dims, new_affine, cfg)


def plan_target_shape(shapes: Sequence[Sequence[int]], cfg: PreprocessConfig) -> tuple[int, int, int]:
    """The target shape a job plans when the config sets none: the cases' median shape.

    ``shapes`` are what preprocessing produced (reduced and, with ``crop_foreground``,
    cropped to the foreground: a target planned from the uncropped shapes would pad every
    case back to full size), each axis rounded to a multiple of :func:`shape_multiple`.
    """
    multiple = shape_multiple(cfg)
    median = np.median(np.array([list(s)[:3] for s in shapes], dtype=np.float64), axis=0)
    out = tuple(int(max(multiple, multiple * round(float(m) / multiple))) for m in median)
    return out[0], out[1], out[2]


def _mask_dtype(mask: np.ndarray, source: str) -> np.dtype:
    if mask.size == 0:
        return np.dtype(np.uint8)
    lo, hi = int(mask.min()), int(mask.max())
    if lo >= 0 and hi <= 255:
        return np.dtype(np.uint8)
    if lo >= -32768 and hi <= 32767:
        return np.dtype(np.int16)
    raise LabelError(source, f"label values {lo}..{hi} do not fit int16")


def prepare_case(
    image: np.ndarray,
    affine: np.ndarray,
    mask: np.ndarray | None,
    cfg: PreprocessConfig,
    target_shape: tuple[int, int, int] | None = None,
    fidelity_figures: bool = True,
    source: str = "<array>",
) -> Prepared:
    """Reorients and reduces one case, crops it to its foreground, gathers its statistics.

    Args:
        image: ``(i, j, k)`` or ``(i, j, k, c)`` as a reader returns it (any numeric dtype,
            any memory order).
        affine: its 4x4 voxel-to-world matrix.
        mask: ``(i, j, k)`` integer label volume on the same grid, or None.
        cfg: the preprocess config.
        target_shape: also cut the window of this shape (:func:`window_case`), as shards
            are; None keeps the reduced grid (what the cache stores).
        fidelity_figures: measure ``meta["fidelity"]`` for lossy reductions (costs an
            upsampling or an encode/decode of the volume).
        source: names the case in error messages.

    Returns:
        The :class:`Prepared` case.

    Raises:
        LabelError: a mask whose grid differs from the image's or whose values do not
            fit int16.
        ValueError: an image that is not 3D/4D, or (wavelet "compress") a target shape
            that is not a multiple of :func:`shape_multiple`.
    """
    if image.ndim == 3:
        image = image[..., None]
    if image.ndim != 4:
        raise ValueError(f"{source}: expected an (i, j, k[, c]) image, got shape {image.shape}")
    if mask is not None and mask.shape != image.shape[:3]:
        raise LabelError(source, f"label grid {mask.shape} differs from the image grid {image.shape[:3]}")
    if mask is not None and not np.issubdtype(mask.dtype, np.integer):
        raise LabelError(source, f"label volume has dtype {mask.dtype}, expected integers")
    multiple = shape_multiple(cfg)
    if target_shape is not None and any(int(t) % multiple for t in target_shape):
        raise ValueError(f"target shape {tuple(target_shape)} must be a multiple of {multiple} for wavelet level {cfg.level}")

    notes: list[str] = []
    reduction = reductions.for_config(cfg)
    scan = Grid(image.shape[:3], affine)
    view, grid = reorient(image, affine, cfg.orientation)
    mask_view = reorient(mask, affine, cfg.orientation)[0] if mask is not None else None
    shape_before = tuple(int(n) for n in view.shape[:3])
    source_grid = Grid((shape_before[0], shape_before[1], shape_before[2]), grid)

    out, small, out_affine = reduction.apply(view, mask_view, grid, cfg, notes)
    reduced = tuple(int(n) for n in out.shape[:3])
    fid = None
    if fidelity_figures:
        fid = reduction.fidelity(np.asarray(view, dtype=np.float32), grid, out, out_affine, cfg)

    out_grid = Grid((reduced[0], reduced[1], reduced[2]), out_affine)
    anchor = source_grid.centre()
    crop_box = None
    if cfg.crop_foreground:
        fg = np.zeros(reduced, dtype=bool)
        for c in range(out.shape[3]):
            fg |= foreground_mask(out[..., c])
        if small is not None:
            fg |= small > 0
        box = foreground_box(fg)
        if box is None:
            notes.append("crop_foreground: no foreground found, nothing cropped")
        else:
            (s0, s1, s2), (n0, n1, n2) = box
            crop_box = [[s0, s0 + n0], [s1, s1 + n1], [s2, s2 + n2]]
            out = np.ascontiguousarray(out[s0:s0 + n0, s1:s1 + n1, s2:s2 + n2])
            small = np.ascontiguousarray(small[s0:s0 + n0, s1:s1 + n1, s2:s2 + n2]) if small is not None else None
            out_grid = out_grid.box((s0, s1, s2), (n0, n1, n2))
            anchor = out_grid.centre()

    if small is not None:
        small = np.ascontiguousarray(small, dtype=_mask_dtype(small, source))
    meta: dict[str, Any] = {
        "orientation": cfg.orientation,
        "reduce": cfg.reduce if cfg.reduce != "wavelet" else f"wavelet-{cfg.mode}",  # for people
        "shape_before": list(shape_before),
        "spacing_before": list(voxel_spacing(grid)),
        "reduced_shape": list(reduced),
        "shape": [int(n) for n in out.shape],
        "spacing": list(out_grid.spacing()),
        "crop_box": crop_box,
        "stats": channel_stats(out, cfg.p_low, cfg.p_high),
        "fidelity": fid,
        "notes": notes,
        "grid": out_grid.to_dict(),
        "anchor": [float(v) for v in anchor],
        "scan_grid": scan.to_dict(),
    }
    prepared = Prepared(image=np.ascontiguousarray(out, dtype=np.float32), mask=small, grid=out_grid,
                        anchor=(float(anchor[0]), float(anchor[1]), float(anchor[2])), meta=meta)
    if target_shape is None:
        return prepared
    image_w, mask_w, grid_w = window_case(prepared.image, prepared.mask, prepared.grid, prepared.anchor, target_shape,
                                          fill=[st["floor"] for st in prepared.meta["stats"]])
    return dataclasses.replace(prepared, image=image_w, mask=mask_w, grid=grid_w)


def window_case(
    image: np.ndarray,
    mask: np.ndarray | None,
    grid: Grid,
    anchor: tuple[float, float, float] | np.ndarray,
    target_shape: tuple[int, int, int],
    fill: Sequence[float],
) -> tuple[np.ndarray, np.ndarray | None, Grid]:
    """Cuts the target window out of a prepared case: the one crop/pad of the flow.

    The window is centred on ``anchor`` (a world point); image and mask go through the
    same window, the image padded with ``fill`` (one value a channel: the channel's
    background floor, ``meta["stats"][c]["floor"]``), the mask with 0.

    Returns:
        ``(image, mask, grid)``: the windowed arrays (``image`` itself when the window is
        its whole grid) and the window's grid, whose affine is the record's affine.
    """
    win = window(grid, target_shape, anchor)
    out = win.apply(image, np.asarray(fill, dtype=np.float32))
    small = win.apply(mask, 0) if mask is not None else None
    return out, small, win.grid(grid)
