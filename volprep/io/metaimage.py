"""MetaImage (ITK) volumes: ``.mha`` (header and data in one file) and ``.mhd`` + data file.

This module is the MetaImage :class:`~volprep.io.protocol.Format` unit. Discovery takes
``.mha`` and ``.mhd`` files for volumes; the ``.raw`` beside a ``.mhd`` of the same name
is its data, not a case, and any ``.raw`` in a folder with a ``.mhd`` may be one (the
header names its data file), so it is not reported for lacking a raw sidecar. The module
parses the MetaImage text header (``Key = Value`` lines, the last being
``ElementDataFile``) into a :class:`~volprep.io.base.Layout`, without SimpleITK. Keys
read: ``ObjectType``, ``NDims``, ``DimSize``, ``ElementType`` (``MET_UCHAR`` ...
``MET_DOUBLE``), ``ElementNumberOfChannels`` (interleaved channels), ``ElementSpacing``
(or ``ElementSize``), ``Offset`` (or ``Position``/``Origin``), ``TransformMatrix`` (or
``Rotation``/``Orientation``: the direction of axis ``n`` is elements ``n*N .. n*N+N-1``,
as ITK reads it), ``ElementByteOrderMSB``/``BinaryDataByteOrderMSB``, ``BinaryData``,
``CompressedData`` (zlib), ``HeaderSize`` and ``ElementDataFile`` (``LOCAL`` or a file
name; ``LIST`` and file patterns are refused; a file name must lead to a regular file
beside the header or in a folder below it: an absolute path or a ``..`` escape is
refused by :func:`~volprep.io.paths.companion_path`). Other keys are ignored. MetaImage world
coordinates are LPS; the affine returned is NIfTI-style RAS (first two rows negated).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from volprep.config import ReadConfig
from volprep.errors import HeaderError
from volprep.io.base import Layout
from volprep.io.paths import companion_path, require_regular_file
from volprep.io.protocol import Companion

MAX_HEADER_BYTES = 64 * 1024

# The Format protocol (volprep.io.protocol).
NAME = "metaimage"
TITLE = "MetaImage"
EXPECTED = "MetaImage header"
SUFFIXES = (".mha", ".mhd")
COMPANIONS = (Companion(".mhd", ".raw", in_header=True),)
HEAD_BYTES = MAX_HEADER_BYTES
GZIP = False

ELEMENT_TYPES: dict[str, str] = {
    "MET_UCHAR": "u1", "MET_CHAR": "i1", "MET_USHORT": "u2", "MET_SHORT": "i2",
    "MET_UINT": "u4", "MET_INT": "i4", "MET_ULONG": "u4", "MET_LONG": "i4",
    "MET_ULONG_LONG": "u8", "MET_LONG_LONG": "i8", "MET_FLOAT": "f4", "MET_DOUBLE": "f8",
}
_LINE = re.compile(rb"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_KNOWN_FIRST = {"objecttype", "ndims", "comment", "objectsubtype", "dimsize", "name"}
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def claims(path: Path, head: bytes) -> bool:
    """Never: a MetaImage file is recognised by its header, whatever its name."""
    return False


def sniff(head: bytes) -> bool:
    """Whether ``head`` starts like a MetaImage header (a known ``Key = Value`` line)."""
    first = head.lstrip().split(b"\n", 1)[0]
    match = _LINE.match(first)
    return match is not None and match.group(1).decode("ascii").lower() in _KNOWN_FIRST


def _parse(path: Path, head: bytes) -> tuple[dict[str, str], int]:
    """Header fields (lower-case keys) and the byte offset just past ``ElementDataFile``."""
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(head):
        end = head.find(b"\n", pos)
        if end < 0:
            if len(head) >= MAX_HEADER_BYTES:
                break
            end = len(head) - 1
        line = head[pos:end + 1].rstrip(b"\r\n")
        pos = end + 1
        if not line.strip():
            continue
        match = _LINE.match(line)
        if not match:
            raise HeaderError(path, f"MetaImage header line {line[:40]!r} is not 'Key = Value'")
        key = match.group(1).decode("ascii").lower()
        fields[key] = match.group(2).decode("latin-1")
        if key == "elementdatafile":
            return fields, pos
    raise HeaderError(path, "MetaImage header has no ElementDataFile line")


def _numbers(path: Path, fields: dict[str, str], keys: tuple[str, ...], count: int,
             default: list[float] | None) -> list[float]:
    for key in keys:
        if key in fields:
            try:
                values = [float(v) for v in fields[key].split()]
            except ValueError:
                raise HeaderError(path, f"MetaImage {key} = {fields[key]!r}: not numbers") from None
            if len(values) != count:
                raise HeaderError(
                    path, f"MetaImage {key} = {fields[key]!r}: expected {count} numbers"
                )
            return values
    if default is None:
        raise HeaderError(path, f"MetaImage header has no {keys[0]}")
    return default


def _flag(path: Path, fields: dict[str, str], keys: tuple[str, ...]) -> bool:
    for key in keys:
        if key in fields:
            value = fields[key].strip().lower()
            if value not in ("true", "false", "1", "0"):
                raise HeaderError(path, f"MetaImage {key} = {fields[key]!r}: True or False")
            return value in ("true", "1")
    return False


def layout(path: Path, head: bytes, cfg: ReadConfig, compressed: bool) -> Layout:
    """Parses a MetaImage header (the first bytes of the file) into a Layout.

    ``cfg`` and ``compressed`` are unused: MetaImage compresses the data, not the file
    (``CompressedData``), and the read stage never hands it a gzip file.

    Raises:
        HeaderError: a missing or invalid field, or a feature volprep does not read.
    """
    fields, header_end = _parse(path, head)
    obj = fields.get("objecttype", "Image").strip()
    if obj.lower() != "image":
        raise HeaderError(path, f"MetaImage ObjectType = {obj!r}: only Image is supported")
    dims_f = _numbers(path, fields, ("dimsize",), len(fields.get("dimsize", "").split()), None)
    ndims = int(_numbers(path, fields, ("ndims",), 1, [float(len(dims_f))])[0])
    if ndims != len(dims_f) or any(d != int(d) for d in dims_f):
        raise HeaderError(path, f"MetaImage DimSize = {fields['dimsize']!r} does not match NDims = {ndims}")
    dims = tuple(int(d) for d in dims_f)
    etype = fields.get("elementtype", "").strip().upper()
    base = etype[: -len("_ARRAY")] if etype.endswith("_ARRAY") else etype
    if base not in ELEMENT_TYPES:
        raise HeaderError(path, f"MetaImage ElementType = {etype or 'missing'!r} is not supported")
    channels = int(_numbers(path, fields, ("elementnumberofchannels",), 1, [1.0])[0])
    if channels < 1:
        raise HeaderError(path, f"MetaImage ElementNumberOfChannels = {channels}: must be >= 1")
    if fields.get("binarydata", "True").strip().lower() not in ("true", "1"):
        raise HeaderError(path, "MetaImage BinaryData = False (ASCII voxels) is not supported")
    msb = _flag(path, fields, ("elementbyteordermsb", "binarydatabyteordermsb"))
    compressed = _flag(path, fields, ("compresseddata",))
    spacing = _numbers(path, fields, ("elementspacing", "elementsize"), ndims, [1.0] * ndims)
    origin = _numbers(path, fields, ("offset", "position", "origin"), ndims, [0.0] * ndims)
    eye = np.eye(ndims).ravel().tolist()
    matrix = _numbers(path, fields, ("transformmatrix", "rotation", "orientation"),
                      ndims * ndims, eye)
    data_path, offset = _data_file(path, fields, header_end, compressed)
    stored = np.dtype(ELEMENT_TYPES[base]).newbyteorder(">" if msb else "<")
    if offset < 0:  # HeaderSize = -1: the voxels are the last bytes of the data file
        offset = data_path.stat().st_size - math.prod(dims) * channels * stored.itemsize
        offset = max(offset, 0)
    affines: tuple[tuple[str, np.ndarray | None], ...] = ()
    if ndims >= 3:
        direction = np.asarray(matrix, dtype=np.float64).reshape(ndims, ndims).T[:3, :3]
        lps = np.eye(4)
        lps[:3, :3] = direction * np.asarray(spacing[:3])
        lps[:3, 3] = origin[:3]
        affines = (("TransformMatrix (LPS -> RAS)", _LPS_TO_RAS @ lps),
                   ("ElementSpacing", np.diag([*np.abs(spacing[:3]), 1.0])))
    file_offset = 0
    if compressed:  # the zlib stream starts at `offset`; the voxels start it
        file_offset, offset = offset, 0
    return Layout(
        path=path, data_path=data_path, offset=offset, dims=dims,
        channels=channels if channels > 1 else 0, stored=stored, order="F",
        compression="zlib" if compressed else None, slope=None, inter=0.0,
        affines=affines, file_offset=file_offset,
    )


def _data_file(path: Path, fields: dict[str, str], header_end: int,
               compressed: bool) -> tuple[Path, int]:
    name = fields["elementdatafile"].strip()
    if name.upper() == "LOCAL":
        return path, header_end
    if name.upper().startswith("LIST") or "%" in name or " " in name:
        raise HeaderError(path, f"MetaImage ElementDataFile = {name!r}: only LOCAL or one file")
    data_path = companion_path(path, name)
    if not data_path.exists():
        raise HeaderError(path, f"MetaImage data file {name!r} not found next to the header")
    require_regular_file(data_path)
    header_size = int(_numbers(path, fields, ("headersize",), 1, [0.0])[0])
    if header_size < -1 or (header_size == -1 and compressed):
        raise HeaderError(path, f"MetaImage HeaderSize = {header_size} is not supported")
    return data_path, header_size
