"""Raw volumes: ``name.raw`` (or ``name.raw.gz``) described by a ``name.json`` sidecar.

This module owns the sidecar format and turns it into a :class:`~volprep.io.base.Layout`.
The sidecar is a JSON object with these keys (any other key is refused, so a typo such
as ``"byteorder"`` cannot silently give wrong voxels):

- ``shape`` (required): ``[i, j, k]`` or ``[i, j, k, c]``, whole numbers >= 1.
- ``dtype`` (required): a numpy name, one of ``uint8 int8 uint16 int16 uint32 int32
  uint64 int64 float32 float64``.
- ``byte_order``: ``"little"`` (default) or ``"big"``.
- ``order``: ``"C"`` (default: the last axis varies fastest, what ``ndarray.tofile``
  writes for an ``(i, j, k[, c])`` array) or ``"F"`` (``i`` fastest, as in NIfTI and
  MetaImage files).
- ``spacing``: ``[si, sj, sk]`` in mm, each > 0 (default 1 mm, with a note).
- ``affine``: a 4x4 voxel -> world matrix, RAS+ mm (NIfTI convention); when absent the
  affine is the spacing diagonal.
- ``offset``: bytes to skip at the start of the raw file (default 0; counted in the
  decompressed stream when the file is gzip).

The data file may be gzip-compressed (recognised by its content). The sidecar cannot
name a data file (no such key; an unknown key is refused): the pair is found by name,
beside each other, through :func:`~volprep.io.paths.find_companion`.

This module is the raw :class:`~volprep.io.protocol.Format` unit. Raw data has no
signature, so the read stage takes a file for raw by its name only (``claims``): a
``name.raw``/``name.raw.gz`` whose ``name.json`` exists, or a ``name.json`` holding a JSON
object (the sidecar named instead of the data). Discovery lists ``name.raw`` as a volume
only with its sidecar, and reports it without one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from volprep.config import ReadConfig
from volprep.errors import HeaderError
from volprep.io import gzipfast
from volprep.io.base import Layout
from volprep.io.paths import find_companion
from volprep.io.protocol import Companion

_DATA = (".raw", ".raw.gz")  # a raw data file's name, as the reader takes it
_SIDECAR = ".json"
NO_SIDECAR = "raw volume without a .json sidecar (shape, dtype, spacing)"

# The Format protocol (volprep.io.protocol).
NAME = "raw"
TITLE = "raw"
EXPECTED = ".raw + .json sidecar"
SUFFIXES = (_DATA[0],)
COMPANIONS = (Companion(_DATA[0], _SIDECAR, needed=NO_SIDECAR),)
HEAD_BYTES = 4096  # enough to see the sidecar's opening brace
GZIP = False

DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
          "float32", "float64")
KEYS = ("shape", "dtype", "byte_order", "order", "spacing", "affine", "offset")
MAX_SIDECAR_BYTES = 1 << 20


def sidecar_for(path: Path) -> Path | None:
    """The ``name.json`` next to ``name.raw`` / ``name.raw.gz``, if it exists.

    Raises:
        HeaderError: the sidecar found is not a regular file (a FIFO, a device...).
    """
    name = path.name
    for ext in (*reversed(_DATA), ".gz"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    else:
        name = path.stem
    if name + _SIDECAR == path.name:
        return None
    return find_companion(path, (name + _SIDECAR,))


def data_for(sidecar: Path) -> Path | None:
    """The ``name.raw`` (or ``name.raw.gz``) a ``name.json`` sidecar describes."""
    return find_companion(sidecar, (sidecar.stem + ext for ext in (*_DATA, _DATA[0].upper())))


def claims(path: Path, head: bytes) -> bool:
    """Whether ``path`` is raw data with its sidecar beside it, or a sidecar (a JSON object).

    Raises:
        HeaderError: the sidecar found is not a regular file.
    """
    lower = path.name.lower()
    if lower.endswith(_DATA):
        return sidecar_for(path) is not None
    return lower.endswith(_SIDECAR) and head.lstrip().startswith(b"{")


def sniff(head: bytes) -> bool:
    """Never: raw data has no signature (:func:`claims` takes it by name)."""
    return False


def layout(path: Path, head: bytes, cfg: ReadConfig, compressed: bool) -> Layout:
    """The Layout of raw data or of its sidecar (whichever was named); ``cfg``,
    ``compressed`` unused (a gzip data file is recognised here, by its content).

    Raises:
        HeaderError: no sidecar, no data file beside the sidecar, or a bad sidecar.
    """
    if path.name.lower().endswith(_SIDECAR):
        data = data_for(path)
        if data is None:
            raise HeaderError(path, "a .json sidecar with no .raw file next to it")
        return _layout(path, path, data)
    sidecar = sidecar_for(path)
    if sidecar is None:
        raise HeaderError(path, NO_SIDECAR)
    return _layout(path, sidecar, path)


def _load_sidecar(path: Path, sidecar: Path) -> dict[str, Any]:
    if sidecar.stat().st_size > MAX_SIDECAR_BYTES:
        raise HeaderError(path, f"sidecar {sidecar.name} is larger than 1 MiB")
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise HeaderError(path, f"sidecar {sidecar.name} is not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise HeaderError(path, f"sidecar {sidecar.name} must hold a JSON object")
    unknown = sorted(set(meta) - set(KEYS))
    if unknown:
        raise HeaderError(
            path, f"sidecar key {unknown[0]!r} is unknown; allowed: {', '.join(KEYS)}"
        )
    return meta


def _numbers(path: Path, key: str, value: Any, length: int | tuple[int, ...]) -> list[float]:
    lengths = (length,) if isinstance(length, int) else length
    if (not isinstance(value, list) or len(value) not in lengths
            or any(isinstance(v, bool) or not isinstance(v, int | float) for v in value)):
        want = " or ".join(str(n) for n in lengths)
        raise HeaderError(path, f"sidecar {key} = {value!r}: expected a list of {want} numbers")
    return [float(v) for v in value]


def _layout(path: Path, sidecar: Path, data_path: Path) -> Layout:
    """Reads a raw volume's sidecar into a Layout.

    Args:
        path: the file the user named (the ``.raw`` or the ``.json``).
        sidecar: the JSON sidecar.
        data_path: the raw voxel file.

    Raises:
        HeaderError: a missing or invalid key.
    """
    meta = _load_sidecar(path, sidecar)
    for key in ("shape", "dtype"):
        if key not in meta:
            raise HeaderError(path, f"sidecar {sidecar.name} has no {key!r}")
    shape = _numbers(path, "shape", meta["shape"], (3, 4))
    if any(v != int(v) for v in shape):
        raise HeaderError(path, f"sidecar shape = {meta['shape']!r}: expected whole numbers")
    dtype_name = meta["dtype"]
    if dtype_name not in DTYPES:
        raise HeaderError(
            path, f"sidecar dtype = {dtype_name!r} is not supported; one of {', '.join(DTYPES)}"
        )
    byte_order = meta.get("byte_order", "little")
    if byte_order not in ("little", "big"):
        raise HeaderError(path, f"sidecar byte_order = {byte_order!r}: 'little' or 'big'")
    order = meta.get("order", "C")
    if order not in ("C", "F"):
        raise HeaderError(path, f"sidecar order = {order!r}: 'C' or 'F'")
    offset = meta.get("offset", 0)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise HeaderError(path, f"sidecar offset = {offset!r}: a whole number >= 0")
    notes: list[str] = []
    if "spacing" in meta:
        spacing = _numbers(path, "spacing", meta["spacing"], 3)
        if not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise HeaderError(path, f"sidecar spacing = {meta['spacing']!r}: each must be > 0")
    else:
        spacing = [1.0, 1.0, 1.0]
        notes.append("raw sidecar has no spacing; 1 mm assumed")
    affines: list[tuple[str, np.ndarray | None]] = []
    if "affine" in meta:
        rows = meta["affine"]
        if not isinstance(rows, list) or len(rows) != 4:
            raise HeaderError(path, "sidecar affine: expected a 4x4 list of lists")
        affines.append(("sidecar affine", np.array(
            [_numbers(path, "affine", row, 4) for row in rows], dtype=np.float64
        )))
    affines.append(("spacing", np.diag([*spacing, 1.0])))
    with data_path.open("rb") as fh:
        compressed = gzipfast.is_gzip(fh.read(2))
    endian = "<" if byte_order == "little" else ">"
    return Layout(
        path=path, data_path=data_path, offset=offset, dims=tuple(int(v) for v in shape),
        channels=0, stored=np.dtype(dtype_name).newbyteorder(endian), order=order,
        compression="gzip" if compressed else None, slope=None, inter=0.0,
        affines=tuple(affines), notes=tuple(notes),
    )
