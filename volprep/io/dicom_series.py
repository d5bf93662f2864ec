"""DICOM series: a folder's files grouped by series, one series checked and placed in space.

This module owns what turns DICOM headers into one volume's geometry, from headers alone
(``pydicom.dcmread(..., stop_before_pixels=True)``): :func:`scan` groups a folder's DICOM
files by ``SeriesInstanceUID`` (non-image objects, such as structured
reports, presentation states and segmentations, are skipped); :func:`assemble` reads every
file of one series into :class:`Frame`\\ s (one a single-frame file; one per frame of a
multi-frame file, from its per-frame or shared functional groups, or an RT dose's
``GridFrameOffsetVector``) and checks them into a :class:`Series`: one orientation, one
image size and pixel spacing, one pixel format, at least two slices, sorted by position
along the slice normal (never by file name or ``InstanceNumber``), spaced evenly (the
spacing comes from the positions, never from ``SliceThickness``) with no slice missing or
repeated. Every refusal is a one-line :class:`~volprep.errors.HeaderError` whose problem
starts with ``DICOM series <SeriesNumber> (<n> files)``. The affine maps voxel
``(column, row, slice)`` to RAS+ mm (DICOM's LPS with the first two axes negated).

Patient data: only the attributes this module names are read (geometry, pixel format,
series and SOP class identifiers); none of them identifies a patient, and messages hold
only file names, series numbers and geometry. pydicom's own warnings (which may quote
values) are silenced while reading.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from volprep.errors import HeaderError
from volprep.io.paths import require_regular_file

# SOP classes with pixel data that are not images of the series (labels, not voxels).
NOT_IMAGES = {"1.2.840.10008.5.1.4.1.1.66.4": "segmentation"}
ORIENTATION_TOLERANCE = 1e-4  # direction cosines that differ by more are another orientation
SPACING_TOLERANCE = 0.01  # slice gaps may differ from their median by this fraction
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_PIXEL_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """pydicom reading without warnings (they may quote a value) or strict validation."""
    settings = pydicom.config.settings
    before = settings.reading_validation_mode
    settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        settings.reading_validation_mode = before


@dataclasses.dataclass(frozen=True)
class Parsed:
    """One file's header as pydicom read it, and the bytes where its pixel data starts."""

    path: Path
    ds: Dataset
    at: int  # offset of the pixel data element (the end of the file when there is none)
    head: bytes  # that element's first 12 bytes
    size: int  # the file's size


def parse(path: Path) -> Parsed:
    """Reads one file's header (``stop_before_pixels``): one open, no pixel read."""
    require_regular_file(path)
    with quiet(), path.open("rb") as fh:
        ds = pydicom.dcmread(fh, stop_before_pixels=True)
        at = fh.tell()
        head = fh.read(12)
        return Parsed(path, ds, at, head, os.fstat(fh.fileno()).st_size)


@dataclasses.dataclass(frozen=True)
class Member:
    """One file's series membership (and its whole header when :func:`scan` read it)."""

    path: Path
    series_uid: str
    number: int | None
    parsed: Parsed | None = None


