"""Where each class is: a bounded sample of voxel coordinates per label, for patch sampling.

A loader that centres patches on foreground needs, for each record, voxels of each class to
centre on. Scanning a mask for them at training time costs a pass over every voxel of every
volume read; nnU-Net computes them once, offline ("class locations"). volprep does the
same when it writes a record: :func:`sample_locations` draws, for each label of the job's
label list, up to a share of a fixed budget of that label's voxels, uniformly and
reproducibly (seeded by the record), and returns them packed into two fixed-size arrays
the record schema stores (``locations``, ``location_counts``):

* ``coords``: ``[budget, 3]`` int16 voxel indices ``(d, h, w)`` on the record's grid,
  grouped by label in label-list order, zero-filled after the last;
* ``counts``: ``[n_labels]`` int32, how many rows each label holds (0: absent).

The budget is shared fairly (water-filling): every present label gets
``budget // present`` rows or all its voxels if it has fewer, and what small labels leave
is shared among the larger ones, so a rare label of a 600-label atlas keeps its few voxels
while tissue classes of a 3-class mask get a thousand or more each.
"""

from __future__ import annotations

import numpy as np

from volprep import kernels
from volprep.seeds import rng_for

MAX_INDEX = np.iinfo(np.int16).max  # coordinates are stored as int16


def shares(available: np.ndarray, budget: int) -> np.ndarray:
    """How many rows each label gets: at most its ``available`` voxels, fair shares of
    ``budget`` otherwise (water-filling: what small labels leave goes to larger ones)."""
    available = np.asarray(available, dtype=np.int64)
    out = np.zeros_like(available)
    left = int(budget)
    open_ = [i for i in np.argsort(available, kind="stable") if available[i] > 0]
    while open_ and left > 0:
        share = left // len(open_)
        if share == 0:  # fewer rows than labels still open: one each to the smallest
            for i in open_[:left]:
                out[i] += 1
            break
        smallest = open_[0]
        if available[smallest] - out[smallest] <= share:
            take = available[smallest] - out[smallest]
            out[smallest] += take
            left -= int(take)
            open_.pop(0)
        else:
            for i in open_:
                out[i] += share
            left -= share * len(open_)
    return out


def sample_locations(mask: np.ndarray, labels: tuple[int, ...], budget: int, seed: int,
                     *keys: str | int) -> tuple[np.ndarray, np.ndarray]:
    """A bounded, reproducible sample of each label's voxels (see the module docstring).

    Args:
        mask: the record's label volume ``[D, H, W]`` (any integer dtype).
        labels: the job's foreground label values, in the order the counts are stored
            (background 0 is never sampled; a value absent from the mask gets 0 rows).
        budget: rows in all (the fixed size of ``coords``).
        seed, keys: the draw's seed and stable keys (the job seed, the case id, the copy).

    Returns:
        ``(coords [budget, 3] int16, counts [len(labels)] int32)``.
    """
    if max(mask.shape, default=0) > MAX_INDEX + 1:
        raise ValueError(f"a volume of shape {mask.shape} has indices beyond int16")
    coords = np.zeros((budget, 3), dtype=np.int16)
    counts = np.zeros(len(labels), dtype=np.int32)
    if budget == 0 or not labels:
        return coords, counts
    wanted = np.asarray(labels, dtype=np.int64)
    if wanted.min() < 0:
        raise ValueError("label values must be non-negative")
    lut = np.full(int(wanted.max()) + 1, -1, dtype=np.int32)
    lut[wanted] = np.arange(wanted.size, dtype=np.int32)
    lut[0] = -1  # background is never sampled
    flat = np.ascontiguousarray(mask).reshape(-1)  # C order: (d, h, w) from flat indices
    found = np.zeros(wanted.size, np.int64)
    present = kernels.label_counts(flat, lut)
    found[:present.size] = present
    taken = shares(found, budget)
    rng = rng_for(seed, "locations", *keys)
    ranks = np.zeros(int(taken.sum()), np.int64)
    ends = np.cumsum(taken)
    starts = ends - taken
    for i in np.flatnonzero(taken):
        take, size = int(taken[i]), int(found[i])
        chosen = np.arange(size) if take == size else np.sort(rng.choice(size, size=take, replace=False))
        ranks[starts[i]:ends[i]] = chosen
    index = kernels.pick_ranks(flat, lut, ranks, starts, ends)
    coords[:index.size] = np.stack(np.unravel_index(index, mask.shape), axis=1)
    counts[:] = taken
    return coords, counts
