"""The intensity op: a multiplicative factor and an additive offset, ``x * scale + shift``.

Config: ``intensity_scale`` (uniform in ``[low, high]``) and ``intensity_shift`` (uniform in
``±``). Parameters: ``scale`` and ``shift``; ``scale == 1`` and ``shift == 0`` is the
identity. Masks are left alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from volprep.augment import numpy_kernels
from volprep.augment.ops.base import Key, Settings, Values, decode_fields, non_negative, value_range

NAME = "intensity"
KEYS = (
    Key("intensity_scale", (1.0, 1.0), lambda v, k: value_range(v, k, positive=False)),
    Key("intensity_shift", 0.0, non_negative),
)


def active(cfg: Settings) -> bool:
    return cfg["intensity_scale"] != (1.0, 1.0) or cfg["intensity_shift"] > 0


def sample(cfg: Settings, rng: np.random.Generator, shape: tuple[int, int, int]) -> Values:
    scale = float(rng.uniform(*cfg["intensity_scale"]))
    shift = float(rng.uniform(-cfg["intensity_shift"], cfg["intensity_shift"]))
    return {"scale": scale, "shift": shift}


def decode(values: Mapping[str, Any]) -> Values:
    return decode_fields(NAME, values, {"scale": float, "shift": float})


def is_identity(params: Mapping[str, Any]) -> bool:
    return params["scale"] == 1.0 and params["shift"] == 0.0


def apply(params: Mapping[str, Any], image: np.ndarray,
          mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    return numpy_kernels.scale_shift(image, params["scale"], params["shift"]), mask


def tf_sample(cfg: Settings, seed: Any, batch: Any, shape: tuple[int, int, int]) -> dict[str, Any]:
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, num=2)
    low, high = cfg["intensity_scale"]
    bound = cfg["intensity_shift"]
    u = [tf.random.stateless_uniform([batch], seed=seeds[i], dtype=tf.float64) for i in range(2)]
    return {"scale": tf.cast(low + u[0] * (high - low), tf.float32),
            "shift": tf.cast(-bound + u[1] * (2 * bound), tf.float32)}


def tf_params(values: Sequence[Mapping[str, Any] | None], shape: tuple[int, int, int]) -> dict[str, Any]:
    import tensorflow as tf

    return {"scale": tf.constant([v["scale"] if v else 1.0 for v in values], tf.float32),
            "shift": tf.constant([v["shift"] if v else 0.0 for v in values], tf.float32)}


def tf_apply(params: Mapping[str, Any], images: Any, masks: Any, jit_compile: bool) -> tuple[Any, Any]:
    from volprep.augment import tf_kernels

    kernel = tf_kernels.scale_shift_xla if jit_compile else tf_kernels.scale_shift
    return kernel(images, params["scale"], params["shift"]), masks
