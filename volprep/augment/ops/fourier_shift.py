"""The Fourier shift op: a circular sub-voxel translation applied as a phase ramp.

Config: ``fourier_shift_vox`` (uniform in ``±`` per axis; not gated by ``p``). Parameters:
``shift`` (voxels per axis); zero is the identity. Images are shifted exactly for
band-limited data (:func:`volprep.augment.numpy_kernels.fourier_shift`); masks, which cannot
move by a fraction, are rolled by the rounded shift (``floor(s + 0.5)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from volprep.augment import numpy_kernels
from volprep.augment.ops.base import Key, Settings, Values, decode_fields, floats, non_negative

NAME = "fourier_shift"
KEYS = (Key("fourier_shift_vox", 0.0, non_negative),)


def active(cfg: Settings) -> bool:
    return cfg["fourier_shift_vox"] > 0


def sample(cfg: Settings, rng: np.random.Generator, shape: tuple[int, int, int]) -> Values:
    bound = cfg["fourier_shift_vox"]
    return {"shift": rng.uniform(-bound, bound, 3).tolist()}


def decode(values: Mapping[str, Any]) -> Values:
    out = decode_fields(NAME, values, {"shift": floats})
    if len(out["shift"]) != 3:
        raise ValueError(f"augmentation op {NAME!r}: need 3 shifts, got {values!r}")
    return out


def is_identity(params: Mapping[str, Any]) -> bool:
    return not any(params["shift"])


def apply(params: Mapping[str, Any], image: np.ndarray,
          mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    image = numpy_kernels.fourier_shift(image, params["shift"])
    return image, None if mask is None else numpy_kernels.roll_mask(mask, params["shift"])


def tf_sample(cfg: Settings, seed: Any, batch: Any, shape: tuple[int, int, int]) -> dict[str, Any]:
    import tensorflow as tf

    bound = cfg["fourier_shift_vox"]
    u = tf.random.stateless_uniform([batch, 3], seed=seed, dtype=tf.float64)
    return {"shift": tf.cast(-bound + u * (2 * bound), tf.float32)}


def tf_params(values: Sequence[Mapping[str, Any] | None], shape: tuple[int, int, int]) -> dict[str, Any]:
    import tensorflow as tf

    return {"shift": tf.constant([v["shift"] if v else (0.0, 0.0, 0.0) for v in values], tf.float32)}


def tf_apply(params: Mapping[str, Any], images: Any, masks: Any, jit_compile: bool) -> tuple[Any, Any]:
    from volprep.augment import tf_kernels

    images = tf_kernels.fourier_shift(images, params["shift"])
    return images, None if masks is None else tf_kernels.roll(masks, params["shift"])
