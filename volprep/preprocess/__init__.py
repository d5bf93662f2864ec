"""The preprocess stage: reorient, reduce, crop/pad, statistics and normalisation.

Pure functions over numpy arrays (no I/O). ``prepare_case`` turns a reader's arrays into
a :class:`Prepared` case for the cache; when shards are written, ``window_case`` cuts the
target window (the one crop/pad of the flow, see :mod:`volprep.geometry`) and ``normalize``
applies the configured normaliser from per-case or pooled (``dataset_statistics``)
statistics; ``plan_target_shape`` plans a target shape from what preprocessing produced,
``reduced_shape`` estimates it from a header.
Wavelet-compressed records are written with ``wavelet.encode``/``wavelet.layout`` and read
back with ``wavelet.decode`` or, batched in TensorFlow, ``wavelet_tf.decode_batch``
(imported on demand: this package never imports TensorFlow).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from volprep.preprocess.intensity import channel_stats, dataset_statistics, normalize
    from volprep.preprocess.prepare import (
        Prepared,
        plan_target_shape,
        prepare_case,
        reduced_shape,
        shape_multiple,
        window_case,
    )

# Names are loaded on first use (PEP 562): a reader of records that only needs
# ``volprep.preprocess.wavelet`` (the schema's decoder) does not import the reductions
# (scipy, numba kernels: ~0.5 s).
_HOMES = {"channel_stats": "intensity", "dataset_statistics": "intensity", "normalize": "intensity",
          "Prepared": "prepare", "plan_target_shape": "prepare", "prepare_case": "prepare",
          "reduced_shape": "prepare", "shape_multiple": "prepare", "window_case": "prepare"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'volprep.preprocess' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"volprep.preprocess.{home}"), name)
    globals()[name] = value
    return value

__all__ = [
    "Prepared",
    "channel_stats",
    "dataset_statistics",
    "normalize",
    "plan_target_shape",
    "prepare_case",
    "reduced_shape",
    "shape_multiple",
    "window_case",
]
