"""What the report shows: which records go in the montage, and which planes of each.

Contract: numpy only (no matplotlib, no file access), pure functions. :func:`choose_montage`
picks the originals (and their augmented copies) shown, from the typed manifest and the
plan;
:func:`take_slices` cuts three orthogonal planes out of one decoded record (channel 0 and
its label volume) and keeps only those, so the report's memory does not grow with the
volume size: through the smallest labelled structure when a case has at most
``MANY_LABELS`` label values (a lesion), through the centre of mass of the whole
foreground when it has more (an atlas); :func:`voxel_sample` strides a record for the
histograms. The dataclasses here are what the reading side (:mod:`volprep.report`) hands
to the drawing side (:mod:`volprep.report_montage`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from volprep.manifest import Manifest

VIEWS = ("axial", "coronal", "sagittal")
_HIST_VOXELS = 20000  # voxels sampled from each record for the histograms
MANY_LABELS = 8  # more distinct label values than this in a case: an atlas, not lesions


@dataclasses.dataclass(frozen=True)
class MontageRow:
    """One row of the montage: an original and the copies shown beside it."""

    case_id: str
    split: str
    class_name: str | None
    copies: tuple[int, ...]


@dataclasses.dataclass
class Slices:
    """Three orthogonal slices of one record (channel 0), ready to draw.

    Attributes:
        views: ``{"axial" | "coronal" | "sagittal": 2D float32}``; axis 0 is drawn as x.
        masks: the label volume's slices (same keys), or ``None`` without a mask.
        index: the slice index of each view (k, j, i).
        window: the (low, high) intensity percentiles of the whole channel.
    """

    views: dict[str, np.ndarray]
    masks: dict[str, np.ndarray] | None
    index: dict[str, int]
    window: tuple[float, float]


@dataclasses.dataclass
class Sample:
    """One record read back for the report."""

    case_id: str
    copy: int
    split: str
    class_name: str | None
    augment: str
    slices: Slices | None
    problem: str = ""
    spacing: tuple[float, float, float] | None = None  # mm of the record grid (from the cache)


# ----------------------------------------------------------------------------- choosing


def choose_montage(manifest: Manifest, plan: Mapping[str, Any] | None, *,
                   per_class: int = 2, copies: int = 2, max_classes: int = 6) -> list[MontageRow]:
    """Which originals (and copies) the montage shows: a pure function of manifest and plan.

    For each class (at most ``max_classes``, in the manifest's class order), ``per_class``
    originals: train cases that have augmented copies first, then other train cases, then
    the other splits, each group in case-id order; each with its first ``copies`` copies.
    Cases without a class form one row group of their own when no case has a class. The
    plan gives each case's class id (``case_class``); the manifest names it
    (:meth:`~volprep.manifest.ClassTable.name_of`), never by a list position.

    Args:
        manifest: the manifest (its classes and which splits it holds).
        plan: the ``plan.json`` dict, or ``None`` (no montage rows are chosen up front).
        per_class: originals per class.
        copies: copies shown beside each original.
        max_classes: classes shown at most.

    Returns:
        The rows, in display order.
    """
    if plan is None:
        return []
    splits: Mapping[str, Sequence[str]] = plan.get("splits", {})
    split_of = {cid: split for split, ids in splits.items() for cid in ids}
    plan_copies: Mapping[str, Sequence[Mapping[str, Any]]] = plan.get("copies", {})
    case_class: Mapping[str, int | None] = plan.get("case_class", {})
    groups: dict[int | None, list[str]] = {}
    for cid in sorted(split_of):
        cls = case_class.get(cid)
        groups.setdefault(None if cls is None else int(cls), []).append(cid)
    keys: list[int | None] = []
    keys.extend(c for c in manifest.classes.ids if c in groups)
    keys = keys[:max_classes]
    if not keys and None in groups:
        keys = [None]
    present = set(manifest.splits)
    rows: list[MontageRow] = []
    for cls in keys:
        def rank(cid: str) -> tuple[int, str]:
            in_train = split_of[cid] == "train"
            return (0 if in_train and plan_copies.get(cid) else 1 if in_train else 2, cid)

        chosen = [cid for cid in sorted(groups[cls], key=rank) if split_of[cid] in present][:per_class]
        for cid in chosen:
            ks = tuple(int(c["copy"]) for c in plan_copies.get(cid, [])[:copies]) if split_of[cid] == "train" else ()
            rows.append(MontageRow(cid, split_of[cid], None if cls is None else manifest.classes.name_of(cls), ks))
    return rows



def take_slices(image: np.ndarray, mask: np.ndarray | None) -> Slices:
    """Three orthogonal slices of channel 0, through what the labels point at.

    Axis order follows the records (``[D, H, W]`` = ``(i, j, k)``, RAS after reorientation):
    axial is ``k`` fixed (x = i, y = j), coronal ``j`` fixed (x = i, y = k), sagittal ``i``
    fixed (x = j, y = k). Which planes:

    - a mask with at most ``MANY_LABELS`` values > 0 (lesions, organs): each view shows the
      plane holding the most voxels of the value with the fewest voxels (a small lesion,
      not the organ around it; ties: the middle such plane);
    - a mask with more (an atlas, a parcellation): the planes through the centre of mass of
      the whole foreground (``mask > 0``), rounded; the smallest parcel of an atlas can
      sit at the edge of the volume and says nothing about the rest;
    - no mask, or an empty one: the middle of the grid.

    Args:
        image: ``[D, H, W, C]`` (or ``[D, H, W]``).
        mask: ``[D, H, W]`` or ``None``.

    Returns:
        The slices, their indices and a (1st, 99.5th) percentile intensity window.
    """
    vol = image[..., 0] if image.ndim == 4 else image
    i, j, k = (int(n) // 2 for n in vol.shape[:3])
    if mask is not None and np.any(mask > 0):
        values, counts = np.unique(mask[mask > 0], return_counts=True)
        if len(values) > MANY_LABELS:
            i, j, k = (_centre_plane(mask > 0, axis) for axis in range(3))
        else:
            focus = mask == values[int(np.argmin(counts))]
            i, j, k = (_densest_plane(focus, axis) for axis in range(3))
    index = {"axial": k, "coronal": j, "sagittal": i}
    views = {"axial": vol[:, :, k], "coronal": vol[:, j, :], "sagittal": vol[i, :, :]}
    finite = vol[np.isfinite(vol)]
    lo, hi = (np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0))
    if hi <= lo:
        hi = lo + 1.0
    masks = None
    if mask is not None:
        masks = {"axial": mask[:, :, k], "coronal": mask[:, j, :], "sagittal": mask[i, :, :]}
        masks = {v: np.array(a) for v, a in masks.items()}
    return Slices({v: np.array(a, np.float32) for v, a in views.items()}, masks, index, (float(lo), float(hi)))


def _centre_plane(foreground: np.ndarray, axis: int) -> int:
    """The plane along ``axis`` through the centre of mass of ``foreground`` (rounded)."""
    other = tuple(a for a in range(foreground.ndim) if a != axis)
    counts = foreground.sum(axis=other, dtype=np.int64)
    centre = float(np.dot(np.arange(counts.size), counts) / counts.sum())
    return int(np.clip(np.rint(centre), 0, counts.size - 1))


def _densest_plane(focus: np.ndarray, axis: int) -> int:
    """The index along ``axis`` of the plane with the most ``True`` voxels (middle of ties)."""
    other = tuple(a for a in range(focus.ndim) if a != axis)
    counts = focus.sum(axis=other)
    best = np.flatnonzero(counts == counts.max())
    return int(best[len(best) // 2])


def voxel_sample(image: np.ndarray) -> np.ndarray:
    """About ``_HIST_VOXELS`` voxels per channel, strided (deterministic), ``[C, n]``."""
    chans = image.reshape(-1, image.shape[-1]).T if image.ndim == 4 else image.reshape(1, -1)
    step = max(1, chans.shape[1] // _HIST_VOXELS)
    return np.array(chans[:, ::step], np.float32)


