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

from volprep.preprocess.intensity import channel_stats, dataset_statistics, normalize
from volprep.preprocess.prepare import (
    Prepared,
    plan_target_shape,
    prepare_case,
    reduced_shape,
    shape_multiple,
    window_case,
)

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