def _number(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def scan(paths: list[Path], *, full: bool = False) -> dict[str, list[Member]]:
    """The image series of DICOM files (one folder's, sorted): SeriesInstanceUID -> members,
    in order of each series' first file. Files that are not images are left out; files
    pydicom cannot parse too (only their series could report them). ``full`` keeps each
    file's whole header (read once, for :func:`assemble`); otherwise only a few tags are
    read (discovery)."""
    series: dict[str, list[Member]] = {}
    tags = ["SeriesInstanceUID", "SeriesNumber", "SOPClassUID", "Rows"]
    with quiet():
        for path in paths:
            try:
                parsed = parse(path) if full else None
                ds = parsed.ds if parsed else pydicom.dcmread(path, stop_before_pixels=True,
                                                              specific_tags=tags)
            except Exception:  # noqa: BLE001 - unreadable here is the reader's to report
                continue
            if "Rows" not in ds or str(ds.get("SOPClassUID", "")) in NOT_IMAGES:
                continue
            uid = str(ds.get("SeriesInstanceUID", ""))
            series.setdefault(uid, []).append(Member(path, uid, _number(ds.get("SeriesNumber")), parsed))
    return series


def describe(series: dict[str, list[Member]]) -> str:
    """``series 2: 3 files from IM1; series 3: 176 files from IM4``: a folder's series."""
    return "; ".join(f"{name(m[0].number)}: {files(len(m))} from {m[0].path.name}"
                     for m in series.values())


def files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


def name(number: int | None) -> str:
    return f"series {number}" if number is not None else "series (no SeriesNumber)"


@dataclasses.dataclass(frozen=True)
class Instance:
    """One file's pixel format and where its pixels are, from its header."""

    path: Path
    syntax: str  # transfer syntax UID
    rows: int
    columns: int
    frames: int
    dtype: np.dtype  # stored pixel type (little-endian)
    bits_stored: int
    value_at: int | None  # offset of native little-endian pixel bytes; None: pydicom decodes


@dataclasses.dataclass(frozen=True)
class Frame:
    """One 2D slice: a frame of an instance and where it lies."""

    instance: Instance
    index: int  # frame number in the file (0 for a single-frame file)
    position: tuple[float, float, float]  # ImagePositionPatient, LPS mm
    orientation: tuple[float, ...]  # ImageOrientationPatient: row then column cosines
    spacing: tuple[float, float]  # PixelSpacing: between rows, between columns
    slope: float
    inter: float


@dataclasses.dataclass(frozen=True)
class Series:
    """A checked series: frames sorted along the slice normal, with its RAS+ affine."""

    label: str  # "DICOM series 5 (48 files)", the start of every message about it
    frames: tuple[Frame, ...]
    affine: np.ndarray
    dtype: np.dtype
    notes: tuple[str, ...]

    @property
    def dims(self) -> tuple[int, int, int]:
        first = self.frames[0].instance
        return first.columns, first.rows, len(self.frames)


def _floats(ds: Dataset, keyword: str, count: int) -> tuple[float, ...] | None:
    value = ds.get(keyword)
    if value is None:
        return None
    values = list(value) if isinstance(value, list | tuple | pydicom.multival.MultiValue) else [value]
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and all(np.isfinite(numbers)) else None


def _grouped(groups: list[Dataset], sequence: str, keyword: str, count: int) -> tuple[float, ...] | None:
    """The first of ``groups`` (per-frame, then shared) whose ``sequence`` holds ``keyword``."""
    for group in groups:
        if group is not None and sequence in group and len(group[sequence].value):
            found = _floats(group[sequence].value[0], keyword, count)
            if found is not None:
                return found
    return None


def _value_at(syntax: str, parsed: Parsed, expected: int) -> int | None:
    """Where native little-endian pixel bytes start (their element checked), else None."""
    head, at = parsed.head, parsed.at
    if syntax == pydicom.uid.ExplicitVRLittleEndian and head[:4] == _PIXEL_TAG:
        length, start = int.from_bytes(head[8:12], "little"), at + 12
    elif syntax == pydicom.uid.ImplicitVRLittleEndian and head[:4] == _PIXEL_TAG:
        length, start = int.from_bytes(head[4:8], "little"), at + 8
    else:
        return None
    if length == 0xFFFFFFFF:  # encapsulated (compressed) in a native syntax: not valid
        return None
    if length < expected or parsed.size < start + expected:
        raise HeaderError(parsed.path, f"pixel data holds {min(length, parsed.size - start)} "
                                       f"bytes, the header claims {expected}: truncated")
    return start


def read_instance(parsed: Parsed, label: str) -> tuple[Instance, list[Frame]]:
    """One file's pixel format and frames, from its header.

    Raises:
        HeaderError: a pixel format or geometry volprep does not read, naming the file.
    """
    ds, path = parsed.ds, parsed.path
    with quiet():
        syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
        rows, columns = _number(ds.get("Rows")), _number(ds.get("Columns"))
        frames = _number(ds.get("NumberOfFrames")) or 1
        bits, signed = _number(ds.get("BitsAllocated")), _number(ds.get("PixelRepresentation"))
        samples = _number(ds.get("SamplesPerPixel")) or 1
        if not rows or not columns:
            raise HeaderError(path, f"{label}: {path.name} has no Rows/Columns: not an image")
        if samples != 1:
            raise HeaderError(path, f"{label}: {path.name} has {samples} samples per pixel: "
                                    "colour DICOM is not a volume volprep reads")
        if bits not in (8, 16, 32) or signed not in (0, 1):
            raise HeaderError(path, f"{label}: {path.name}: BitsAllocated {bits}, "
                                    f"PixelRepresentation {signed} are not supported")
        dtype = np.dtype(f"<{'iu'[signed == 0]}{bits // 8}")
        expected = rows * columns * frames * dtype.itemsize
        value_at = _value_at(syntax, parsed, expected)
        instance = Instance(path, syntax, rows, columns, frames, dtype,
                            _number(ds.get("BitsStored")) or bits, value_at)
        return instance, _frames(ds, instance, label)


def _frames(ds: Dataset, inst: Instance, label: str) -> list[Frame]:
    """Every frame's position, orientation, pixel spacing and rescale."""
    path = inst.path
    slope = _floats(ds, "RescaleSlope", 1) or _floats(ds, "DoseGridScaling", 1) or (1.0,)
    inter = _floats(ds, "RescaleIntercept", 1) or (0.0,)
    shared = ds.SharedFunctionalGroupsSequence[0] if ds.get("SharedFunctionalGroupsSequence") else None
    per = ds.get("PerFrameFunctionalGroupsSequence")
    where = "ImagePositionPatient/ImageOrientationPatient/PixelSpacing"
    out: list[Frame] = []
    if per:
        if len(per) != inst.frames:
            raise HeaderError(path, f"{label}: {path.name} has {len(per)} per-frame groups for "
                                    f"{inst.frames} frames")
        for index in range(inst.frames):
            groups = [per[index], shared]
            pos = _grouped(groups, "PlanePositionSequence", "ImagePositionPatient", 3)
            ori = _grouped(groups, "PlaneOrientationSequence", "ImageOrientationPatient", 6)
            spacing = _grouped(groups, "PixelMeasuresSequence", "PixelSpacing", 2)
            f_slope = _grouped(groups, "PixelValueTransformationSequence", "RescaleSlope", 1) or slope
            f_inter = _grouped(groups, "PixelValueTransformationSequence", "RescaleIntercept", 1) or inter
            if pos is None or ori is None or spacing is None:
                raise HeaderError(path, f"{label}: {path.name} frame {index + 1} has no usable {where}")
            out.append(Frame(inst, index, pos, ori, spacing, f_slope[0], f_inter[0]))  # type: ignore[arg-type]
        return out
    pos, ori = _floats(ds, "ImagePositionPatient", 3), _floats(ds, "ImageOrientationPatient", 6)
    spacing = _floats(ds, "PixelSpacing", 2)
    if pos is None or ori is None or spacing is None:
        raise HeaderError(path, f"{label}: {path.name} has no usable {where}: no position in space")
    offsets = [0.0]
    if inst.frames > 1:
        grid = ds.get("GridFrameOffsetVector")
        if grid is None or len(grid) != inst.frames:
            raise HeaderError(path, f"{label}: {path.name} has {inst.frames} frames and no "
                                    "per-frame positions")
        offsets = [float(v) for v in grid]
    normal = np.cross(ori[:3], ori[3:])
    for index, offset in enumerate(offsets):
        where_ = tuple(float(v) for v in np.asarray(pos) + offset * normal)
        out.append(Frame(inst, index, where_, ori, spacing, slope[0], inter[0]))  # type: ignore[arg-type]
    return out


def assemble(members: list[Member], label: str) -> Series:
    """Reads and checks one series' headers (see the module docstring).

    Raises:
        HeaderError: naming the series' first file: mixed orientations, sizes, spacings or
            pixel formats; one slice; duplicate or missing slices; uneven spacing.
    """
    frames: list[Frame] = []
    for member in members:
        frames.extend(read_instance(member.parsed or parse(member.path), label)[1])
    first = frames[0]
    where = first.instance.path
    orientations = {f.orientation for f in frames
                    if np.max(np.abs(np.subtract(f.orientation, first.orientation))) > ORIENTATION_TOLERANCE}
    if orientations:
        raise HeaderError(where, f"{label}: mixed orientations ({len(orientations) + 1} different "
                                 "ImageOrientationPatient): a localizer or several stacks, not one volume")
    sizes = sorted({(f.instance.rows, f.instance.columns) for f in frames})
    if len(sizes) > 1:
        shown = " and ".join(f"{r}x{c}" for r, c in sizes[:3])
        raise HeaderError(where, f"{label}: mixed image sizes ({shown} rows x columns)")
    if any(np.max(np.abs(np.subtract(f.spacing, first.spacing))) > 1e-4 * max(first.spacing) for f in frames):
        raise HeaderError(where, f"{label}: mixed pixel spacings")
    formats = sorted({f.instance.dtype.str for f in frames})
    if len(formats) > 1:
        raise HeaderError(where, f"{label}: mixed pixel formats ({', '.join(formats)})")
    if len(frames) < 2:
        raise HeaderError(where, f"{label}: 1 slice: a 2D image, not a volume")
    row, col = np.array(first.orientation[:3]), np.array(first.orientation[3:])
    normal = np.cross(row, col)
    depth = np.array([np.dot(f.position, normal) for f in frames])
    order = sorted(range(len(frames)), key=lambda n: (depth[n], str(frames[n].instance.path), frames[n].index))
    frames = [frames[n] for n in order]
    depth = depth[order]
    _check_spacing(label, frames, np.diff(depth))
    step = (np.array(frames[-1].position) - np.array(frames[0].position)) / (len(frames) - 1)
    lps = np.eye(4)
    lps[:3, 0] = row * first.spacing[1]  # i: along a row (column index), PixelSpacing[1]
    lps[:3, 1] = col * first.spacing[0]  # j: down a column (row index), PixelSpacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = frames[0].position
    notes = []
    tilt = np.degrees(np.arccos(min(1.0, abs(np.dot(step, normal)) / np.linalg.norm(step))))
    if tilt > 0.01:
        notes.append(f"DICOM slices step {tilt:.2f} degrees off the slice normal (gantry tilt): sheared affine")
    scales = {(f.slope, f.inter) for f in frames}
    dtype = first.instance.dtype if len(scales) == 1 else np.dtype("<f4")
    if len(scales) > 1:
        notes.append("DICOM RescaleSlope/RescaleIntercept differ between slices: applied per slice")
    return Series(label, tuple(frames), _LPS_TO_RAS @ lps, dtype, tuple(notes))


def _check_spacing(label: str, frames: list[Frame], gaps: np.ndarray) -> None:
    """Refuses duplicate slices, missing slices and uneven spacing (gaps along the normal)."""
    small = np.flatnonzero(gaps <= SPACING_TOLERANCE * max(float(np.median(gaps)), 1e-6))
    if small.size:
        n = int(small[0])
        a, b = frames[n], frames[n + 1]
        raise HeaderError(b.instance.path, f"{label}: duplicate slices: {a.instance.path.name}"
                          f"{_frame(a)} and {b.instance.path.name}{_frame(b)} share a position "
                          f"({small.size} duplicate(s))")
    step = float(np.median(gaps))
    wide = np.flatnonzero(gaps > 1.5 * step)
    if wide.size:
        n = int(wide[0])
        missing = max(1, int(round(float(gaps[n]) / step)) - 1)
        raise HeaderError(frames[n].instance.path, f"{label}: missing slices: a gap of {gaps[n]:.4g} mm "
                          f"after slice {n + 1} of {len(frames)} where the spacing is {step:.4g} mm "
                          f"(about {missing} missing)")
    spread = float(np.max(np.abs(gaps - step)))
    if spread > SPACING_TOLERANCE * step:
        raise HeaderError(frames[0].instance.path, f"{label}: uneven slice spacing "
                          f"({float(gaps.min()):.4g} to {float(gaps.max()):.4g} mm, more than "
                          f"{SPACING_TOLERANCE:.0%} from {step:.4g} mm)")


def _frame(frame: Frame) -> str:
    return f" frame {frame.index + 1}" if frame.instance.frames > 1 else ""
