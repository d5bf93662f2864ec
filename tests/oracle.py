"""A reference of what a volprep record should hold, from nibabel, scipy and numpy alone.

The end-to-end tests hold volprep's records to this module. It never imports volprep: every
step is written again from the documented rules (README "Config reference",
``volprep.preprocess.intensity``'s foreground rule, ``volprep.preprocess.downsample``'s
block rules), in the most obvious way, not the fastest:

- read: ``get_fdata(dtype=float32)`` per image file, channels stacked last; a label volume
  as integers (``np.asanyarray(img.dataobj)``);
- reorient: ``nib.as_closest_canonical`` (RAS), image and mask each;
- reduce: "none"; "downsample" by an integer factor ``f`` (block mean through a reshape,
  trailing voxels dropped, an axis shorter than ``f`` unreduced; labels by block majority
  with ``np.unique`` per block; output voxel at the block's centre); "resample" onto the
  grid of the *record's own affine*, extended over the scan's field of view (the oracle
  does not re-derive volprep's grid: it samples the scan at each record voxel's world
  position, after a Gaussian pre-smoothing of sigma ``(zoom - 1) / 2`` scan voxels; labels
  at the nearest scan voxel, and where a position lies exactly between two, either);
- window: where the record's affine puts it in the reduced grid (images padded with each
  channel's background floor, its 0.5th percentile; masks with 0);
- z-score: statistics over the foreground (``> floor + 0.05 * (p99 - floor)``, floor the
  0.5th percentile) or all voxels
  of the reduced, un-windowed volume, applied to every voxel of the window, then the
  stored dtype's rounding.

:func:`expected_record` strings these together for one record (:func:`msd_cases` finds a
case's files); :func:`classic_start` and :func:`centred_start` give the window start the
documented placement rules predict; :func:`beyond_float16`, :func:`psnr` and
:func:`correlation` compare volumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

FOREGROUND_FRACTION = 0.05  # volprep.preprocess.intensity's documented rule
_ON_LATTICE = 1e-3  # voxels: how far a record origin may sit from a reduced-grid voxel


@dataclasses.dataclass(frozen=True)
class Settings:
    """The job settings the oracle follows.

    Attributes:
        reduce: "none", "downsample" or "resample".
        factor: downsample factor (all axes).
        zscore_over: "foreground" or "all".
        dtype: the stored image dtype ("float16" or "float32").
    """

    reduce: str = "none"
    factor: int = 2
    zscore_over: str = "foreground"
    dtype: str = "float16"

    def __post_init__(self) -> None:
        if self.reduce not in ("none", "downsample", "resample"):
            raise ValueError(f"the oracle knows no reduction {self.reduce!r}")
        if self.zscore_over not in ("foreground", "all"):
            raise ValueError(f"zscore_over must be 'foreground' or 'all', got {self.zscore_over!r}")


@dataclasses.dataclass(frozen=True)
class Volume:
    """An image ``(i, j, k, c)`` float32, its label volume (or None) and their affine."""

    image: np.ndarray
    mask: np.ndarray | None
    affine: np.ndarray
    choices: np.ndarray | None = None  # (k, i, j, k) every label a nearest-voxel rule may pick

    @property
    def shape(self) -> tuple[int, int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1]), int(self.image.shape[2])

    def centre(self) -> np.ndarray:
        """World position (mm) of the grid's centre voxel ``(n - 1) / 2``."""
        return world(self.affine, [(n - 1) / 2.0 for n in self.shape])


@dataclasses.dataclass(frozen=True)
class Expected:
    """What one record should hold, and where the oracle found it.

    Attributes:
        image: ``(t0, t1, t2, c)`` float32, normalised and rounded to the stored dtype.
        mask: ``(t0, t1, t2)`` int64 labels, or None.
        start: the window's start in the reduced grid (negative: padding before).
        reduced: the reduced, un-windowed volume (not normalised).
        scan: the reoriented scan.
        raw: the window before normalisation (float32, padded with the channel's background floor).
        mask_choices: ``(k, t0, t1, t2)``: for "resample", the labels every way of breaking
            exact half-voxel ties would give (``mask`` is one of them); else None.
    """

    image: np.ndarray
    mask: np.ndarray | None
    start: tuple[int, int, int]
    reduced: Volume
    scan: Volume
    raw: np.ndarray
    mask_choices: np.ndarray | None = None


