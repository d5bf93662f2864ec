"""The affine op: rotation, shear, isotropic scale and translation about the grid centre.

Config: ``rotate_deg`` (uniform in ``±deg`` about each axis; one value or one per axis;
<= 45), ``scale`` (isotropic, uniform in ``[low, high]``, > 0), ``shear`` (each of the six
off-diagonal terms uniform in ``±shear``, <= 0.25), ``shift_vox`` (translation uniform in
``±shift_vox`` voxels per axis) and ``p``, the probability the affine is applied at all
(with ``1 - p`` the sample is the identity).

Parameters: ``matrix`` ``A`` (3x3) and ``translation`` ``t``, the *forward* map of the
content: the voxel at ``x`` moves to ``centre + A (x - centre) + t``, ``centre = (shape -
1) / 2``, ``A = R @ S @ s I``, so ``s > 1`` enlarges the anatomy and ``t`` moves it by ``+t``
voxels, like ``np.roll``. ``R = R0(a0) @ R1(a1) @ R2(a2)``, ``Ri`` turning about axis ``i``
(in the plane of the two other axes, from the lower to the higher axis); the shear ``S`` is
the identity plus six off-diagonal terms in the order of :data:`SHEAR_INDEX`. Both executors
resample by pulling through the inverse, as the three 1D passes of :func:`pull_passes`
(linear for images, filled with each channel's minimum; nearest for masks, filled with 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from volprep.augment import numpy_kernels
from volprep.augment.ops.base import (
    Key,
    Settings,
    Values,
    decode_fields,
    floats,
    number,
    value_range,
)
from volprep.errors import ConfigError

NAME = "affine"

MAX_ROTATE_DEG = 45.0
"""Largest ``rotate_deg``: larger turns are what ``rot90_axes`` is for. The three-pass
resampling (:func:`pull_passes`) matches direct trilinear interpolation in accuracy up to
about 20 degrees; at 45 degrees about every axis its worst interior error against the exact
rotated field is about twice trilinear's (~1% vs ~0.5% of the range on a smooth volume;
``benchmarks/bench_augment.py`` measures it)."""
MAX_SHEAR = 0.25
SHEAR_INDEX = ((0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1))
IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def _check_rotate(value: Any, key: str) -> float | tuple[float, float, float]:
    if isinstance(value, list | tuple):
        if len(value) != 3:
            raise ConfigError(None, f"augment.{key}", f"expected a number or a list of three, got {value!r}")
        return tuple(number(v, key, minimum=0, maximum=MAX_ROTATE_DEG) for v in value)  # type: ignore[return-value]
    return number(value, key, minimum=0, maximum=MAX_ROTATE_DEG)


KEYS = (
    Key("rotate_deg", 0.0, _check_rotate),
    Key("scale", (1.0, 1.0), lambda v, k: value_range(v, k, positive=True)),
    Key("shear", 0.0, lambda v, k: number(v, k, minimum=0, maximum=MAX_SHEAR)),
    Key("shift_vox", 0.0, lambda v, k: number(v, k, minimum=0)),
    Key("p", 1.0, lambda v, k: number(v, k, minimum=0, maximum=1)),
)


def angles_deg(cfg: Settings) -> tuple[float, float, float]:
    """``rotate_deg`` as one bound per axis."""
    r = cfg["rotate_deg"]
    return (r, r, r) if isinstance(r, float) else r


def active(cfg: Settings) -> bool:
    return cfg["p"] > 0 and (any(angles_deg(cfg)) or cfg["scale"] != (1.0, 1.0)
                             or cfg["shear"] > 0 or cfg["shift_vox"] > 0)


def sample(cfg: Settings, rng: np.random.Generator, shape: tuple[int, int, int]) -> Values:
    applied = bool(rng.random() < cfg["p"])
    bounds = np.radians(np.asarray(angles_deg(cfg)))
    angles = rng.uniform(-bounds, bounds)
    scale = rng.uniform(*cfg["scale"])
    shear = rng.uniform(-cfg["shear"], cfg["shear"], 6)
    translation = rng.uniform(-cfg["shift_vox"], cfg["shift_vox"], 3)
    if not applied:
        return {"matrix": [list(r) for r in IDENTITY], "translation": [0.0, 0.0, 0.0]}
    return {"matrix": affine_matrix(angles, shear, scale).tolist(), "translation": translation.tolist()}


def decode(values: Mapping[str, Any]) -> Values:
    out = decode_fields(NAME, values, {"matrix": lambda m: tuple(floats(r) for r in m), "translation": floats})
    if len(out["matrix"]) != 3 or any(len(r) != 3 for r in out["matrix"]) or len(out["translation"]) != 3:
        raise ValueError(f"augmentation op {NAME!r}: need a 3x3 matrix and 3 translations, got {values!r}")
    return out


def is_identity(params: Mapping[str, Any]) -> bool:
    return tuple(map(tuple, params["matrix"])) == IDENTITY and not any(params["translation"])


def apply(params: Mapping[str, Any], image: np.ndarray,
          mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    rows = pull_passes(np.asarray(params["matrix"]), np.asarray(params["translation"]), image.shape)
    image = numpy_kernels.warp_image(image, rows)
    return image, None if mask is None else numpy_kernels.warp_mask(mask, rows)


def tf_sample(cfg: Settings, seed: Any, batch: Any, shape: tuple[int, int, int]) -> dict[str, Any]:
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, num=5)

    def uniform(i: int, size: list[Any], low: Any, high: Any) -> tf.Tensor:
        return low + tf.random.stateless_uniform(size, seed=seeds[i], dtype=tf.float64) * (high - low)

    applied = tf.random.stateless_uniform([batch], seed=seeds[0], dtype=tf.float64) < cfg["p"]
    bounds = tf.constant(np.radians(np.asarray(angles_deg(cfg))), tf.float64)
    angles = uniform(1, [batch, 3], -bounds, bounds)
    scale = uniform(2, [batch], *cfg["scale"])
    shear = uniform(3, [batch, 6], -cfg["shear"], cfg["shear"])
    translation = uniform(4, [batch, 3], -cfg["shift_vox"], cfg["shift_vox"])
    matrix = tf.where(applied[:, None, None], _tf_affine_matrix(angles, shear, scale), tf.eye(3, dtype=tf.float64))
    translation = tf.where(applied[:, None], translation, tf.zeros_like(translation))
    rows = tf.cast(_tf_pull_passes(matrix, translation, shape), tf.float32)
    return {"matrix": matrix, "translation": translation, "rows": rows}


def tf_params(values: Sequence[Mapping[str, Any] | None], shape: tuple[int, int, int]) -> dict[str, Any]:
    import tensorflow as tf

    matrix = np.array([v["matrix"] if v else IDENTITY for v in values], np.float64)
    translation = np.array([v["translation"] if v else (0.0, 0.0, 0.0) for v in values], np.float64)
    rows = np.stack([pull_passes(m, t, shape) for m, t in zip(matrix, translation, strict=True)])
    return {"matrix": tf.constant(matrix), "translation": tf.constant(translation),
            "rows": tf.constant(rows, tf.float32)}


def tf_apply(params: Mapping[str, Any], images: Any, masks: Any, jit_compile: bool) -> tuple[Any, Any]:
    from volprep.augment import tf_kernels

    images = tf_kernels.warp_image(images, params["rows"], jit_compile)
    return images, None if masks is None else tf_kernels.warp_mask(masks, params["rows"], jit_compile)


# ---------------------------------------------------------------- the matrix and its passes


def rotation_matrix(angles_rad: Sequence[float] | np.ndarray) -> np.ndarray:
    """``R0(a0) @ R1(a1) @ R2(a2)``, ``Ri`` a turn about axis ``i`` (float64, 3x3)."""
    out = np.eye(3)
    for ax, angle in enumerate(angles_rad):
        lo, hi = [a for a in range(3) if a != ax]
        turn = np.eye(3)
        c, s = math.cos(angle), math.sin(angle)
        turn[lo, lo], turn[lo, hi], turn[hi, lo], turn[hi, hi] = c, -s, s, c
        out = out @ turn
    return out


def affine_matrix(angles_rad: Sequence[float] | np.ndarray, shear: Sequence[float] | np.ndarray,
                  scale: float) -> np.ndarray:
    """The forward matrix ``R @ S @ scale * I`` (float64, 3x3)."""
    shear_m = np.eye(3)
    for (r, c), v in zip(SHEAR_INDEX, shear, strict=True):
        shear_m[r, c] = v
    return rotation_matrix(angles_rad) @ shear_m @ (scale * np.eye(3))


def pull_passes(matrix: np.ndarray, translation: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The affine as three 1D resampling passes (float64, ``[3, 4]``), one row per pass.

    Resampling pulls each output voxel ``q`` from the input at ``p = B q + o`` with
    ``B = inverse(matrix)`` and ``o = c - B (c + t)`` (``c`` the grid centre). ``[B | o]`` is
    factored as ``E0 @ E1 @ E2``, ``Ei`` the identity but for row ``i``. Pass 1 resamples the
    input along axis 0 at ``row0 . (q, 1)``, pass 2 the result along axis 1 at ``row1 . (q, 1)``,
    pass 3 along axis 2 at ``row2 . (q, 1)``. Each pass only moves its own axis, so an
    intermediate is only ever read at grid positions of the axes already done: nothing is
    clipped, and the chain reproduces ``in(B q + o)`` exactly for any image that is linear
    along lines. Needs ``B[2,2]`` and the lower-right 2x2 minor of ``B`` non-zero, which the
    bounds on rotation (45 degrees) and shear (0.25) guarantee.
    """
    forward = np.asarray(matrix, dtype=np.float64)
    centre = (np.asarray(shape[:3], dtype=np.float64) - 1.0) / 2.0
    b = np.linalg.inv(forward)
    o = centre - b @ (centre + np.asarray(translation, dtype=np.float64))
    full = np.concatenate([b, o[:, None]], axis=1)  # [3, 4]
    row2 = full[2]
    e1 = full[2, 2]
    c1 = full[1, 2] / e1
    row1 = full[1] - c1 * row2
    row1[2] = c1
    minor = np.array([[full[1, 1], full[2, 1]], [full[1, 2], full[2, 2]]])
    a1, a2 = np.linalg.solve(minor, full[0, 1:3])
    row0 = full[0] - a1 * full[1] - a2 * full[2]
    row0[1], row0[2] = a1, a2
    return np.stack([row0, row1, row2])


