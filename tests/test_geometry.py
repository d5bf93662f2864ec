"""volprep.geometry: the window cut from a grid, checked against plain numpy slicing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from volprep.geometry import Grid, Window, foreground_box, window


def classic_centre_crop_pad(array: np.ndarray, target: tuple[int, int, int], fill: float) -> np.ndarray:
    """The textbook centred crop/pad, written out axis by axis with numpy (odd surplus to the end)."""
    out = array
    for axis, t in enumerate(target):
        n = out.shape[axis]
        if n >= t:
            start = (n - t) // 2
            out = np.take(out, np.arange(start, start + t), axis=axis)
        else:
            before = (t - n) // 2
            widths = [(0, 0)] * out.ndim
            widths[axis] = (before, t - n - before)
            out = np.pad(out, widths, constant_values=fill)
    return out


@pytest.mark.parametrize("shape,target", [
    ((197, 233, 189), (192, 224, 192)),
    ((10, 11, 12), (10, 11, 12)),
    ((9, 8, 7), (12, 5, 10)),
    ((1, 2, 3), (4, 4, 4)),
])
def test_window_on_the_grid_centre_is_the_classic_centred_crop_pad(shape, target) -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(*shape, 2)).astype(np.float32)
    grid = Grid(shape, np.diag([1.5, 1.0, 2.0, 1.0]))
    win = window(grid, target)
    got = win.apply(image, -7.0)
    assert got.shape == (*target, 2)
    np.testing.assert_array_equal(got, classic_centre_crop_pad(image, target, -7.0))


def test_window_affine_maps_each_output_voxel_to_its_source_voxel() -> None:
    affine = np.array([[0.0, -2.0, 0.0, 30.0], [1.0, 0.0, 0.0, -20.0], [0.0, 0.0, 3.0, 5.0], [0, 0, 0, 1]])
    grid = Grid((20, 17, 9), affine)
    win = window(grid, (12, 20, 8))
    out_grid = win.grid(grid)
    source = np.arange(np.prod(grid.shape)).reshape(grid.shape)
    cut = win.apply(source, -1)
    for v in itertools.product(range(12), range(20), range(8)):
        src = np.rint(grid.voxel(out_grid.world(v))).astype(int)
        inside = all(0 <= s < n for s, n in zip(src, grid.shape, strict=True))
        assert cut[v] == (source[tuple(src)] if inside else -1)


def test_window_is_centred_on_the_anchor_in_world_coordinates() -> None:
    fine = Grid((40, 40, 40), np.eye(4))
    coarse = Grid((20, 20, 20), np.diag([2.0, 2.0, 2.0, 1.0]) @ _shift(0.25))  # block centres
    anchor = fine.centre()
    for grid, target in ((fine, (16, 16, 16)), (coarse, (8, 8, 8))):
        w = window(grid, target, anchor).grid(grid)
        # the window's centre lies within one of its voxels of the anchor
        assert np.all(np.abs(w.centre() - anchor) <= np.array(w.spacing()))


def test_no_copy_when_the_window_is_the_whole_grid() -> None:
    image = np.zeros((4, 5, 6, 1), np.float32)
    assert Window((0, 0, 0), (4, 5, 6)).apply(image, 0.0) is image


def test_foreground_box() -> None:
    fg = np.zeros((10, 10, 10), bool)
    fg[2:5, 3, 7:9] = True
    assert foreground_box(fg) == ((2, 3, 7), (3, 1, 2))
    assert foreground_box(np.zeros((3, 3, 3), bool)) is None


def test_grid_round_trips_through_json() -> None:
    grid = Grid((3, 4, 5), np.diag([1.0, 2.0, 3.0, 1.0]))
    again = Grid.from_dict(grid.to_dict())
    assert again.shape == grid.shape and np.array_equal(again.affine, grid.affine)


def _shift(offset: float) -> np.ndarray:
    out = np.eye(4)
    out[:3, 3] = offset
    return out
