"""The read stage's entry points: sniff a file's format, check its header, read its voxels.

This module owns dispatch and the error boundary. It knows no format: it offers each file
to the formats of :data:`volprep.io.formats.FORMATS`, in order, first by name (a format's
``claims``: files without a signature, recognised by the companion beside them), then by
content (``sniff`` on the file's first bytes; a gzip file is inflated first and offered to
the formats that read gzip), and the format that takes it builds the file's Layout. Every
problem a file can cause leaves as a one-line :class:`~volprep.errors.HeaderError`
(before any voxel is read) or :class:`~volprep.errors.DataError` (while reading voxels)
carrying the path; whatever nibabel, isal or the OS raise on bad input is translated
here, so no input problem reaches the user as a traceback.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from volprep.config import ReadConfig
from volprep.errors import DataError, HeaderError, InputError, ResourceError
from volprep.io import gzipfast
from volprep.io.base import (
    Header,
    Layout,
    Volume,
    build_header,
    human_bytes,
    load_voxels,
)
from volprep.io.formats import FORMATS, folder_formats, head_bytes
from volprep.io.paths import require_regular_file
from volprep.io.protocol import Format

T = TypeVar("T")

# Peak memory of read + preprocess, in float32 copies of the volume on top of the array
# read returns: a float32 working copy, reorientation/reduction temporaries, and the
# reduced/resampled output before crop/pad (conservative: most steps need fewer).
WORKING_FLOAT32_COPIES = 4

# What libraries raise on malformed input (translated into HeaderError / DataError).
_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    HeaderDataError, ImageFileError, ValueError, EOFError, zlib.error, struct.error,
    IndexError, OverflowError, UnicodeDecodeError,
)


def _guard(path: Path, error: type[InputError], work: Callable[[], T]) -> T:
    """Runs ``work``; input problems become ``error(path, one line)``."""
    try:
        return work()
    except InputError:
        raise
    except gzipfast.StreamError as err:
        raise error(path, str(err)) from None
    except FileNotFoundError as err:
        raise error(err.filename or path, "file not found") from None
    except OSError as err:
        raise error(err.filename or path, f"cannot read: {err.strerror or err}") from None
    except MemoryError:
        raise ResourceError(path, "out of memory while reading this volume") from None
    except _INPUT_ERRORS as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise error(path, f"unreadable ({detail})") from None


def _layout(path: Path, cfg: ReadConfig) -> Layout:
    if path.is_dir():  # a format that reads folders (a DICOM series), or none
        for folder_format in folder_formats(FORMATS):
            if folder_format.claims(path, b""):
                return folder_format.layout(path, b"", cfg, False)
        titles = " or ".join(f.TITLE for f in folder_formats(FORMATS))
        raise HeaderError(path, "is a folder, not a volume file" + (
            f" (and holds no {titles} files)" if titles else ""))
    require_regular_file(path)  # before any open: opening a FIFO blocks
    with path.open("rb") as fh:
        head = fh.read(head_bytes(FORMATS))
    if not head:
        raise HeaderError(path, "file is empty (0 bytes)")
    for fmt in FORMATS:  # by name first: content without a signature could look like one
        if fmt.claims(path, head):
            return fmt.layout(path, head, cfg, False)
    readers = [fmt for fmt in FORMATS if fmt.GZIP]
    if readers and gzipfast.is_gzip(head):
        inner = gzipfast.read_prefix(path, head_bytes(readers))
        for fmt in readers:
            if fmt.sniff(inner):
                return fmt.layout(path, inner, cfg, True)
        titles = " or ".join(fmt.TITLE for fmt in readers)
        raise HeaderError(path, f"gzip file holds no {titles} header (starts with {inner[:8]!r})")
    for fmt in FORMATS:
        if fmt.sniff(head):
            return fmt.layout(path, head, cfg, False)
    raise HeaderError(
        path, f"not a volume volprep reads: {_expected(FORMATS)} (file starts with {head[:8]!r})"
    )


def _expected(formats: Sequence[Format]) -> str:
    """What a file no format took lacks: each format's ``EXPECTED``, those ending in
    ``" header"`` joined as ``no A or B header``, the others as ``and no C``."""
    headers = [f.EXPECTED.removesuffix(" header") for f in formats if f.EXPECTED.endswith(" header")]
    others = [f.EXPECTED for f in formats if not f.EXPECTED.endswith(" header")]
    parts = ([f"no {' or '.join(headers)} header"] if headers else []) + [f"no {o}" for o in others]
    return " and ".join(parts)


def _checked(path: Path, cfg: ReadConfig) -> tuple[Layout, Header]:
    def work() -> tuple[Layout, Header]:
        layout = _layout(path, cfg)
        return layout, build_header(layout, cfg)

    return _guard(path, HeaderError, work)


def input_files(path: Path, cfg: ReadConfig) -> list[Path]:
    """Every file a volume's voxels come from (for cache keys): the file itself and its
    companions (a pair's ``.img``, a raw sidecar's data, a MetaImage data file, every
    slice of a DICOM series). Reads headers only.

    Raises:
        HeaderError: the header is unreadable or refused (as :func:`read_header`).
    """
    return _checked(Path(path), cfg)[0].inputs()


def read_header(path: Path, cfg: ReadConfig) -> Header:
    """Reads and checks a volume's header without reading its voxels.

    Args:
        path: a file of any format of :data:`volprep.io.formats.FORMATS` (NIfTI-1/2,
            Analyze, MetaImage, raw + sidecar); the format is recognised as described above.
        cfg: the ``[read]`` config (``max_bytes``, ``allow_rgb``).

    Returns:
        The Header of the array :func:`read_volume` would return.

    Raises:
        HeaderError: the header is unreadable, or describes a volume volprep refuses.
    """
    return _checked(Path(path), cfg)[1]


def read_volume(path: Path, cfg: ReadConfig) -> Volume:
    """Reads one volume: header checks first, then exactly the voxels the header claims.

    The array is in the file's voxel order ``(i, j, k[, c])`` and its memory order (for
    NIfTI and MetaImage: Fortran order, no copy made). Scaled data and float64 come back
    as float32; unscaled integers keep their dtype (native byte order).

    Args:
        path: the volume file (see :func:`read_header`).
        cfg: the ``[read]`` config (``max_bytes``, ``non_finite``, ``allow_rgb``).

    Raises:
        HeaderError: as :func:`read_header`.
        DataError: truncated or corrupt voxel data, or NaN/Inf voxels with
            ``non_finite = "fail"``.
    """
    return _read(Path(path), cfg, labels=False)


def read_label_volume(path: Path, cfg: ReadConfig) -> Volume:
    """Reads a label (segmentation) volume: :func:`read_volume`, but NaN/Inf is refused.

    ``read.non_finite = "zero"`` is an image policy; applied to a label it would silently
    turn NaN voxels into background (class 0), so a label volume holding any NaN/Inf is
    refused whatever the policy. Pass the result to :func:`~volprep.io.check_label`.

    Args:
        path: the label file (any format :func:`read_header` reads).
        cfg: the ``[read]`` config (``max_bytes``, ``allow_rgb``; ``non_finite`` unused).

    Raises:
        HeaderError: as :func:`read_header`.
        DataError: truncated or corrupt voxel data.
        LabelError: ``label volume holds N NaN/Inf values: labels must be whole numbers``.
    """
    return _read(Path(path), cfg, labels=True)


def _read(path: Path, cfg: ReadConfig, *, labels: bool) -> Volume:
    layout, header = _checked(path, cfg)
    return _guard(path, DataError, lambda: load_voxels(layout, header, cfg, labels=labels))


def _same_grid(a: Header, b: Header, tolerance: float) -> bool:
    return a.shape[:3] == b.shape[:3] and bool(
        np.max(np.abs(a.affine - b.affine)) <= tolerance
    )


def read_case_images(paths: Sequence[Path], cfg: ReadConfig) -> Volume:
    """Reads a case's image channels into one ``(i, j, k, c)`` volume.

    Either one 3D file per channel (stacked in the given order) or a single 4D file whose
    last axis is the channels; a single 3D file gives ``c = 1``. The stacked array is
    Fortran-ordered per channel (each channel a contiguous block).

    Args:
        paths: the channel files, at least one.
        cfg: the ``[read]`` config; ``max_bytes`` bounds all channels together.

    Raises:
        HeaderError: a channel's header is refused, or the channels together claim more
            than ``max_bytes``.
        DataError: channels on different grids, a 4D file among several, or bad voxels.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("read_case_images needs at least one path")
    if len(paths) == 1:
        volume = read_volume(paths[0], cfg)
        if volume.data.ndim == 3:
            header = dataclasses.replace(volume.header, shape=(*volume.header.shape, 1))
            return Volume(volume.data[..., np.newaxis], header)
        return volume
    headers = [read_header(p, cfg) for p in paths]
    first = headers[0]
    for n, (path, header) in enumerate(zip(paths, headers, strict=True), start=1):
        if len(header.shape) != 3:
            raise DataError(
                path, f"channel {n} is 4D {header.shape}: give one 4D file or one 3D file a channel"
            )
        if not _same_grid(first, header, cfg.affine_tolerance):
            raise DataError(
                path, f"channel {n} grid (shape {header.shape}) differs from channel 1 "
                f"{paths[0].name} (shape {first.shape}) beyond read.affine_tolerance",
            )
    dtype = np.result_type(*(h.dtype for h in headers))
    shape = (*first.shape, len(paths))
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > cfg.max_bytes:
        raise HeaderError(
            paths[0], f"{len(paths)} channels of shape {first.shape} {dtype.name} claim "
            f"{human_bytes(nbytes)}, more than read.max_bytes {human_bytes(cfg.max_bytes)}",
        )
    data = np.empty(shape, dtype=dtype, order="F")
    notes: dict[str, None] = {}
    for n, path in enumerate(paths):
        volume = read_volume(path, cfg)
        data[..., n] = volume.data
        notes.update(dict.fromkeys(volume.header.notes))
    header = dataclasses.replace(first, shape=shape, dtype=dtype, nbytes=nbytes,
                                 notes=tuple(notes))
    return Volume(data, header)


def estimate_working_bytes(header: Header) -> int:
    """A conservative estimate of the peak bytes needed to read and preprocess a volume.

    The array read returns (``header.nbytes``) plus ``WORKING_FLOAT32_COPIES`` (4)
    float32 volumes of the same voxel count: about 4-5x the float32 size of the volume.
    The runner's memory admission uses it; gzip input adds only a fixed 1 MiB buffer.
    """
    return int(header.nbytes + WORKING_FLOAT32_COPIES * math.prod(header.shape) * 4)
