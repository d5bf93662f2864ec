"""NIfTI-1, NIfTI-2 and Analyze 7.5 headers (single ``.nii`` files and ``.hdr``/``.img`` pairs).

This module is the NIfTI/Analyze :class:`~volprep.io.protocol.Format` unit: the names
discovery takes for volumes (``.nii.gz``, ``.nii``, ``.hdr``; an ``.img`` is the
companion of its ``.hdr``, an ``.img`` alone is reported), the signature, and reading
those headers into a :class:`~volprep.io.base.Layout`. The header block is decoded by
nibabel's header classes (``check=False``: volprep runs its own checks and turns every
problem into a one-line ``HeaderError``); the byte order comes from ``sizeof_hdr`` (348
or 540 in either order). The format is recognised from the content: ``sizeof_hdr`` and
the magic string, not the file name (the read stage inflates gzip first, whatever the
extension); only a pair's ``.img``, which holds voxels, is taken by name when its
``.hdr`` sits beside it. Scaling follows the NIfTI rule: ``scl_slope`` 0 or
NaN means unscaled; otherwise voxels are ``stored * slope + inter`` in float32. The affine
is the sform when its code is > 0 and it is finite and invertible, else the qform, else
the pixdim diagonal. Analyze files (no magic, a ``.hdr`` name) go through nibabel's
SPM2 Analyze header, as ``nibabel.load`` does. The voxels themselves are read by
:func:`volprep.io.base.load_voxels` (no nibabel ArrayProxy: one read or one bounded
isal inflate straight into the returned buffer).
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
from nibabel.analyze import AnalyzeHeader
from nibabel.nifti1 import Nifti1Header
from nibabel.nifti2 import Nifti2Header
from nibabel.spm2analyze import Spm2AnalyzeHeader

from volprep.config import ReadConfig
from volprep.errors import HeaderError
from volprep.io import gzipfast
from volprep.io.base import Layout
from volprep.io.paths import find_companion
from volprep.io.protocol import Companion

HEADER_BYTES = 540  # the largest header (NIfTI-2); enough to sniff and decode any of them
_HDR = (".hdr", ".hdr.gz")  # a pair's header file, as the reader finds it
_IMG = (".img", ".img.gz")  # a pair's image file

# The Format protocol (volprep.io.protocol): this module is the NIfTI/Analyze format unit.
NAME = "nifti"
TITLE = "NIfTI"
EXPECTED = "NIfTI/Analyze header"
SUFFIXES = (".nii.gz", ".nii", _HDR[0])
COMPANIONS = (Companion(_HDR[0], _IMG[0], orphan="Analyze/NIfTI .img without its .hdr"),)
HEAD_BYTES = HEADER_BYTES
GZIP = True

# datatype code -> numpy dtype (byte order added from the header).
_DTYPES: dict[int, str] = {
    2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4",
    1024: "i8", 1280: "u8",
}
_RGB: dict[int, int] = {128: 3, 2304: 4}  # RGB24, RGBA32: uint8 channels per voxel
_REFUSED: dict[int, str] = {
    0: "unknown", 1: "binary (1 bit)", 32: "complex64", 1792: "complex128",
    2048: "complex256", 1536: "float128", 128: "RGB24", 2304: "RGBA32",
}
# intent codes whose data is not a volume of values on a voxel grid
_NON_VOLUME_INTENTS: dict[int, str] = {
    1004: "general matrix", 1005: "symmetric matrix", 1008: "pointset", 1009: "triangle",
    1010: "quaternion", 2002: "node index", 2005: "shape",
}


def sniff(head: bytes) -> bool:
    """Whether ``head`` starts with a NIfTI-1/2 or Analyze ``sizeof_hdr`` (either byte order)."""
    return _version(head) is not None


def _version(head: bytes) -> str | None:
    """``"nifti1"`` (also Analyze), ``"nifti2"`` or None, from the first bytes of a header."""
    if len(head) < 4:
        return None
    for endian in ("<", ">"):
        size = struct.unpack(endian + "i", head[:4])[0]
        if size == 348:
            return "nifti1"
        if size == 540:
            return "nifti2"
    return None


def _endian(head: bytes, size: int) -> str:
    return "<" if struct.unpack("<i", head[:4])[0] == size else ">"


def _companion(path: Path, own: tuple[str, str], other: tuple[str, str]) -> Path | None:
    """The file next to ``path`` with one of the ``other`` extensions, matching its case.

    The name is derived from ``path``'s own name as given (a symlinked header's companion
    is the one beside the link, not beside its target) and goes through
    :func:`~volprep.io.paths.find_companion`: kept beside ``path``, checked regular.
    """
    name = path.name
    for ext in own:
        if name.lower().endswith(ext):
            stem, upper = name[: -len(ext)], name[-len(ext):].isupper()
            return find_companion(
                path, (stem + (e.upper() if upper else e) for e in other)
            )
    return None


def pair_image(path: Path) -> Path | None:
    """The ``.img`` (or ``.img.gz``) next to a ``.hdr`` (or ``.hdr.gz``), if it exists.

    Raises:
        HeaderError: the ``.img`` found is not a regular file (a FIFO, a device...).
    """
    return _companion(path, _HDR, _IMG)


def pair_header(path: Path) -> Path | None:
    """The ``.hdr`` next to a ``.img`` (either possibly ``.gz``), if it exists.

    Raises:
        HeaderError: the ``.hdr`` found is not a regular file (a FIFO, a device...).
    """
    return _companion(path, _IMG, _HDR)


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as fh:
        return gzipfast.is_gzip(fh.read(2))


def claims(path: Path, head: bytes) -> bool:
    """Whether ``path`` is a pair's ``.img`` with its ``.hdr`` beside it (the content of an
    ``.img`` is voxels, with no signature: its ``.hdr`` says what it is).

    Raises:
        HeaderError: the ``.hdr`` found is not a regular file.
    """
    return pair_header(path) is not None


def layout(path: Path, head: bytes, cfg: ReadConfig, compressed: bool) -> Layout:
    """Decodes a NIfTI/Analyze header into a Layout; for a pair's ``.img``, its ``.hdr``'s.

    Args:
        path: the file the user named (reported in errors and ``Header.path``).
        head: the first (decompressed) bytes of ``path``, at least 348 for a header file.
        cfg: the read config (``allow_rgb``).
        compressed: whether ``path`` is gzip-compressed.

    Raises:
        HeaderError: anything in the header volprep refuses.
    """
    header_file = pair_header(path)
    if header_file is None:
        return _decode(path, head, compressed, cfg, path)
    with header_file.open("rb") as fh:
        hhead = fh.read(HEADER_BYTES)
    hcompressed = gzipfast.is_gzip(hhead)
    if hcompressed:
        hhead = gzipfast.read_prefix(header_file, HEADER_BYTES)
    return _decode(path, hhead, hcompressed, cfg, header_file)


def _decode(path: Path, head: bytes, compressed: bool, cfg: ReadConfig, hpath: Path) -> Layout:
    """The Layout of the header ``head`` read from ``hpath`` (``path``, or a pair's ``.hdr``)."""
    kind = _version(head)
    hdr: AnalyzeHeader | Spm2AnalyzeHeader
    if kind == "nifti2":
        if len(head) < 540:
            raise HeaderError(path, f"header is truncated: {len(head)} of 540 bytes")
        hdr = Nifti2Header(binaryblock=head[:540], endianness=_endian(head, 540), check=False)
        magic = bytes(head[4:12])
        if magic not in (b"n+2\x00\r\n\x1a\n", b"ni2\x00\r\n\x1a\n"):
            raise HeaderError(path, f"bad NIfTI-2 magic {magic!r}")
        single, fmt, min_offset = magic[:3] == b"n+2", "NIfTI-2", 544
    else:
        if len(head) < 348:
            raise HeaderError(path, f"header is truncated: {len(head)} of 348 bytes")
        endian = _endian(head, 348)
        magic = bytes(head[344:348])
        if magic in (b"n+1\x00", b"ni1\x00"):
            hdr = Nifti1Header(binaryblock=head[:348], endianness=endian, check=False)
            single, fmt, min_offset = magic == b"n+1\x00", "NIfTI-1", 352
        elif hpath.name.lower().endswith(_HDR):
            hdr = Spm2AnalyzeHeader(binaryblock=head[:348], endianness=endian, check=False)
            single, fmt, min_offset = False, "Analyze", 0
        else:
            raise HeaderError(path, f"bad NIfTI-1 magic {magic!r} (expected b'n+1\\x00')")
    notes: list[str] = []
    dims = _dims(path, hdr)
    stored, channels = _dtype(path, hdr, cfg)
    bitpix = int(hdr["bitpix"])
    if bitpix != stored.itemsize * 8 * max(channels, 1):
        notes.append(f"bitpix {bitpix} disagrees with datatype {int(hdr['datatype'])}; datatype used")
    if fmt != "Analyze":
        intent = int(hdr["intent_code"])
        if intent in _NON_VOLUME_INTENTS or 3000 <= intent <= 3099:
            what = _NON_VOLUME_INTENTS.get(intent, "CIFTI")
            raise HeaderError(path, f"intent_code {intent} ({what}): not a volume")
    offset = _offset(path, hdr, single, min_offset, notes)
    if single:
        data_path = hpath
        data_compressed = compressed
    else:
        img = pair_image(hpath)
        if img is None:
            raise HeaderError(path, f"the image file (.img) of this {fmt} header pair is missing")
        data_path = img
        data_compressed = _is_gzip(img)
    slope, inter = _scaling(path, hdr, fmt)
    affines = _affines(hdr, fmt)
    return Layout(
        path=path, data_path=data_path, offset=offset, dims=dims, channels=channels,
        stored=stored, order="F", compression="gzip" if data_compressed else None,
        slope=slope, inter=inter, affines=affines, notes=tuple(notes),
    )


def _dims(path: Path, hdr: AnalyzeHeader) -> tuple[int, ...]:
    dim = [int(d) for d in hdr["dim"]]
    if not 1 <= dim[0] <= 7:
        raise HeaderError(path, f"header field dim[0] = {dim[0]}: must be 1..7")
    return tuple(dim[1:1 + dim[0]])


def _dtype(path: Path, hdr: AnalyzeHeader, cfg: ReadConfig) -> tuple[np.dtype, int]:
    code = int(hdr["datatype"])
    endian = hdr.endianness
    if code in _RGB and cfg.allow_rgb:
        return np.dtype("u1"), _RGB[code]
    if code in _DTYPES:
        stored = np.dtype(_DTYPES[code]).newbyteorder(endian)
        return stored, 0
    if code in _REFUSED:
        hint = " (set read.allow_rgb = true to read it as channels)" if code in _RGB else ""
        raise HeaderError(
            path, f"datatype {code} ({_REFUSED[code]}) is not supported{hint}"
        )
    raise HeaderError(path, f"datatype {code} is not a known NIfTI datatype")


def _offset(path: Path, hdr: AnalyzeHeader, single: bool, min_offset: int,
            notes: list[str]) -> int:
    raw = float(hdr["vox_offset"])
    if not math.isfinite(raw) or raw < 0 or raw != int(raw):
        raise HeaderError(path, f"vox_offset = {raw:g}: must be a whole number >= 0")
    offset = int(raw)
    if single and offset < min_offset:
        notes.append(f"vox_offset {offset} is inside the header; {min_offset} used")
        offset = min_offset
    return offset


def _scaling(path: Path, hdr: AnalyzeHeader, fmt: str) -> tuple[float | None, float]:
    if fmt == "Analyze":
        with np.errstate(all="ignore"):
            slope, inter = hdr.get_slope_inter()
        if slope is None or not math.isfinite(slope) or (slope == 1 and not inter):
            return None, 0.0
        return float(slope), float(inter or 0.0)
    slope = float(hdr["scl_slope"])
    inter = float(hdr["scl_inter"])
    if slope == 0 or math.isnan(slope):
        return None, 0.0
    if math.isnan(inter):
        inter = 0.0
    if not math.isfinite(slope) or not math.isfinite(inter):
        raise HeaderError(path, f"scl_slope = {slope:g}, scl_inter = {inter:g}: must be finite")
    if slope == 1 and inter == 0:
        return None, 0.0
    return slope, inter


def _affines(hdr: AnalyzeHeader, fmt: str) -> tuple[tuple[str, np.ndarray | None], ...]:
    if fmt == "Analyze":
        with np.errstate(all="ignore"):
            return (("Analyze pixdim and origin", _safe(hdr.get_best_affine)),)
    assert isinstance(hdr, Nifti1Header)  # Nifti2Header subclasses it; Analyze returned above
    out: list[tuple[str, np.ndarray | None]] = []
    with np.errstate(all="ignore"):
        if int(hdr["sform_code"]) > 0:
            out.append(("sform", _safe(hdr.get_sform)))
        if int(hdr["qform_code"]) > 0:
            out.append(("qform", _safe(hdr.get_qform)))
        zooms = np.abs(np.asarray(hdr["pixdim"][1:4], dtype=np.float64))
        out.append(("pixdim", np.diag([*zooms, 1.0])))
    return tuple(out)


def _safe(compute: object) -> np.ndarray | None:
    """An affine nibabel computes from header fields, or None when the fields are invalid."""
    try:
        return np.asarray(compute(), dtype=np.float64)  # type: ignore[operator]
    except (ValueError, ArithmeticError, np.linalg.LinAlgError):
        return None
