"""The read stage's types and the checks every format shares.

A format module (a :class:`~volprep.io.protocol.Format` of
:data:`volprep.io.formats.FORMATS`) turns a file's header into a :class:`Layout`: where
the voxels are, how they are stored, which affines the header offers. This module owns what happens next, identically for every format: the header
checks done *before* any voxel is read (dimensions, bytes claimed against
``read.max_bytes``, data inside the file, a finite invertible affine) which build the
:class:`Header`, then :func:`load_voxels`, which reads or inflates exactly the bytes
the header claims into one buffer, applies scaling and the non-finite policy, and
returns a :class:`Volume`. Arrays come back in the file's voxel order ``(i, j, k[, c])``
and, for NIfTI/MetaImage, Fortran-ordered (the file's memory order, no copy); the
preprocess stage reduces first and makes the small result C-contiguous.

Which files a reader may open (companions kept beside their file, regular files only) is
:mod:`volprep.io.paths`'s.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from volprep.config import ReadConfig
from volprep.errors import DataError, HeaderError, LabelError
from volprep.io import gzipfast
from volprep.io.paths import require_regular_file

# The most bytes a compressed file may hold before its voxels (header and extensions).
MAX_HEADER_BYTES = 64 * 1024**2
# Voxel dtypes volprep returns (scaled or float64 data comes back as float32).
_FLOAT_OUT = np.dtype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class Header:
    """What a header says about a volume, after volprep's checks.

    ``eq=False``: headers hold numpy arrays, so they compare (and hash) by identity.
    """

    path: Path
    shape: tuple[int, ...]  # (i, j, k) or (i, j, k, c)
    dtype: np.dtype  # dtype of the voxels as returned (after scaling)
    affine: np.ndarray  # 4x4, voxel -> world (RAS+ mm, NIfTI convention), read-only
    spacing: tuple[float, float, float]
    nbytes: int  # bytes of the array read_volume returns
    notes: tuple[str, ...]  # e.g. "affine from qform (sform unusable)"
    subgrid: bool = False  # a label that may cover part of its image's grid (a DICOM-SEG)


@dataclasses.dataclass
class Volume:
    """A volume's voxels and its header. ``data`` may be Fortran-ordered (file order)."""

    data: np.ndarray
    header: Header


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one file stores its voxels: the format modules' output, checked here.

    Attributes:
        path: the file the user named.
        data_path: the file holding the voxels (the same file, or a companion data file).
        offset: where the voxels start (in the decompressed stream when compressed).
        file_offset: where the compressed stream starts in ``data_path`` (compressed only).
        dims: the dimensions the header claims, as stored (before dropping trailing 1s).
        channels: channels interleaved per voxel (RGB, MetaImage multi-channel), else 0.
        stored: the voxel dtype in the file, byte order included.
        order: ``"F"`` (i fastest, NIfTI/MetaImage) or ``"C"``.
        compression: ``None``, ``"gzip"`` or ``"zlib"`` (wbits chosen accordingly).
        slope: scale factor, or ``None`` for unscaled data.
        inter: intercept (used only with a slope).
        affines: candidate ``(name, matrix or None)`` in order of preference; ``None``
            marks a candidate the header declares but that could not be computed.
        notes: what the format module noticed (kept in ``Header.notes``).
        reader: for a format whose voxels are not one stream in one file (a DICOM series:
            many files, codecs), what reads them: it returns the ``prod(dims)`` voxels, flat,
            of dtype ``stored``, in ``order``; scaling and the non-finite policy still apply.
            The format checked its files' sizes itself; ``offset``, ``compression`` and
            ``file_offset`` are unused, ``data_path`` is the first file it reads.
        files: every file of a multi-file volume (a DICOM series), for :meth:`inputs`.
        subgrid: a label volume that may cover only part of its image's grid (a DICOM-SEG
            leaves empty frames out); kept in ``Header.subgrid`` for the label check.
    """

    path: Path
    data_path: Path
    offset: int
    dims: tuple[int, ...]
    channels: int
    stored: np.dtype
    order: Literal["C", "F"]
    compression: str | None
    slope: float | None
    inter: float
    affines: tuple[tuple[str, np.ndarray | None], ...]
    notes: tuple[str, ...] = ()
    file_offset: int = 0
    reader: Callable[[], np.ndarray] | None = None
    subgrid: bool = False
    files: tuple[Path, ...] = ()

    def inputs(self) -> list[Path]:
        """Every file the voxels depend on: ``files`` (a multi-file volume such as a DICOM
        series), else the named file and its data file (a pair's ``.img``, a sidecar's
        ``.raw``, a MetaImage data file). The cache keys a case by these."""
        found = list(self.files) if self.files else [self.path, self.data_path]
        return sorted({Path(f) for f in found})


def human_bytes(n: int | float) -> str:
    """``1536`` -> ``"1.5 KiB"``; binary units, one decimal."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _fmt_shape(dims: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(d)) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def usable_affine(matrix: np.ndarray | None) -> bool:
    """Whether a 4x4 is finite with an invertible, reasonably conditioned 3x3 part."""
    if matrix is None:
        return False
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        return False
    singular = np.linalg.svd(m[:3, :3], compute_uv=False)
    return bool(singular[0] > 0 and singular[-1] > singular[0] * 1e-6)


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing in mm: the lengths of the affine's first three columns."""
    norms = np.sqrt(np.sum(np.asarray(affine, dtype=np.float64)[:3, :3] ** 2, axis=0))
    return (float(norms[0]), float(norms[1]), float(norms[2]))


