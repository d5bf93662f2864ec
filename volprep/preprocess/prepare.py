"""``prepare_case``: one case's arrays through reorient, reduce, crop/pad and statistics.

This module owns the order of the preprocessing steps and the ``Prepared`` record the
cache stores; each step's arithmetic lives in its own module (orient, downsample,
resample, wavelet, crop, intensity, fidelity). It is a pure function of its arrays and
the config. Memory order matters here: the reader's (often Fortran-ordered) array is
reoriented as a view and reduced in its own memory order, and only the reduced result
is made C-contiguous float32. Normalisation is *not* applied (``normalize`` runs when
shards are written), so changing only the normaliser needs no re-read of any input.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from volprep.config import PreprocessConfig
from volprep.errors import LabelError
from volprep.preprocess import crop, downsample, fidelity, resample, wavelet
from volprep.preprocess.intensity import channel_stats
from volprep.preprocess.orient import reorient, reoriented_geometry, voxel_spacing


@dataclasses.dataclass
class Prepared:
    """A preprocessed case, as the cache stores it.

    Attributes:
        image: float32 ``[D, H, W, C]``, C-contiguous, reduced and cropped/padded, not
            normalised (for wavelet "compress" the full-resolution volume, encoded later).
        mask: ``[D, H, W]`` uint8 (int16 when a label exceeds 255), or None.
        affine: 4x4 voxel-to-world matrix of the output grid.
        meta: JSON-able: ``orientation``, ``reduce``, ``shape_before``, ``spacing_before``,
            ``reduced_shape``, ``shape``, ``spacing``, ``crop_box``, ``pad_crop``, ``stats``,
            ``fidelity`` and ``notes``.
    """

    image: np.ndarray
    mask: np.ndarray | None
    affine: np.ndarray
    meta: dict[str, Any]


def shape_multiple(cfg: PreprocessConfig) -> int:
    """Target shapes must be multiples of this: ``2**level`` for wavelet "compress", else 1."""
    if cfg.reduce == "wavelet" and cfg.mode == "compress":
        return wavelet.shape_multiple_for(cfg.level)
    return 1


def _round_up(shape: tuple[int, int, int], multiple: int) -> tuple[int, int, int]:
    out = tuple(-(-int(n) // multiple) * multiple for n in shape)
    return out[0], out[1], out[2]


def reduced_shape(
    shape: tuple[int, ...], affine: np.ndarray, cfg: PreprocessConfig
) -> tuple[int, int, int]:
    """The spatial shape ``prepare_case`` produces before crop/pad, from a header alone.

    Takes the *original* affine because reorientation permutes axes (the runner plans a
    dataset's target shape from headers, e.g. the median of these).

    Args:
        shape: the array shape as read, ``(i, j, k[, c])``.
        affine: its 4x4 affine.
        cfg: the preprocess config.

    Returns:
        ``(D, H, W)`` after reorientation and reduction (wavelet "compress": the full
        grid rounded up to :func:`shape_multiple`; with ``crop_foreground`` the real
        shape is smaller and only known after reading).
    """
    dims, new_affine = reoriented_geometry(tuple(shape), affine, cfg.orientation)
    if cfg.reduce == "downsample":
        return downsample.downsampled_shape(dims, cfg.factor)
    if cfg.reduce == "resample":
        return resample.resample_grid(dims, new_affine, cfg.spacing, cfg.target_shape)[0]
    if cfg.reduce == "wavelet":
        step = wavelet.shape_multiple_for(cfg.level)
        padded = _round_up(dims, step)
        if cfg.mode == "compress":
            return padded
        return padded[0] // step, padded[1] // step, padded[2] // step
    return dims


def _mask_dtype(mask: np.ndarray, source: str) -> np.dtype:
    if mask.size == 0:
        return np.dtype(np.uint8)
    lo, hi = int(mask.min()), int(mask.max())
    if lo >= 0 and hi <= 255:
        return np.dtype(np.uint8)
    if lo >= -32768 and hi <= 32767:
        return np.dtype(np.int16)
    raise LabelError(source, f"label values {lo}..{hi} do not fit int16")


def _shifted_blocks(mask: np.ndarray, start: tuple[int, int, int]) -> np.ndarray:
    """``mask`` re-indexed so block 0 starts at input voxel ``start`` (edges clamped)."""
    index = [np.clip(np.arange(n) + s, 0, n - 1) for n, s in zip(mask.shape, start, strict=True)]
    return mask[np.ix_(*index)]


def _reduce(
    image: np.ndarray, mask: np.ndarray | None, affine: np.ndarray, cfg: PreprocessConfig, notes: list[str]
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Applies ``cfg.reduce`` to reoriented views; returns C-contiguous float32 and mask."""
    if cfg.reduce == "downsample":
        eff = downsample.effective_factors(image.shape, cfg.factor)
        if eff != cfg.factor:
            notes.append(f"downsample factor {cfg.factor} reduced to {eff} on short axes")
        out = downsample.block_mean(image, eff)
        small = downsample.block_majority(mask, eff) if mask is not None else None
        return out, small, downsample.block_affine(affine, eff)
    if cfg.reduce == "resample":
        out_shape, zoom, offset = resample.resample_grid(image.shape, affine, cfg.spacing, cfg.target_shape)
        out = resample.resample_image(image, out_shape, zoom, offset, cfg.interpolation)
        small = resample.resample_labels(mask, out_shape, zoom, offset) if mask is not None else None
        return out, small, resample.grid_affine(affine, zoom, offset)
    if cfg.reduce == "wavelet" and cfg.mode == "approx":
        step = wavelet.shape_multiple_for(cfg.level)
        padded, pad = wavelet.pad_to_multiple(image, step, mode="edge")
        if any(after for _, after in pad):
            notes.append(f"padded by {[p[1] for p in pad]} voxels (edge values) to multiples of {step}")
        out = wavelet.approximation(padded, cfg.wavelet, cfg.level)
        phase = wavelet.approx_phase(cfg.wavelet, cfg.level)
        grid = np.eye(4)
        for axis in range(3):
            grid[axis, axis] = step
            grid[axis, 3] = phase
        small = None
        if mask is not None:
            # Label blocks start where the wavelet's equivalent filter is centred, to
            # within half a voxel of the fine grid.
            start = round(phase - (step - 1) / 2)
            padded_mask, _ = wavelet.pad_to_multiple(mask, step, mode="constant")
            shifted = _shifted_blocks(padded_mask, (start, start, start)) if start else padded_mask
            small = downsample.block_majority(shifted, (step, step, step))
            notes.append(f"labels: majority over blocks starting at voxel {start}, wavelet centre {phase:.3f}")
        return out, small, np.asarray(affine, dtype=np.float64) @ grid
    # "none", and wavelet "compress" (full resolution here; encoded when shards are written)
    out = np.ascontiguousarray(image, dtype=np.float32)
    small = np.ascontiguousarray(mask) if mask is not None else None
    return out, small, np.asarray(affine, dtype=np.float64)


def prepare_case(
    image: np.ndarray,
    affine: np.ndarray,
    mask: np.ndarray | None,
    cfg: PreprocessConfig,
    target_shape: tuple[int, int, int] | None,
    fidelity_figures: bool = True,
    source: str = "<array>",
) -> Prepared:
    """Reorients, reduces, crops/pads one case and gathers its statistics.

    Args:
        image: ``(i, j, k)`` or ``(i, j, k, c)`` as a reader returns it (any numeric dtype,
            any memory order).
        affine: its 4x4 voxel-to-world matrix.
        mask: ``(i, j, k)`` integer label volume on the same grid, or None.
        cfg: the preprocess config.
        target_shape: the output spatial shape (centred crop/pad, image padded with its
            per-channel minimum, mask with 0), or None to keep the reduced shape (wavelet
            "compress" still pads to multiples of ``2**level``).
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
    view, grid = reorient(image, affine, cfg.orientation)
    mask_view = reorient(mask, affine, cfg.orientation)[0] if mask is not None else None
    shape_before = tuple(int(n) for n in view.shape[:3])
    lossy = cfg.reduce in ("downsample", "resample") or (cfg.reduce == "wavelet")
    fid: dict[str, Any] | None = None

    out, small, out_affine = _reduce(view, mask_view, grid, cfg, notes)
    reduced = tuple(int(n) for n in out.shape[:3])
    if fidelity_figures and lossy and not (cfg.reduce == "wavelet" and cfg.mode == "compress"):
        reference = np.asarray(view, dtype=np.float32)
        back = resample.upsample_to(out, out_affine, shape_before, grid)  # type: ignore[arg-type]
        stored = math.prod(reduced) * out.shape[3] * np.dtype(cfg.dtype).itemsize
        fid = {
            "psnr": fidelity.psnr(reference, back),
            "ssim": fidelity.central_ssim(reference, back),
            "ssim_region": "central 64^3 block",
            "ratio": fidelity.storage_ratio(math.prod(shape_before) * out.shape[3], stored),
            "against": "unreduced reoriented volume; reduced volume upsampled back linearly",
        }

    crop_box = None
    if cfg.crop_foreground:
        crop_box = crop.foreground_box(out, small)
        if crop_box is None:
            notes.append("crop_foreground: no foreground found, nothing cropped")
        else:
            out = np.ascontiguousarray(crop.crop_to_box(out, crop_box))
            small = np.ascontiguousarray(crop.crop_to_box(small, crop_box)) if small is not None else None
            out_affine = crop.shift_affine(out_affine, [b[0] for b in crop_box])

    final_shape = target_shape
    if final_shape is None and multiple > 1:
        final_shape = _round_up(out.shape[:3], multiple)  # type: ignore[arg-type]
    pad_crop = None
    if final_shape is not None:
        final_shape = (int(final_shape[0]), int(final_shape[1]), int(final_shape[2]))
        pad_crop = crop.centre_crop_pad_plan(out.shape, final_shape)
        fill = out.reshape(-1, out.shape[3]).min(axis=0) if out.size else 0.0
        out = crop.centre_crop_pad(out, pad_crop, fill)
        small = crop.centre_crop_pad(small, pad_crop, 0) if small is not None else None
        offset = [pad_crop["crop"][a][0] - pad_crop["pad"][a][0] for a in range(3)]
        out_affine = crop.shift_affine(out_affine, offset)

    if fidelity_figures and cfg.reduce == "wavelet" and cfg.mode == "compress":
        spec = wavelet.layout(out.shape, cfg.wavelet, cfg.level, cfg.keep, values=cfg.wavelet_values)  # type: ignore[arg-type]
        encoded = wavelet.encode(out, cfg.wavelet, cfg.level, cfg.keep, values=cfg.wavelet_values)
        decoded = wavelet.decode(encoded, spec)
        fid = {
            "psnr": fidelity.psnr(out, decoded),
            "ssim": fidelity.central_ssim(out, decoded),
            "ssim_region": "central 64^3 block",
            "ratio": fidelity.storage_ratio(out.size, spec["nbytes"]),
            "against": "stored full-resolution volume; decoded record",
        }

    if small is not None:
        small = np.ascontiguousarray(small, dtype=_mask_dtype(small, source))
    meta: dict[str, Any] = {
        "orientation": cfg.orientation,
        "reduce": cfg.reduce if cfg.reduce != "wavelet" else f"wavelet-{cfg.mode}",
        "shape_before": list(shape_before),
        "spacing_before": list(voxel_spacing(grid)),
        "reduced_shape": list(reduced),
        "shape": [int(n) for n in out.shape],
        "spacing": list(voxel_spacing(out_affine)),
        "crop_box": crop_box,
        "pad_crop": pad_crop,
        "stats": channel_stats(out, cfg.p_low, cfg.p_high),
        "fidelity": fid,
        "notes": notes,
    }
    return Prepared(image=np.ascontiguousarray(out, dtype=np.float32), mask=small, affine=out_affine, meta=meta)
