"""One description of a 3D augmentation, and the sampling of its parameters.

This module owns the *spec* half of the "one transform spec, two executors" rule.
:class:`Augment` is the configured distribution (the ``[augment]`` TOML table, validated in
``__post_init__``); :func:`sample` draws one concrete :class:`Params` from it with an explicit
``numpy.random.Generator`` (there is no global random state, and no default generator);
:mod:`volprep.augment.numpy_ops` (offline, per volume) and :mod:`volprep.augment.tf_ops`
(online, batched, stateless) apply a :class:`Params` deterministically, and tests hold the two
to each other. ``tf_ops`` draws from the same distributions with stateless TF ops, in the same
order of definitions as :func:`sample`.

Conventions (shared by both executors):

* Voxel coordinates are ``(i, j, k)`` = array axes ``(0, 1, 2)`` of a ``[D, H, W, C]`` image;
  the centre of the grid is ``(shape - 1) / 2``.
* ``Params.matrix`` ``A`` and ``Params.translation`` ``t`` are the *forward* map of the
  content: the voxel at ``x`` moves to ``centre + A (x - centre) + t``. ``A = R @ S @ s I``
  (rotation, shear, isotropic scale), so ``scale > 1`` enlarges the anatomy and ``t`` moves it
  by ``+t`` voxels, like ``np.roll``. The executors resample by pulling through the inverse.
* The rotation is ``R = R0(a0) @ R1(a1) @ R2(a2)``, ``Ri`` turning about axis ``i`` (in the
  plane of the two other axes, from the lower to the higher axis); the shear ``S`` is the
  identity plus six off-diagonal terms in the order (0,1), (0,2), (1,0), (1,2), (2,0), (2,1).
* ``rot90`` turns by ``k`` quarter turns in the plane ``axes`` exactly like
  ``np.rot90(x, k, axes)``; it is sampled only when the two axes have the same size (a
  quarter turn of a non-square plane would change the shape), else ``k = 0``.
* ``p`` gates only the affine (matrix and translation): with probability ``1 - p`` the
  sampled matrix is the identity and the translation zero.
* Gamma is applied per channel to the intensities min-max normalised over the volume, then
  mapped back to the same min and max: ``lo + (hi - lo) * ((x - lo) / (hi - lo)) ** gamma``.
* Every draw is made whatever the configured values (a zero range draws a constant), so the
  sequence of draws only depends on ``len(flip_axes)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from volprep.errors import ConfigError

MAX_ROTATE_DEG = 45.0
"""Largest ``rotate_deg``: larger turns are what ``rot90_axes`` is for. The three-pass
resampling (:func:`pull_passes`) matches direct trilinear interpolation in accuracy up to
about 20 degrees; at 45 degrees about every axis its worst interior error against the exact
rotated field is about twice trilinear's (~1% vs ~0.5% of the range on a smooth volume;
``benchmarks/bench_augment.py`` measures it)."""
MAX_SHEAR = 0.25
PARAMS_VERSION = 1


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any, key: str, *, minimum: float | None = None, maximum: float | None = None) -> float:
    if not _is_number(value):
        raise ConfigError(None, f"augment.{key}", f"expected a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(None, f"augment.{key}", f"must be >= {minimum:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(None, f"augment.{key}", f"must be <= {maximum:g}, got {value!r}")
    return float(value)


def _range(value: Any, key: str, *, positive: bool) -> tuple[float, float]:
    items = list(value) if isinstance(value, list | tuple) else None
    if items is None or len(items) != 2 or not all(_is_number(v) for v in items):
        raise ConfigError(None, f"augment.{key}", f"expected [low, high], got {value!r}")
    low, high = float(items[0]), float(items[1])
    if low > high:
        raise ConfigError(None, f"augment.{key}", f"need low <= high, got {value!r}")
    if positive and low <= 0:
        raise ConfigError(None, f"augment.{key}", f"values must be > 0, got {value!r}")
    return low, high


def _axis(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2:
        raise ConfigError(None, f"augment.{key}", f"axes are spatial axes 0, 1 or 2, got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class Augment:
    """The distribution of a 3D augmentation (the ``[augment]`` table).

    Attributes:
        flip_axes: spatial axes each flipped with probability 0.5.
        rot90_axes: a plane ``(a, b)`` turned by a random ``k`` in 0..3 quarter turns, only
            when the two axes have equal size (else skipped).
        rotate_deg: uniform in ``±deg`` about each axis (one value, or one per axis), <= 45.
        scale: isotropic scale, uniform in ``[low, high]`` (> 0).
        shear: each of the six off-diagonal shear terms uniform in ``±shear`` (<= 0.25).
        shift_vox: translation uniform in ``±shift_vox`` voxels per axis, inside the affine.
        fourier_shift_vox: sub-voxel translation uniform in ``±`` per axis, applied as a
            Fourier phase ramp (exact for band-limited data, circular).
        intensity_scale: multiplicative intensity factor, uniform in ``[low, high]``.
        intensity_shift: additive intensity offset, uniform in ``±``.
        gamma: gamma exponent, uniform in ``[low, high]`` (> 0), on min-max normalised values.
        noise_std: Gaussian noise whose std is uniform in ``[0, noise_std]``.
        p: probability that the spatial affine (matrix and translation) is applied at all.
        seed: the seed online augmentation falls back to when the loader is given none.
    """

    flip_axes: tuple[int, ...] = ()
    rot90_axes: tuple[int, int] | None = None
    rotate_deg: float | tuple[float, float, float] = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    shear: float = 0.0
    shift_vox: float = 0.0
    fourier_shift_vox: float = 0.0
    intensity_scale: tuple[float, float] = (1.0, 1.0)
    intensity_shift: float = 0.0
    gamma: tuple[float, float] = (1.0, 1.0)
    noise_std: float = 0.0
    p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__
        if not isinstance(self.flip_axes, list | tuple):
            raise ConfigError(None, "augment.flip_axes", f"expected a list of axes like [0, 1], got {self.flip_axes!r}")
        flips = tuple(_axis(a, "flip_axes") for a in self.flip_axes)
        if len(set(flips)) != len(flips):
            raise ConfigError(None, "augment.flip_axes", f"an axis is listed twice: {self.flip_axes!r}")
        put(self, "flip_axes", flips)
        if self.rot90_axes is not None:
            if not isinstance(self.rot90_axes, list | tuple) or len(self.rot90_axes) != 2:
                raise ConfigError(None, "augment.rot90_axes", f"expected two axes like [0, 1], got {self.rot90_axes!r}")
            plane = (_axis(self.rot90_axes[0], "rot90_axes"), _axis(self.rot90_axes[1], "rot90_axes"))
            if plane[0] == plane[1]:
                raise ConfigError(None, "augment.rot90_axes", f"the two axes must differ, got {self.rot90_axes!r}")
            put(self, "rot90_axes", plane)
        if isinstance(self.rotate_deg, list | tuple):
            if len(self.rotate_deg) != 3:
                raise ConfigError(None, "augment.rotate_deg", f"expected a number or a list of three, got {self.rotate_deg!r}")
            put(self, "rotate_deg", tuple(_number(v, "rotate_deg", minimum=0, maximum=MAX_ROTATE_DEG)
                                          for v in self.rotate_deg))
        else:
            put(self, "rotate_deg", _number(self.rotate_deg, "rotate_deg", minimum=0, maximum=MAX_ROTATE_DEG))
        put(self, "scale", _range(self.scale, "scale", positive=True))
        put(self, "shear", _number(self.shear, "shear", minimum=0, maximum=MAX_SHEAR))
        put(self, "shift_vox", _number(self.shift_vox, "shift_vox", minimum=0))
        put(self, "fourier_shift_vox", _number(self.fourier_shift_vox, "fourier_shift_vox", minimum=0))
        put(self, "intensity_scale", _range(self.intensity_scale, "intensity_scale", positive=False))
        put(self, "intensity_shift", _number(self.intensity_shift, "intensity_shift", minimum=0))
        put(self, "gamma", _range(self.gamma, "gamma", positive=True))
        put(self, "noise_std", _number(self.noise_std, "noise_std", minimum=0))
        put(self, "p", _number(self.p, "p", minimum=0, maximum=1))
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise ConfigError(None, "augment.seed", f"expected a non-negative integer, got {self.seed!r}")

    @property
    def angles_deg(self) -> tuple[float, float, float]:
        """``rotate_deg`` as one bound per axis."""
        r = self.rotate_deg
        return (r, r, r) if isinstance(r, float) else r  # type: ignore[return-value]

    @property
    def has_affine(self) -> bool:
        """Whether the sampled affine can differ from the identity."""
        return self.p > 0 and (any(self.angles_deg) or self.scale != (1.0, 1.0)
                               or self.shear > 0 or self.shift_vox > 0)

    @property
    def has_intensity(self) -> bool:
        """Whether intensity scale, shift or gamma can change a value."""
        return self.intensity_scale != (1.0, 1.0) or self.intensity_shift > 0 or self.gamma != (1.0, 1.0)

    @property
    def is_identity(self) -> bool:
        """True when every sample leaves every volume unchanged."""
        return not (self.flip_axes or self.rot90_axes or self.has_affine or self.fourier_shift_vox > 0
                    or self.has_intensity or self.noise_std > 0)


@dataclasses.dataclass(frozen=True)
class Params:
    """One sampled augmentation: what :func:`numpy_ops.apply` renders, recorded as JSON.

    Attributes:
        shape: the spatial shape ``(D, H, W)`` the parameters were sampled for.
        flips: the axes actually flipped (in ``flip_axes`` order).
        rot90_k: quarter turns (0..3) in the plane ``rot90_axes``.
        rot90_axes: the plane of the quarter turns, or None.
        matrix: 3x3 forward matrix about the grid centre (rotation @ shear @ scale).
        translation: forward translation in voxels, applied with the matrix.
        fourier_shift: circular sub-voxel translation in voxels (phase ramp).
        intensity_scale: multiplicative factor.
        intensity_shift: additive offset.
        gamma: gamma exponent on min-max normalised intensities.
        noise_std: std of the Gaussian noise.
        noise_seed: seed of ``np.random.default_rng`` drawing the noise field (numpy only).
    """

    shape: tuple[int, int, int]
    flips: tuple[int, ...] = ()
    rot90_k: int = 0
    rot90_axes: tuple[int, int] | None = None
    matrix: tuple[tuple[float, float, float], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    fourier_shift: tuple[float, float, float] = (0.0, 0.0, 0.0)
    intensity_scale: float = 1.0
    intensity_shift: float = 0.0
    gamma: float = 1.0
    noise_std: float = 0.0
    noise_seed: int = 0

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "shape", tuple(int(v) for v in self.shape))
        put(self, "flips", tuple(int(v) for v in self.flips))
        put(self, "rot90_k", int(self.rot90_k))
        if self.rot90_axes is not None:
            put(self, "rot90_axes", tuple(int(v) for v in self.rot90_axes))
        put(self, "matrix", tuple(tuple(float(v) for v in row) for row in self.matrix))
        for name in ("translation", "fourier_shift"):
            put(self, name, tuple(float(v) for v in getattr(self, name)))
        for name in ("intensity_scale", "intensity_shift", "gamma", "noise_std"):
            put(self, name, float(getattr(self, name)))
        put(self, "noise_seed", int(self.noise_seed))
        if len(self.shape) != 3 or len(self.matrix) != 3 or any(len(r) != 3 for r in self.matrix):
            raise ValueError(f"Params need a 3D shape and a 3x3 matrix, got {self.shape} and {self.matrix}")

    @property
    def has_affine(self) -> bool:
        """Whether the affine differs from the identity."""
        return self.matrix != Params.__dataclass_fields__["matrix"].default or any(self.translation)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (lists for tuples), what :meth:`to_json` writes."""
        out = dataclasses.asdict(self)
        out["version"] = PARAMS_VERSION
        return json.loads(json.dumps(out))

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no spaces, floats in Python's shortest round-trip repr."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Params:
        """Inverse of :meth:`to_dict`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        version = data.get("version", PARAMS_VERSION)
        if version != PARAMS_VERSION:
            raise ValueError(f"augmentation parameters of version {version!r}, expected {PARAMS_VERSION}")
        unknown = sorted(set(data) - fields - {"version"})
        if unknown:
            raise ValueError(f"unknown augmentation parameter(s): {', '.join(unknown)}")
        return cls(**{k: v for k, v in data.items() if k in fields})

    @classmethod
    def from_json(cls, text: str | bytes) -> Params:
        """Inverse of :meth:`to_json` (exact: floats round-trip)."""
        return cls.from_dict(json.loads(text))


def rotation_matrix(angles_rad: Sequence[float] | np.ndarray) -> np.ndarray:
    """``R0(a0) @ R1(a1) @ R2(a2)``, ``Ri`` a turn about axis ``i`` (float64, 3x3)."""
    out = np.eye(3)
    for axis, angle in enumerate(angles_rad):
        lo, hi = [a for a in range(3) if a != axis]
        turn = np.eye(3)
        c, s = math.cos(angle), math.sin(angle)
        turn[lo, lo], turn[lo, hi], turn[hi, lo], turn[hi, hi] = c, -s, s, c
        out = out @ turn
    return out


SHEAR_INDEX = ((0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1))


def affine_matrix(angles_rad: Sequence[float] | np.ndarray, shear: Sequence[float] | np.ndarray, scale: float) -> np.ndarray:
    """The forward matrix ``R @ S @ scale * I`` (float64, 3x3)."""
    shear_m = np.eye(3)
    for (r, c), v in zip(SHEAR_INDEX, shear, strict=True):
        shear_m[r, c] = v
    return rotation_matrix(angles_rad) @ shear_m @ (scale * np.eye(3))


def sample(aug: Augment, rng: np.random.Generator, shape: Sequence[int]) -> Params:
    """Draws one :class:`Params` from ``aug`` for a volume of spatial ``shape``.

    Args:
        aug: the augmentation's distribution.
        rng: an explicit generator, e.g. ``volprep.seeds.rng_for(job_seed, case_id, copy)``;
            there is no default: an augmentation never draws from global state.
        shape: the spatial shape ``(D, H, W)`` (a trailing channel axis is ignored).

    Returns:
        The sampled parameters; the same generator state gives the same parameters.

    Raises:
        TypeError: ``rng`` is not a ``numpy.random.Generator``.
        ValueError: ``shape`` is not 3D.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"sample() needs an explicit numpy.random.Generator, got {type(rng).__name__}")
    shape3 = tuple(int(v) for v in shape)[:3]
    if len(shape3) != 3 or min(shape3) < 1:
        raise ValueError(f"expected a spatial shape (D, H, W), got {tuple(shape)}")
    flip_draw = rng.random(len(aug.flip_axes))
    k = int(rng.integers(0, 4))
    apply_affine = bool(rng.random() < aug.p)
    bounds = np.radians(np.asarray(aug.angles_deg))
    angles = rng.uniform(-bounds, bounds)
    scale = rng.uniform(*aug.scale)
    shear = rng.uniform(-aug.shear, aug.shear, 6)
    translation = rng.uniform(-aug.shift_vox, aug.shift_vox, 3)
    fourier = rng.uniform(-aug.fourier_shift_vox, aug.fourier_shift_vox, 3)
    i_scale = rng.uniform(*aug.intensity_scale)
    i_shift = rng.uniform(-aug.intensity_shift, aug.intensity_shift)
    gamma = rng.uniform(*aug.gamma)
    noise_std = rng.uniform(0.0, aug.noise_std)
    noise_seed = int(rng.integers(0, 2**63 - 1))

    plane = aug.rot90_axes
    if plane is None or shape3[plane[0]] != shape3[plane[1]]:
        k = 0
    matrix = affine_matrix(angles, shear, scale) if apply_affine else np.eye(3)
    return Params(
        shape=shape3,  # type: ignore[arg-type]
        flips=tuple(a for a, u in zip(aug.flip_axes, flip_draw, strict=True) if u < 0.5),
        rot90_k=k,
        rot90_axes=plane if k else None,
        matrix=tuple(tuple(row) for row in matrix.tolist()),
        translation=tuple(translation.tolist()) if apply_affine else (0.0, 0.0, 0.0),  # type: ignore[arg-type]
        fourier_shift=tuple(fourier.tolist()),  # type: ignore[arg-type]
        intensity_scale=i_scale,
        intensity_shift=i_shift,
        gamma=gamma,
        noise_std=noise_std,
        noise_seed=noise_seed,
    )


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
