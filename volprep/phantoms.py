"""Synthetic head phantoms: anatomy and acquisition parameters, and their rendering.

Pure functions of explicit generators: an :class:`Anatomy` (head size and shape,
cortical folding, the lesion: what a *subject* is) and an :class:`Acquisition`
(intensity scale, bias field, Rician noise: what a *scan* adds) are sampled from seeded
streams, then rendered in a RAS voxel grid (i runs Right, j Anterior, k Superior) by
:func:`head_phantom`. The demo dataset (:mod:`volprep.demo`) writes them like real data;
the benchmarks use them for bigger volumes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

CLASS_NAMES: tuple[str, ...] = ("glioma", "meningioma", "metastasis")
"""Lesion classes, sorted by name so that a class id numbered by sorted name (as dataset
discovery does) equals the mask value minus one: class ``c`` has mask value ``c + 1``."""

GLIOMA, MENINGIOMA, METASTASIS = range(3)

# Head semi-axes (L-R, A-P, S-I) relative to the A-P one.
_HEAD_PROPORTIONS = np.array([0.80, 1.0, 0.86])
# Tissue intensity against the layer coordinate t (relative to white matter = 1):
# t = r_brain (< _BRAIN_EDGE) inside the brain, t = 1 + r_head outside it, where r is the
# normalised ellipsoidal radius (1 = the scalp surface).
_BRAIN_EDGE = 0.82
_PROFILE_T = np.array(
    [0.0, 0.60, 0.66, 0.78, _BRAIN_EDGE,  # white matter, grey matter, CSF
     1.0, 1.845, 1.86, 1.905, 1.925, 1.975, 2.0, 2.02, 4.0]  # CSF, skull, scalp fat, air
)
_PROFILE_V = np.array(
    [1.0, 1.0, 0.62, 0.62, 0.22,
     0.22, 0.22, 0.06, 0.06, 0.92, 0.92, 0.0, 0.0, 0.0]
)
_LUT_SIZE = 8192  # layer-profile lookup table over t in [0, _LUT_MAX)
_LUT_MAX = 2.05
_CSF = 0.22
_FIDUCIAL = 3.0  # a vitamin-E capsule taped on the right of the head: an orientation landmark


@dataclasses.dataclass(frozen=True)
class Blob:
    """One lesion component, in normalised head coordinates (1 = the scalp surface)."""

    center: tuple[float, float, float]
    radius: float
    phase: tuple[float, float, float] = (0.0, 0.0, 0.0)  # shape irregularity (glioma)


@dataclasses.dataclass(frozen=True)
class Anatomy:
    """What a subject is: everything a second scan of the same head shares."""

    semi_axes_mm: tuple[float, float, float]  # scalp ellipsoid, (L-R, A-P, S-I)
    center_mm: tuple[float, float, float]  # head centre relative to the grid centre
    brain_shift: float  # the brain sits this much (normalised) superior in the skull
    fold_freq: tuple[float, float, float]  # cortical folding (radians per normalised unit)
    fold_phase: tuple[float, float, float]
    fold_amp: float
    lesion_class: int | None
    blobs: tuple[Blob, ...]


@dataclasses.dataclass(frozen=True)
class Acquisition:
    """What a scan adds on top of the anatomy."""

    white_matter: float  # intensity of white matter before bias and noise
    bias: tuple[float, ...]  # x, x2, y, y2, z, z2, xy coefficients of the bias polynomial
    noise: float  # Rician sigma as a fraction of white matter


def _unit_vector(rng: np.random.Generator, min_z: float = -1.0) -> np.ndarray:
    """A random direction, redrawn until its superior component is at least ``min_z``."""
    while True:
        v = rng.standard_normal(3)
        v /= np.linalg.norm(v)
        if v[2] >= min_z:
            return v


def _lesion_blobs(rng: np.random.Generator, lesion_class: int) -> tuple[Blob, ...]:
    if lesion_class == MENINGIOMA:  # extra-axial, dural based, on the upper convexity
        center = _unit_vector(rng, min_z=-0.1) * 0.80
        return (Blob(tuple(center.tolist()), float(rng.uniform(0.15, 0.22))),)
    if lesion_class == GLIOMA:  # one large, irregular, deep mass
        center = _unit_vector(rng) * rng.uniform(0.15, 0.35)
        phase = tuple(rng.uniform(0, 2 * np.pi, 3).tolist())
        return (Blob(tuple(center.tolist()), float(rng.uniform(0.25, 0.32)), phase),)
    if lesion_class == METASTASIS:  # a few small spots near the grey/white junction
        count = int(rng.integers(2, 5))
        return tuple(
            Blob(
                tuple((_unit_vector(rng, min_z=-0.3) * rng.uniform(0.5, 0.66)).tolist()),
                float(rng.uniform(0.05, 0.08)),
            )
            for _ in range(count)
        )
    raise ValueError(f"lesion_class must be None or 0..{len(CLASS_NAMES) - 1}, got {lesion_class!r}")


def sample_anatomy(
    rng: np.random.Generator, fov_mm: tuple[float, float, float], lesion_class: int | None
) -> Anatomy:
    """Draws a head that fits a field of view, and its lesion.

    Args:
        rng: the subject's random generator.
        fov_mm: field of view (R, A, S extents in mm) the head and its fiducial must fit in.
        lesion_class: ``None`` for a healthy head, else an index into ``CLASS_NAMES``.

    Returns:
        The anatomy, in millimetres and normalised head coordinates.
    """
    if lesion_class is not None and not 0 <= lesion_class < len(CLASS_NAMES):
        raise ValueError(f"lesion_class must be None or 0..{len(CLASS_NAMES) - 1}, got {lesion_class!r}")
    half = np.asarray(fov_mm, dtype=float) / 2
    fill = rng.uniform(0.84, 0.92)
    # The fiducial sits just outside the scalp on the right: leave it room along L-R.
    room = _HEAD_PROPORTIONS * np.array([1.1, 1.0, 1.0])
    ap = fill * float(np.min(half / room))
    semi = _HEAD_PROPORTIONS * ap
    slack = np.maximum(half - semi * np.array([1.1, 1.0, 1.0]), 0.0)
    center = rng.uniform(-0.4, 0.4, 3) * slack
    blobs = _lesion_blobs(rng, lesion_class) if lesion_class is not None else ()
    return Anatomy(
        semi_axes_mm=tuple(semi.tolist()),
        center_mm=tuple(center.tolist()),
        brain_shift=float(rng.uniform(0.02, 0.05)),
        fold_freq=tuple(rng.uniform(9.0, 14.0, 3).tolist()),
        fold_phase=tuple(rng.uniform(0, 2 * np.pi, 3).tolist()),
        fold_amp=float(rng.uniform(0.02, 0.035)),
        lesion_class=lesion_class,
        blobs=blobs,
    )


def sample_acquisition(rng: np.random.Generator) -> Acquisition:
    """Draws a scan's intensity scale, smooth bias field and noise level."""
    bias = np.concatenate([rng.uniform(-0.1, 0.1, 6), rng.uniform(-0.05, 0.05, 1)])
    return Acquisition(
        white_matter=float(rng.uniform(900.0, 1200.0)),
        bias=tuple(bias.tolist()),
        noise=float(rng.uniform(0.02, 0.04)),
    )


