"""Patch sampling in the loader: whole decoded volumes in, batches of patches out.

:func:`volprep.load` with ``patch=`` decodes volumes in small batches and hands them to
:func:`patched`, which draws ``patches_per_volume`` origins a volume (:func:`volprep.patches.sample_starts`:
a ``foreground`` fraction centred on stored class locations, the rest uniform), crops image
and label volume together with one gather each (:func:`volprep.patches.crop`), and batches
the patches ``batch_size`` at a time. Randomness is stateless, keyed by ``(seed, step)``
where step counts the decoded volume batches, so a deterministic loader yields the same
patches on every run; with ``repeat`` every epoch draws new ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from volprep.patches import crop, sample_starts
from volprep.schema import Schema

PATCH_FEATURES = ("locations", "location_counts", "fill")


# Decoded volumes a step hold at most this many bytes: bigger tensors escape the heap that
# volprep.malloc keeps (mmap threshold 32 MiB) and cost fresh page faults every step. At
# 1 mm (169x202x163 float16 + mask, 17 MB a volume) 8 volumes a step (k=1, batch 8) ran
# at 20.6 patches/s, 48.7 CPU ms a volume, against 25.8 for whole volumes in pairs.
MAX_DECODED_BYTES = 24 << 20


def volume_batch(batch_size: int, per_volume: int, volume_bytes: int = 0) -> int:
    """Volumes decoded together: about one batch of patches, within :data:`MAX_DECODED_BYTES`."""
    wanted = math.ceil(batch_size / per_volume)
    return max(1, min(wanted, MAX_DECODED_BYTES // max(1, volume_bytes)))


def decoded_bytes(features: Schema, names: Sequence[str]) -> int:
    """Bytes one record's decoded ``names`` take (images as stored)."""
    return sum(math.prod(features[n].shape) * np.dtype(features[n].dtype).itemsize for n in names)


def check_request(features: Schema, patch: Sequence[int], per_volume: int, foreground: float,
                  class_weights: Any) -> tuple[tuple[int, int, int], list[str]]:
    """The patch size as three ints, and the extra features to parse; ValueError if the
    request cannot be served by these shards."""
    size = tuple(int(n) for n in patch)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"patch must be three sizes >= 1 (D, H, W), got {patch!r}")
    if isinstance(per_volume, bool) or int(per_volume) < 1:
        raise ValueError(f"patches_per_volume must be >= 1, got {per_volume!r}")
    if not 0.0 <= float(foreground) <= 1.0:
        raise ValueError(f"foreground must be in [0, 1], got {foreground!r}")
    located = all(name in features for name in PATCH_FEATURES)
    if (foreground > 0 or class_weights is not None) and not located:
        raise ValueError("foreground patches need class locations, and these shards have none (records "
                         "of a label volume written with [preprocess] class_locations > 0 have them); "
                         "use foreground=0 for uniform patches")
    return size, [name for name in PATCH_FEATURES if name in features]  # type: ignore[return-value]


def weight_vector(features: Schema, class_weights: Any, label_names: Mapping[str, str]) -> list[float] | None:
    """``class_weights`` as one weight a stored label (the order of ``location_counts``).

    Accepts a mapping of label value (int) or label name (``dataset.json``'s) to weight,
    or a sequence in the order of the manifest's labels; labels not named weigh 0.
    """
    if class_weights is None:
        return None
    labels = [int(v) for v in (features["location_counts"].layout or {})["labels"]]
    if isinstance(class_weights, Mapping):
        by_name = {name: int(value) for value, name in label_names.items()}
        weights = [0.0] * len(labels)
        for key, weight in class_weights.items():
            value = by_name.get(key) if isinstance(key, str) and not key.isdigit() else int(key)
            if value not in labels:
                raise ValueError(f"class_weights names label {key!r}, not one of the stored labels {labels}")
            weights[labels.index(value)] = float(weight)
    else:
        weights = [float(w) for w in class_weights]
        if len(weights) != len(labels):
            raise ValueError(f"class_weights has {len(weights)} weights for {len(labels)} labels {labels}")
    if min(weights) < 0 or not sum(weights) > 0:
        raise ValueError(f"class_weights must be >= 0 with a positive sum, got {class_weights!r}")
    return weights


def patched(ds: Any, *, size: tuple[int, int, int], per_volume: int, foreground: float,
            weights: list[float] | None, shape: Sequence[int], label_name: str | None,
            label_is_volume: bool, seed: int, ordered: bool, image_dtype: Any = None) -> Any:
    """Decoded volume batches (dicts of ``image``, the label, and :data:`PATCH_FEATURES`
    present) to unbatched ``(image patch[, label patch or class])`` elements."""
    import tensorflow as tf

    spatial = tuple(int(n) for n in shape[:3])
    class_weights = None if weights is None else tf.constant(weights, tf.float32)

    def cut(step: Any, batch: Mapping[str, Any]) -> Any:
        image = batch["image"]
        step_seed = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
        located = "locations" in batch and foreground > 0
        starts = sample_starts(step_seed, spatial, size, per_volume, foreground if located else 0.0,
                               batch["locations"] if located else None,
                               batch["location_counts"] if located else None,
                               class_weights if located else None, batch=tf.shape(image)[0])
        fill = batch["fill"] if "fill" in batch else tf.reduce_min(image, axis=[1, 2, 3])
        patches = crop(image, starts, size, fill)  # fill is in the stored dtype's values
        if image_dtype is not None and patches.dtype != image_dtype:
            patches = tf.cast(patches, image_dtype)
        if label_name is None:
            return patches
        label = batch[label_name]
        if label_is_volume:
            return patches, crop(label, starts, size, 0)
        return patches, tf.repeat(label, per_volume, axis=0)

    ds = ds.enumerate().map(cut, num_parallel_calls=tf.data.AUTOTUNE, deterministic=ordered)
    return ds.unbatch()
