"""Tests for volprep.report_montage: the montage's layout and legend for any label count.

The geometry is matplotlib's own: each figure is drawn on an Agg canvas and the boxes of
its artists (``get_window_extent``; the slice grid's picture: its extent) are compared in
display pixels, so "the legend does not cover the slices or the title" is checked as
drawn, not as intended.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from volprep.report_montage import MAX_LEGEND, label_colors, montage_figure
from volprep.report_select import MontageRow, Sample, take_slices

ROWS = [MontageRow("case_a", "train", "NeuroMaps_15", (1,)), MontageRow("case_b", "val", "NeuroMaps_19", ())]


def parcels(n_labels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 32^3 image and a mask of 2x2x2 parcels inside a ball, valued from ``n_labels``
    sparse ids (1, 3, 5, ...) in a scrambled order, as an atlas's are."""
    ids = 1 + 2 * np.arange(n_labels)
    i, j, k = np.meshgrid(*[np.arange(32)] * 3, indexing="ij")
    block = (i // 2) * 256 + (j // 2) * 16 + (k // 2)
    mask = ids[(block * 7 + seed) % n_labels].astype(np.int16)
    mask[(i - 15.5) ** 2 + (j - 15.5) ** 2 + (k - 15.5) ** 2 > 14.5**2] = 0
    image = (mask > 0).astype(np.float32)[..., None] + np.random.default_rng(seed).normal(0, 0.1, (32, 32, 32, 1))
    return image.astype(np.float32), mask


def samples(n_labels: int) -> dict[tuple[str, int], Sample]:
    out = {}
    for seed, (case, copy) in enumerate((("case_a", 0), ("case_a", 1), ("case_b", 0))):
        image, mask = parcels(n_labels, seed)
        row = ROWS[0] if case == "case_a" else ROWS[1]
        out[(case, copy)] = Sample(case, copy, row.split, row.class_name, "", take_slices(image, mask),
                                   spacing=(1.0, 1.0, 1.0))
    return out


def visible(shown: dict[tuple[str, int], Sample]) -> set[int]:
    values: set[int] = set()
    for s in shown.values():
        assert s.slices is not None and s.slices.masks is not None
        for m in s.slices.masks.values():
            values.update(int(v) for v in np.unique(m) if v > 0)
    return values


def overlaps(a: Any, b: Any) -> bool:
    """Whether two matplotlib Bboxes (display pixels) share any area."""
    return bool(a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1)


@pytest.mark.parametrize("n_rows", [1, 2])
@pytest.mark.parametrize("n_labels", [3, 6, 20, 120, 700])
def test_the_legend_sits_beside_the_slices_and_below_the_title(n_labels: int, n_rows: int) -> None:
    """One row (the legend is taller than the grid) and two rows (one with a copy: wider)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.transforms import Bbox

    shown = samples(n_labels)
    names = {str(v): f"NeuroMaps_{v}" for v in range(2 * n_labels + 2)}
    start = time.perf_counter()
    fig = montage_figure(ROWS[-n_rows:], shown, names)
    FigureCanvasAgg(fig)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    assert time.perf_counter() - start < 6  # 700 labels drew in ~50 s before
    assert len(fig.legends) == 1
    legend = fig.legends[0].get_window_extent(renderer)
    page = fig.bbox
    assert page.x0 <= legend.x0 and legend.x1 <= page.x1 and page.y0 <= legend.y0 and legend.y1 <= page.y1
    title = fig._suptitle
    assert title is not None and title.get_text()
    title_box = title.get_window_extent(renderer)
    assert page.x0 <= title_box.x0 and title_box.x1 <= page.x1 and title_box.y1 <= page.y1
    assert not overlaps(legend, title_box), (legend, title_box)
    assert len(fig.images) == 1  # every slice and colour bar, in one picture
    x0, x1, y0, y1 = fig.images[0].get_extent()
    grid = Bbox.from_extents(x0, y0, x1, y1)
    assert page.x0 <= grid.x0 and grid.x1 <= page.x1 and page.y0 <= grid.y0 and grid.y1 <= page.y1
    assert not overlaps(legend, grid), (n_labels, legend, grid)
    assert not overlaps(title_box, grid), (title_box, grid)
    texts = [t for t in fig.texts if t is not title]  # panel titles, row labels, tick labels
    assert len(texts) > 3 * n_rows
    for text in texts:
        box = text.get_window_extent(renderer)
        assert not overlaps(legend, box), (n_labels, text.get_text(), legend, box)
        assert not overlaps(title_box, box), text.get_text()
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, text.get_text()


@pytest.mark.parametrize("n_labels", [3, 20, 700])
def test_the_legend_names_only_visible_labels_and_at_most_a_dozen(n_labels: int) -> None:
    shown = samples(n_labels)
    seen = visible(shown)
    fig = montage_figure(ROWS, shown, {str(v): f"region {v}" for v in range(2 * n_labels + 2)})
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    named = [t for t in texts if not t.startswith("+")]
    assert len(texts) <= MAX_LEGEND + 1
    assert {int(t.split(":")[0]) for t in named} <= seen  # only labels drawn in the slices
    if len(seen) <= MAX_LEGEND:
        assert len(named) == len(seen) and len(texts) == len(seen)
    else:
        assert len(named) == MAX_LEGEND
        assert texts[-1] == f"+ {len(seen) - MAX_LEGEND} more labels"


def test_many_labels_cycle_a_categorical_colormap_with_neighbours_apart() -> None:
    values = list(range(1, 1606, 2))
    colors = label_colors(values)
    assert set(colors) == set(values)
    rgb = [tuple(np.round(colors[v][:3], 3)) for v in values]
    assert 10 <= len(set(rgb)) <= 20  # a categorical palette, cycled
    assert all(a != b for a, b in zip(rgb, rgb[1:], strict=False))  # neighbouring values differ
    few = label_colors([1, 2, 3])
    assert len({tuple(c) for c in few.values()}) == 3