def world(affine: np.ndarray, voxel: Sequence[float]) -> np.ndarray:
    """World coordinates of a continuous voxel position."""
    return (np.asarray(affine, np.float64) @ np.array([*voxel, 1.0]))[:3]


def spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel spacing (mm) along each voxel axis: the affine's column norms."""
    return np.sqrt((np.asarray(affine, np.float64)[:3, :3] ** 2).sum(axis=0))


def _shift(offset: Sequence[float]) -> np.ndarray:
    step = np.eye(4)
    step[:3, 3] = offset
    return step


# ---------------------------------------------------------------- read and reorient


def msd_cases(folder: Path) -> dict[str, tuple[list[Path], Path | None]]:
    """``{case id: (image paths, label path)}`` from an MSD ``dataset.json``.

    The case id is the first image's file name without ``.nii.gz``/``.nii`` (what the MSD
    layout's cases are called); an entry's ``image`` may be one path or a list (channels).
    """
    folder = Path(folder)
    meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    cases = {}
    for item in meta["training"]:
        images = item["image"] if isinstance(item["image"], list) else [item["image"]]
        paths = [(folder / p).resolve() for p in images]
        case_id = paths[0].name.removesuffix(".gz").removesuffix(".nii")
        cases[case_id] = (paths, (folder / item["label"]).resolve() if item.get("label") else None)
    return cases


def _labels_as_integers(data: np.ndarray, path: Path) -> np.ndarray:
    if np.issubdtype(data.dtype, np.integer):
        return data.astype(np.int64)
    rounded = np.round(data)
    if not np.array_equal(rounded, data):
        raise ValueError(f"{path}: label volume holds non-integer values")
    return rounded.astype(np.int64)


def read_scan(images: Sequence[Path | str], mask: Path | str | None = None) -> Volume:
    """Reads a case with nibabel and reorients it to RAS (``as_closest_canonical``).

    Args:
        images: one file per channel (a 4D file adds its own channels).
        mask: the label volume, on the images' grid, or None.

    Returns:
        The reoriented scan: float32 ``(i, j, k, c)``, int64 labels, the RAS affine.
    """
    channels, affine = [], None
    for path in images:
        img = nib.as_closest_canonical(nib.load(str(path)))
        data = img.get_fdata(dtype=np.float32)
        channels.append(data[..., None] if data.ndim == 3 else data)
        if affine is None:
            affine = np.asarray(img.affine, np.float64)
        elif not np.allclose(img.affine, affine, atol=1e-4):
            raise ValueError(f"{path}: channel grids differ")
    if affine is None:
        raise ValueError("a case needs at least one image")
    image = np.concatenate(channels, axis=3).astype(np.float32)
    labels = None
    if mask is not None:
        limg = nib.as_closest_canonical(nib.load(str(mask)))
        if not np.allclose(limg.affine, affine, atol=1e-4):
            raise ValueError(f"{mask}: label grid differs from the image grid")
        labels = _labels_as_integers(np.asanyarray(limg.dataobj), Path(mask))
        if labels.shape != image.shape[:3]:
            raise ValueError(f"{mask}: label shape {labels.shape} differs from {image.shape[:3]}")
    return Volume(image, labels, affine)


# ---------------------------------------------------------------- reductions


