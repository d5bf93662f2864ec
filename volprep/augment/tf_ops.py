"""The online executor: batched, stateless augmentation in TensorFlow (GPU when there is one).

``augment_batch(images, masks, aug, seed)`` draws per-example parameters with stateless
random ops from the same distributions, in the same definitions, as
:func:`volprep.augment.spec.sample`, and applies them to the whole batch at once with plain
TF ops (no per-example Python loop, no ``numpy_function``): flips and quarter turns by
``tf.where`` over reversed/transposed tensors, the affine as the three 1D linear passes of
:func:`volprep.augment.spec.pull_passes` (each pass two gathers along one axis and a weighted
sum, XLA-compiled by default), masks by the same passes with nearest neighbour, the Fourier
shift with ``rfft3d``, then intensity, gamma and noise. ``apply_params_batch`` renders given,
numpy-sampled :class:`Params` with the same code: the tests hold it to
:func:`volprep.augment.numpy_ops.apply` (equal up to float32 rounding, noise aside).

Noise is drawn statelessly for the whole batch at once (from the step seed, or from the first
example's ``noise_seed`` in ``apply_params_batch``), so it is reproducible but not the field
numpy draws: noise equality between the executors is not required.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from volprep.augment.spec import SHEAR_INDEX, Augment, Params, pull_passes

_DRAWS = 13  # independent stateless streams, one per kind of draw


def augment_batch(images: tf.Tensor, masks: tf.Tensor | None, aug: Augment, seed: tf.Tensor,
                  *, jit_compile: bool = True) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Augments a batch with per-example parameters drawn statelessly from ``seed``.

    Args:
        images: ``[B, D, H, W, C]`` (static spatial shape); computed in float32.
        masks: optional ``[B, D, H, W]`` integer label volumes, or None.
        aug: the augmentation's distribution.
        seed: shape ``[2]`` integer tensor (e.g. ``(job seed, step)``); the same seed gives
            the same batch. Required: there is no global random state.
        jit_compile: XLA-compile the resampling (much faster; off for debugging).

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
    batch = tf.shape(images)[0]
    params = sample_batch(aug, tf.convert_to_tensor(seed), batch, shape)
    plane = aug.rot90_axes if aug.rot90_axes is not None and shape[aug.rot90_axes[0]] == shape[aug.rot90_axes[1]] else None
    return _apply(images, masks, params, flips=aug.flip_axes, plane=plane, affine=aug.has_affine,
                  fourier=aug.fourier_shift_vox > 0, linear=aug.intensity_scale != (1.0, 1.0) or aug.intensity_shift > 0,
                  gamma=aug.gamma != (1.0, 1.0), noise=aug.noise_std > 0, jit_compile=jit_compile)


def sample_batch(aug: Augment, seed: tf.Tensor, batch: Any, shape: Sequence[int]) -> dict[str, tf.Tensor]:
    """Per-example parameters as tensors, drawn like :func:`volprep.augment.spec.sample`.

    Returns a dict: ``flip`` [B, 3] bool, ``rot90_k`` [B] int32, ``matrix`` [B, 3, 3] and
    ``translation`` [B, 3] (float64), ``rows`` [B, 3, 4] float32 (the resampling passes),
    ``fourier_shift`` [B, 3], ``intensity_scale``, ``intensity_shift``, ``gamma``,
    ``noise_std`` [B] (float32) and ``noise_seed`` [2].
    """
    seeds = tf.random.experimental.stateless_split(seed, num=_DRAWS)

    def uniform(i: int, shape_: list[Any], low: Any, high: Any) -> tf.Tensor:
        u = tf.random.stateless_uniform(shape_, seed=seeds[i], dtype=tf.float64)
        return low + u * (high - low)

    flip_u = tf.random.stateless_uniform([batch, len(aug.flip_axes)], seed=seeds[0], dtype=tf.float64)
    flipped = flip_u < 0.5
    no_flip = tf.zeros([batch], tf.bool)
    flip = tf.stack([flipped[:, aug.flip_axes.index(a)] if a in aug.flip_axes else no_flip
                     for a in range(3)], axis=1)
    k = tf.random.stateless_uniform([batch], seed=seeds[1], minval=0, maxval=4, dtype=tf.int32)
    apply_affine = tf.random.stateless_uniform([batch], seed=seeds[2], dtype=tf.float64) < aug.p
    bounds = tf.constant(np.radians(np.asarray(aug.angles_deg)), tf.float64)
    angles = uniform(3, [batch, 3], -bounds, bounds)
    scale = uniform(4, [batch], *aug.scale)
    shear = uniform(5, [batch, 6], -aug.shear, aug.shear)
    translation = uniform(6, [batch, 3], -aug.shift_vox, aug.shift_vox)
    fourier = uniform(7, [batch, 3], -aug.fourier_shift_vox, aug.fourier_shift_vox)
    i_scale = uniform(8, [batch], *aug.intensity_scale)
    i_shift = uniform(9, [batch], -aug.intensity_shift, aug.intensity_shift)
    gamma = uniform(10, [batch], *aug.gamma)
    noise_std = uniform(11, [batch], 0.0, aug.noise_std)

    matrix = _affine_matrix(angles, shear, scale)
    matrix = tf.where(apply_affine[:, None, None], matrix, tf.eye(3, dtype=tf.float64))
    translation = tf.where(apply_affine[:, None], translation, tf.zeros_like(translation))
    f32 = tf.float32
    return {
        "flip": flip,
        "rot90_k": k,
        "matrix": matrix,
        "translation": translation,
        "rows": tf.cast(_pull_passes(matrix, translation, shape), f32),
        "fourier_shift": tf.cast(fourier, f32),
        "intensity_scale": tf.cast(i_scale, f32),
        "intensity_shift": tf.cast(i_shift, f32),
        "gamma": tf.cast(gamma, f32),
        "noise_std": tf.cast(noise_std, f32),
        "noise_seed": seeds[12],
    }


def apply_params_batch(images: tf.Tensor, masks: tf.Tensor | None, params: Sequence[Params],
                       *, jit_compile: bool = True) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Renders given (numpy-sampled) parameters on a batch, one :class:`Params` per example.

    Args:
        images: ``[B, D, H, W, C]``.
        masks: optional ``[B, D, H, W]`` label volumes.
        params: ``B`` parameter sets sampled for this spatial shape; those with a quarter
            turn must share one plane.
        jit_compile: XLA-compile the resampling.

    Returns:
        ``(images, masks)`` as :func:`augment_batch`.
    """
    images = tf.cast(tf.convert_to_tensor(images), tf.float32)
    shape = _spatial_shape(images, masks)
    if len(params) != images.shape[0] or any(p.shape != shape for p in params):
        raise ValueError(f"need one Params sampled for {shape} per example, got {len(params)}")
    planes = {p.rot90_axes for p in params if p.rot90_k}
    if len(planes) > 1:
        raise ValueError(f"quarter turns in different planes in one batch: {sorted(planes, key=str)}")
    f32 = tf.float32
    rows = np.stack([pull_passes(np.asarray(p.matrix), np.asarray(p.translation), shape) for p in params])
    seed = params[0].noise_seed
    tensors = {
        "flip": tf.constant([[a in p.flips for a in range(3)] for p in params], tf.bool),
        "rot90_k": tf.constant([p.rot90_k for p in params], tf.int32),
        "rows": tf.constant(rows, f32),
        "fourier_shift": tf.constant([p.fourier_shift for p in params], f32),
        "intensity_scale": tf.constant([p.intensity_scale for p in params], f32),
        "intensity_shift": tf.constant([p.intensity_shift for p in params], f32),
        "gamma": tf.constant([p.gamma for p in params], f32),
        "noise_std": tf.constant([p.noise_std for p in params], f32),
        "noise_seed": tf.constant([seed & 0x7FFFFFFF, (seed >> 31) & 0x7FFFFFFF], tf.int64),
    }
    return _apply(images, masks, tensors,
                  flips=tuple(a for a in range(3) if any(a in p.flips for p in params)),
                  plane=planes.pop() if planes else None,
                  affine=any(p.has_affine for p in params),
                  fourier=any(any(p.fourier_shift) for p in params),
                  linear=any(p.intensity_scale != 1.0 or p.intensity_shift != 0.0 for p in params),
                  gamma=any(p.gamma != 1.0 for p in params),
                  noise=any(p.noise_std > 0 for p in params), jit_compile=jit_compile)


