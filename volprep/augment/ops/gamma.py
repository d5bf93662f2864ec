"""The gamma op: a gamma curve on each channel's min-max normalised intensities.

Config: ``gamma`` (the exponent, uniform in ``[low, high]``, > 0). Parameters: ``gamma``; 1
is the identity. Per channel: ``lo + (hi - lo) * ((x - lo) / (hi - lo)) ** gamma``, so the
minimum and maximum stay where they were; a constant channel is left alone. Masks are left
alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from volprep.augment import numpy_kernels
from volprep.augment.ops.base import Key, Settings, Values, decode_fields, value_range

NAME = "gamma"
KEYS = (Key("gamma", (1.0, 1.0), lambda v, k: value_range(v, k, positive=True)),)


def active(cfg: Settings) -> bool:
    return cfg["gamma"] != (1.0, 1.0)


def sample(cfg: Settings, rng: np.random.Generator, shape: tuple[int, int, int]) -> Values:
    return {"gamma": float(rng.uniform(*cfg["gamma"]))}


def decode(values: Mapping[str, Any]) -> Values:
    return decode_fields(NAME, values, {"gamma": float})


def is_identity(params: Mapping[str, Any]) -> bool:
    return params["gamma"] == 1.0


def apply(params: Mapping[str, Any], image: np.ndarray,
          mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    return numpy_kernels.gamma_curve(image, params["gamma"]), mask


def tf_sample(cfg: Settings, seed: Any, batch: Any, shape: tuple[int, int, int]) -> dict[str, Any]:
    import tensorflow as tf

    low, high = cfg["gamma"]
    u = tf.random.stateless_uniform([batch], seed=seed, dtype=tf.float64)
    return {"gamma": tf.cast(low + u * (high - low), tf.float32)}


def tf_params(values: Sequence[Mapping[str, Any] | None], shape: tuple[int, int, int]) -> dict[str, Any]:
    import tensorflow as tf

    return {"gamma": tf.constant([v["gamma"] if v else 1.0 for v in values], tf.float32)}


def tf_apply(params: Mapping[str, Any], images: Any, masks: Any, jit_compile: bool) -> tuple[Any, Any]:
    from volprep.augment import tf_kernels

    kernel = tf_kernels.gamma_curve_xla if jit_compile else tf_kernels.gamma_curve
    return kernel(images, params["gamma"]), masks