def _axis_mm(n: int, spacing: float) -> np.ndarray:
    """Voxel centres along one axis, in mm from the grid centre."""
    return ((np.arange(n) - (n - 1) / 2) * spacing).astype(np.float32)


def _box(
    axes_mm: tuple[np.ndarray, ...], center_mm: np.ndarray, semi_mm: np.ndarray, margin: float
) -> tuple[tuple[slice, ...], np.ndarray, list[np.ndarray]]:
    """The voxel box around an ellipsoid, the normalised distance ``d`` and axis coordinates.

    The box always holds the voxel nearest the centre, so a blob smaller than a voxel still
    touches one; ``d < 1`` is the ellipsoid, the coordinates are 1 on its surface.
    """
    slices = []
    local = []
    for coords, c, s in zip(axes_mm, center_mm, semi_mm, strict=True):
        lo = int(np.searchsorted(coords, c - s * margin, side="left"))
        hi = int(np.searchsorted(coords, c + s * margin, side="right"))
        nearest = int(np.argmin(np.abs(coords - c)))
        lo, hi = min(lo, nearest), max(hi, nearest + 1)
        slices.append(slice(lo, hi))
        local.append(((coords[lo:hi] - c) / s).astype(np.float32))
    lx, ly, lz = local
    d2 = (lx[:, None, None] ** 2 + ly[None, :, None] ** 2) + lz[None, None, :] ** 2
    return tuple(slices), np.sqrt(d2), local


def _ensure_touch(inside: np.ndarray, d: np.ndarray) -> np.ndarray:
    """A blob mask that holds at least the voxel nearest the blob's centre."""
    if not inside.any():
        inside = inside.copy()
        inside.flat[int(np.argmin(d))] = True
    return inside