def _spatial_shape(images: tf.Tensor, masks: tf.Tensor | None) -> tuple[int, int, int]:
    if images.shape.rank != 5 or None in images.shape[1:4]:
        raise ValueError(f"expected images [B, D, H, W, C] with a static spatial shape, got {images.shape}")
    shape = (int(images.shape[1]), int(images.shape[2]), int(images.shape[3]))
    if masks is not None and tuple(masks.shape[1:]) != shape:
        raise ValueError(f"masks of shape {masks.shape} do not match images of shape {images.shape}")
    return shape


def _affine_matrix(angles: tf.Tensor, shear: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    """Batched :func:`volprep.augment.spec.affine_matrix` ([B, 3, 3], float64)."""
    batch = tf.shape(angles)[0]
    eye = tf.eye(3, batch_shape=[batch], dtype=tf.float64)
    out = eye
    for axis in range(3):
        lo, hi = [a for a in range(3) if a != axis]
        c, s = tf.cos(angles[:, axis]), tf.sin(angles[:, axis])
        turn = tf.tensor_scatter_nd_update(
            eye, _entries(batch, [(lo, lo), (lo, hi), (hi, lo), (hi, hi)]),
            tf.reshape(tf.stack([c, -s, s, c], axis=1), [-1]))
        out = out @ turn
    shear_m = tf.tensor_scatter_nd_update(eye, _entries(batch, list(SHEAR_INDEX)), tf.reshape(shear, [-1]))
    return out @ shear_m * scale[:, None, None]


def _entries(batch: Any, cells: list[tuple[int, int]]) -> tf.Tensor:
    """Scatter indices ``[B * len(cells), 3]`` of the same cells in every matrix of a batch."""
    b = tf.repeat(tf.range(batch), len(cells))
    rc = tf.tile(tf.constant(cells, tf.int32), [batch, 1])
    return tf.concat([b[:, None], rc], axis=1)


def _pull_passes(matrix: tf.Tensor, translation: tf.Tensor, shape: Sequence[int]) -> tf.Tensor:
    """Batched :func:`volprep.augment.spec.pull_passes` ([B, 3, 4], float64)."""
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


def _apply(images: tf.Tensor, masks: tf.Tensor | None, p: dict[str, tf.Tensor], *, flips: Sequence[int],
           plane: tuple[int, int] | None, affine: bool, fourier: bool, linear: bool, gamma: bool,
           noise: bool, jit_compile: bool) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Applies stacked parameters; the flags (static) skip the stages no example uses."""
    x, m = images, masks
    for axis in flips:
        x = _select(p["flip"][:, axis], tf.reverse(x, [axis + 1]), x)
        m = None if m is None else _select(p["flip"][:, axis], tf.reverse(m, [axis + 1]), m)
    if plane is not None:
        x = _rot90(x, p["rot90_k"], plane)
        m = None if m is None else _rot90(m, p["rot90_k"], plane)
    if affine:
        x = _warp_image(x, p["rows"], jit_compile)
        m = None if m is None else _warp_mask(m, p["rows"], jit_compile)
    if fourier:
        x = _fourier_shift(x, p["fourier_shift"])
        m = None if m is None else _roll(m, p["fourier_shift"])
    if linear or gamma:
        intensity = _intensity_xla if jit_compile else _intensity
        x = intensity(x, p["intensity_scale"], p["intensity_shift"], p["gamma"], linear, gamma)
    if noise:
        field = tf.random.stateless_normal(tf.shape(x), seed=p["noise_seed"], dtype=tf.float32)
        x = x + p["noise_std"][:, None, None, None, None] * field
    return x, m


def _select(flag: tf.Tensor, yes: tf.Tensor, no: tf.Tensor) -> tf.Tensor:
    """Per-example ``tf.where`` of a [B] flag over two [B, ...] tensors."""
    return tf.where(tf.reshape(flag, [-1] + [1] * (yes.shape.rank - 1)), yes, no)


def _rot90(x: tf.Tensor, k: tf.Tensor, plane: tuple[int, int]) -> tf.Tensor:
    """``np.rot90(x[b], k[b], plane)`` per example: flips of the plane's axes, then a transpose."""
    a, b = plane[0] + 1, plane[1] + 1
    x = _select((k == 2) | (k == 3), tf.reverse(x, [a]), x)
    x = _select((k == 1) | (k == 2), tf.reverse(x, [b]), x)
    perm = list(range(x.shape.rank))
    perm[a], perm[b] = perm[b], perm[a]
    return _select(k % 2 == 1, tf.transpose(x, perm), x)


def _pass_coords(rows: tf.Tensor, axis: int, shape: Sequence[int]) -> tf.Tensor:
    """``rows[:, axis] . (q, 1)`` over the grid: [B, D, H, W] float32."""
    r = rows[:, axis]
    i, j, k = (tf.range(n, dtype=tf.float32) for n in shape)
    return (r[:, 0, None, None, None] * i[None, :, None, None]
            + r[:, 1, None, None, None] * j[None, None, :, None]
            + r[:, 2, None, None, None] * k[None, None, None, :]) + r[:, 3, None, None, None]


def _flat_base(shape: Sequence[int], axis: int, batch: Any) -> tuple[tf.Tensor, int]:
    """Flat indices of [B, D, H, W] with the coordinate along ``axis`` zeroed, and its stride."""
    d, h, w = shape
    strides = (h * w, w, 1)
    idx = [tf.range(n, dtype=tf.int32) * s for n, s in zip(shape, strides, strict=True)]
    idx[axis] = tf.zeros([shape[axis]], tf.int32)
    base = (tf.range(batch, dtype=tf.int32)[:, None, None, None] * (d * h * w)
            + idx[0][None, :, None, None] + idx[1][None, None, :, None] + idx[2][None, None, None, :])
    return base, strides[axis]


def _lerp_pass(x: tf.Tensor, coord: tf.Tensor, axis: int, fill: tf.Tensor) -> tf.Tensor:
    """``x`` [B, D, H, W, C] sampled along spatial ``axis`` at ``coord``; taps outside read ``fill``."""
    shape = x.shape[1:4]
    n = shape[axis]
    base, stride = _flat_base(shape, axis, tf.shape(x)[0])
    flat = tf.reshape(x, [-1, x.shape[4]])  # gathers whole channel rows
    floor = tf.floor(coord)
    frac = coord - floor
    i0 = tf.cast(floor, tf.int32)
    i1 = i0 + 1
    in0 = (i0 >= 0) & (i0 < n)
    in1 = (i1 >= 0) & (i1 < n)
    w0 = tf.where(in0, 1.0 - frac, 0.0)[..., None]
    w1 = tf.where(in1, frac, 0.0)[..., None]
    wout = (tf.where(in0, 0.0, 1.0 - frac) + tf.where(in1, 0.0, frac))[..., None]
    v0 = tf.gather(flat, base + tf.clip_by_value(i0, 0, n - 1) * stride)
    v1 = tf.gather(flat, base + tf.clip_by_value(i1, 0, n - 1) * stride)
    return w0 * v0 + w1 * v1 + wout * fill


def _nearest_pass(m: tf.Tensor, coord: tf.Tensor, axis: int) -> tf.Tensor:
    """``m`` [B, D, H, W] at the nearest index along spatial ``axis``; 0 outside."""
    shape = m.shape[1:4]
    n = shape[axis]
    base, stride = _flat_base(shape, axis, tf.shape(m)[0])
    idx = tf.cast(tf.floor(coord + 0.5), tf.int32)
    values = tf.gather(tf.reshape(m, [-1]), base + tf.clip_by_value(idx, 0, n - 1) * stride)
    return tf.where((idx >= 0) & (idx < n), values, tf.zeros_like(values))


def _image_pass(x: tf.Tensor, rows: tf.Tensor, axis: int, low: tf.Tensor) -> tf.Tensor:
    return _lerp_pass(x, _pass_coords(rows, axis, x.shape[1:4]), axis, low)


def _mask_pass(m: tf.Tensor, rows: tf.Tensor, axis: int) -> tf.Tensor:
    return _nearest_pass(m, _pass_coords(rows, axis, m.shape[1:4]), axis)


# One XLA cluster per pass: compiled together, XLA fuses a pass into the next one's gather
# operand and recomputes it per gathered element (measured 3x slower than separate passes).
_image_pass_xla = tf.function(_image_pass, jit_compile=True)
_mask_pass_xla = tf.function(_mask_pass, jit_compile=True)


def _warp_image(x: tf.Tensor, rows: tf.Tensor, jit_compile: bool = True) -> tf.Tensor:
    """The three linear passes, filling with each example's channel minimum."""
    one_pass = _image_pass_xla if jit_compile else _image_pass
    low = tf.reduce_min(x, axis=[1, 2, 3], keepdims=True)
    for axis in range(3):
        x = one_pass(x, rows, axis, low)
    return x


def _warp_mask(m: tf.Tensor, rows: tf.Tensor, jit_compile: bool = True) -> tf.Tensor:
    """The three nearest-neighbour passes, filling with 0."""
    one_pass = _mask_pass_xla if jit_compile else _mask_pass
    for axis in range(3):
        m = one_pass(m, rows, axis)
    return m


def _fourier_shift(x: tf.Tensor, shift: tf.Tensor) -> tf.Tensor:
    """Batched :func:`volprep.augment.numpy_ops.fourier_shift` (rfft3d phase ramp)."""
    shape = x.shape[1:4]
    channels_first = tf.transpose(x, [0, 4, 1, 2, 3])
    spectrum = tf.signal.rfft3d(channels_first)
    phase = tf.zeros([1, 1, 1, 1, 1], tf.float32)
    for axis, n in enumerate(shape):
        freq = np.fft.rfftfreq(n) if axis == 2 else np.fft.fftfreq(n)
        angle = -2.0 * math.pi * tf.constant(freq, tf.float32)[None, :] * shift[:, axis, None]
        dims = [-1, 1, 1, 1, 1]
        dims[axis + 2] = len(freq)
        phase = phase + tf.reshape(angle, dims)
    ramp = tf.complex(tf.cos(phase), tf.sin(phase))
    shifted = tf.signal.irfft3d(spectrum * ramp, fft_length=list(shape))
    return tf.transpose(shifted, [0, 2, 3, 4, 1])


def _roll(m: tf.Tensor, shift: tf.Tensor) -> tf.Tensor:
    """Rolls each example by its rounded shift (``floor(s + 0.5)``), circularly."""
    steps = tf.cast(tf.floor(shift + 0.5), tf.int32)
    for axis in range(3):
        n = m.shape[axis + 1]
        idx = tf.math.floormod(tf.range(n)[None, :] - steps[:, axis, None], n)
        m = tf.gather(m, idx, axis=axis + 1, batch_dims=1)
    return m


def _intensity(x: tf.Tensor, scale: tf.Tensor, shift: tf.Tensor, gamma: tf.Tensor,
               linear: bool, curve: bool) -> tf.Tensor:
    """Batched :func:`volprep.augment.numpy_ops.intensity` (gamma per example and channel)."""
    if linear:
        x = x * scale[:, None, None, None, None] + shift[:, None, None, None, None]
    if not curve:
        return x
    low = tf.reduce_min(x, axis=[1, 2, 3], keepdims=True)
    span = tf.reduce_max(x, axis=[1, 2, 3], keepdims=True) - low
    safe = tf.where(span > 0, span, tf.ones_like(span))
    unit = tf.clip_by_value((x - low) / safe, 0.0, 1.0)
    curved = low + span * tf.pow(unit, gamma[:, None, None, None, None])
    return tf.where(span > 0, curved, x)


_intensity_xla = tf.function(_intensity, jit_compile=True)  # measured 2.3x faster for gamma