def _factors(shape: Sequence[int], factor: int) -> tuple[int, int, int]:
    """The factor per axis; an axis shorter than it is left unreduced."""
    f = [factor if int(n) >= factor else 1 for n in shape[:3]]
    return f[0], f[1], f[2]


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Block mean of ``(i, j, k, c)`` over ``f x f x f`` blocks (reshape, trailing voxels dropped)."""
    f = _factors(image.shape, factor)
    out = [n // k for n, k in zip(image.shape[:3], f, strict=True)]
    cut = np.asarray(image[: out[0] * f[0], : out[1] * f[1], : out[2] * f[2]], np.float64)
    blocks = cut.reshape(out[0], f[0], out[1], f[1], out[2], f[2], image.shape[3])
    return blocks.mean(axis=(1, 3, 5)).astype(np.float32)


def majority(values: np.ndarray) -> int:
    """The most frequent label; a tie goes to the smallest non-zero one (0 must win outright)."""
    labels, counts = np.unique(values, return_counts=True)
    winners = labels[counts == counts.max()]
    nonzero = winners[winners != 0]
    return int(nonzero.min()) if nonzero.size else 0


def block_majority(mask: np.ndarray, factor: int) -> np.ndarray:
    """Block majority of an ``(i, j, k)`` label volume, block by block."""
    f = _factors(mask.shape, factor)
    out = [n // k for n, k in zip(mask.shape[:3], f, strict=True)]
    cut = mask[: out[0] * f[0], : out[1] * f[1], : out[2] * f[2]]
    blocks = cut.reshape(out[0], f[0], out[1], f[1], out[2], f[2]).transpose(0, 2, 4, 1, 3, 5)
    blocks = blocks.reshape(out[0], out[1], out[2], -1)
    # Most blocks hold one value: vote only where they do not.
    uniform = (blocks == blocks[..., :1]).all(axis=-1)
    result = blocks[..., 0].astype(np.int64)
    for index in zip(*np.nonzero(~uniform), strict=True):
        result[index] = majority(blocks[index])
    return result


def block_affine(affine: np.ndarray, factor: int, shape: Sequence[int]) -> np.ndarray:
    """The reduced grid's affine: output voxel ``n`` at the centre of its block."""
    f = _factors(shape, factor)
    scale = np.eye(4)
    for axis in range(3):
        scale[axis, axis] = f[axis]
        scale[axis, 3] = (f[axis] - 1) / 2.0
    return np.asarray(affine, np.float64) @ scale


def downsample(scan: Volume, factor: int) -> Volume:
    """The scan reduced by block mean (image) and block majority (labels)."""
    mask = block_majority(scan.mask, factor) if scan.mask is not None else None
    return Volume(block_mean(scan.image, factor), mask, block_affine(scan.affine, factor, scan.shape))