def _tf_affine_matrix(angles: Any, shear: Any, scale: Any) -> Any:
    """Batched :func:`affine_matrix` ([B, 3, 3], float64)."""
    import tensorflow as tf

    batch = tf.shape(angles)[0]
    eye = tf.eye(3, batch_shape=[batch], dtype=tf.float64)

    def entries(cells: list[tuple[int, int]]) -> Any:  # scatter indices of the same cells in every matrix
        b = tf.repeat(tf.range(batch), len(cells))
        return tf.concat([b[:, None], tf.tile(tf.constant(cells, tf.int32), [batch, 1])], axis=1)

    out = eye
    for ax in range(3):
        lo, hi = [a for a in range(3) if a != ax]
        c, s = tf.cos(angles[:, ax]), tf.sin(angles[:, ax])
        turn = tf.tensor_scatter_nd_update(eye, entries([(lo, lo), (lo, hi), (hi, lo), (hi, hi)]),
                                           tf.reshape(tf.stack([c, -s, s, c], axis=1), [-1]))
        out = out @ turn
    shear_m = tf.tensor_scatter_nd_update(eye, entries(list(SHEAR_INDEX)), tf.reshape(shear, [-1]))
    return out @ shear_m * scale[:, None, None]


def _tf_pull_passes(matrix: Any, translation: Any, shape: Sequence[int]) -> Any:
    """Batched :func:`pull_passes` ([B, 3, 4], float64)."""
    import tensorflow as tf

    centre = tf.constant((np.asarray(shape, dtype=np.float64) - 1.0) / 2.0)
    b = tf.linalg.inv(matrix)
    o = centre - tf.linalg.matvec(b, centre + translation)
    full = tf.concat([b, o[:, :, None]], axis=2)
    row2 = full[:, 2]
    c1 = full[:, 1, 2] / full[:, 2, 2]
    row1 = full[:, 1] - c1[:, None] * row2
    row1 = tf.stack([row1[:, 0], row1[:, 1], c1, row1[:, 3]], axis=1)
    b11, b21, b12, b22 = full[:, 1, 1], full[:, 2, 1], full[:, 1, 2], full[:, 2, 2]
    det = b11 * b22 - b21 * b12
    a1 = (full[:, 0, 1] * b22 - b21 * full[:, 0, 2]) / det
    a2 = (b11 * full[:, 0, 2] - b12 * full[:, 0, 1]) / det
    row0 = full[:, 0] - a1[:, None] * full[:, 1] - a2[:, None] * full[:, 2]
    row0 = tf.stack([row0[:, 0], a1, a2, row0[:, 3]], axis=1)
    return tf.stack([row0, row1, row2], axis=1)
