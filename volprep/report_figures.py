"""The report's bar chart (``class_counts.png``) and histograms (``histograms.png``).

Contract: each ``*_figure`` function is a pure function of the typed manifest (and plan, or the
voxel samples) that returns a matplotlib ``Figure`` built with the object API (no pyplot,
no global backend switch; matplotlib is imported lazily); each ``plot_*`` function saves
one with :func:`save_figure` (atomically, at ``DPI``). The class chart stays readable for
any number of classes: it shows at most ``MAX_BARS`` classes, the ones that hold records
(:func:`volprep.report_classes.pick_classes`: in id order when they fit, else the rarest and the
largest, rarest first), and says how many it leaves out; when balancing by case does not
apply to the job (:func:`volprep.report_classes.balance_not_applicable`) its title and a text box
say so.
"""

from __future__ import annotations

import os
import tempfile
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from volprep.manifest import Manifest, SplitEntry
from volprep.report_classes import ClassCount, balance_not_applicable, class_counts, pick_classes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 110
MAX_BARS = 30  # classes a chart shows at most
_NAME_CHARS = 18  # tick labels longer than this are cut


def save_figure(fig: Figure, path: Path) -> None:
    """Saves a figure atomically (temporary name in the same folder, then rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # zlib level 1: a third faster than the default 6 on a montage, files ~10% larger
        fig.savefig(tmp, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is for reading
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches at ``DPI``, without a layout engine: its
    margins are set in inches (:func:`set_margins`). Constrained layout measured every
    text before drawing it, a second draw that cost as much as the first."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI)


def set_margins(fig: Figure, *, left: float, right: float, bottom: float, top: float, gap: float = 0.0) -> None:
    """Places the figure's subplots ``left``/``right``/``bottom``/``top`` inches from its
    edges, ``gap`` inches apart."""
    width, height = fig.get_size_inches()
    n = max(1, len(fig.axes))
    panel = (width - left - right - gap * (n - 1)) / n
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=gap / panel)


def warm_up() -> None:
    """Draws a throwaway chart (a log axis, a legend, texts at the report's sizes) into
    memory, so that a process about to draw the report has loaded its fonts, mathtext and
    PNG writer beforehand (:mod:`volprep.report_process` calls it while the job runs)."""
    import io

    fig = histograms_figure({("train", False): [np.linspace(-2.0, 2.0, 64, dtype=np.float32)[None]]}, "zscore")
    for size in (6, 7, 8, 10):
        fig.text(0.5, 0.5, "0123456789 \u00b7 \u2212 abcdefghijklmnopqrstuvwxyz", fontsize=size)
    fig.savefig(io.BytesIO(), format="png", dpi=DPI, pil_kwargs={"compress_level": 1})


def plot_class_counts(manifest: Manifest, plan: Mapping[str, Any] | None, path: Path) -> None:
    """Writes ``class_counts.png`` (:func:`class_counts_figure`)."""
    save_figure(class_counts_figure(manifest, plan), path)


def class_counts_figure(manifest: Manifest, plan: Mapping[str, Any] | None) -> Figure:
    """Train records per class before/after balancing, and originals per class in each split.

    Without classes: records (originals and copies) per split.

    Args:
        manifest: the manifest (its ``classes``: parallel ``names`` and ``ids``, count
            tables keyed by name; its ``splits`` when there are no classes).
        plan: the ``plan.json`` dict (its ``target`` and ``explanation``), or ``None``.

    Returns:
        The figure (not saved).
    """
    counts = class_counts(manifest.classes)
    if not counts:
        return _split_figure(manifest.splits)
    pick = pick_classes(counts, MAX_BARS)
    shown = pick.shown
    per_split = bool(manifest.classes.per_split)
    why_not = balance_not_applicable(manifest, plan)
    width = max(8.0, min(18.0, 3.0 + 0.55 * max(len(shown), 3) * (2 if per_split else 1)))
    fig = new_figure(width, 4.6)
    axes = fig.subplots(1, 2 if per_split else 1, squeeze=False)[0]
    _train_panel(axes[0], shown, int((plan or {}).get("target", 0) or 0), why_not)
    if per_split:
        _split_panel(axes[1], shown)
    if pick.truncated:
        n_large = MAX_BARS // 3
        for ax in axes:  # the gap between the rarest and the largest
            ax.axvline(MAX_BARS - n_large - 0.5, color="#999999", lw=0.8, ls=":")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncols=4, frameon=False, fontsize=8, borderaxespad=0.3)
    notes = []
    if pick.truncated:
        notes.append(f"left: the {MAX_BARS - MAX_BARS // 3} rarest classes, right of the dotted line: the "
                     f"{MAX_BARS // 3} largest (train records before balancing); {pick.with_records - len(shown)} "
                     f"of {pick.with_records} classes with records not shown")
    empty = sum(1 for c in pick.hidden if not c.held)
    if empty:
        notes.append(f"{empty} {'class' if empty == 1 else 'classes'} with 0 records not shown")
    if notes:
        fig.supxlabel("; ".join(notes), fontsize=8, color="#444444")
    ticks = _tick_room(shown)
    set_margins(fig, left=max(0.75, ticks[0] - 0.15), right=0.15, bottom=ticks[1] + (0.3 if notes else 0.1),
                top=0.35 + (0.5 if why_not else 0.3), gap=max(0.8, ticks[0] + 0.1))
    return fig


def _tick_room(shown: Sequence[ClassCount]) -> tuple[float, float]:
    """Inches the class names under a panel reach left of their tick and below the axis
    (the figure's margins are fixed, so they are made to hold them)."""
    many, size = len(shown) > 4, 8 if len(shown) > 12 else 9
    longest = max((len(_short(c.name)) for c in shown), default=1) * 0.62 * size / 72  # DejaVu Sans, about
    line = 1.3 * size / 72
    if many:  # rotated 45 degrees, anchored at the tick by its top right corner
        return 0.71 * (longest + line), 0.71 * (longest + line) + 0.12
    return longest / 2, line + 0.12


def _short(name: str) -> str:
    return name if len(name) <= _NAME_CHARS else name[:_NAME_CHARS - 1] + "\u2026"


def _class_ticks(ax: Axes, shown: Sequence[ClassCount]) -> None:
    many = len(shown) > 4
    ax.set_xticks(np.arange(len(shown)), [_short(c.name) for c in shown], rotation=45 if many else 0,
                  ha="right" if many else "center", rotation_mode="anchor", fontsize=8 if len(shown) > 12 else 9)
    ax.set_xlim(-0.6, len(shown) - 0.4)


def _train_panel(ax: Axes, shown: Sequence[ClassCount], target: int, why_not: str | None) -> None:
    """Before (originals) and after (originals + copies) bars per class, train split."""
    from matplotlib.ticker import MaxNLocator

    x = np.arange(len(shown))
    b = np.array([c.before for c in shown])
    a = np.array([c.after for c in shown])
    w = 0.38
    size = 7 if len(shown) > 12 else 8
    ax.bar(x - w / 2, b, w, color="#8c8c8c", label="before (originals)")
    ax.bar(x + w / 2, b, w, color="#4c72b0", label="after: originals")
    ax.bar(x + w / 2, a - b, w, bottom=b, color="#dd8452", hatch="//", edgecolor="white",
           label="after: augmented copies")
    for xi, bi, ai in zip(x, b, a, strict=True):
        ax.annotate(str(bi), (xi - w / 2, bi), ha="center", va="bottom", fontsize=size)
        ax.annotate(f"{ai}" + (f"\n(+{ai - bi})" if ai > bi else ""), (xi + w / 2, ai),
                    ha="center", va="bottom", fontsize=size)
    if target:
        ax.axhline(target, color="black", lw=0.8, ls="--", label=f"target: {target} a class")
    top = max(int(a.max(initial=0)), int(b.max(initial=0)), 1)
    ax.set_ylim(0, top * (1.6 if why_not else 1.2))  # room for the text box
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _class_ticks(ax, shown)
    ax.set_ylabel("train records")
    if why_not:
        ax.set_title("Train split: records per class\n(balancing by case does not apply)", fontsize=10)
        ax.text(0.02, 0.97, textwrap.fill(why_not, 70), transform=ax.transAxes, va="top", ha="left", fontsize=8,
                bbox={"boxstyle": "round", "facecolor": "#fff6d5", "edgecolor": "#c8a800"})
    else:
        ax.set_title("Train split: records per class, before and after balancing", fontsize=10)


def _split_panel(ax: Axes, shown: Sequence[ClassCount]) -> None:
    """Original cases per class in each split."""
    from matplotlib.ticker import MaxNLocator

    x = np.arange(len(shown))
    split_names = list(shown[0].per_split) if shown else []
    sw = 0.8 / max(1, len(split_names))
    size = 7 if len(shown) > 12 else 8
    peak = 1
    for s_i, split in enumerate(split_names):
        counts = np.array([c.per_split.get(split, 0) for c in shown])
        peak = max(peak, int(counts.max(initial=0)))
        where = x - 0.4 + sw * (s_i + 0.5)
        ax.bar(where, counts, sw, label=split)
        for xi, c in zip(where, counts, strict=True):
            if c:
                ax.annotate(str(c), (xi, c), ha="center", va="bottom", fontsize=size)
    ax.set_ylim(0, peak * 1.2)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _class_ticks(ax, shown)
    ax.set_ylabel("original cases")
    ax.set_title("Originals per class in each split", fontsize=10)
    ax.legend(frameon=False, fontsize=8, loc="upper right")


def _split_figure(splits: Mapping[str, SplitEntry]) -> Figure:
    """Records per split, for a dataset without classes."""
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(6, 3.8)
    ax = fig.add_subplot()
    set_margins(fig, left=0.75, right=0.15, bottom=0.45, top=0.4)
    labels = list(splits)
    orig = [splits[s].num_originals for s in labels]
    extra = [splits[s].num_records - o for s, o in zip(labels, orig, strict=True)]
    ax.bar(labels, orig, color="#4c72b0", label="originals")
    ax.bar(labels, extra, bottom=orig, color="#dd8452", hatch="//", label="augmented copies")
    for pos, (o, e) in enumerate(zip(orig, extra, strict=True)):
        ax.annotate(str(o + e), (pos, o + e), ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("records")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Records per split (no classes in this dataset)")
    ax.legend(frameon=False, loc="upper right")
    return fig


def plot_histograms(voxels: Mapping[tuple[str, bool], Sequence[np.ndarray]], method: str,
                    path: Path) -> None:
    """Writes ``histograms.png`` (:func:`histograms_figure`)."""
    save_figure(histograms_figure(voxels, method), path)


def histograms_figure(voxels: Mapping[tuple[str, bool], Sequence[np.ndarray]], method: str) -> Figure:
    """``histograms.png``: voxel intensities after normalisation, per split (and copies)."""
    fig_chans = max((a.shape[0] for arrays in voxels.values() for a in arrays), default=1)
    n = min(fig_chans, 4)
    fig = new_figure(5.2 * n, 3.8)
    axes = fig.subplots(1, n, squeeze=False)[0]
    set_margins(fig, left=0.75, right=0.15, bottom=0.55, top=0.6, gap=0.75)
    pooled = [a for arrays in voxels.values() for a in arrays]
    if not pooled:
        axes[0].text(0.5, 0.5, "no records read", ha="center", va="center", transform=axes[0].transAxes)
        return fig
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
            n = len(arrays)
            label = f"{split} {'augmented' if augmented else 'originals'} ({n} record{'' if n == 1 else 's'})"
            ax.hist(data, bins=bins, histtype="step", density=True, lw=1.3,
                    ls="--" if augmented else "-", label=label)
        ax.set_yscale("log")
        ax.set_xlabel("intensity after normalisation")
        ax.set_ylabel("density (log)")
        ax.set_title(f"channel {c}", fontsize=9)
        ax.legend(frameon=False, fontsize=7, loc="upper right")
    fig.suptitle(f"Voxel intensities as stored ({method} normalisation), a sample of records", fontsize=10)
    return fig


