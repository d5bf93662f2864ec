"""The visual report of a shard folder: ``OUT/report/`` (PNG plots, summary, index.html).

:func:`write_report` reads what a job left on disk (``manifest.json``, ``plan.json``,
``failures.csv``, a few records of the shards) and writes ``class_counts.png`` (train
records per class before and after balancing, and originals per split),
``montage.png`` (three orthogonal slices through a few originals per class, each beside
one or two of its augmented copies, with the label volume overlaid),
``histograms.png`` (voxel intensities after normalisation, per split), ``summary.txt``
and a self-contained ``index.html`` that shows them all. Records are read with
:mod:`volprep.records` (no TensorFlow), only the ones a plot needs, and only three slices
of each are kept, so memory does not grow with the dataset or the volume size. Plots use
matplotlib's object API with the Agg canvas (imported lazily; no pyplot, no global
backend switch). Which records are shown is a pure function of the manifest and plan.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from volprep.manifest import read_manifest
from volprep.records import decode_example, iter_records
from volprep.shards import atomic_write_text
from volprep.summary import human_size, inspect_text, summary_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from volprep.runner import JobResult

log = logging.getLogger(__name__)

REPORT_DIR = "report"
FIGURES = ("class_counts.png", "montage.png", "histograms.png")
VIEWS = ("axial", "coronal", "sagittal")
_HIST_VOXELS = 20000  # voxels sampled from each record for the histograms
_DPI = 110


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


def choose_montage(manifest: Mapping[str, Any], plan: Mapping[str, Any] | None, *,
                   per_class: int = 2, copies: int = 2, max_classes: int = 6) -> list[MontageRow]:
    """Which originals (and copies) the montage shows: a pure function of manifest and plan.

    For each class (at most ``max_classes``, in class-id order), ``per_class`` originals:
    train cases that have augmented copies first, then other train cases, then the
    other splits, each group in case-id order; each with its first ``copies`` copies.
    Cases without a class form one row group of their own when no case has a class.

    Args:
        manifest: the manifest dict.
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
    names = list(plan.get("classes", []))
    ids = [int(i) for i in plan.get("class_ids", range(len(names)))]
    name_of = dict(zip(ids, names, strict=False))
    case_class: Mapping[str, int | None] = plan.get("case_class", {})
    groups: dict[int | None, list[str]] = {}
    for cid in sorted(split_of):
        cls = case_class.get(cid)
        groups.setdefault(None if cls is None else int(cls), []).append(cid)
    keys: list[int | None] = []
    keys.extend(c for c in ids if c in groups)
    keys = keys[:max_classes]
    if not keys and None in groups:
        keys = [None]
    present = set(manifest.get("splits", {}))
    rows: list[MontageRow] = []
    for cls in keys:
        def rank(cid: str) -> tuple[int, str]:
            in_train = split_of[cid] == "train"
            return (0 if in_train and plan_copies.get(cid) else 1 if in_train else 2, cid)

        chosen = [cid for cid in sorted(groups[cls], key=rank) if split_of[cid] in present][:per_class]
        for cid in chosen:
            ks = tuple(int(c["copy"]) for c in plan_copies.get(cid, [])[:copies]) if split_of[cid] == "train" else ()
            rows.append(MontageRow(cid, split_of[cid], name_of.get(cls) if cls is not None else None, ks))
    return rows


# ----------------------------------------------------------------------------- decoding


