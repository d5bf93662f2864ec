"""The built-in demo dataset: deterministic synthetic head phantoms, written like real data.

This module owns the data behind ``volprep demo DIR`` and ``make shards`` without DATA,
and the bigger heads the benchmarks use. Phantoms come from :mod:`volprep.phantoms`
(anatomy = what a *subject* is, acquisition = what a *scan* adds, rendered in RAS). The
demo plans subjects, classes and scan geometry from the seed, then stores every case the way scanners do: in its own voxel order (LAS, LPS, a
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

from volprep.phantoms import (
    CLASS_NAMES,
    head_phantom,
    sample_anatomy,
)

logger = logging.getLogger(__name__)

CLASS_FRACTIONS: tuple[float, ...] = (0.3, 0.6, 0.1)
"""Imbalanced class proportions of the demo (exact: largest-remainder rounding)."""
ORIENTATIONS: tuple[str, ...] = ("RAS", "LAS", "LSA", "LPS", "RAS", "RAS")
"""Voxel orientation of demo case ``i`` is ``ORIENTATIONS[i % 6]`` (LSA: a coronal scan)."""
DEFAULT_SHAPE: tuple[int, int, int] = (80, 80, 48)

# Random streams: every draw comes from np.random.default_rng([seed, key, stream]).
_STREAM_GEOMETRY = 0  # key = case index: spacing and origin of a scan
_STREAM_ACQUISITION = 1  # key = case index: intensity scale, bias field, noise
_STREAM_ANATOMY = 2  # key = subject index: head and lesion, shared by a subject's scans
_STREAM_PLAN = 3  # key = 0: order of subjects and classes
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
