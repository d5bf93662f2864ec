"""NRRD volumes: ``.nrrd`` (header and data in one file) and ``.nhdr`` + a detached data file.

This module is the NRRD :class:`~volprep.io.protocol.Format` unit, written from the NRRD
specification (teem's ``NRRD0001``-``NRRD0005``) without pynrrd. Discovery takes ``.nrrd``
and ``.nhdr`` files for volumes; the data file beside a ``.nhdr`` (named by its ``data
file`` field, usually ``.raw`` or ``.raw.gz``) is its companion, not a case. The header is
the magic line, ``field: value`` lines (``#`` comments and ``key:=value`` pairs skipped),
then a blank line; attached data follows it. Fields read: ``dimension``, ``type``,
``sizes``, ``endian``, ``encoding`` (``raw``, ``gzip``/``gz``; ``bzip2``, ``ascii`` and
``hex`` are refused), ``byte skip`` (``-1``: the voxels are the file's last bytes; raw
only), ``line skip`` (0 only), ``data file`` (one file: ``LIST`` and formatted lists are
refused; the name goes through :func:`~volprep.io.paths.companion_path`, so an absolute
path or a ``..`` escape is refused and it must be a regular file beside the header or in a
folder below it), ``space`` (or ``space dimension``), ``space directions``, ``space
origin`` and ``spacings``. Axis 0 is the fastest (Fortran order). A 4D volume
whose first axis has no space direction (``none``; kinds such as ``vector``, ``RGB-color``,
``list``) is read as channels interleaved per voxel; one whose last axis has none is read
with that axis as channels. ``space directions`` and ``space origin`` give the affine in
the header's space (``left-posterior-superior``/``LPS``, ``right-anterior-superior``/
``RAS``, ``left-anterior-superior``/``LAS``, and their ``scanner-``/``3D-`` variants read as
LPS, ITK's choice); the affine returned is RAS+. Without them, ``spacings`` (or 1 mm)
give a diagonal affine, with a note.
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
NAME = "nrrd"
TITLE = "NRRD"
EXPECTED = "NRRD header"
SUFFIXES = (".nrrd", ".nhdr")
COMPANIONS = (Companion(".nhdr", ".raw", in_header=True),
              Companion(".nhdr", ".raw.gz", in_header=True))
HEAD_BYTES = MAX_HEADER_BYTES
GZIP = False

_MAGIC = re.compile(rb"^NRRD000[1-5]\r?\n")
_TYPES: dict[str, str] = {}
for _names, _code in (
    (("signed char", "int8", "int8_t"), "i1"),
    (("uchar", "unsigned char", "uint8", "uint8_t"), "u1"),
    (("short", "short int", "signed short", "signed short int", "int16", "int16_t"), "i2"),
    (("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"), "u2"),
    (("int", "signed int", "int32", "int32_t"), "i4"),
    (("uint", "unsigned int", "uint32", "uint32_t"), "u4"),
    (("longlong", "long long", "long long int", "signed long long", "signed long long int",
      "int64", "int64_t"), "i8"),
    (("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"), "u8"),
    (("float",), "f4"),
    (("double",), "f8"),
):
    _TYPES.update(dict.fromkeys(_names, _code))
# space -> the diagonal that takes its coordinates to RAS
_SPACES: dict[str, tuple[float, float, float]] = {
    "right-anterior-superior": (1, 1, 1), "ras": (1, 1, 1),
    "left-anterior-superior": (-1, 1, 1), "las": (-1, 1, 1),
    "left-posterior-superior": (-1, -1, 1), "lps": (-1, -1, 1),
    "scanner-xyz": (-1, -1, 1), "3d-right-handed": (-1, -1, 1),
}
_VECTOR = re.compile(r"\(([^()]*)\)|(none)", re.IGNORECASE)


def claims(path: Path, head: bytes) -> bool:
    """Never: an NRRD file is recognised by its magic line, whatever its name."""
    return False


def sniff(head: bytes) -> bool:
    """Whether ``head`` starts with an NRRD magic line (``NRRD0001`` to ``NRRD0005``)."""
    return _MAGIC.match(head) is not None


def _parse(path: Path, head: bytes) -> tuple[dict[str, str], int]:
    """Header fields (lower-case names) and the byte offset just past the blank line.

    A header without a blank line is complete only when its data is detached (a ``.nhdr``
    may end at its last field).
    """
    fields: dict[str, str] = {}
    pos = head.index(b"\n") + 1
    while pos < len(head):
        end = head.find(b"\n", pos)
        if end < 0:
            if len(head) >= MAX_HEADER_BYTES:
                raise HeaderError(path, f"NRRD header longer than {MAX_HEADER_BYTES} bytes")
            end = len(head)
        line = head[pos:end].rstrip(b"\r").decode("latin-1")
        pos = end + 1
        if not line:
            return fields, pos
        if line.startswith("#") or ":=" in line:
            continue
        name, sep, value = line.partition(": ")
        if not sep:
            raise HeaderError(path, f"NRRD header line {line[:40]!r} is not 'field: value'")
        fields[name.strip().lower()] = value.strip()
    if "data file" in fields or "datafile" in fields:
        return fields, len(head)
    raise HeaderError(path, "NRRD header has no blank line before its data")


def _ints(path: Path, fields: dict[str, str], name: str) -> list[int]:
    try:
        return [int(v) for v in fields[name].split()]
    except KeyError:
        raise HeaderError(path, f"NRRD header has no {name!r} field") from None
    except ValueError:
        raise HeaderError(path, f"NRRD {name} = {fields[name]!r}: not whole numbers") from None


def _floats(path: Path, name: str, text: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise HeaderError(path, f"NRRD {name} = {text!r}: not numbers") from None


def _directions(path: Path, text: str, ndim: int) -> list[list[float] | None]:
    """``(a,b,c) none (d,e,f)``: one vector (or None) per axis."""
    found = [m.group(1) for m in _VECTOR.finditer(text)]
    if len(found) != ndim:
        raise HeaderError(path, f"NRRD space directions = {text!r}: expected {ndim} vectors or none")
    return [None if v is None else _floats(path, "space directions", v) for v in found]


def _data_file(path: Path, fields: dict[str, str]) -> Path:
    name = fields.get("data file", fields.get("datafile", ""))
    if name.upper().startswith("LIST") or len(name.split()) > 1 or "%" in name:
        raise HeaderError(path, f"NRRD data file = {name!r}: only one data file is supported")
    data_path = companion_path(path, name)
    if not data_path.exists():
        raise HeaderError(path, f"NRRD data file {name!r} not found next to the header")
    require_regular_file(data_path)
    return data_path


def layout(path: Path, head: bytes, cfg: ReadConfig, compressed: bool) -> Layout:
    """Parses an NRRD header (the first bytes of the file) into a Layout.

    ``cfg`` and ``compressed`` are unused: NRRD compresses its data, not the file.

    Raises:
        HeaderError: a missing or invalid field, or a feature volprep does not read.
    """
    fields, header_end = _parse(path, head)
    sizes = _ints(path, fields, "sizes")
    ndim = _ints(path, fields, "dimension")[0] if "dimension" in fields else len(sizes)
    if ndim != len(sizes):
        raise HeaderError(path, f"NRRD sizes = {fields['sizes']!r} does not match dimension = {ndim}")
    type_name = fields.get("type", "").lower()
    if type_name not in _TYPES:
        raise HeaderError(path, f"NRRD type = {fields.get('type', 'missing')!r} is not supported")
    stored = np.dtype(_TYPES[type_name])
    if stored.itemsize > 1:
        endian = fields.get("endian", "").lower()
        if endian not in ("little", "big"):
            raise HeaderError(path, f"NRRD endian = {fields.get('endian', 'missing')!r}: little or big")
        stored = stored.newbyteorder("<" if endian == "little" else ">")
    encoding = fields.get("encoding", "").lower()
    if encoding not in ("raw", "gzip", "gz"):
        raise HeaderError(path, f"NRRD encoding = {fields.get('encoding', 'missing')!r} is not "
                                "supported (raw or gzip)")
    if int(fields.get("line skip", fields.get("lineskip", "0")) or 0) != 0:
        raise HeaderError(path, "NRRD line skip is not supported")
    skip = int(_floats(path, "byte skip", fields.get("byte skip", fields.get("byteskip", "0")))[0])
    detached = "data file" in fields or "datafile" in fields
    data_path = _data_file(path, fields) if detached else path
    start = 0 if detached else header_end
    dims, channels, axes = _axes(path, fields, sizes)
    affines, notes = _affines(path, fields, ndim, axes)
    gz = encoding != "raw"
    if skip < -1 or (skip == -1 and gz):
        raise HeaderError(path, f"NRRD byte skip = {skip} is not supported with encoding {encoding}")
    if skip == -1:  # the voxels are the last bytes of the data file
        skip = max(data_path.stat().st_size - math.prod(sizes) * stored.itemsize - start, 0)
    return Layout(
        path=path, data_path=data_path, offset=skip if gz else start + skip, dims=dims,
        channels=channels, stored=stored, order="F", compression="gzip" if gz else None,
        slope=None, inter=0.0, affines=affines, notes=notes, file_offset=start if gz else 0,
    )


def _axes(path: Path, fields: dict[str, str],
          sizes: list[int]) -> tuple[tuple[int, ...], int, list[int]]:
    """The spatial dims, the interleaved channel count and the spatial axes' indices."""
    ndim = len(sizes)
    spatial = list(range(ndim))
    if "space directions" in fields:
        spatial = [i for i, v in enumerate(_directions(path, fields["space directions"], ndim))
                   if v is not None]
    if len(spatial) != 3 and ndim > 3:
        raise HeaderError(path, f"NRRD with {ndim} axes and {len(spatial)} space directions: "
                                "a 3D volume (with one non-spatial axis at most) is expected")
    if ndim == 4 and spatial == [1, 2, 3]:
        return (sizes[1], sizes[2], sizes[3]), sizes[0], spatial
    return tuple(sizes), 0, spatial