def decode_image(example: Mapping[str, Any], feature: Mapping[str, Any]) -> np.ndarray:
    """The ``image`` of a decoded example as float32 ``[D, H, W, C]``.

    Raises:
        ValueError: the bytes do not fit the manifest's dtype and shape, or an encoding
            this function cannot decode.
    """
    data = example["image"][0]
    shape = [int(s) for s in feature["shape"]]
    encoding = str(feature.get("encoding", "raw"))
    if encoding == "raw":
        dtype = np.dtype(feature["dtype"]).newbyteorder("<")
        if len(data) != dtype.itemsize * int(np.prod(shape)):
            raise ValueError(f"image has {len(data)} bytes, the manifest's {feature['dtype']} {shape} needs "
                             f"{dtype.itemsize * int(np.prod(shape))}")
        return np.frombuffer(data, dtype=dtype).reshape(shape).astype(np.float32)
    if encoding.startswith("wavelet"):
        try:
            from volprep.preprocess import wavelet
        except ImportError as err:
            raise ValueError(f"cannot decode {encoding!r} here ({err})") from None
        layout = feature.get("layout")
        if not layout:
            raise ValueError(f"encoding {encoding!r} without a layout in the manifest")
        return np.asarray(wavelet.decode(data, layout), dtype=np.float32).reshape(shape)
    raise ValueError(f"unknown image encoding {encoding!r}")


def mask_feature(features: Mapping[str, Any]) -> str | None:
    """The name of the label-volume feature (``"mask"``, or a raw ``"label"``), if any."""
    if "mask" in features:
        return "mask"
    label = features.get("label")
    if label is not None and label.get("encoding") == "raw" and len(label.get("shape", [])) == 3:
        return "label"
    return None


def decode_mask(example: Mapping[str, Any], feature: Mapping[str, Any]) -> np.ndarray:
    """A raw label volume ``[D, H, W]`` of a decoded example (its manifest dtype).

    Raises:
        ValueError: the bytes do not fit the manifest's dtype and shape.
    """
    name = "mask" if "mask" in example else "label"
    data = example[name][0]
    shape = [int(s) for s in feature["shape"]]
    dtype = np.dtype(feature["dtype"]).newbyteorder("<")
    if len(data) != dtype.itemsize * int(np.prod(shape)):
        raise ValueError(f"{name} has {len(data)} bytes, the manifest's {feature['dtype']} {shape} needs more")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def take_slices(image: np.ndarray, mask: np.ndarray | None) -> Slices:
    """Three orthogonal slices of channel 0, through the smallest labelled structure.

    Axis order follows the records (``[D, H, W]`` = ``(i, j, k)``, RAS after reorientation):
    axial is ``k`` fixed (x = i, y = j), coronal ``j`` fixed (x = i, y = k), sagittal ``i``
    fixed (x = j, y = k). With a mask, each view shows the plane holding the most voxels
    of the label value with the fewest voxels (a small lesion, not the organ around it;
    ties: the middle such plane); without one, the middle of the grid.

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


def _densest_plane(focus: np.ndarray, axis: int) -> int:
    """The index along ``axis`` of the plane with the most ``True`` voxels (middle of ties)."""
    other = tuple(a for a in range(focus.ndim) if a != axis)
    counts = focus.sum(axis=other)
    best = np.flatnonzero(counts == counts.max())
    return int(best[len(best) // 2])


def _voxel_sample(image: np.ndarray) -> np.ndarray:
    """About ``_HIST_VOXELS`` voxels per channel, strided (deterministic), ``[C, n]``."""
    chans = image.reshape(-1, image.shape[-1]).T if image.ndim == 4 else image.reshape(1, -1)
    step = max(1, chans.shape[1] // _HIST_VOXELS)
    return np.array(chans[:, ::step], np.float32)


# ----------------------------------------------------------------------------- reading


@dataclasses.dataclass
class ReadBack:
    """What :func:`read_samples` collected."""

    samples: dict[tuple[str, int], Sample]
    voxels: dict[tuple[str, bool], list[np.ndarray]]  # (split, augmented) -> [C, n] arrays
    records_read: int
    spacing: dict[str, tuple[float, float, float]] = dataclasses.field(default_factory=dict)


def _record_spacing(out_dir: Path, case_id: str) -> tuple[float, float, float] | None:
    """The voxel spacing of a case's records, from its cache entry (None without one)."""
    from volprep.cache import CaseCache

    meta = CaseCache(out_dir / "cache.zarr").lookup(case_id, None)
    spacing = (meta or {}).get("spacing")
    if not spacing or len(spacing) != 3:
        return None
    return (float(spacing[0]), float(spacing[1]), float(spacing[2]))


