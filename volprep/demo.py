"""The built-in demo dataset: deterministic synthetic head phantoms, written like real data.

This module owns the data behind ``volprep demo DIR`` and ``make shards`` without DATA,
and the phantom generator benchmarks use for bigger volumes. A phantom is rendered in a
RAS voxel grid (i runs Right, j Anterior, k Superior) from two parameter sets: an
:class:`Anatomy` (head size and shape, cortical folding, the lesion: what a *subject* is)
and the acquisition (intensity scale, bias field, Rician noise: what a *scan* adds). The
demo then stores every case the way scanners do: in its own voxel order (LAS, LPS, a
coronal LSA...), with anisotropic spacing and an origin offset, image and mask sharing
one affine whose qform and sform both describe it, so ``nibabel.as_closest_canonical``
brings every head back upright the same way. Everything is a pure function of the seed:
two runs write byte-identical files (the gzip header carries no time stamp).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import logging
import math
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

logger = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = ("glioma", "meningioma", "metastasis")
"""Lesion classes, sorted by name so that a class id numbered by sorted name (as dataset
discovery does) equals the mask value minus one: class ``c`` has mask value ``c + 1``."""
CLASS_FRACTIONS: tuple[float, ...] = (0.3, 0.6, 0.1)
"""Imbalanced class proportions of the demo (exact: largest-remainder rounding)."""
GLIOMA, MENINGIOMA, METASTASIS = range(3)
ORIENTATIONS: tuple[str, ...] = ("RAS", "LAS", "LSA", "LPS", "RAS", "RAS")
"""Voxel orientation of demo case ``i`` is ``ORIENTATIONS[i % 6]`` (LSA: a coronal scan)."""
DEFAULT_SHAPE: tuple[int, int, int] = (80, 80, 48)

# Random streams: every draw comes from np.random.default_rng([seed, key, stream]).
_STREAM_GEOMETRY = 0  # key = case index: spacing and origin of a scan
_STREAM_ACQUISITION = 1  # key = case index: intensity scale, bias field, noise
_STREAM_ANATOMY = 2  # key = subject index: head and lesion, shared by a subject's scans
_STREAM_PLAN = 3  # key = 0: order of subjects and classes

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


@dataclasses.dataclass(frozen=True)
class DemoCase:
    """One planned demo case: identity, class and scan geometry (arrays come from render_case)."""

    case_id: str
    subject: str
    case_index: int
    subject_index: int
    class_index: int
    orientation: str  # axis codes of the file's voxel axes, e.g. "LPS"
    file_shape: tuple[int, int, int]
    file_spacing: tuple[float, float, float]
    offset_mm: tuple[float, float, float]  # world position of the grid centre
    anatomy_fov_mm: tuple[float, float, float]  # RAS field of view the head is fitted to


# --------------------------------------------------------------------------- phantoms


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


def reorient_ras(
    data: np.ndarray, ras_affine: np.ndarray, axcodes: str
) -> tuple[np.ndarray, np.ndarray]:
    """Stores a RAS-ordered array in another voxel orientation, keeping the world geometry.

    Args:
        data: array whose voxel axes run R, A, S.
        ras_affine: its voxel-to-world affine (diagonal positive up to the translation).
        axcodes: the wanted orientation of the file's voxel axes, e.g. ``"LPS"`` or ``"LSA"``.

    Returns:
        ``(file_data, file_affine)`` with ``nibabel.aff2axcodes(file_affine) == tuple(axcodes)``
        and every voxel at the same world position as before.
    """
    transform = nio.ornt_transform(nio.axcodes2ornt("RAS"), nio.axcodes2ornt(tuple(axcodes)))
    file_data = nio.apply_orientation(data, transform)
    file_affine = ras_affine @ nio.inv_ornt_aff(transform, data.shape)
    return np.ascontiguousarray(file_data), file_affine


def write_case_nifti(
    path: Path,
    data: np.ndarray,
    affine: np.ndarray,
    *,
    description: str = "volprep demo phantom",
    compresslevel: int = 1,
) -> Path:
    """Writes a NIfTI-1 file whose bytes depend only on the arguments.

    The qform (code 1, scanner) and sform (code 2, aligned) both hold ``affine``, units are
    mm and s. A ``.gz`` path is gzip-compressed with a zero mtime and no file name in the
    gzip header, so identical volumes give identical files.

    Args:
        path: where to write (``.nii`` or ``.nii.gz``); parent folders are created.
        data: the voxel array in file order (any dtype NIfTI-1 can hold).
        affine: 4x4 voxel-to-world (RAS+ mm) affine.
        description: the header's ``descrip`` field (at most 79 ASCII characters).
        compresslevel: gzip level (1, nibabel's default, is fast).

    Returns:
        ``path``.
    """
    path = Path(path)
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=2)
    header = image.header
    header.set_xyzt_units("mm", "sec")
    header["descrip"] = description.encode("ascii")[:79]
    payload = image.to_bytes()
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=compresslevel, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    tmp.replace(path)
    return path


def _ras_affine(
    shape: tuple[int, ...], spacing: tuple[float, ...], offset_mm: tuple[float, ...]
) -> np.ndarray:
    """RAS affine whose grid centre sits at ``offset_mm`` in world space."""
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spacing)
    affine[:3, 3] = np.asarray(offset_mm) - (np.asarray(shape) - 1) / 2 * np.asarray(spacing)
    return affine


# --------------------------------------------------------------------------- the demo


def _class_counts(n: int, fractions: tuple[float, ...] = CLASS_FRACTIONS) -> list[int]:
    """Largest-remainder rounding of ``n * fractions`` (ties go to the earlier class)."""
    quotas = [n * f for f in fractions]
    counts = [math.floor(q) for q in quotas]
    order = sorted(range(len(quotas)), key=lambda c: (-(quotas[c] - counts[c]), c))
    for c in order[: n - sum(counts)]:
        counts[c] += 1
    return counts


def _ras_layout(axcodes: str, file_values: tuple) -> tuple:
    """Per-RAS-axis values of per-file-axis ones (shape, spacing) for a file orientation."""
    transform = nio.ornt_transform(nio.axcodes2ornt("RAS"), nio.axcodes2ornt(tuple(axcodes)))
    return tuple(file_values[int(transform[a, 0])] for a in range(3))


def _ras_fov(case: DemoCase) -> np.ndarray:
    """Field of view of a case along R, A, S, in mm."""
    shape = _ras_layout(case.orientation, case.file_shape)
    spacing = _ras_layout(case.orientation, case.file_spacing)
    return np.multiply(shape, spacing)


def plan_demo(
    n_cases: int = 30, shape: tuple[int, int, int] = DEFAULT_SHAPE, seed: int = 0
) -> list[DemoCase]:
    """Plans the demo: ids, subjects, classes and each scan's geometry (no voxels yet).

    Classes follow ``CLASS_FRACTIONS`` exactly (9/18/3 of 30). About one subject in six of a
    class gets two scans (``demo_007a``/``demo_007b``): the same head and lesion, scanned
    again with its own spacing, orientation and noise, so a split that ignores subjects leaks.

    Args:
        n_cases: number of cases (scans), at least 1.
        shape: shape of every file's voxel array; the last axis is the thick-slice one.
        seed: a non-negative job seed.

    Returns:
        The cases, sorted by case id.
    """
    if n_cases < 1:
        raise ValueError(f"n_cases must be at least 1, got {n_cases}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    shape = tuple(int(n) for n in shape)  # type: ignore[assignment]
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"shape must be three sizes of at least 4, got {shape!r}")
    units: list[tuple[int, int]] = []  # (class, scans of this subject)
    for cls, count in enumerate(_class_counts(n_cases)):
        pairs = count // 6
        units += [(cls, 2)] * pairs + [(cls, 1)] * (count - 2 * pairs)
    order = np.random.default_rng([seed, 0, _STREAM_PLAN]).permutation(len(units))

    cases: list[DemoCase] = []
    for subject_index, unit in enumerate(order):
        cls, scans = units[int(unit)]
        subject = f"demo_{subject_index:03d}"
        planned = []
        for scan in range(scans):
            case_index = len(cases) + scan
            rng = np.random.default_rng([seed, case_index, _STREAM_GEOMETRY])
            fov_inplane = rng.uniform(120.0, 150.0)
            inplane = round(fov_inplane / max(shape[0], shape[1]), 2)
            thick = round(inplane * rng.uniform(1.6, 2.1), 2)
            offset = np.round(rng.uniform(-20.0, 20.0, 3), 1)
            axcodes = ORIENTATIONS[case_index % len(ORIENTATIONS)]
            planned.append(
                DemoCase(
                    case_id=subject + ("abcdefgh"[scan] if scans > 1 else ""),
                    subject=subject,
                    case_index=case_index,
                    subject_index=subject_index,
                    class_index=cls,
                    orientation=axcodes,
                    file_shape=shape,
                    file_spacing=(inplane, inplane, thick),
                    offset_mm=(float(offset[0]), float(offset[1]), float(offset[2])),
                    anatomy_fov_mm=(0.0, 0.0, 0.0),
                )
            )
        # A subject's head must fit every one of its scans.
        fov = np.min([_ras_fov(p) for p in planned], axis=0)
        fov_mm = (float(fov[0]), float(fov[1]), float(fov[2]))
        cases += [dataclasses.replace(p, anatomy_fov_mm=fov_mm) for p in planned]
    return sorted(cases, key=lambda c: c.case_id)


def render_case(
    case: DemoCase, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Renders a planned case in RAS voxel order (what canonical reorientation gives back).

    Args:
        case: a case from :func:`plan_demo` with the same ``seed``.
        seed: the job seed the plan was made with.

    Returns:
        ``(image int16, mask uint8, ras_affine)``.
    """
    ras_shape = _ras_layout(case.orientation, case.file_shape)
    ras_spacing = _ras_layout(case.orientation, case.file_spacing)
    anatomy = sample_anatomy(
        np.random.default_rng([seed, case.subject_index, _STREAM_ANATOMY]),
        case.anatomy_fov_mm,
        case.class_index,
    )
    image, mask = head_phantom(
        ras_shape,
        ras_spacing,
        np.random.default_rng([seed, case.case_index, _STREAM_ACQUISITION]),
        anatomy=anatomy,
    )
    return image, mask, _ras_affine(ras_shape, ras_spacing, case.offset_mm)


def _dataset_json(cases: list[DemoCase]) -> dict:
    return {
        "name": "volprep-demo",
        "description": "Synthetic T1 head phantoms with one lesion class each "
        "(meningioma 60%, glioma 30%, metastasis 10%), written by volprep.demo",
        "reference": "volprep",
        "licence": "CC0-1.0",
        "release": "1.0",
        "tensorImageSize": "3D",
        "modality": {"0": "MRI-T1"},
        "labels": {"0": "background", **{str(i + 1): n for i, n in enumerate(CLASS_NAMES)}},
        "numTraining": len(cases),
        "numTest": 0,
        "training": [
            {"image": f"./imagesTr/{c.case_id}.nii.gz", "label": f"./labelsTr/{c.case_id}.nii.gz"}
            for c in cases
        ],
        "test": [],
    }


def write_demo(
    out_dir: Path,
    n_cases: int = 30,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    seed: int = 0,
) -> Path:
    """Writes the demo dataset in the Medical Segmentation Decathlon layout.

    ``OUT/imagesTr/<id>.nii.gz`` (int16), ``OUT/labelsTr/<id>.nii.gz`` (uint8 lesion masks,
    value = class index + 1), ``OUT/dataset.json`` and ``OUT/labels.csv``
    (``case_id,subject,label`` with the class name). The two index files are written last.
    Files already there under those names are replaced; nothing else is touched.

    Args:
        out_dir: the dataset folder (created if missing).
        n_cases: number of cases (scans).
        shape: every file's voxel array shape (the last axis is the thick-slice axis).
        seed: non-negative seed; the same arguments always give byte-identical files.

    Returns:
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    cases = plan_demo(n_cases, shape, seed)
    for case in cases:
        image, mask, ras_affine = render_case(case, seed)
        file_image, affine = reorient_ras(image, ras_affine, case.orientation)
        file_mask, _ = reorient_ras(mask, ras_affine, case.orientation)
        write_case_nifti(out_dir / "imagesTr" / f"{case.case_id}.nii.gz", file_image, affine)
        write_case_nifti(out_dir / "labelsTr" / f"{case.case_id}.nii.gz", file_mask, affine,
                         description="volprep demo lesion mask")
    with open(out_dir / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["case_id", "subject", "label"])
        writer.writerows([c.case_id, c.subject, CLASS_NAMES[c.class_index]] for c in cases)
    text = json.dumps(_dataset_json(cases), indent=2) + "\n"
    (out_dir / "dataset.json").write_text(text, encoding="utf-8")
    logger.info("wrote %d demo cases (%s voxels each) to %s", len(cases), shape, out_dir)
    return out_dir


def write_big_heads(
    out_dir: Path,
    n: int,
    shape: tuple[int, int, int] = (256, 256, 160),
    seed: int = 0,
) -> list[Path]:
    """Writes ``n`` benchmark heads ``head_000.nii.gz``...: int16, 1 mm isotropic, RAS.

    Head ``i`` is drawn from ``np.random.default_rng([seed, i])`` and carries a lesion of
    class ``i % 3``; the affine puts the grid centre at the world origin.

    Args:
        out_dir: folder to write into (created if missing).
        n: number of volumes.
        shape: voxel array shape.
        seed: non-negative seed.

    Returns:
        The written paths, in order.
    """
    out_dir = Path(out_dir)
    paths = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        image, _ = head_phantom(shape, (1.0, 1.0, 1.0), rng, i % len(CLASS_NAMES))
        affine = _ras_affine(shape, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
        paths.append(write_case_nifti(out_dir / f"head_{i:03d}.nii.gz", image, affine))
    return paths