def _affines(path: Path, fields: dict[str, str], ndim: int,
             axes: list[int]) -> tuple[tuple[tuple[str, np.ndarray | None], ...], tuple[str, ...]]:
    space = fields.get("space", "").lower()
    spacings = [1.0, 1.0, 1.0]
    notes: list[str] = []
    if "spacings" in fields:
        words = fields["spacings"].split()
        values = [math.nan if w.lower() == "nan" else _floats(path, "spacings", w)[0] for w in words]
        if len(values) != ndim:
            raise HeaderError(path, f"NRRD spacings = {fields['spacings']!r}: expected {ndim} numbers")
        chosen = [abs(values[a]) for a in axes] if len(axes) == 3 else []
        if len(chosen) == 3 and all(math.isfinite(v) and v > 0 for v in chosen):
            spacings = chosen
    elif "space directions" not in fields:
        notes.append("NRRD header has no space directions or spacings; 1 mm assumed")
    fallback: tuple[str, np.ndarray | None] = ("spacings", np.diag([*spacings, 1.0]))
    if "space directions" not in fields or len(axes) != 3:
        return (fallback,), tuple(notes)
    if space and space not in _SPACES:
        raise HeaderError(path, f"NRRD space = {fields['space']!r} is not supported")
    if not space:
        notes.append("NRRD header has space directions but no space; LPS assumed")
    flip = np.diag([*_SPACES.get(space, _SPACES["lps"]), 1.0])
    vectors = _directions(path, fields["space directions"], ndim)
    matrix = np.eye(4)
    for col, axis in enumerate(axes):
        vector = vectors[axis]
        if vector is None or len(vector) != 3:
            raise HeaderError(path, f"NRRD space directions = {fields['space directions']!r}: "
                                    "expected 3 numbers a vector")
        matrix[:3, col] = vector
    if "space origin" in fields:
        origin = _floats(path, "space origin", fields["space origin"].strip("()"))
        if len(origin) != 3:
            raise HeaderError(path, f"NRRD space origin = {fields['space origin']!r}: expected 3 numbers")
        matrix[:3, 3] = origin
    return ((f"space directions ({space or 'LPS'} -> RAS)", flip @ matrix), fallback), tuple(notes)