def _layer_lut() -> np.ndarray:
    t = (np.arange(_LUT_SIZE) + 0.5) * (_LUT_MAX / _LUT_SIZE)
    return np.interp(t, _PROFILE_T, _PROFILE_V).astype(np.float32)


_LUT = _layer_lut()


def _render_anatomy(
    anatomy: Anatomy, shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free tissue map (white matter = 1, float32) and lesion mask of a RAS grid."""
    semi = np.asarray(anatomy.semi_axes_mm, dtype=np.float32)
    center = np.asarray(anatomy.center_mm, dtype=np.float32)
    axes_mm = tuple(_axis_mm(n, s) for n, s in zip(shape, spacing, strict=True))
    u, v, w = ((a - c) / s for a, c, s in zip(axes_mm, center, semi, strict=True))

    uv2 = u[:, None] ** 2 + v[None, :] ** 2
    r = np.sqrt(uv2[:, :, None] + (w**2)[None, None, :])
    wb = w - np.float32(anatomy.brain_shift)
    rb = np.sqrt(uv2[:, :, None] + (wb**2)[None, None, :])
    fx, fy, fz = anatomy.fold_freq
    px, py, pz = anatomy.fold_phase
    fold_xy = np.sin(fx * u + px)[:, None] * np.sin(fy * v + py)[None, :]
    fold_z = np.float32(anatomy.fold_amp) * np.sin(fz * wb + pz)
    rb += fold_xy[:, :, None] * fold_z[None, None, :]
    # One layer coordinate for brain and outer layers, so one table lookup draws them all.
    r += 1.0
    np.copyto(r, rb, where=rb < _BRAIN_EDGE)
    del rb
    r *= np.float32(_LUT_SIZE / _LUT_MAX)
    index = r.astype(np.int32)
    del r
    np.minimum(index, _LUT_SIZE - 1, out=index)
    tissue = _LUT[index]
    del index

    def ellipsoid(
        c_norm: tuple[float, float, float], s_norm: float | np.ndarray, margin: float,
        shift: float = 0.0,
    ) -> tuple[tuple[slice, ...], np.ndarray, list[np.ndarray]]:
        c_mm = center + semi * (np.asarray(c_norm, dtype=np.float32) + np.array([0, 0, shift]))
        return _box(axes_mm, c_mm, semi * np.float32(s_norm), margin)

    # Lateral ventricles: two CSF ellipsoids, soft edged.
    for side in (-1.0, 1.0):
        box, d, _ = ellipsoid((0.09 * side, 0.02, 0.12), np.array([0.06, 0.28, 0.12]), 1.3,
                              anatomy.brain_shift)
        weight = np.clip((1.15 - d) / 0.3, 0.0, 1.0)
        tissue[box] += weight * (_CSF - tissue[box])
    # Eyes, anterior and inferior: dark vitreous in bright orbital fat.
    for side in (-1.0, 1.0):
        box, d, _ = ellipsoid((0.33 * side, 0.72, -0.38), 0.13, 1.4)
        region = tissue[box]
        region[d < 1.35] = 0.9
        region[d < 1.0] = 0.12
    # Fiducial capsule taped on the right side of the head.
    box, d, _ = ellipsoid((1.05, 0.0, 0.25), 0.035, 1.5)
    tissue[box][_ensure_touch(d < 1.0, d)] = _FIDUCIAL

    mask = np.zeros(shape, dtype=np.uint8)
    if anatomy.lesion_class is None:
        return tissue, mask
    value = np.uint8(anatomy.lesion_class + 1)
    for blob in anatomy.blobs:
        # Meningiomas hang from the skull (head coordinates); the rest sit in the brain.
        shift = 0.0 if anatomy.lesion_class == MENINGIOMA else anatomy.brain_shift
        box, d, (lx, ly, lz) = ellipsoid(blob.center, blob.radius, 1.3, shift)
        region = tissue[box]
        if anatomy.lesion_class == MENINGIOMA:  # homogeneous, brightly enhancing, stops at the skull
            r_box = np.sqrt(uv2[box[0], box[1]][:, :, None] + (w[box[2]] ** 2)[None, None, :])
            inside = (d < 1.0) & (r_box < 0.85)
            region[inside] = 1.3
        elif anatomy.lesion_class == GLIOMA:  # ring enhancing, necrotic core, diffuse hyperintensity
            p0, p1, p2 = blob.phase
            wobble = (np.sin(3.5 * lx + p0)[:, None] * np.sin(3.5 * ly + p1)[None, :])[:, :, None]
            de = d + 0.2 * wobble * np.sin(3.5 * lz + p2)[None, None, :]
            halo = np.clip((1.0 - de) / 0.3, 0.0, 1.0)
            region += halo * (1.25 - region)
            region[(de >= 0.42) & (de < 0.62)] = 1.45
            region[de < 0.42] = 0.35
            inside = de < 0.9
        else:  # small, solid, brightly enhancing spots
            inside = d < 1.0
            region[inside] = 1.5
        mask[box][_ensure_touch(inside, d)] = value
    return tissue, mask


def _apply_acquisition(
    tissue: np.ndarray, acq: Acquisition, rng: np.random.Generator
) -> np.ndarray:
    """Bias field, intensity scale and Rician noise, rounded to int16 (consumes ``tissue``)."""
    nx, ny, nz = tissue.shape
    px, py, pz = (np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in (nx, ny, nz))
    bx1, bx2, by1, by2, bz1, bz2, bxy = (np.float32(b) for b in acq.bias)
    bx = bx1 * px + bx2 * (px**2 - np.float32(1 / 3))
    by = by1 * py + by2 * (py**2 - np.float32(1 / 3))
    bz = bz1 * pz + bz2 * (pz**2 - np.float32(1 / 3))
    plane = np.float32(1.0) + bx[:, None] + by[None, :] + bxy * px[:, None] * py[None, :]
    bias = plane[:, :, None] + bz[None, None, :]
    np.clip(bias, 0.75, 1.25, out=bias)
    bias *= np.float32(acq.white_matter)
    tissue *= bias
    del bias
    sigma = np.float32(acq.noise * acq.white_matter)
    noise = rng.standard_normal(tissue.shape, dtype=np.float32)
    noise *= sigma
    tissue += noise
    tissue *= tissue
    noise = rng.standard_normal(tissue.shape, dtype=np.float32)
    noise *= sigma
    noise *= noise
    tissue += noise
    del noise
    np.sqrt(tissue, out=tissue)
    np.rint(tissue, out=tissue)
    np.minimum(tissue, np.iinfo(np.int16).max, out=tissue)
    return tissue.astype(np.int16)


def head_phantom(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
    lesion_class: int | None = None,
    *,
    anatomy: Anatomy | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic T1-weighted head in a RAS voxel grid.

    Scalp, skull, CSF, grey and white matter are ellipsoidal layers (the cortex folded by a
    smooth wobble), with lateral ventricles, eyes and a bright fiducial on the right. A
    lesion's look depends on its class: a homogeneous bright dural-based mass (meningioma),
    an irregular ring-enhancing mass with a necrotic core and diffuse hyperintensity
    (glioma), or a few small bright spots (metastasis). A smooth multiplicative bias field
    and Rician noise ``sqrt((s + n1)^2 + n2^2)`` finish it.

    Args:
        shape: grid shape ``(i, j, k)``; i runs Right, j Anterior, k Superior.
        spacing: voxel size in mm along i, j, k.
        rng: the only source of randomness; the anatomy is drawn first (unless given),
            then the acquisition, then the noise.
        lesion_class: ``None`` for a healthy head, else an index into ``CLASS_NAMES``.
        anatomy: a subject drawn earlier with :func:`sample_anatomy` (a second scan of the
            same head); its ``lesion_class`` must match ``lesion_class`` when both are given.

    Returns:
        ``(image, mask)``: C-ordered ``int16`` intensities and a ``uint8`` mask whose lesion
        voxels hold ``lesion_class + 1`` (all zero for a healthy head).
    """
    shape = tuple(int(n) for n in shape)  # type: ignore[assignment]
    spacing = tuple(float(s) for s in spacing)  # type: ignore[assignment]
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive sizes, got {shape!r}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive sizes in mm, got {spacing!r}")
    if anatomy is None:
        fov = tuple(n * s for n, s in zip(shape, spacing, strict=True))
        anatomy = sample_anatomy(rng, fov, lesion_class)  # type: ignore[arg-type]
    elif lesion_class is not None and lesion_class != anatomy.lesion_class:
        raise ValueError(
            f"lesion_class {lesion_class} disagrees with the anatomy's {anatomy.lesion_class}"
        )
    acquisition = sample_acquisition(rng)
    tissue, mask = _render_anatomy(anatomy, shape, spacing)  # type: ignore[arg-type]
    return _apply_acquisition(tissue, acquisition, rng), mask


# --------------------------------------------------------------------------- writing