def _iter_split(out_dir: Path, info: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for shard in info.get("shards", []):
        path = out_dir / shard["file"]
        if not path.is_file():
            log.warning("report: %s is missing; skipped", path)
            continue
        for record in iter_records(path):
            yield decode_example(record)


def read_samples(out_dir: Path, manifest: Mapping[str, Any], rows: Sequence[MontageRow], *,
                 hist_records: int = 8, fallback_per_class: int = 2) -> ReadBack:
    """Reads the records the plots need, and no more.

    Each split is read shard by shard until every montage record of that split has been
    seen and ``hist_records`` originals (and, for train, as many augmented copies) have
    been sampled for the histograms. Without chosen ``rows`` (no plan), the first
    ``fallback_per_class`` originals of each class met in the train split are shown.

    Args:
        out_dir: the shard folder.
        manifest: its manifest.
        rows: the montage rows (:func:`choose_montage`).
        hist_records: records sampled per split (and kind) for the histograms.
        fallback_per_class: montage originals per class when ``rows`` is empty.

    Returns:
        The samples by ``(case_id, copy)``, the voxel samples and the records read.
    """
    features = manifest["features"]
    mask_name = mask_feature(features)
    names = [str(n) for n in (manifest.get("classes") or {}).get("names", [])]
    wanted: dict[tuple[str, int], MontageRow] = {}
    for row in rows:
        wanted[(row.case_id, 0)] = row
        for k in row.copies:
            wanted[(row.case_id, k)] = row
    out = ReadBack({}, {}, 0)
    for case_id in {row.case_id for row in rows}:
        found = _record_spacing(out_dir, case_id)
        if found is not None:
            out.spacing[case_id] = found
    fallback: dict[str | None, int] = {}
    for split, info in manifest.get("splits", {}).items():
        todo = {key for key, row in wanted.items() if row.split == split}
        has_copies = int(info.get("num_records", 0)) > int(info.get("num_originals", info.get("num_records", 0)))
        kinds = (False, True) if has_copies else (False,)
        pick_fallback = not rows and split == "train"

        for example in _iter_split(out_dir, info):
            out.records_read += 1
            case_id = example["case_id"][0].decode("utf-8") if example.get("case_id") else "?"
            copy = int(example["copy"][0]) if len(example.get("copy", [])) else 0
            key = (case_id, copy)
            take_hist = len(out.voxels.get((split, copy > 0), [])) < hist_records
            pick = wanted.get(key) if key in todo else None
            if pick is None and pick_fallback and copy == 0:
                cls = _class_name(example, names)
                if fallback.get(cls, 0) < fallback_per_class:
                    fallback[cls] = fallback.get(cls, 0) + 1
                    pick = MontageRow(case_id, split, cls, ())
                    found = _record_spacing(out_dir, case_id)
                    if found is not None:
                        out.spacing[case_id] = found
            if pick is not None or take_hist:
                _collect(example, key, split, pick, take_hist, features, mask_name, out)
                todo.discard(key)
            if _split_done(out, split, kinds, hist_records, todo,
                           fallback if pick_fallback else None, names, fallback_per_class):
                break
    return out


def _split_done(out: ReadBack, split: str, kinds: Sequence[bool], hist_records: int,
                todo: set[tuple[str, int]], fallback: Mapping[str | None, int] | None,
                names: Sequence[str], per_class: int) -> bool:
    """Whether a split has given every record the plots want from it."""
    if todo or any(len(out.voxels.get((split, k), [])) < hist_records for k in kinds):
        return False
    if fallback is not None:  # no plan: stop once every class has its originals
        classes: list[str | None] = [*names] if names else [None]
        return bool(fallback) and all(fallback.get(n, 0) >= per_class for n in classes)
    return True


def _collect(example: Mapping[str, Any], key: tuple[str, int], split: str, row: MontageRow | None,
             take_hist: bool, features: Mapping[str, Any], mask_name: str | None, out: ReadBack) -> None:
    """Decodes one record and keeps what the plots need of it (slices, a voxel sample)."""
    case_id, copy = key
    try:
        image = decode_image(example, features["image"])
        mask = decode_mask(example, features[mask_name]) if mask_name and mask_name in example else None
    except ValueError as err:
        log.warning("report: %s copy %d: %s", case_id, copy, err)
        if row is not None:
            out.samples[key] = Sample(case_id, copy, split, row.class_name, "", None, str(err))
        return
    if take_hist:
        out.voxels.setdefault((split, copy > 0), []).append(_voxel_sample(image))
    if row is not None:
        augment = example["augment"][0].decode("utf-8") if example.get("augment") else ""
        out.samples[key] = Sample(case_id, copy, split, row.class_name, augment, take_slices(image, mask),
                                  spacing=out.spacing.get(case_id))


def _class_name(example: Mapping[str, Any], names: Sequence[str]) -> str | None:
    label = example.get("label")
    if label is None or not isinstance(label, np.ndarray) or label.size != 1:
        return None
    k = int(label[0])
    return names[k] if 0 <= k < len(names) else str(k)


# ----------------------------------------------------------------------------- figures


def _save(fig: Figure, path: Path) -> None:
    """Saves a figure atomically (temporary name in the same folder, then rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=_DPI)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is for reading
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def plot_class_counts(manifest: Mapping[str, Any], plan: Mapping[str, Any] | None, path: Path) -> None:
    """``class_counts.png``: train before/after balancing per class; originals per split."""
    from matplotlib.ticker import MaxNLocator

    classes = manifest.get("classes") or {}
    names = [str(n) for n in classes.get("names", [])]
    before = classes.get("counts_before") or {}
    after = classes.get("counts_after") or {}
    per_split = classes.get("per_split") or {}
    splits = manifest.get("splits", {})
    if not names:
        fig = _new_figure(6, 3.8)
        ax = fig.add_subplot()
        labels = list(splits)
        orig = [int(splits[s].get("num_originals", splits[s]["num_records"])) for s in labels]
        extra = [int(splits[s]["num_records"]) - o for s, o in zip(labels, orig, strict=True)]
        ax.bar(labels, orig, color="#4c72b0", label="originals")
        ax.bar(labels, extra, bottom=orig, color="#dd8452", hatch="//", label="augmented copies")
        for pos, (o, e) in enumerate(zip(orig, extra, strict=True)):
            ax.annotate(str(o + e), (pos, o + e), ha="center", va="bottom", fontsize=9)
        ax.set_ylabel("records")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title("Records per split (no classes in this dataset)")
        ax.legend(frameon=False)
        _save(fig, path)
        return
    width = max(8.0, min(18.0, 3.0 + 1.1 * len(names) * (1 + (1 if per_split else 0))))
    fig = _new_figure(width, 4.4)
    axes = fig.subplots(1, 2 if per_split else 1, squeeze=False)[0]
    x = np.arange(len(names))
    b = np.array([int(before.get(n, 0)) for n in names])
    a = np.array([int(after.get(n, 0)) for n in names])
    ax = axes[0]
    w = 0.38
    ax.bar(x - w / 2, b, w, color="#8c8c8c", label="before (originals)")
    ax.bar(x + w / 2, b, w, color="#4c72b0", label="after: originals")
    ax.bar(x + w / 2, a - b, w, bottom=b, color="#dd8452", hatch="//", edgecolor="white",
           label="after: augmented copies")
    top = max(int(a.max(initial=0)), int(b.max(initial=0)), 1)
    for xi, bi, ai in zip(x, b, a, strict=True):
        ax.annotate(str(bi), (xi - w / 2, bi), ha="center", va="bottom", fontsize=8)
        ax.annotate(f"{ai}" + (f"\n(+{ai - bi})" if ai > bi else ""), (xi + w / 2, ai),
                    ha="center", va="bottom", fontsize=8)
    target = int(plan.get("target", 0)) if plan else 0
    if target:
        ax.axhline(target, color="black", lw=0.8, ls="--", label=f"target: {target} a class")
    ax.set_ylim(0, top * 1.18)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xticks(x, names, rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    ax.set_ylabel("train records")
    ax.set_title("Train split: records per class, before and after balancing")
    ax.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=2)
    if per_split:
        ax2 = axes[1]
        split_names = list(per_split)
        sw = 0.8 / max(1, len(split_names))
        peak = 1
        for s_i, split in enumerate(split_names):
            counts = np.array([int(per_split[split].get(n, 0)) for n in names])
            peak = max(peak, int(counts.max(initial=0)))
            where = x - 0.4 + sw * (s_i + 0.5)
            ax2.bar(where, counts, sw, label=split)
            for xi, c in zip(where, counts, strict=True):
                ax2.annotate(str(c), (xi, c), ha="center", va="bottom", fontsize=8)
        ax2.set_ylim(0, peak * 1.2)
        ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set_xticks(x, names, rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
        ax2.set_ylabel("original cases")
        ax2.set_title("Originals per class in each split")
        ax2.legend(frameon=False, fontsize=8)
    _save(fig, path)


def _augment_caption(augment: str) -> str:
    """A few words for a copy's transform (flips, quarter turns, scale, intensity)."""
    try:
        p = json.loads(augment) if augment else {}
    except ValueError:
        return ""
    if not isinstance(p, dict):
        return ""
    parts = []
    if p.get("flips"):
        parts.append("flip " + ",".join(str(a) for a in p["flips"]))
    if p.get("rot90_k"):
        parts.append(f"rot90 x{p['rot90_k']}")
    matrix = p.get("matrix")
    if matrix is not None:
        m = np.asarray(matrix, float)
        if m.shape == (3, 3) and not np.allclose(m, np.eye(3)):
            scale = abs(float(np.linalg.det(m))) ** (1 / 3)
            angle = float(np.degrees(np.arccos(np.clip((np.trace(m / scale) - 1) / 2, -1, 1))))
            parts.append(f"rot {angle:.0f}deg, scale {scale:.2f}")
    shift = np.asarray(p.get("translation", [0, 0, 0]), float)
    if shift.size and np.any(np.abs(shift) > 0.05):
        parts.append("shift " + ",".join(f"{v:.1f}" for v in shift))
    if p.get("intensity_scale", 1.0) != 1.0 or p.get("intensity_shift", 0.0):
        parts.append(f"I*{float(p.get('intensity_scale', 1)):.2f}{float(p.get('intensity_shift', 0)):+.2f}")
    if p.get("gamma", 1.0) != 1.0:
        parts.append(f"gamma {float(p['gamma']):.2f}")
    if p.get("noise_std"):
        parts.append(f"noise {float(p['noise_std']):.2f}")
    return "; ".join(parts)


def _label_colors(values: Sequence[int]) -> dict[int, tuple[float, float, float, float]]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {int(v): cmap((int(v) - 1) % 10) for v in values}


def plot_montage(rows: Sequence[MontageRow], samples: Mapping[tuple[str, int], Sample],
                 label_names: Mapping[str, str], path: Path) -> None:
    """``montage.png``: each row an original and its copies, three views each.

    Each original sets the intensity window (1st-99.5th percentile) its copies share, so
    intensity augmentation shows (one colour bar a row); label values are drawn as
    translucent fills with outlines, one colour per value, named in the legend. The grid
    is laid out by hand (fixed margins in inches): constrained layout costs seconds here.
    """
    from matplotlib.figure import Figure
    from matplotlib.gridspec import GridSpec
    from matplotlib.patches import Patch

    if not rows:
        fig = _new_figure(6, 2)
        fig.text(0.5, 0.5, "no records to show", ha="center", va="center")
        _save(fig, path)
        return
    n_cols = 3 * (1 + max(len(r.copies) for r in rows))
    panel_w, panel_h, left, right, top, bottom = 1.6, 1.85, 0.95, 0.75, 0.75, 0.15
    width = left + panel_w * n_cols + right
    height = top + panel_h * len(rows) + bottom
    fig = Figure(figsize=(width, height))
    grid = GridSpec(len(rows), n_cols + 1, figure=fig, width_ratios=[1.0] * n_cols + [0.07],
                    left=left / width, right=1 - 0.45 / width, top=1 - top / height,
                    bottom=bottom / height, wspace=0.12, hspace=0.42)
    values: set[int] = set()
    for shown in samples.values():
        if shown.slices is not None and shown.slices.masks is not None:
            for m in shown.slices.masks.values():
                values.update(int(v) for v in np.unique(m) if v > 0)
    colors = _label_colors(sorted(values))
    for r, row in enumerate(rows):
        original = samples.get((row.case_id, 0))
        window = original.slices.window if original is not None and original.slices is not None else None
        image = None
        for c, copy in enumerate((0, *row.copies)):
            sample = samples.get((row.case_id, copy))
            for v, view in enumerate(VIEWS):
                ax = fig.add_subplot(grid[r, 3 * c + v])
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if c == 0 and v == 0:
                    ax.set_ylabel(f"{row.case_id}\n{row.class_name or ''} ({row.split})", fontsize=8)
                who = "original" if copy == 0 else f"copy {copy}"
                if sample is None or sample.slices is None:
                    reason = sample.problem if sample is not None else "not found in the shards"
                    ax.text(0.5, 0.5, f"{who}\n{reason[:60]}", ha="center", va="center", fontsize=6,
                            transform=ax.transAxes, wrap=True)
                    continue
                sl = sample.slices
                lo, hi = window or sl.window
                image = ax.imshow(sl.views[view].T, origin="lower", cmap="gray", vmin=lo, vmax=hi,
                                  interpolation="nearest", aspect=_aspect(sample.spacing, view))
                if sl.masks is not None:
                    _overlay(ax, sl.masks[view].T, colors)
                ax.set_aspect(_aspect(sample.spacing, view))  # after the overlay's imshow
                ax.set_title(f"{who} · {view} {'kji'[v]}={sl.index[view]}", fontsize=7)
                if v == 0 and copy:
                    caption = _augment_caption(sample.augment)
                    if caption:
                        ax.set_xlabel(caption, fontsize=6)
        if image is not None:
            bar = fig.colorbar(image, cax=fig.add_subplot(grid[r, n_cols]))
            bar.ax.tick_params(labelsize=6)
    title = "Orthogonal slices (channel 0) of originals and their augmented copies"
    if values:
        title += "; label values as coloured outlines"
        handles = [Patch(facecolor=colors[v], edgecolor=colors[v], alpha=0.6,
                         label=f"{v}: {label_names.get(str(v), str(v))}") for v in sorted(values)]
        fig.legend(handles=handles, loc="upper right", bbox_to_anchor=(1 - 0.1 / width, 1 - 0.05 / height),
                   ncols=min(6, len(handles)), fontsize=7, frameon=False)
    fig.text(left / width, 1 - 0.12 / height, title, fontsize=10, va="top")
    _save(fig, path)


def _aspect(spacing: tuple[float, float, float] | None, view: str) -> float:
    """Height/width of a voxel as drawn, so anisotropic grids keep their physical shape."""
    if spacing is None or min(spacing) <= 0:
        return 1.0
    x, y = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}[view]
    return float(spacing[y] / spacing[x])