def choose_affine(
    path: Path, candidates: Sequence[tuple[str, np.ndarray | None]]
) -> tuple[np.ndarray, str]:
    """The first usable candidate, and a note saying which one (and which were not).

    Raises:
        HeaderError: no candidate is finite and invertible.
    """
    rejected: list[str] = []
    for name, matrix in candidates:
        if usable_affine(matrix):
            affine = np.array(matrix, dtype=np.float64)
            affine[3] = (0.0, 0.0, 0.0, 1.0)
            note = f"affine from {name}"
            if rejected:
                note += f" ({' and '.join(rejected)} unusable)"
            return affine, note
        rejected.append(name)
    raise HeaderError(path, f"no usable affine: {', '.join(rejected)} not finite and invertible")


def spatial_shape(path: Path, dims: Sequence[int], channels: int) -> tuple[int, ...]:
    """The returned shape for claimed ``dims``: 3D or 4D, trailing 1s past the third dropped.

    Raises:
        HeaderError: a dimension < 1, fewer than 3 or more than 4 dimensions.
    """
    dims = tuple(int(d) for d in dims)
    if any(d < 1 for d in dims):
        raise HeaderError(
            path, f"header claims shape {_fmt_shape(dims)}: every dimension must be >= 1"
        )
    shape = list(dims)
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    if channels:
        if len(shape) != 3:
            raise HeaderError(
                path, f"header claims shape {_fmt_shape(dims)} with {channels} values per "
                "voxel: only 3D multi-channel volumes are supported",
            )
        shape.append(channels)
    if len(shape) < 3:
        raise HeaderError(
            path, f"header claims shape {_fmt_shape(dims)}: a {len(shape)}D image, not a 3D volume"
        )
    if len(shape) > 4:
        raise HeaderError(
            path, f"header claims shape {_fmt_shape(dims)}: {len(shape)}D, only 3D or 4D "
            "(channels last) volumes are supported",
        )
    return tuple(shape)


def out_dtype(layout: Layout) -> np.dtype:
    """The dtype ``read_volume`` returns for a layout (native byte order)."""
    if layout.slope is not None or layout.stored.kind == "f":
        return _FLOAT_OUT
    return layout.stored.newbyteorder("=")


def build_header(layout: Layout, cfg: ReadConfig) -> Header:
    """Runs the checks done before reading voxels and returns the volume's Header.

    Raises:
        HeaderError: bad dimensions, more bytes than ``cfg.max_bytes``, voxels outside the
            file (uncompressed files), or no usable affine.
    """
    path = layout.path
    data_info = require_regular_file(layout.data_path)  # the formats check it; a backstop
    shape = spatial_shape(path, layout.dims, layout.channels)
    count = math.prod(shape)
    dtype = out_dtype(layout)
    nbytes = count * dtype.itemsize
    stored_bytes = count * layout.stored.itemsize
    claimed = max(nbytes, stored_bytes)
    if claimed > cfg.max_bytes:
        raise HeaderError(
            path, f"header claims shape {_fmt_shape(shape)} {dtype.name}: "
            f"{human_bytes(claimed)}, more than read.max_bytes {human_bytes(cfg.max_bytes)}",
        )
    if layout.compression is not None and layout.offset > min(cfg.max_bytes, MAX_HEADER_BYTES):
        # inflating up to the voxels costs the offset in memory: bound it like the voxels
        raise HeaderError(
            path, f"data offset {layout.offset} is beyond any plausible header "
            f"(at most {human_bytes(min(cfg.max_bytes, MAX_HEADER_BYTES))})",
        )
    if layout.compression is None and layout.reader is None:
        size = data_info.st_size
        where = "" if layout.data_path == path else f" {layout.data_path.name}"
        if layout.offset >= size:
            raise HeaderError(
                path, f"data offset {layout.offset} is past the end of the file{where} "
                f"({size} bytes)",
            )
        if layout.offset + stored_bytes > size:
            raise HeaderError(
                path, f"file{where} is truncated: header claims {stored_bytes} bytes of voxels "
                f"from offset {layout.offset}, the file holds {size - layout.offset}",
            )
    affine, note = choose_affine(path, layout.affines)
    affine.setflags(write=False)
    notes = [*layout.notes, note]
    if layout.stored.kind == "f" and layout.stored.itemsize > 4:
        notes.append(f"{layout.stored.name} voxels returned as float32")
    return Header(
        path=path, shape=shape, dtype=dtype, affine=affine, spacing=spacing_of(affine),
        nbytes=nbytes, notes=tuple(notes), subgrid=layout.subgrid,
    )


