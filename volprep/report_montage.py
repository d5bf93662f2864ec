"""The report's ``montage.png``: orthogonal slices of originals beside their augmented copies.

Contract: :func:`montage_figure` is a pure function of the montage rows and the slices read
back (:mod:`volprep.report_select`) that returns a matplotlib ``Figure`` built with the
object API (matplotlib imported lazily, no pyplot); :func:`plot_montage` saves it. The
slices are composed into ONE picture in numpy, at the figure's own pixels (``DPI``): each
slice scaled to its cell by nearest neighbour (voxels stay square blocks, anisotropic grids
keep their physical shape), the labels blended in and outlined, one grey colour bar a row;
matplotlib only places that picture (handed to the renderer as it is) and the texts. Dozens of
axes, one a slice, cost seconds to build and draw; this costs tens of milliseconds. The
layout is fixed in inches, for any label count: the title on top, the slice grid (one row
a case, three views per record, the colour bar at its right) below it, and the legend in a
column of its own to the right of the colour bars, top-aligned with the grid, so it never
covers a slice or the title; the figure grows taller when the legend needs more room than
the grid. The legend names only labels drawn in the shown slices, at most ``MAX_LEGEND``
(the ones covering the most pixels) and ``+ N more labels``; label colours come from a
categorical colormap cycled over the visible values in order, so neighbouring values differ.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from volprep.augment.spec import Params
from volprep.report_figures import DPI, new_figure, save_figure
from volprep.report_select import VIEWS, MontageRow, Sample, Slices

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_LEGEND = 12  # labels the legend names at most
_OUTLINED = 8  # a slice with at most this many label values gets an outline per value
_NAME_CHARS = 24  # legend names longer than this are cut

# Layout, in inches.
_PANEL_W, _PANEL_H = 1.6, 1.85  # one cell of the grid: a view, its title above it, a caption below
_CELL_PAD, _TITLE_BAND, _CAPTION_BAND = 0.07, 0.24, 0.2  # around the slice's box in its cell
_LEFT, _BOTTOM = 0.95, 0.15  # row labels; margin below the grid
_BAR_GAP, _BAR_W, _BAR_TICKS = 0.04, 0.11, 0.5  # a colour bar: gap before it, width, its tick labels
_LEGEND_W, _LEGEND_LINE, _LEGEND_PAD = 2.3, 0.165, 0.35  # legend column: width, one entry, title + padding
_TITLE_LINE, _TITLE_ROOM = 0.2, 0.3  # one line of the title; its top margin + room below it
_BOX_W, _BOX_H = _PANEL_W - 2 * _CELL_PAD, _PANEL_H - _TITLE_BAND - _CAPTION_BAND  # a slice's box

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
        The figure (not saved), at ``DPI``: its slices are one image at the figure's pixels.
    """
    from matplotlib.figure import Figure

    if not rows:
        fig = new_figure(6, 2)
        fig.text(0.5, 0.5, "no records to show", ha="center", va="center")
        return fig
    area = _visible_area(samples, rows)
    colors = label_colors(sorted(area))
    handles = _legend_handles(area, colors, label_names)
    n_cols = 3 * (1 + max(len(r.copies) for r in rows))
    grid_w, grid_h = _PANEL_W * n_cols + _BAR_GAP + _BAR_W, _PANEL_H * len(rows)
    width = _LEFT + grid_w + _BAR_TICKS + (_LEGEND_W if handles else 0.2)
    title = "Slices (channel 0) of originals and their augmented copies"
    if area:
        title += "; labels as coloured overlays"
    lines = textwrap.wrap(title, max(30, int((width - _LEFT - 0.2) / 0.075)))
    top = _TITLE_ROOM + _TITLE_LINE * len(lines)
    legend_h = _LEGEND_PAD + _LEGEND_LINE * len(handles) if handles else 0.0
    height = top + max(grid_h, legend_h) + _BOTTOM
    fig = Figure(figsize=(width, height), dpi=DPI)
    grid = _Grid(fig, np.zeros((_px(grid_h), _px(grid_w), 4), np.uint8), _LEFT, top, width, height)
    for r, row in enumerate(rows):
        _draw_row(grid, r * _PANEL_H, n_cols, row, samples, colors)
    fig.images.append(_picture(fig, grid.picture, _px(_LEFT), _px(height - top - grid_h)))
    fig.suptitle("\n".join(lines), x=_LEFT / width, y=1 - 0.12 / height, ha="left", va="top", fontsize=10)
    if handles:
        shown = sum(1 for h in handles if not h.get_label().startswith("+"))
        fig.legend(handles=handles, loc="upper left", frameon=False, fontsize=7, title_fontsize=7,
                   title=f"labels ({shown} of {len(area)} in these slices)" if shown < len(area) else "labels",
                   bbox_to_anchor=((_LEFT + grid_w + _BAR_TICKS) / width, 1 - top / height),
                   bbox_transform=fig.transFigure, borderaxespad=0.0, alignment="left")
    return fig


