"""The flip op: each configured spatial axis is flipped with probability 0.5 (exact).

Config: ``flip_axes`` (distinct spatial axes, default none). Parameters: ``axes``, the axes
actually flipped, in ``flip_axes`` order; no axis flipped is the identity. Masks follow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from volprep.augment.ops.base import Key, Settings, Values, axis, decode_fields, ints
from volprep.errors import ConfigError

NAME = "flip"


def _check_axes(value: Any, key: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise ConfigError(None, f"augment.{key}", f"expected a list of axes like [0, 1], got {value!r}")
    axes = tuple(axis(a, key) for a in value)
    if len(set(axes)) != len(axes):
        raise ConfigError(None, f"augment.{key}", f"an axis is listed twice: {value!r}")
    return axes


KEYS = (Key("flip_axes", (), _check_axes),)


def active(cfg: Settings) -> bool:
    return bool(cfg["flip_axes"])


def sample(cfg: Settings, rng: np.random.Generator, shape: tuple[int, int, int]) -> Values:
    draw = rng.random(len(cfg["flip_axes"]))
    return {"axes": [a for a, u in zip(cfg["flip_axes"], draw, strict=True) if u < 0.5]}


def decode(values: Mapping[str, Any]) -> Values:
    return decode_fields(NAME, values, {"axes": ints})


def is_identity(params: Mapping[str, Any]) -> bool:
    return not params["axes"]


def apply(params: Mapping[str, Any], image: np.ndarray,
          mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    for a in params["axes"]:
        image = np.flip(image, a)
        mask = None if mask is None else np.flip(mask, a)
    return image, mask


def tf_sample(cfg: Settings, seed: Any, batch: Any, shape: tuple[int, int, int]) -> dict[str, Any]:
    import tensorflow as tf

    axes = cfg["flip_axes"]
    flipped = tf.random.stateless_uniform([batch, len(axes)], seed=seed, dtype=tf.float64) < 0.5
    no_flip = tf.zeros([batch], tf.bool)
    flip = tf.stack([flipped[:, axes.index(a)] if a in axes else no_flip for a in range(3)], axis=1)
    return {"flip": flip, "axes": tuple(axes)}


def tf_params(values: Sequence[Mapping[str, Any] | None], shape: tuple[int, int, int]) -> dict[str, Any]:
    import tensorflow as tf

    rows = [[a in (v["axes"] if v else ()) for a in range(3)] for v in values]
    axes = tuple(a for a in range(3) if any(row[a] for row in rows))
    return {"flip": tf.constant(rows, tf.bool), "axes": axes}


def tf_apply(params: Mapping[str, Any], images: Any, masks: Any, jit_compile: bool) -> tuple[Any, Any]:
    import tensorflow as tf

    from volprep.augment import tf_kernels

    for a in params["axes"]:
        flag = params["flip"][:, a]
        images = tf_kernels.select(flag, tf.reverse(images, [a + 1]), images)
        masks = None if masks is None else tf_kernels.select(flag, tf.reverse(masks, [a + 1]), masks)
    return images, masks
