"""The preprocess stage: reorient, reduce, crop/pad, statistics and normalisation.

Pure functions over numpy arrays (no I/O). ``prepare_case`` turns a reader's arrays into
a :class:`Prepared` case for the cache; ``normalize`` applies the configured normaliser
when shards are written, from per-case or pooled (``dataset_statistics``) statistics;
``reduced_shape`` and ``shape_multiple`` let the runner plan a target shape from headers.
Wavelet-compressed records are written with ``wavelet.encode``/``wavelet.layout`` and read
back with ``wavelet.decode`` or, batched in TensorFlow, ``wavelet_tf.decode_batch``
(imported on demand: this package never imports TensorFlow).
"""

from volprep.preprocess.intensity import channel_stats, dataset_statistics, normalize
from volprep.preprocess.prepare import Prepared, prepare_case, reduced_shape, shape_multiple

__all__ = [
    "Prepared",
    "channel_stats",
    "dataset_statistics",
    "normalize",
    "prepare_case",
    "reduced_shape",
    "shape_multiple",
]
