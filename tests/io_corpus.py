"""Builders for the read stage's tests: small volumes written in every format volprep reads.

Each writer puts a known array into a real file (nibabel for NIfTI/Analyze, hand-written
MetaImage and raw + JSON sidecars) so tests can read it back and compare, and
``patch_fields`` edits header fields in place to build broken files. Arrays are tiny and
drawn from a seeded generator.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.nifti1 import Nifti1Header
from nibabel.nifti2 import Nifti2Header

AFFINE = np.array([
    [-1.5, 0.0, 0.0, 30.0],
    [0.0, 2.0, 0.0, -20.0],
    [0.0, 0.0, 2.5, 10.0],
    [0.0, 0.0, 0.0, 1.0],
])


def phantom(shape: tuple[int, ...], dtype: str = "int16", seed: int = 0) -> np.ndarray:
    """A smooth blob plus noise, cast to ``dtype`` (F-ordered, like nibabel's arrays)."""
    rng = np.random.default_rng([seed, len(shape)])
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape[:3]], indexing="ij")
    blob = 200 * np.exp(-sum(g**2 for g in grids) * 2)
    if len(shape) == 4:
        blob = blob[..., None] * (1 + np.arange(shape[3]))
    data = blob + rng.normal(0, 5, shape)
    if np.dtype(dtype).kind == "u":
        data = np.abs(data)
    return np.asfortranarray(data.astype(dtype))


def header_class(version: int) -> type[Nifti1Header]:
    return Nifti1Header if version == 1 else Nifti2Header


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE, *,
                version: int = 1, endian: str = "<", gz: bool | None = None,
                fields: dict[str, Any] | None = None, qform_code: int = 0) -> Path:
    """Writes ``data`` as NIfTI (``.nii``/``.hdr`` pair chosen from the name), then patches.

    ``gz`` compresses the result whatever the name (default: the name ends in ``.gz``).
    Returns the header path.
    """
    path = Path(path)
    gz = path.name.endswith(".gz") if gz is None else gz
    base = path.name[:-3] if path.name.endswith(".gz") else path.name
    pair = base.endswith(".hdr")
    plain = path.with_name("plain_" + base)
    cls: Any
    if version == 1:
        cls = nib.Nifti1Pair if pair else nib.Nifti1Image
    else:
        cls = nib.Nifti2Pair if pair else nib.Nifti2Image
    img = cls(data, affine, dtype=data.dtype)
    img.header.set_data_dtype(data.dtype)
    img.set_qform(affine, code=qform_code)
    img.set_sform(affine, code=2)
    img.header.set_slope_inter(1.0, 0.0)
    if endian == ">":
        img = cls(data, affine, header=img.header.as_byteswapped(">"))
    img.to_filename(plain)
    if fields:
        patch_fields(plain, fields, version)
    hdr_out = path.with_name(base + (".gz" if gz else ""))
    _move(plain, hdr_out, gz)
    if pair:
        img_plain = plain.with_name(plain.name[:-4] + ".img")
        _move(img_plain, path.with_name(base[:-4] + ".img" + (".gz" if gz else "")), gz)
    return hdr_out


def _move(src: Path, dst: Path, gz: bool) -> None:
    blob = src.read_bytes()
    src.unlink()
    dst.write_bytes(gzip.compress(blob, compresslevel=6, mtime=0) if gz else blob)


def patch_fields(path: Path, fields: dict[str, Any], version: int = 1) -> None:
    """Sets header fields of an uncompressed NIfTI file in place (no validity checks)."""
    size = 348 if version == 1 else 540
    with open(path, "r+b") as fh:
        block = fh.read(size)
        endian = "<" if int.from_bytes(block[:4], "little") == size else ">"
        hdr = header_class(version)(binaryblock=block, endianness=endian, check=False)
        for name, value in fields.items():
            hdr[name] = value
        fh.seek(0)
        fh.write(hdr.binaryblock)


