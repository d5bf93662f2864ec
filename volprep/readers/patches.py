"""Patch sampling without TensorFlow: the numpy twin of ``volprep.load(patch=...)``.

:class:`Patches` is a :class:`~volprep.readers.reader.PatchSampler` for the numpy reader,
``volprep.torch`` and ``volprep.grain``. It follows the rules of the TF loader
(:func:`volprep.patches.sample_starts`): a ``foreground`` fraction of the patches is
centred on one of the class locations the converter stored in the record (``locations``,
``location_counts``), the class chosen among those the volume holds, uniformly or by
``class_weights``; the other patches (and every patch of a volume without foreground)
have uniform origins, the volume centred along an axis shorter than the patch. Past the
border the image takes the record's padding value (``fill``) and the label volume 0. The
reader draws ``rng`` from ``(seed, "patches", epoch, file, record)``, so patches repeat
with the seed; a reader with ``augment`` augments each patch after it is cut (as the TF
loader does), so the stored locations always describe the volume they are cut from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from volprep.loader_patches import PATCH_FEATURES, check_request, weight_vector
from volprep.schema import Schema

Sample = dict[str, Any]


class Patches:
    """``per_volume`` patches of ``size`` from each volume (see the module docstring).

    Args:
        size: the patch size ``(D, H, W)``.
        per_volume: patches cut from each volume read.
        foreground: the fraction of patches centred on a stored foreground voxel.
        class_weights: None (classes the volume holds, uniformly), a mapping of label value
            or ``dataset.json`` name to weight, or weights in ``location_counts`` order;
            resolved against the shards by :meth:`bind` (the reader calls it).
    """

    features = PATCH_FEATURES
    """The record features the sampler reads (the reader decodes them, and drops those not
    asked for as ``extra_features`` from the patches)."""

    def __init__(self, size: Sequence[int], per_volume: int = 1, foreground: float = 0.33,
                 class_weights: Any = None) -> None:
        self.size = tuple(int(n) for n in size)
        self.per_volume = int(per_volume)
        self.foreground = float(foreground)
        self.class_weights = class_weights
        self._weights: np.ndarray | None = None

    def bind(self, features: Schema, label_names: Mapping[str, str]) -> None:
        """Checks the request against the shards' features and resolves ``class_weights``."""
        self.size, _ = check_request(features, self.size, self.per_volume, self.foreground, self.class_weights)
        weights = weight_vector(features, self.class_weights, label_names)
        self._weights = None if weights is None else np.asarray(weights, np.float64)

    def starts(self, shape: Sequence[int], rng: np.random.Generator, coords: np.ndarray | None,
               counts: np.ndarray | None) -> np.ndarray:
        """Patch origins ``[per_volume, 3]`` (may be negative or run past the end)."""
        dims, size = np.asarray(shape[:3], np.int64), np.asarray(self.size, np.int64)
        span = np.maximum(dims - size + 1, 1)
        starts = rng.integers(0, span, size=(self.per_volume, 3)) + np.minimum(dims - size, 0) // 2
        if coords is None or counts is None or self.foreground <= 0:
            return starts
        counts = np.asarray(counts, np.int64)
        weights = np.ones(len(counts)) if self._weights is None else self._weights
        present = (counts > 0) * weights
        if present.sum() <= 0:
            return starts
        ends = np.cumsum(counts)
        for j in range(self.per_volume):
            if rng.random() >= self.foreground:
                continue
            label = rng.choice(len(counts), p=present / present.sum())
            row = ends[label] - counts[label] + rng.integers(counts[label])
            starts[j] = np.asarray(coords[row], np.int64) - size // 2
        return starts

    def __call__(self, sample: Sample, rng: np.random.Generator) -> list[Sample]:
        coords = sample.get("locations")
        counts = sample.get("location_counts")
        fill = sample.get("fill")
        image = sample["image"]
        fill_value = np.zeros(image.shape[3:], image.dtype) if fill is None else np.asarray(fill).astype(image.dtype)
        label = sample.get("label")
        volume = label if isinstance(label, np.ndarray) and label.ndim == 3 else None
        made = []
        for start in self.starts(image.shape, rng, coords, counts):
            patch = dict(sample)
            patch["image"] = crop(image, start, self.size, fill_value)
            if volume is not None:
                patch["label"] = crop(volume, start, self.size, np.zeros((), volume.dtype))
            made.append(patch)
        return made


def crop(array: np.ndarray, start: Sequence[int], size: Sequence[int], fill: np.ndarray) -> np.ndarray:
    """The window of ``array`` at ``start`` of ``size`` (first three axes), ``fill`` outside."""
    out = np.empty((*size, *array.shape[3:]), array.dtype)
    out[...] = fill
    lo = [max(0, int(s)) for s in start]
    hi = [min(int(s) + int(n), int(d)) for s, n, d in zip(start, size, array.shape[:3], strict=True)]
    if all(h > low for low, h in zip(lo, hi, strict=True)):
        src = tuple(slice(low, h) for low, h in zip(lo, hi, strict=True))
        dst = tuple(slice(low - int(s), h - int(s)) for low, h, s in zip(lo, hi, start, strict=True))
        out[dst] = array[src]
    return out
