"""The online executor: batched, stateless augmentation in TensorFlow (GPU when there is one).

``augment_batch(images, masks, aug, seed)`` draws per-example parameters for each active op
of ``aug`` (:meth:`volprep.augment.spec.Augment.active_ops`) from the same distributions as
:func:`volprep.augment.spec.sample`, with stateless random ops, and applies them to the whole
batch at once with plain TF ops (no per-example Python loop, no ``numpy_function``), op by
op in table order. Each op draws from a seed of its own,
``stateless_fold_in(seed, stable_id(op name))`` (:func:`op_seed`), so an op added to the
table never changes what another op draws. ``apply_params_batch`` renders given,
numpy-sampled :class:`~volprep.augment.spec.Params` with the same ops' TF code: the tests
hold it to :func:`volprep.augment.numpy_ops.apply` (equal up to float32 rounding, noise
aside: see :mod:`volprep.augment.ops.noise`). The kernels live in
:mod:`volprep.augment.tf_kernels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from volprep.augment import tf_kernels
from volprep.augment.ops.base import stable_id
from volprep.augment.spec import Augment, Params

# Old private names, kept for benchmarks/bench_augment.py.
_image_pass = tf_kernels.image_pass
_warp_image = tf_kernels.warp_image
_fourier_shift = tf_kernels.fourier_shift


def augment_batch(images: tf.Tensor, masks: tf.Tensor | None, aug: Augment, seed: tf.Tensor,
                  *, jit_compile: bool = True) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Augments a batch with per-example parameters drawn statelessly from ``seed``.

    Args:
        images: ``[B, D, H, W, C]`` (static spatial shape); computed in float32.
        masks: optional ``[B, D, H, W]`` integer label volumes, or None.
        aug: the augmentation's distribution.
        seed: shape ``[2]`` integer tensor (e.g. ``(job seed, step)``); the same seed gives
            the same batch. Required: there is no global random state.
        jit_compile: XLA-compile the resampling and intensity kernels (off for debugging).

    Returns:
        ``(images, masks)``: float32 images of the input shape; masks of their input dtype.

    Raises:
        TypeError: ``seed`` is None.
        ValueError: the spatial shape is not static or the mask does not match the image.
    """
    if seed is None:
        raise TypeError("augment_batch() needs an explicit seed tensor of shape [2]")
    images = tf.cast(tf.convert_to_tensor(images), tf.float32)
    shape = _spatial_shape(images, masks)
    drawn = sample_batch(aug, tf.convert_to_tensor(seed), tf.shape(images)[0], shape)
    return _run(aug.OPS, drawn, images, masks, jit_compile)


def op_seed(seed: tf.Tensor, name: str) -> tf.Tensor:
    """The stateless seed of op ``name`` for a step: ``seed`` folded in with a stable id of the name."""
    seed = tf.convert_to_tensor(seed)
    dtype = seed.dtype if seed.dtype in (tf.int32, tf.int64) else tf.int64
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, dtype), tf.constant(stable_id(name), dtype))


def sample_batch(aug: Augment, seed: tf.Tensor, batch: Any, shape: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Per-example parameters of each active op, ``{op name: batch params}``.

    Each op's batch params come from its ``tf_sample`` with :func:`op_seed`: tensors with a
    leading batch axis (e.g. ``affine``: ``matrix`` [B, 3, 3], ``translation`` [B, 3],
    ``rows`` [B, 3, 4]; ``gamma``: ``gamma`` [B]) and the static values its ``tf_apply`` needs.
    """
    shape3 = tuple(int(n) for n in shape)
    return {op.NAME: op.tf_sample(aug.settings(op), op_seed(seed, op.NAME), batch, shape3)  # type: ignore[arg-type]
            for op in aug.active_ops()}


def apply_params_batch(images: tf.Tensor, masks: tf.Tensor | None, params: Sequence[Params],
                       *, jit_compile: bool = True) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Renders given (numpy-sampled) parameters on a batch, one :class:`Params` per example.

    Args:
        images: ``[B, D, H, W, C]``.
        masks: optional ``[B, D, H, W]`` label volumes.
        params: ``B`` parameter sets sampled for this spatial shape, read by one op table;
            those with a quarter turn must share one plane.
        jit_compile: XLA-compile the resampling and intensity kernels.

    Returns:
        ``(images, masks)`` as :func:`augment_batch`.
    """
    images = tf.cast(tf.convert_to_tensor(images), tf.float32)
    shape = _spatial_shape(images, masks)
    if len(params) != images.shape[0] or any(p.shape != shape for p in params):
        raise ValueError(f"need one Params sampled for {shape} per example, got {len(params)}")
    tables = {tuple(op.NAME for op in p.table) for p in params}
    if len(tables) > 1:
        raise ValueError(f"Params of different op tables in one batch: {sorted(tables)}")
    table = params[0].table
    stacked = {}
    for op in table:
        values = [p.ops.get(op.NAME) for p in params]
        if any(v is not None for v in values):
            stacked[op.NAME] = op.tf_params(values, shape)
    return _run(table, stacked, images, masks, jit_compile)


def _run(table: Sequence[Any], batch_params: dict[str, dict[str, Any]], images: tf.Tensor,
         masks: tf.Tensor | None, jit_compile: bool) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Applies the ops of ``table`` that have batch parameters, in table order."""
    x, m = images, masks
    for op in table:
        if op.NAME in batch_params:
            x, m = op.tf_apply(batch_params[op.NAME], x, m, jit_compile)
    return x, m


def _spatial_shape(images: tf.Tensor, masks: tf.Tensor | None) -> tuple[int, int, int]:
    if images.shape.rank != 5 or None in images.shape[1:4]:
        raise ValueError(f"expected images [B, D, H, W, C] with a static spatial shape, got {images.shape}")
    shape = (int(images.shape[1]), int(images.shape[2]), int(images.shape[3]))
    if masks is not None and tuple(masks.shape[1:]) != shape:
        raise ValueError(f"masks of shape {masks.shape} do not match images of shape {images.shape}")
    return shape
