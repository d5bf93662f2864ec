"""The report's ``montage.png``: orthogonal slices of originals beside their augmented copies.

Contract: :func:`montage_figure` is a pure function of the montage rows and the slices read
back (:mod:`volprep.report_select`) that returns a matplotlib ``Figure`` built with the
object API (matplotlib imported lazily, no pyplot); :func:`plot_montage` saves it. The
layout is fixed in inches, for any label count: the title on top, the slice grid (one row
a case, three views per record, one colour bar a row) below it, and the legend in a column
of its own to the right of the colour bars, top-aligned with the grid, so it never covers a
slice or the title; the figure grows taller when the legend needs more room than the grid.
The legend names only labels drawn in the shown slices, at most ``MAX_LEGEND`` (the ones
covering the most pixels) and ``+ N more labels``; label colours come from a categorical
colormap cycled over the visible values in order, so neighbouring values differ.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from volprep.augment.spec import Params
from volprep.report_figures import new_figure, save_figure
from volprep.report_select import VIEWS, MontageRow, Sample

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_LEGEND = 12  # labels the legend names at most
_OUTLINED = 8  # a slice with at most this many label values gets an outline per value
_NAME_CHARS = 24  # legend names longer than this are cut

# Layout, in inches. Constrained layout costs seconds on a grid of images; these do not.
_PANEL_W, _PANEL_H = 1.6, 1.85  # one view, with its title
_LEFT, _BOTTOM = 0.95, 0.15  # row labels; margin below the grid
_BAR_W, _BAR_TICKS = 0.11, 0.5  # a colour bar and its tick labels
_LEGEND_W, _LEGEND_LINE, _LEGEND_PAD = 2.3, 0.165, 0.35  # legend column: width, one entry, title + padding
_TITLE_LINE, _TITLE_ROOM = 0.2, 0.5  # one line of the title; its top margin + the panel titles below it

Color = tuple[float, float, float, float]


def plot_montage(rows: Sequence[MontageRow], samples: Mapping[tuple[str, int], Sample],
                 label_names: Mapping[str, str], path: Path) -> None:
    """Writes ``montage.png`` (:func:`montage_figure`)."""
    save_figure(montage_figure(rows, samples, label_names), path)


def montage_figure(rows: Sequence[MontageRow], samples: Mapping[tuple[str, int], Sample],
                   label_names: Mapping[str, str]) -> Figure:
    """Each row an original and its copies, three views each, the labels overlaid.

    Each original sets the intensity window (1st-99.5th percentile) its copies share, so
    intensity augmentation shows (one colour bar a row). Label values are translucent
    fills; a slice with few values also gets an outline per value, one with many (an
    atlas) one outline of the whole foreground.

    Args:
        rows: the montage rows, in display order.
        samples: the records read back, by ``(case_id, copy)``.
        label_names: label value (as a string) -> name, from the dataset.

    Returns:
        The figure (not saved).
    """
    from matplotlib.figure import Figure
    from matplotlib.gridspec import GridSpec

    if not rows:
        fig = new_figure(6, 2)
        fig.text(0.5, 0.5, "no records to show", ha="center", va="center")
        return fig
    area = _visible_area(samples, rows)
    colors = label_colors(sorted(area))
    handles = _legend_handles(area, colors, label_names)
    n_cols = 3 * (1 + max(len(r.copies) for r in rows))
    grid_w, grid_h = _PANEL_W * n_cols + _BAR_W, _PANEL_H * len(rows)
    width = _LEFT + grid_w + _BAR_TICKS + (_LEGEND_W if handles else 0.2)
    title = "Slices (channel 0) of originals and their augmented copies"
    if area:
        title += "; labels as coloured overlays"
    lines = textwrap.wrap(title, max(30, int((width - _LEFT - 0.2) / 0.075)))
    top = _TITLE_ROOM + _TITLE_LINE * len(lines)
    legend_h = _LEGEND_PAD + _LEGEND_LINE * len(handles) if handles else 0.0
    height = top + max(grid_h, legend_h) + _BOTTOM
    fig = Figure(figsize=(width, height))
    grid = GridSpec(len(rows), n_cols + 1, figure=fig, width_ratios=[1.0] * n_cols + [_BAR_W / _PANEL_W],
                    left=_LEFT / width, right=(_LEFT + grid_w) / width, top=1 - top / height,
                    bottom=1 - (top + grid_h - 0.15) / height, wspace=0.12, hspace=0.42)
    for r, row in enumerate(rows):
        image = _draw_row(fig, grid, r, row, samples, colors)
        if image is not None:
            bar = fig.colorbar(image, cax=fig.add_subplot(grid[r, n_cols]))
            bar.ax.tick_params(labelsize=6)
    fig.suptitle("\n".join(lines), x=_LEFT / width, y=1 - 0.12 / height, ha="left", va="top", fontsize=10)
    if handles:
        shown = sum(1 for h in handles if not h.get_label().startswith("+"))
        fig.legend(handles=handles, loc="upper left", frameon=False, fontsize=7, title_fontsize=7,
                   title=f"labels ({shown} of {len(area)} in these slices)" if shown < len(area) else "labels",
                   bbox_to_anchor=((_LEFT + grid_w + _BAR_TICKS) / width, 1 - top / height),
                   bbox_transform=fig.transFigure, borderaxespad=0.0, alignment="left")
    return fig


def _draw_row(fig: Figure, grid: Any, r: int, row: MontageRow, samples: Mapping[tuple[str, int], Sample],
              colors: Mapping[int, Color]) -> Any:
    """One montage row (an original and its copies); returns the last image drawn, or None."""
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
                ax.text(0.5, 0.5, f"{who}\n" + textwrap.fill(reason[:90], 30), ha="center", va="center",
                        fontsize=6, transform=ax.transAxes)
                continue
            sl = sample.slices
            lo, hi = window or sl.window
            image = ax.imshow(sl.views[view].T, origin="lower", cmap="gray", vmin=lo, vmax=hi,
                              interpolation="nearest")
            if sl.masks is not None:
                _overlay(ax, sl.masks[view].T, colors)
            ax.set_aspect(_aspect(sample.spacing, view))  # after the overlay's imshow
            ax.set_title(f"{who} · {view} {'kji'[v]}={sl.index[view]}", fontsize=7)
            if v == 0 and copy:
                caption = _augment_caption(sample.augment)
                if caption:
                    ax.set_xlabel(caption, fontsize=6)
    return image


def _visible_area(samples: Mapping[tuple[str, int], Sample], rows: Sequence[MontageRow]) -> Counter[int]:
    """Pixels per label value > 0 over every slice the montage draws."""
    keys = {(row.case_id, k) for row in rows for k in (0, *row.copies)}
    area: Counter[int] = Counter()
    for key in sorted(keys):
        sample = samples.get(key)
        if sample is None or sample.slices is None or sample.slices.masks is None:
            continue
        for m in sample.slices.masks.values():
            values, counts = np.unique(m[m > 0], return_counts=True)
            area.update(dict(zip(values.tolist(), counts.tolist(), strict=True)))
    return area


def _legend_handles(area: Mapping[int, int], colors: Mapping[int, Color], names: Mapping[str, str]) -> list[Any]:
    """Patches for the ``MAX_LEGEND`` labels covering the most pixels (in value order), and
    one ``+ N more labels`` line for the rest."""
    from matplotlib.patches import Patch

    largest = sorted(area, key=lambda v: (-area[v], v))[:MAX_LEGEND]
    handles = []
    for v in sorted(largest):
        name = names.get(str(v), str(v))
        name = name if len(name) <= _NAME_CHARS else name[:_NAME_CHARS - 1] + "\u2026"
        handles.append(Patch(facecolor=colors[v], edgecolor=colors[v], alpha=0.6, label=f"{v}: {name}"))
    if len(area) > len(largest):
        handles.append(Patch(facecolor="none", edgecolor="none", label=f"+ {len(area) - len(largest)} more labels"))
    return handles


def label_colors(values: Sequence[int]) -> dict[int, Color]:
    """One colour a label value, from a categorical colormap cycled over the values in order.

    Up to 10 values: ``tab10``; more: ``tab20`` visited dark hues first, then light ones, so
    neighbouring values (adjacent parcels of an atlas, often) never share a hue.
    """
    from matplotlib import colormaps

    ordered = sorted(int(v) for v in values)
    if len(ordered) <= 10:
        cmap = colormaps["tab10"]
        return {v: cmap(rank) for rank, v in enumerate(ordered)}
    cmap = colormaps["tab20"]
    return {v: cmap((2 * rank) % 20 + (rank // 10) % 2) for rank, v in enumerate(ordered)}


def _overlay(ax: Axes, mask: np.ndarray, colors: Mapping[int, Color]) -> None:
    """Label values of one slice as one translucent RGBA image, plus outlines: one per value
    when there are few, one around the whole foreground when there are many."""
    values, index = np.unique(mask, return_inverse=True)
    palette = np.zeros((len(values), 4), np.float32)
    for n, value in enumerate(values.tolist()):
        if value > 0:
            palette[n] = (*colors[value][:3], 0.3 if len(values) <= _OUTLINED + 1 else 0.45)
    ax.imshow(palette[index.reshape(mask.shape)], origin="lower", interpolation="nearest")
    foreground = [v for v in values.tolist() if v > 0]
    if len(foreground) <= _OUTLINED:
        for value in foreground:
            hit = mask == value
            if not hit.all():
                ax.contour(hit.astype(np.float32), levels=[0.5], colors=[colors[value]], linewidths=0.7)
    elif not (mask > 0).all():
        ax.contour((mask > 0).astype(np.float32), levels=[0.5], colors=["white"], linewidths=0.6)


def _aspect(spacing: tuple[float, float, float] | None, view: str) -> float:
    """Height/width of a voxel as drawn, so anisotropic grids keep their physical shape."""
    if spacing is None or min(spacing) <= 0:
        return 1.0
    x, y = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}[view]
    return float(spacing[y] / spacing[x])


def _augment_caption(augment: str) -> str:
    """A few words for a copy's transform (flips, quarter turns, rotation/scale, shift, intensity)."""
    if not augment:
        return ""
    try:
        ops = Params.from_json(augment).ops
    except (ValueError, TypeError, KeyError) as err:
        return f"augment parameters unreadable ({type(err).__name__})"
    parts = []
    if ops.get("flip", {}).get("axes"):
        parts.append("flip " + ",".join(str(a) for a in ops["flip"]["axes"]))
    if ops.get("rot90", {}).get("k"):
        parts.append(f"rot90 x{ops['rot90']['k']}")
    affine = ops.get("affine", {})
    if affine.get("matrix") is not None:
        m = np.asarray(affine["matrix"], float)
        if m.shape == (3, 3) and not np.allclose(m, np.eye(3)):
            scale = abs(float(np.linalg.det(m))) ** (1 / 3)
            angle = float(np.degrees(np.arccos(np.clip((np.trace(m / scale) - 1) / 2, -1, 1))))
            parts.append(f"rot {angle:.0f}deg, scale {scale:.2f}")
    shift = np.asarray(affine.get("translation", [0, 0, 0]), float)
    if shift.size and np.any(np.abs(shift) > 0.05):
        parts.append("shift " + ",".join(f"{v:.1f}" for v in shift))
    if "intensity" in ops:
        parts.append(f"I*{float(ops['intensity']['scale']):.2f}{float(ops['intensity']['shift']):+.2f}")
    if "gamma" in ops:
        parts.append(f"gamma {float(ops['gamma']['gamma']):.2f}")
    if "noise" in ops:
        parts.append(f"noise {float(ops['noise']['std']):.2f}")
    return "; ".join(parts)
