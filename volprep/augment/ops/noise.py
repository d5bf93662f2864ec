"""The noise op: additive Gaussian noise whose standard deviation is itself drawn.

Config: ``noise_std`` (the std is uniform in ``[0, noise_std]``). Parameters: ``std`` and
``seed``; the numpy field is ``default_rng(seed).standard_normal`` (float32) times ``std``,
so a recorded copy replays exactly; ``std == 0`` is the identity. TensorFlow draws one
stateless field for the whole batch (from the op's seed, or from the first noisy example's
``seed`` when rendering recorded parameters): reproducible, but not numpy's field, so the two
executors are not held to equal noise. Masks are left alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from volprep.augment.ops.base import Key, Settings, Values, decode_fields, non_negative

NAME = "noise"
KEYS = (Key("noise_std", 0.0, non_negative),)


def active(cfg: Settings) -> bool:
    return cfg["noise_std"] > 0


def sample(cfg: Settings, rng: np.random.Generator, shape: tuple[int, int, int]) -> Values:
    std = float(rng.uniform(0.0, cfg["noise_std"]))
    return {"std": std, "seed": int(rng.integers(0, 2**63 - 1))}


def decode(values: Mapping[str, Any]) -> Values:
    return decode_fields(NAME, values, {"std": float, "seed": int})


def is_identity(params: Mapping[str, Any]) -> bool:
    return not params["std"] > 0


def apply(params: Mapping[str, Any], image: np.ndarray,
          mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    field = np.random.default_rng(params["seed"]).standard_normal(image.shape, dtype=np.float32)
    return image + np.float32(params["std"]) * field, mask


def tf_sample(cfg: Settings, seed: Any, batch: Any, shape: tuple[int, int, int]) -> dict[str, Any]:
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, num=2)
    u = tf.random.stateless_uniform([batch], seed=seeds[0], dtype=tf.float64)
    return {"std": tf.cast(u * cfg["noise_std"], tf.float32), "field_seed": seeds[1]}


def tf_params(values: Sequence[Mapping[str, Any] | None], shape: tuple[int, int, int]) -> dict[str, Any]:
    import tensorflow as tf

    seed = next(v["seed"] for v in values if v)
    return {"std": tf.constant([v["std"] if v else 0.0 for v in values], tf.float32),
            "field_seed": tf.constant([seed & 0x7FFFFFFF, (seed >> 31) & 0x7FFFFFFF], tf.int64)}


def tf_apply(params: Mapping[str, Any], images: Any, masks: Any, jit_compile: bool) -> tuple[Any, Any]:
    import tensorflow as tf

    field = tf.random.stateless_normal(tf.shape(images), seed=params["field_seed"], dtype=tf.float32)
    return images + params["std"][:, None, None, None, None] * field, masks