def write_raw(path: Path, data: np.ndarray, *, byte_order: str = "little", order: str = "C",
              spacing: list[float] | None = (1.0, 2.0, 3.0),  # type: ignore[assignment]
              affine: np.ndarray | None = None, offset: int = 0, gz: bool = False,
              extra: dict[str, Any] | None = None) -> Path:
    """Writes ``name.raw`` and ``name.json``; returns the ``.raw`` path."""
    path = Path(path)
    stored = data.astype(data.dtype.newbyteorder("<" if byte_order == "little" else ">"))
    blob = b"\x07" * offset + stored.tobytes(order=order)
    path.write_bytes(gzip.compress(blob, mtime=0) if gz else blob)
    meta: dict[str, Any] = {"shape": list(data.shape), "dtype": data.dtype.name,
                            "byte_order": byte_order, "order": order}
    if spacing is not None:
        meta["spacing"] = list(spacing)
    if affine is not None:
        meta["affine"] = np.asarray(affine).tolist()
    if offset:
        meta["offset"] = offset
    meta.update(extra or {})
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    path.with_name(stem[:-4] + ".json").write_text(json.dumps(meta))
    return path


_MET = {"uint8": "MET_UCHAR", "int8": "MET_CHAR", "int16": "MET_SHORT",
        "uint16": "MET_USHORT", "int32": "MET_INT", "uint32": "MET_UINT",
        "float32": "MET_FLOAT", "float64": "MET_DOUBLE"}


def write_metaimage(path: Path, data: np.ndarray, *, spacing: tuple[float, ...] = (1.0, 2.0, 3.0),
                    direction: np.ndarray | None = None,
                    origin: tuple[float, ...] = (5.0, -6.0, 7.0), msb: bool = False,
                    compressed: bool = False, channels: int = 1,
                    extra_lines: tuple[str, ...] = ()) -> Path:
    """Writes ``.mha`` (data LOCAL) or ``.mhd`` + ``.raw`` from an ``(i, j, k[, c])`` array.

    With ``channels > 1`` the last axis of ``data`` is interleaved per voxel.
    ``direction`` is the 3x3 LPS direction matrix (columns = axis directions).
    """
    path = Path(path)
    direction = np.eye(3) if direction is None else np.asarray(direction)
    spatial = data.shape[:3] if channels > 1 else data.shape
    stored = data.astype(data.dtype.newbyteorder(">" if msb else "<"))
    if channels > 1:  # channel fastest, then i, j, k
        blob = np.moveaxis(stored, -1, 0).tobytes(order="F")
    else:
        blob = stored.tobytes(order="F")
    if compressed:
        blob = zlib.compress(blob)
    transform = " ".join(f"{v:g}" for v in direction.T.ravel())  # axis n's direction, in turn
    lines = [
        "ObjectType = Image",
        f"NDims = {len(spatial)}",
        "BinaryData = True",
        f"BinaryDataByteOrderMSB = {msb}",
        f"CompressedData = {compressed}",
        f"TransformMatrix = {transform}" if len(spatial) == 3 else "",
        f"Offset = {' '.join(f'{v:g}' for v in origin[:len(spatial)])}",
        f"ElementSpacing = {' '.join(f'{v:g}' for v in spacing[:len(spatial)])}",
        f"DimSize = {' '.join(str(d) for d in spatial)}",
        *( [f"ElementNumberOfChannels = {channels}"] if channels > 1 else []),
        *extra_lines,
        f"ElementType = {_MET[data.dtype.name]}",
    ]
    lines = [line for line in lines if line]
    if path.suffix == ".mha":
        text = "\n".join([*lines, "ElementDataFile = LOCAL"]) + "\n"
        path.write_bytes(text.encode() + blob)
    else:
        raw = path.with_suffix(".raw")
        text = "\n".join([*lines, f"ElementDataFile = {raw.name}"]) + "\n"
        path.write_text(text)
        raw.write_bytes(blob)
    return path
