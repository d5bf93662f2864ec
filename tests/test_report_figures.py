"""Tests for volprep.report_figures: the class chart stays readable for any class count.

Manifests here are complete typed manifests (``test_summary.atlas_manifest``) shaped like an
atlas job's (hundreds of sparse class ids, few holding records) or an AAL job's (every case
under one shared label, balancing by case not applicable); the figure is inspected through matplotlib's own objects (tick labels,
texts, titles), not through pixels.
"""

from __future__ import annotations

import time
from typing import Any

from test_summary import atlas_manifest, make_manifest

from volprep.manifest import Manifest
from volprep.report_figures import MAX_BARS, class_counts_figure


def manifest(n_classes: int, held: dict[int, tuple[int, int, int]]) -> Manifest:
    """Classes with sparse ids 0, 1, 4, 7, ... (plus those in ``held``); ``held`` maps a class
    id to (train before, train after, val originals), every other class holds nothing."""
    return atlas_manifest(n_classes, held)


def ticks(fig: Any) -> list[list[str]]:
    return [[t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes]


def texts(fig: Any) -> str:
    """Every text the figure shows (titles, figure and axes texts), line breaks undone."""
    parts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        parts += [ax.get_title(), *(t.get_text() for t in ax.texts)]
    return " | ".join(" ".join(p.split()) for p in parts)


ATLAS = {15: (2, 2, 0), 19: (1, 1, 0), 67: (1, 1, 0), 184: (1, 1, 0), 23: (0, 0, 1)}


def test_hundreds_of_classes_show_only_those_with_records() -> None:
    start = time.perf_counter()
    fig = class_counts_figure(manifest(725, ATLAS), {"target": 2})
    fig.savefig(__import__("io").BytesIO(), format="png")
    assert time.perf_counter() - start < 3  # 725 bars took ~30 s
    for labels in ticks(fig):
        assert labels == ["NeuroMaps_15", "NeuroMaps_19", "NeuroMaps_23", "NeuroMaps_67", "NeuroMaps_184"]
    assert "720 classes with 0 records not shown" in texts(fig)


def test_many_classes_with_records_show_the_rarest_and_the_largest() -> None:
    held = {i: (i % 40 + 1, i % 40 + 1, 1) for i in range(1, 120)}  # 119 classes with records
    fig = class_counts_figure(manifest(200, held), None)
    before = {f"NeuroMaps_{i}": c[0] for i, c in held.items()}
    for labels in ticks(fig):
        assert len(labels) == MAX_BARS
        counts = [before[n] for n in labels]
        assert counts == sorted(counts) and counts[0] == 1 and counts[-1] == 40  # rarest first, largest last
    note = texts(fig)
    assert f"{119 - MAX_BARS} of 119 classes with records not shown" in note
    assert "81 classes with 0 records not shown" in note


def test_few_classes_keep_their_id_order() -> None:
    fig = class_counts_figure(manifest(3, {0: (3, 3, 1), 1: (2, 4, 1), 4: (1, 3, 1)}), {"target": 3})
    assert ticks(fig)[0] == ["background", "NeuroMaps_1", "NeuroMaps_4"]
    assert "not shown" not in texts(fig)


def test_the_chart_says_when_balancing_by_case_does_not_apply() -> None:
    held = {i: (8 if i == 1 else 0, 8 if i == 1 else 0, 2 if i == 1 else 0) for i in range(117)}
    why = ("Balancing by case does not apply: every case holds (nearly) every label (117 classes); "
           "the train split holds originals only.")
    fig = class_counts_figure(manifest(117, held), {"explanation": [why], "target": 0})
    assert "does not apply" in fig.axes[0].get_title() or any("does not apply" in t.get_text()
                                                              for t in (*fig.texts, *fig.axes[0].texts))
    assert "every case holds (nearly) every label" in texts(fig)
    fig = class_counts_figure(manifest(3, {0: (3, 3, 1), 1: (2, 4, 1), 4: (1, 3, 1)}), {"explanation": ["Target: 3"]})
    assert "does not apply" not in texts(fig)


def test_without_classes_the_chart_shows_records_per_split() -> None:
    no_classes = {"names": [], "ids": [], "class_by": "none", "counts_before": {}, "counts_after": {}, "per_split": {}}
    fig = class_counts_figure(make_manifest(classes=no_classes), None)
    assert fig.axes[0].get_title() == "Records per split (no classes in this dataset)"
    assert ticks(fig)[0] == ["train", "val"]
    assert [t.get_text() for t in fig.axes[0].texts] == ["14", "3"]  # originals + augmented copies
    originals = [p.get_height() for p in fig.axes[0].patches][:2]
    assert originals == [9, 3]