def _px(inches: float) -> int:
    return round(inches * DPI)


def _picture(fig: Figure, rgba: np.ndarray, x: int, y: int) -> Any:
    """``rgba`` (rows from the top) as a figure image with its lower left corner at pixel
    ``(x, y)``. Drawn at the figure's own dpi, it is handed to the renderer as it is: a
    ``figimage`` resamples it even then, which cost more than composing it."""
    from matplotlib.image import FigureImage

    class Picture(FigureImage):
        def make_image(self, renderer: Any, magnification: float = 1.0, unsampled: bool = False) -> Any:
            if magnification != 1.0 or renderer.dpi != fig.dpi:
                return super().make_image(renderer, magnification, unsampled)
            return np.ascontiguousarray(rgba[::-1]), x, y, None  # the renderer's rows go up

    image = Picture(fig, offsetx=x, offsety=y, origin="upper")
    image.set_array(rgba)
    return image


class _Grid:
    """The slice grid: an RGBA picture (``[rows, columns, 4]`` uint8, at ``DPI``) and the
    texts around it, both placed in inches from the grid's top left corner."""

    def __init__(self, fig: Figure, picture: np.ndarray, left: float, top: float, width: float,
                 height: float) -> None:
        self.fig, self.picture = fig, picture
        self.left, self.top, self.width, self.height = left, top, width, height

    def text(self, x: float, y: float, text: str, **kwargs: Any) -> None:
        self.fig.text((self.left + x) / self.width, 1 - (self.top + y) / self.height, text, **kwargs)

    def paste(self, x: float, y: float, rgb: np.ndarray) -> None:
        """Puts an opaque ``[h, w, 3]`` uint8 picture with its top left corner at ``(x, y)``."""
        r, c = _px(y), _px(x)
        h, w = rgb.shape[:2]
        self.picture[r:r + h, c:c + w, :3] = rgb
        self.picture[r:r + h, c:c + w, 3] = 255


def _draw_row(grid: _Grid, y: float, n_cols: int, row: MontageRow, samples: Mapping[tuple[str, int], Sample],
              colors: Mapping[int, Color]) -> None:
    """One montage row (an original and its copies, then its colour bar) ``y`` inches down the grid."""
    original = samples.get((row.case_id, 0))
    window = original.slices.window if original is not None and original.slices is not None else None
    box_y = y + _TITLE_BAND
    grid.text(-0.08, box_y + _BOX_H / 2, f"{row.case_id}\n{row.class_name or ''} ({row.split})", fontsize=8,
              rotation=90, ha="right", va="center", multialignment="center")
    drawn = None
    for c, copy in enumerate((0, *row.copies)):
        sample = samples.get((row.case_id, copy))
        who = "original" if copy == 0 else f"copy {copy}"
        for v, view in enumerate(VIEWS):
            centre = (3 * c + v + 0.5) * _PANEL_W
            if sample is None or sample.slices is None:
                reason = sample.problem if sample is not None else "not found in the shards"
                grid.text(centre, box_y + _BOX_H / 2, f"{who}\n" + textwrap.fill(reason[:90], 30),
                          ha="center", va="center", fontsize=6)
                continue
            sl = sample.slices
            drawn = window or sl.window
            rgb = _tile(sl, view, drawn, colors, _aspect(sample.spacing, view))
            h, w = rgb.shape[0] / DPI, rgb.shape[1] / DPI
            top = box_y + (_BOX_H - h) / 2
            grid.paste(centre - w / 2, top, rgb)
            grid.text(centre, top - 0.04, f"{who} \u00b7 {view} {'kji'[v]}={sl.index[view]}", fontsize=7,
                      ha="center", va="bottom")
            caption = _augment_caption(sample.augment) if v == 0 and copy else ""
            if caption:
                grid.text(centre, top + h + 0.04, caption, fontsize=6, ha="center", va="top")
    if drawn is not None:
        _colour_bar(grid, n_cols * _PANEL_W + _BAR_GAP, box_y, drawn)