def _read_exact(path: Path, offset: int, out: np.ndarray) -> None:
    """Fills ``out`` with the bytes at ``offset``; a short file is a DataError."""
    view = out.data.cast("B")
    got = 0
    with path.open("rb") as fh:
        fh.seek(offset)
        while got < len(view):
            n = fh.readinto(view[got:])
            if not n:
                raise DataError(
                    path, f"file is truncated: got {got} of {len(view)} bytes of voxels"
                )
            got += n


def load_voxels(layout: Layout, header: Header, cfg: ReadConfig, *,
                labels: bool = False) -> Volume:
    """Reads the voxels a checked header describes; scaling and non-finite policy applied.

    Args:
        layout: where and how the voxels are stored.
        header: the checked header (:func:`build_header`).
        cfg: the ``[read]`` config (``non_finite``).
        labels: a label volume: NaN/Inf voxels are refused whatever ``read.non_finite``
            says (a label has no "zero" fix: 0 is the background class).

    Raises:
        DataError: truncated or corrupt data, or non-finite voxels with
            ``read.non_finite = "fail"``.
        LabelError: non-finite voxels in a label volume (``labels=True``).
    """
    stored = layout.stored
    count = math.prod(header.shape)
    notes = list(header.notes)
    if layout.reader is not None:
        flat = layout.reader()
        if flat.shape != (count,) or flat.dtype != stored:
            raise AssertionError(f"{layout.path}: a format's reader returned {flat.dtype} "
                                 f"{flat.shape}, not {stored} ({count},)")
    elif layout.compression is None:
        flat = np.empty(count, dtype=stored)
        _read_exact(layout.data_path, layout.offset, flat)
    else:
        wbits = gzipfast.GZIP_WBITS if layout.compression == "gzip" else gzipfast.ZLIB_WBITS
        try:
            inflated = gzipfast.inflate_exact(
                layout.data_path, layout.offset + count * stored.itemsize, wbits,
                offset=layout.file_offset,
            )
        except gzipfast.StreamError as err:
            raise DataError(layout.data_path, str(err)) from None
        if inflated.trailing:
            notes.append("compressed stream longer than the header claims; extra data ignored")
        flat = np.frombuffer(inflated.data, dtype=stored, count=count, offset=layout.offset)
    flat = _to_output(flat, layout, header.dtype)
    if layout.channels:
        stored_shape = (layout.channels, *header.shape[:3])
        data = np.moveaxis(flat.reshape(stored_shape, order=layout.order), 0, -1)
    else:
        data = flat.reshape(header.shape, order=layout.order)
    if data.dtype.kind == "f":
        if labels:
            refuse_non_finite_labels(layout.path, data)
        else:
            notes.extend(_non_finite(layout.path, data, cfg))
    if len(notes) != len(header.notes):
        header = dataclasses.replace(header, notes=tuple(notes))
    return Volume(data=data, header=header)


def _to_output(flat: np.ndarray, layout: Layout, dtype: np.dtype) -> np.ndarray:
    """Scales / converts / byte-swaps the flat stored voxels into the returned dtype."""
    if layout.slope is not None:
        out = flat.astype(dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow -> inf, caught after
            out *= np.float32(layout.slope)
            if layout.inter:
                out += np.float32(layout.inter)
        return out
    if flat.dtype != dtype and flat.dtype.newbyteorder("=") != dtype:
        with np.errstate(over="ignore"):  # float64 beyond float32 -> inf, caught after
            return flat.astype(dtype)
    if not flat.dtype.isnative:
        flat.byteswap(inplace=True)
        return flat.view(dtype)
    return flat


def count_non_finite(data: np.ndarray) -> int:
    """How many voxels of a float array are NaN or Inf (0 after one cheap pass when none)."""
    # One buffered float64 pass, no temporary: finite float32 values cannot sum to inf in
    # float64, so a non-finite total means at least one NaN/Inf voxel.
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(data, axis=None, dtype=np.float64)
    if np.isfinite(total):
        return 0
    return int(np.count_nonzero(~np.isfinite(data)))


def refuse_non_finite_labels(path: Path | str, data: np.ndarray) -> None:
    """Raises ``LabelError`` when a label array holds NaN/Inf (the one home of that message)."""
    bad = count_non_finite(data) if data.dtype.kind == "f" else 0
    if bad:
        raise LabelError(
            path, f"label volume holds {bad} NaN/Inf values: labels must be whole numbers"
        )


def _non_finite(path: Path, data: np.ndarray, cfg: ReadConfig) -> list[str]:
    """Applies ``read.non_finite``; returns the notes to add."""
    bad = count_non_finite(data)
    if not bad:
        return []
    if cfg.non_finite == "fail":
        raise DataError(
            path, f"{bad} of {data.size} voxels are NaN or Inf (read.non_finite = 'fail')"
        )
    np.nan_to_num(data, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return [f"{bad} non-finite voxels (NaN/Inf) set to 0"]