def _overlay(ax: Any, mask: np.ndarray, colors: Mapping[int, tuple[float, float, float, float]]) -> None:
    """Translucent fill plus an outline of every label value present in a slice."""
    rgba = np.zeros((*mask.shape, 4), np.float32)
    for value in (int(v) for v in np.unique(mask) if v > 0):
        hit = mask == value
        rgba[hit] = (*colors[value][:3], 0.28)
        if hit.any() and not hit.all():
            ax.contour(hit.astype(np.float32), levels=[0.5], colors=[colors[value]], linewidths=0.7)
    ax.imshow(rgba, origin="lower", interpolation="nearest")


def plot_histograms(voxels: Mapping[tuple[str, bool], Sequence[np.ndarray]], method: str,
                    path: Path) -> None:
    """``histograms.png``: voxel intensities after normalisation, per split (and copies)."""
    fig_chans = max((a.shape[0] for arrays in voxels.values() for a in arrays), default=1)
    n = min(fig_chans, 4)
    fig = _new_figure(5.2 * n, 3.8)
    axes = fig.subplots(1, n, squeeze=False)[0]
    pooled = [a for arrays in voxels.values() for a in arrays]
    if not pooled:
        axes[0].text(0.5, 0.5, "no records read", ha="center", va="center", transform=axes[0].transAxes)
        _save(fig, path)
        return
    for c, ax in enumerate(axes):
        values = np.concatenate([a[c] for a in pooled if a.shape[0] > c])
        values = values[np.isfinite(values)]
        lo, hi = np.percentile(values, [0.01, 99.99]) if values.size else (0.0, 1.0)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 101)
        for (split, augmented), arrays in sorted(voxels.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            data = np.concatenate([a[c] for a in arrays if a.shape[0] > c])
            data = data[np.isfinite(data)]
            if not data.size:
                continue
            label = f"{split} {'augmented' if augmented else 'originals'} ({len(arrays)} records)"
            ax.hist(data, bins=bins, histtype="step", density=True, lw=1.3,
                    ls="--" if augmented else "-", label=label)
        ax.set_yscale("log")
        ax.set_xlabel("intensity after normalisation")
        ax.set_ylabel("density (log)")
        ax.set_title(f"channel {c}", fontsize=9)
        ax.legend(frameon=False, fontsize=7)
    fig.suptitle(f"Voxel intensities as stored ({method} normalisation), a sample of records", fontsize=10)
    _save(fig, path)


# ----------------------------------------------------------------------------- html


def _read_plan(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / "plan.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as err:
        log.warning("report: %s is not valid JSON (%s); plotting without the plan", path, err)
        return None
    return data if isinstance(data, dict) else None


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1400px;
margin:1.5em auto;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.85em;border-radius:4px}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#555;margin-top:.3em}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f0f0f0}.muted{color:#777}
"""

_CAPTIONS = {
    "class_counts.png": "Left: train records per class before balancing (originals) and after "
                        "(originals plus offline augmented copies); the dashed line is the plan's "
                        "target. Right: original cases per class in each split.",
    "montage.png": "Axial, coronal and sagittal slices through the label's centre (or the grid's "
                   "middle) of a few originals per class, each beside its first augmented copies. "
                   "A row shares one intensity window; label values are coloured contours.",
    "histograms.png": "Voxel intensities of a sample of records as the loader returns them "
                      "(after normalisation), per split; dashed: augmented copies.",
}


def _html(out_dir: Path, manifest: Mapping[str, Any], plan: Mapping[str, Any] | None, summary: str,
          figures: Sequence[str], records_read: int) -> str:
    e = html.escape
    name = (manifest.get("dataset") or {}).get("name") or out_dir.name
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>volprep report: {e(str(name))}</title><style>{_CSS}</style></head><body>",
        f"<h1>volprep report: {e(str(name))}</h1>",
        f'<p class="muted">{e(str(out_dir))} &middot; format {e(str(manifest.get("format_version")))}'
        f' &middot; volprep {e(str(manifest.get("volprep_version", "?")))} &middot; seed {e(str(manifest.get("seed")))}'
        f" &middot; {records_read} records read for the plots</p>",
        "<h2>Summary</h2>", f"<pre>{e(summary)}</pre>",
    ]
    explanation = (plan or {}).get("explanation") or []
    if explanation:
        parts.append("<h2>Balancing</h2><ul>")
        parts.extend(f"<li>{e(str(line))}</li>" for line in explanation)
        parts.append("</ul>")
    parts.append("<h2>Figures</h2>")
    for fig in figures:
        parts.append(f'<figure><img src="{e(fig)}" alt="{e(fig)}"><figcaption><b>{e(fig)}</b>: '
                     f"{e(_CAPTIONS.get(fig, ''))}</figcaption></figure>")
    failures = manifest.get("failures") or []
    parts.append(f"<h2>Failures ({len(failures)})</h2>")
    if failures:
        shown = failures[:500]
        parts.append("<table><tr><th>case</th><th>path</th><th>error</th></tr>")
        parts.extend(f"<tr><td>{e(str(f.get('case')))}</td><td>{e(str(f.get('path')))}</td>"
                     f"<td>{e(str(f.get('error')))}</td></tr>" for f in shown)
        parts.append("</table>")
        if len(failures) > len(shown):
            parts.append(f"<p>... and {len(failures) - len(shown)} more in failures.csv.</p>")
    else:
        parts.append("<p>Every case converted.</p>")
    parts.append("<h2>Files</h2><ul>")
    for file, what in (("manifest.json", "feature spec, shards, checksums, classes, config"),
                       ("plan.json", "splits and the augmentation plan"),
                       ("failures.csv", "every failed case with its reason"),
                       ("timings.json", "wall time per stage"),
                       ("summary.txt", "this summary as text")):
        href = file if file == "summary.txt" else f"../{file}"
        exists = (out_dir / REPORT_DIR / file).exists() if file == "summary.txt" else (out_dir / file).exists()
        mark = "" if exists else ' <span class="muted">(not present)</span>'
        parts.append(f'<li><a href="{e(href)}">{e(file)}</a>: {e(what)}{mark}</li>')
    parts.append("</ul>")
    splits = manifest.get("splits", {})
    parts.append("<h2>Shards</h2><table><tr><th>split</th><th>file</th><th>records</th><th>size</th><th>sha256</th></tr>")
    for split, info in splits.items():
        for s in info.get("shards", []):
            parts.append(f"<tr><td>{e(split)}</td><td>{e(s['file'])}</td><td>{int(s['num_records'])}</td>"
                         f"<td>{e(human_size(int(s['num_bytes'])))}</td><td><code>{e(s['sha256'][:16])}</code></td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- entry point


def write_report(out_dir: Path, result: JobResult | None = None, *, per_class: int = 2,
                 copies: int = 2, hist_records: int = 8) -> Path:
    """Writes ``OUT/report/``: class_counts.png, montage.png, histograms.png, summary.txt, index.html.

    Args:
        out_dir: a finished shard folder (its ``manifest.json`` is read unless ``result``
            carries it).
        result: the job's result, for the end-of-job summary (wall times, cases reused);
            ``None`` regenerates the report from the folder alone (``volprep report``),
            with the ``volprep inspect`` text as the summary.
        per_class: originals per class in the montage.
        copies: augmented copies shown beside each original.
        hist_records: records per split (and per kind: originals, copies) sampled for the
            histograms.

    Returns:
        The path of ``index.html``.

    Raises:
        UsageError: the folder has no readable manifest.
    """
    out_dir = Path(out_dir)
    manifest = result.manifest if result is not None else read_manifest(out_dir)
    plan = _read_plan(out_dir)
    report_dir = out_dir / REPORT_DIR
    report_dir.mkdir(parents=True, exist_ok=True)

    rows = choose_montage(manifest, plan, per_class=per_class, copies=copies)
    back = read_samples(out_dir, manifest, rows, hist_records=hist_records, fallback_per_class=per_class)
    if not rows:  # no plan: show what the fallback picked, originals only
        rows = [MontageRow(cid, s.split, s.class_name, ()) for (cid, k), s in sorted(back.samples.items()) if k == 0]
    label_names = {str(k): str(v) for k, v in ((manifest.get("dataset") or {}).get("label_names") or {}).items()}
    method = str((manifest.get("normalization") or {}).get("method", "?"))

    plot_class_counts(manifest, plan, report_dir / "class_counts.png")
    plot_montage(rows, back.samples, label_names, report_dir / "montage.png")
    plot_histograms(back.voxels, method, report_dir / "histograms.png")

    if result is not None:
        summary = summary_text(result, color=False, report=True)
    else:
        summary = inspect_text(dict(manifest), str(out_dir))
    atomic_write_text(report_dir / "summary.txt", summary + "\n")
    index = report_dir / "index.html"
    atomic_write_text(index, _html(out_dir, manifest, plan, summary, FIGURES, back.records_read))
    log.info("report: %s (%d records read)", index, back.records_read)
    return index
