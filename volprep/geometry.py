"""One geometry: the grids a case passes through, and the window cut out of the last one.

A :class:`Grid` is a voxel shape with its 4x4 voxel-to-world affine (RAS+ mm, NIfTI
convention). Every step of preprocessing maps one grid to the next and says how: the
reader gives the scan's grid, reorientation permutes/flips it, a reduction makes a
coarser (or padded) grid whose affine is known, ``crop_foreground`` takes a box of it,
and finally a :class:`Window` of the job's target shape is cut out of the reduced grid
(cropping where the grid is larger, padding where it is smaller). Image and mask go
through the same window, so they can never drift apart, and every record's affine is the
window's affine, so any voxel of a record maps back to a point of the scan.

The window is placed by *physics*, not by array indices: it is centred on an anchor
point in world coordinates (the centre of the case's reoriented field of view, or of its
foreground box), converted into the reduced grid's voxels. So the same case under two
reductions with the same output spacing lands on the same voxels, and under reductions
with different spacings on windows centred on the same point (to within one output
voxel). When the reduced grid *is* the scan's grid, the window is exactly the classic
centred crop/pad: ``start = (n - t) // 2`` for a crop, ``-((t - n) // 2)`` for a pad (an
odd surplus or deficit goes to the end), so records of an unreduced case are unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

_TOLERANCE = 1e-6  # voxels: positions this close to an integer count as that integer


@dataclasses.dataclass(frozen=True, eq=False)
class Grid:
    """A voxel grid: spatial ``shape`` and the 4x4 voxel-to-world ``affine``."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.shape[:3])
        affine = np.array(self.affine, dtype=np.float64)
        if len(shape) != 3 or affine.shape != (4, 4):
            raise ValueError(f"a grid needs a 3D shape and a 4x4 affine, got {self.shape} and {affine.shape}")
        affine.setflags(write=False)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "affine", affine)

    def centre(self) -> np.ndarray:
        """World coordinates (mm) of the grid's centre, ``(n - 1) / 2`` in voxels."""
        return self.world([(n - 1) / 2.0 for n in self.shape])

    def world(self, voxel: Sequence[float]) -> np.ndarray:
        """World coordinates of a (continuous) voxel position."""
        return (self.affine @ np.array([*voxel, 1.0], dtype=np.float64))[:3]

    def voxel(self, world: Sequence[float] | np.ndarray) -> np.ndarray:
        """The continuous voxel position of a world point."""
        return np.linalg.solve(self.affine, np.array([*world, 1.0], dtype=np.float64))[:3]

    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing (mm) along each voxel axis: the affine's column norms."""
        norms = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return float(norms[0]), float(norms[1]), float(norms[2])

    def box(self, start: Sequence[int], shape: Sequence[int]) -> Grid:
        """The grid of ``shape`` voxels whose voxel 0 is this grid's voxel ``start``."""
        return Grid(tuple(int(n) for n in shape), self.affine @ translation(start))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what the cache and the manifest record)."""
        return {"shape": list(self.shape), "affine": self.affine.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grid:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(data["shape"]), np.asarray(data["affine"], dtype=np.float64))  # type: ignore[arg-type]


def translation(offset: Sequence[float]) -> np.ndarray:
    """The 4x4 matrix moving voxel 0 to voxel ``offset``."""
    step = np.eye(4)
    step[:3, 3] = np.asarray(offset, dtype=np.float64)
    return step


@dataclasses.dataclass(frozen=True)
class Window:
    """A target-shaped box placed on a grid: ``start`` may be negative (padding before)."""

    start: tuple[int, int, int]
    shape: tuple[int, int, int]

    def grid(self, of: Grid) -> Grid:
        """The window's own grid (its affine is the record's affine)."""
        return of.box(self.start, self.shape)

    def crop_pad(self, source_shape: Sequence[int]) -> dict[str, list[list[int]]]:
        """Per axis, the ``crop`` ``[start, stop]`` taken from the source and the ``pad``
        ``[before, after]`` added around it (what the manifest and reports show)."""
        crop, pad = [], []
        for s, t, n in zip(self.start, self.shape, source_shape[:3], strict=True):
            lo, hi = max(s, 0), min(s + t, int(n))
            crop.append([lo, max(lo, hi)])
            before = lo - s
            pad.append([before, t - before - max(0, hi - lo)])
        return {"crop": crop, "pad": pad}

    def apply(self, array: np.ndarray, fill: np.ndarray | float) -> np.ndarray:
        """Cuts the window out of ``(i, j, k[, c])`` ``array``, filling outside with ``fill``.

        Returns ``array`` itself (no copy) when the window is the whole grid; otherwise a new
        C-contiguous array of the window's shape and ``array``'s dtype. ``fill`` is a scalar,
        or one value per channel.
        """
        if self.start == (0, 0, 0) and tuple(array.shape[:3]) == self.shape:
            return array
        plan = self.crop_pad(array.shape)
        (c0, c1), (d0, d1), (e0, e1) = plan["crop"]
        (p0, _), (q0, _), (r0, _) = plan["pad"]
        out = np.empty((*self.shape, *array.shape[3:]), dtype=array.dtype)
        out[...] = np.asarray(fill, dtype=array.dtype)
        out[p0: p0 + c1 - c0, q0: q0 + d1 - d0, r0: r0 + e1 - e0] = array[c0:c1, d0:d1, e0:e1]
        return out


def _towards_zero(x: float) -> int:
    """``x`` rounded towards zero, positions within tolerance of an integer taken as it."""
    nearest = round(x)
    if abs(x - nearest) < _TOLERANCE:
        return int(nearest)
    return int(math.floor(x)) if x > 0 else int(math.ceil(x))


def window(grid: Grid, target: Sequence[int], anchor: Sequence[float] | np.ndarray | None = None) -> Window:
    """The ``target``-shaped window of ``grid`` centred on the world point ``anchor``.

    Args:
        grid: the (reduced) grid the window is cut from.
        target: the output spatial shape.
        anchor: world point (mm) the window is centred on; by default the grid's centre.

    Returns:
        The window; its start is ``anchor`` in ``grid`` voxels minus ``(t - 1) / 2``,
        rounded towards zero per axis (the classic centred crop/pad when the anchor is the
        grid's centre).
    """
    target3 = tuple(int(t) for t in target)
    centre = grid.voxel(grid.centre() if anchor is None else anchor)
    start = tuple(_towards_zero(float(c) - (t - 1) / 2.0) for c, t in zip(centre, target3, strict=True))
    return Window(start, target3)  # type: ignore[arg-type]


def foreground_box(foreground: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """``(start, shape)`` of the bounding box of a boolean volume's True voxels, or None."""
    if not foreground.any():
        return None
    start, shape = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(foreground.any(axis=other))
        start.append(int(hits[0]))
        shape.append(int(hits[-1]) + 1 - int(hits[0]))
    return (start[0], start[1], start[2]), (shape[0], shape[1], shape[2])
