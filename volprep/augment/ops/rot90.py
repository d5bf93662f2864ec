"""The quarter-turn op: ``k`` in 0..3 quarter turns in one plane, exactly like ``np.rot90``.

Config: ``rot90_axes`` (a plane ``[a, b]`` of two distinct spatial axes, default none).
``k`` is drawn uniformly in 0..3, but only when the two axes have the same size (a quarter
turn of a non-square plane would change the shape); otherwise ``k = 0``, the identity.
Parameters: ``k`` and ``axes`` (the plane). Masks follow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from volprep.augment.ops.base import Key, Settings, Values, axis, decode_fields, ints
from volprep.errors import ConfigError

NAME = "rot90"


def _check_plane(value: Any, key: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ConfigError(None, f"augment.{key}", f"expected two axes like [0, 1], got {value!r}")
    plane = (axis(value[0], key), axis(value[1], key))
    if plane[0] == plane[1]:
        raise ConfigError(None, f"augment.{key}", f"the two axes must differ, got {value!r}")
    return plane


KEYS = (Key("rot90_axes", None, _check_plane),)


def _square(plane: tuple[int, int] | None, shape: Sequence[int]) -> tuple[int, int] | None:
    return plane if plane is not None and shape[plane[0]] == shape[plane[1]] else None


def active(cfg: Settings) -> bool:
    return cfg["rot90_axes"] is not None


def sample(cfg: Settings, rng: np.random.Generator, shape: tuple[int, int, int]) -> Values:
    k = int(rng.integers(0, 4))
    plane = _square(cfg["rot90_axes"], shape)
    return {"k": k if plane else 0, "axes": list(plane or cfg["rot90_axes"])}


def decode(values: Mapping[str, Any]) -> Values:
    out = decode_fields(NAME, values, {"k": int, "axes": ints})
    if len(out["axes"]) != 2:
        raise ValueError(f"augmentation op {NAME!r}: axes must be a plane of two axes, got {out['axes']}")
    return out


def is_identity(params: Mapping[str, Any]) -> bool:
    return params["k"] % 4 == 0


def apply(params: Mapping[str, Any], image: np.ndarray,
          mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    k, plane = params["k"], tuple(params["axes"])
    image = np.rot90(image, k, axes=plane)
    return image, None if mask is None else np.rot90(mask, k, axes=plane)


def tf_sample(cfg: Settings, seed: Any, batch: Any, shape: tuple[int, int, int]) -> dict[str, Any]:
    import tensorflow as tf

    k = tf.random.stateless_uniform([batch], seed=seed, minval=0, maxval=4, dtype=tf.int32)
    return {"k": k, "plane": _square(cfg["rot90_axes"], shape)}


def tf_params(values: Sequence[Mapping[str, Any] | None], shape: tuple[int, int, int]) -> dict[str, Any]:
    import tensorflow as tf

    planes = {tuple(v["axes"]) for v in values if v}
    if len(planes) > 1:
        raise ValueError(f"quarter turns in different planes in one batch: {sorted(planes)}")
    ks = [v["k"] % 4 if v else 0 for v in values]
    return {"k": tf.constant(ks, tf.int32), "plane": planes.pop() if planes else None}


def tf_apply(params: Mapping[str, Any], images: Any, masks: Any, jit_compile: bool) -> tuple[Any, Any]:
    from volprep.augment import tf_kernels

    plane = params["plane"]
    if plane is None:
        return images, masks
    images = tf_kernels.rot90(images, params["k"], plane)
    return images, None if masks is None else tf_kernels.rot90(masks, params["k"], plane)