def _tile(sl: Slices, view: str, window: tuple[float, float], colors: Mapping[int, Color],
          aspect: float) -> np.ndarray:
    """One view as ``[h, w, 3]`` uint8, scaled to fit a slice's box by nearest neighbour: grey
    (``window`` spans black to white), label values blended in, and outlined (one outline a
    value when there are few, one around the whole foreground when there are many)."""
    image = sl.views[view].T[::-1]  # axis 0 is x; rows from the top
    ny, nx = image.shape
    scale = min(_BOX_W * DPI / nx, _BOX_H * DPI / (ny * aspect))  # pixels a voxel, across
    height, width = max(1, round(ny * aspect * scale)), max(1, round(nx * scale))
    rows = ((np.arange(height) + 0.5) * ny / height).astype(np.intp)  # the voxel each pixel shows
    cols = ((np.arange(width) + 0.5) * nx / width).astype(np.intp)
    lo, hi = window
    with np.errstate(invalid="ignore"):
        grey = np.clip((image - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(image)
    rgb = np.repeat(np.where(np.isfinite(image), grey, 1.0)[..., None], 3, axis=2)  # NaN: white
    mask = sl.masks[view].T[::-1] if sl.masks is not None else None
    if mask is not None:
        values, index = np.unique(mask, return_inverse=True)
        index = index.reshape(mask.shape)
        alpha = 0.3 if len(values) <= _OUTLINED + 1 else 0.45
        fill = np.zeros((len(values), 4), np.float32)  # colour, alpha a value (0: background)
        for n, value in enumerate(values.tolist()):
            if value > 0:
                fill[n] = (*colors[value][:3], alpha)
        rgb = rgb * (1 - fill[index, 3:]) + fill[index, :3] * fill[index, 3:]
    out = np.rint(rgb[rows][:, cols] * 255).astype(np.uint8)
    if mask is not None:
        big = mask[rows][:, cols]
        foreground = [v for v in np.unique(big).tolist() if v > 0]
        if len(foreground) <= _OUTLINED:
            for value in foreground:
                _outline(out, big == value, colors[value])
        else:
            _outline(out, big > 0, (1.0, 1.0, 1.0, 1.0))
    return out


def _outline(rgb: np.ndarray, hit: np.ndarray, color: Color) -> None:
    """Paints the pixels of ``hit`` that touch a pixel outside it (4-neighbours; the edge of
    the picture does not count), so a region gets a one-pixel line along its border."""
    inner = hit.copy()
    inner[1:] &= hit[:-1]
    inner[:-1] &= hit[1:]
    inner[:, 1:] &= hit[:, :-1]
    inner[:, :-1] &= hit[:, 1:]
    rgb[hit & ~inner] = np.rint(np.asarray(color[:3]) * 255).astype(np.uint8)


def _colour_bar(grid: _Grid, x: float, y: float, window: tuple[float, float]) -> None:
    """A row's grey scale: black at ``window[0]`` to white at ``window[1]``, framed, ticked."""
    from matplotlib.ticker import MaxNLocator

    h, w = _px(_BOX_H), _px(_BAR_W)
    ramp = np.linspace(255.0, 0.0, h)[:, None].repeat(w, axis=1)
    bar = np.rint(ramp).astype(np.uint8)[..., None].repeat(3, axis=2)
    bar[[0, -1]] = 0  # the frame
    bar[:, [0, -1]] = 0
    grid.paste(x, y, bar)
    lo, hi = window
    if not hi > lo:
        return
    ticks = [t for t in MaxNLocator(nbins=8, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi) if lo <= t <= hi]
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    digits = max(0, -int(np.floor(np.log10(step) + 1e-9))) if step < 1 else 0
    for t in ticks:
        at = y + (hi - t) / (hi - lo) * (h - 1) / DPI
        r = _px(at)
        grid.picture[r:r + 1, _px(x + _BAR_W):_px(x + _BAR_W) + 3] = (0, 0, 0, 255)  # the tick mark
        grid.text(x + _BAR_W + 0.05, at, f"{t:.{digits}f}".replace("-", "\u2212"), fontsize=6, va="center")


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