def _relative_axes(scan_affine: np.ndarray, record_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per axis ``(zoom, origin)``: record voxel ``m`` is scan voxel ``zoom * m + origin``.

    Raises:
        ValueError: the two grids are not axis-aligned with each other (same axis order
            and direction), which every volprep reduction keeps.
    """
    rel = np.linalg.solve(np.asarray(scan_affine, np.float64), np.asarray(record_affine, np.float64))
    zoom = np.diag(rel[:3, :3]).copy()
    off_diagonal = rel[:3, :3] - np.diag(zoom)
    if np.abs(off_diagonal).max() > 1e-6 or (zoom <= 0).any():
        raise ValueError(f"record grid is not axis-aligned with the scan's: scan->record voxels\n{rel}")
    return zoom, rel[:3, 3].copy()


def resample_on(scan: Volume, record_affine: np.ndarray) -> Volume:
    """The scan sampled on the lattice of the record's grid, over the scan's field of view.

    The lattice is the record's voxels extended in whole steps to every position whose
    scan-voxel coordinate lies within the scan's extent ``[-0.5, n - 0.5]``; each is sampled
    at its world position (linear, edges clamped) after a Gaussian pre-smoothing of sigma
    ``(zoom - 1) / 2`` scan voxels along each shrunk axis; labels are sampled at the nearest
    scan voxel.
    """
    zoom, origin = _relative_axes(scan.affine, record_affine)
    lo = np.ceil((-0.5 - origin) / zoom - 1e-9).astype(int)
    hi = np.floor((np.asarray(scan.shape) - 0.5 - origin) / zoom + 1e-9).astype(int)
    shape = tuple(int(n) for n in hi - lo + 1)
    axes = [zoom[a] * (lo[a] + np.arange(shape[a])) + origin[a] for a in range(3)]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"))
    sigma = np.maximum(0.0, (zoom - 1.0) / 2.0)
    image = np.empty((*shape, scan.image.shape[3]), np.float32)
    for c in range(scan.image.shape[3]):
        channel = np.asarray(scan.image[..., c], np.float64)
        if (sigma > 0).any():
            channel = ndimage.gaussian_filter(channel, sigma=sigma, mode="nearest")
        image[..., c] = ndimage.map_coordinates(channel, coords, order=1, mode="nearest")
    mask = choices = None
    if scan.mask is not None:
        mask = ndimage.map_coordinates(scan.mask, coords, order=0, mode="nearest").astype(np.int64)
        choices = _nearest_choices(scan.mask, axes)
    return Volume(image, mask, np.asarray(record_affine, np.float64) @ _shift(lo), choices)


def _nearest_choices(mask: np.ndarray, axes: Sequence[np.ndarray]) -> np.ndarray:
    """Labels at the nearest scan voxel, once per way of breaking exact half-voxel ties.

    A position exactly between two scan voxels has two nearest voxels, and "nearest" does
    not say which; resampling 1 mm to 3 mm (or 2 mm to 3 mm) puts many voxels there. Each
    axis is separable, so every combination of tie directions is one ``np.ix_`` lookup.
    """
    per_axis = []
    for a, x in enumerate(axes):
        below = np.floor(x)
        tie = np.abs(x - below - 0.5) < 1e-6
        nearest = np.where(tie, below, np.round(x))
        options = [nearest, np.where(tie, below + 1, nearest)]
        per_axis.append([np.clip(o, 0, mask.shape[a] - 1).astype(np.intp) for o in options])
    choices = [mask[np.ix_(i, j, k)] for i in per_axis[0] for j in per_axis[1] for k in per_axis[2]]
    return np.stack(choices).astype(np.int64)


def reduce(scan: Volume, settings: Settings, record_affine: np.ndarray | None = None) -> Volume:
    """The reduced, un-windowed volume (``record_affine`` is needed for "resample")."""
    if settings.reduce == "downsample":
        return downsample(scan, settings.factor)
    if settings.reduce == "resample":
        if record_affine is None:
            raise ValueError("the resample oracle samples on the record's grid: give its affine")
        return resample_on(scan, record_affine)
    return scan


# ---------------------------------------------------------------- window and intensities


def window_start(reduced_affine: np.ndarray, record_affine: np.ndarray,
                 on_lattice: bool = True) -> tuple[int, int, int]:
    """Where the record's voxel 0 sits in the reduced grid, rounded to a voxel.

    Raises:
        ValueError: ``on_lattice`` and the record's origin is not on a reduced-grid voxel.
    """
    position = np.linalg.solve(np.asarray(reduced_affine, np.float64),
                               np.asarray(record_affine, np.float64) @ np.array([0.0, 0.0, 0.0, 1.0]))[:3]
    start = np.round(position)
    if on_lattice and np.abs(position - start).max() > _ON_LATTICE:
        raise ValueError(f"the record's origin is at reduced voxel {position.tolist()}, not on the grid")
    return int(start[0]), int(start[1]), int(start[2])


def cut(array: np.ndarray, start: Sequence[int], shape: Sequence[int], fill: np.ndarray | float) -> np.ndarray:
    """The ``shape`` box of ``array`` starting at ``start`` (may be negative), ``fill`` outside."""
    out = np.empty((*shape, *array.shape[3:]), array.dtype)
    out[...] = fill
    src, dst = [], []
    for s, t, n in zip(start, shape, array.shape[:3], strict=True):
        lo, hi = max(s, 0), min(s + t, n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = array[tuple(src)]
    return out


def foreground(channel: np.ndarray) -> np.ndarray:
    """Voxels above ``floor + 0.05 * (p99 - floor)`` of the channel (floor = 0.5th percentile,
    p99 = 99th, both over all voxels)."""
    values = np.asarray(channel, np.float64)
    lo, hi = np.percentile(values, [0.5, 99.0])
    return values > lo + FOREGROUND_FRACTION * (hi - lo)


def zscore_statistics(image: np.ndarray, over: str) -> list[tuple[float, float]]:
    """``(mean, std)`` per channel over the foreground (all voxels when it is empty) or all."""
    stats = []
    for c in range(image.shape[3]):
        channel = np.asarray(image[..., c], np.float64)
        values = channel[foreground(channel)] if over == "foreground" else channel.ravel()
        if values.size == 0:
            values = channel.ravel()
        stats.append((float(values.mean()), float(values.std())))
    return stats


def zscore(image: np.ndarray, stats: Sequence[tuple[float, float]], dtype: str) -> np.ndarray:
    """``(x - mean) / std`` per channel (a zero std divides by 1), rounded to ``dtype``."""
    out = np.empty(image.shape, np.float64)
    for c, (mean, std) in enumerate(stats):
        out[..., c] = (np.asarray(image[..., c], np.float64) - mean) / (std if std > 1e-8 else 1.0)
    return out.astype(np.dtype(dtype)).astype(np.float32)


def expected_record(
    images: Sequence[Path | str],
    mask: Path | str | None,
    settings: Settings,
    record_affine: np.ndarray,
    target_shape: Sequence[int],
    scan: Volume | None = None,
    on_lattice: bool = True,
) -> Expected:
    """What a z-scored record of this case should hold, given where its affine puts it.

    Args:
        images: the case's image files.
        mask: its label volume file, or None.
        settings: the job's reduction and normalisation.
        record_affine: the record's 4x4 affine (its "affine" feature).
        target_shape: the record's spatial shape.
        scan: the reoriented scan, when the caller has read it already.
        on_lattice: require the record's origin to sit on a reduced-grid voxel (False:
            round it to the nearest, for grids the oracle only approximates).

    Raises:
        ValueError: ``on_lattice`` and the record's origin is not on the reduced grid.
    """
    scan = scan if scan is not None else read_scan(images, mask)
    reduced = reduce(scan, settings, record_affine)
    start = window_start(reduced.affine, record_affine, on_lattice)
    shape = tuple(int(t) for t in target_shape)
    # padding holds each channel's background floor: its 0.5th percentile (README "Records")
    fill = np.percentile(reduced.image.reshape(-1, reduced.image.shape[3]), 0.5, axis=0)
    raw = cut(reduced.image, start, shape, fill)
    stats = zscore_statistics(reduced.image, settings.zscore_over)
    labels = cut(reduced.mask, start, shape, 0) if reduced.mask is not None else None
    choices = None
    if reduced.choices is not None:
        choices = np.stack([cut(c, start, shape, 0) for c in reduced.choices])
    return Expected(zscore(raw, stats, settings.dtype), labels, start, reduced, scan, raw, choices)


def centred_start(grid_affine: np.ndarray, anchor: Sequence[float] | np.ndarray,
                  target_shape: Sequence[int]) -> tuple[int, int, int]:
    """The window start the documented rule gives (``volprep.geometry``'s docstring).

    The window is centred on the world point ``anchor``: start = anchor in grid voxels
    minus ``(t - 1) / 2``, rounded towards zero (a position within 1e-6 of an integer is
    that integer). On an unreduced grid centred on its own centre this is the classic
    crop/pad: ``(n - t) // 2`` for a crop and ``-((t - n) // 2)`` for a pad, an odd
    surplus or deficit going to the end.
    """
    centre = np.linalg.solve(np.asarray(grid_affine, np.float64), np.array([*anchor, 1.0]))[:3]
    start = []
    for c, t in zip(centre, target_shape, strict=True):
        x = float(c) - (int(t) - 1) / 2.0
        nearest = round(x)
        start.append(int(nearest) if abs(x - nearest) < 1e-6 else int(math.trunc(x)))
    return start[0], start[1], start[2]


def classic_start(n: Sequence[int], t: Sequence[int]) -> tuple[int, int, int]:
    """The classic centred crop/pad start per axis, written from its definition."""
    out = [(a - b) // 2 if a >= b else -((b - a) // 2) for a, b in zip(n, t, strict=True)]
    return out[0], out[1], out[2]


# ---------------------------------------------------------------- comparisons


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB), the peak being the reference's value range."""
    ref = np.asarray(reference, np.float64)
    mse = float(np.mean((ref - np.asarray(test, np.float64)) ** 2))
    peak = float(ref.max() - ref.min())
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two volumes' voxels."""
    return float(np.corrcoef(np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel())[0, 1])


def float16_step(values: np.ndarray) -> np.ndarray:
    """One float16 rounding step at each value (its unit in the last place)."""
    return np.spacing(np.abs(np.asarray(values, np.float32)).astype(np.float16)).astype(np.float32)


def beyond_float16(actual: np.ndarray, expected: np.ndarray, floor: float = 1e-5) -> np.ndarray:
    """Voxels where two float16-rounded volumes differ by more than one float16 step.

    The step is taken at the larger of the two values (a value next to a power of two may
    round up into the next binade), and never below ``floor``: near zero, float16's steps
    (down to 6e-8) are finer than float32 arithmetic on z-scores (~1e-6 absolute).
    """
    a, e = np.asarray(actual, np.float32), np.asarray(expected, np.float32)
    step = np.maximum(np.maximum(float16_step(a), float16_step(e)), floor)
    return np.abs(a - e) > step
