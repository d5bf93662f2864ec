"""Class locations: a bounded, fair, reproducible sample of each label's voxels.

Checked against numpy on the real atlas (hundreds of sparse labels, some of a few voxels)
and tissue masks of the corpus: every stored coordinate holds its label, none repeats,
each label gets what the fair share promises, and a budget as large as the foreground
returns exactly ``np.argwhere`` of each label.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from realdata import task

from volprep.locations import sample_locations, shares


def _mask(name: str, n: int = 0) -> np.ndarray:
    path = sorted((task(name) / "labelsTr").glob("*.nii.gz"))[n]
    return np.asarray(nib.load(path).dataobj).astype(np.int16)


def _groups(coords: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    ends = np.cumsum(counts)
    return [coords[e - c:e] for c, e in zip(counts, ends, strict=True)]


@pytest.mark.parametrize("name", ["atlas", "tissue"])
def test_every_location_holds_its_label_and_shares_are_fair(name: str) -> None:
    mask = _mask(name)
    labels = tuple(int(v) for v in np.unique(mask) if v != 0) + (9999,)  # one label absent
    available = np.array([np.count_nonzero(mask == v) for v in labels])
    budget = 3000
    coords, counts = sample_locations(mask, labels, budget, 7, "case", 0)
    assert coords.shape == (budget, 3) and coords.dtype == np.int16
    assert counts[-1] == 0 and counts.sum() == min(budget, available.sum())
    assert (counts <= available).all()
    short = counts < available  # labels that did not get all their voxels...
    if short.any():  # ...got at least as many as any other label, less one
        assert counts[short].min() >= counts.max() - 1
    for value, group in zip(labels, _groups(coords, counts), strict=True):
        assert (mask[tuple(group.T.astype(np.intp))] == value).all()
        assert len({tuple(row) for row in group}) == len(group)
    assert not coords[counts.sum():].any()  # zero-filled after the last


def test_a_budget_as_large_as_the_foreground_is_every_voxel() -> None:
    mask = _mask("atlas")[10:40, 10:40, 10:40]
    labels = tuple(int(v) for v in np.unique(mask) if v != 0)
    coords, counts = sample_locations(mask, labels, int(np.count_nonzero(mask)), 1, "x")
    for value, group in zip(labels, _groups(coords, counts), strict=True):
        expected = np.argwhere(mask == value)  # C order, like the kernel's flat pass
        np.testing.assert_array_equal(group, expected)


def test_draws_are_reproducible_and_keyed() -> None:
    mask = _mask("tissue")
    labels = tuple(int(v) for v in np.unique(mask) if v != 0)
    first = sample_locations(mask, labels, 512, 3, "case_a", 0)
    again = sample_locations(mask, labels, 512, 3, "case_a", 0)
    other = sample_locations(mask, labels, 512, 3, "case_a", 1)
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], other[0])


def test_draws_are_spread_over_the_label() -> None:
    """A uniform sample of a label: its mean position is near the label's centroid."""
    mask = _mask("tissue")
    value = int(np.unique(mask)[1])
    coords, counts = sample_locations(mask, (value,), 2000, 5, "c")
    points = np.argwhere(mask == value)
    spread = points.std(axis=0) / np.sqrt(2000)
    assert (np.abs(coords[:counts[0]].mean(axis=0) - points.mean(axis=0)) < 5 * spread).all()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=12), st.integers(0, 200))
def test_shares_fill_fairly(available: list[int], budget: int) -> None:
    got = shares(np.array(available), budget)
    assert got.sum() == min(budget, sum(available))
    assert (got <= np.array(available)).all() and (got >= 0).all()
    short = got < np.array(available)
    if short.any():
        assert got[short].min() >= got.max() - 1
