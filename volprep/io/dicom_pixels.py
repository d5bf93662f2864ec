"""DICOM pixel data: which transfer syntaxes can be decoded here, and reading a series' voxels.

:func:`check_decodable` runs on headers (before any pixel is read): a compressed transfer
syntax needs one of pydicom's decoder plugins, and when none is installed the series is
refused with the extra to install (``volprep[dicom]``: python-gdcm, pylibjpeg with
pylibjpeg-openjpeg). :func:`read_voxels` fills one buffer, slice by slice in the series'
sorted order: native little-endian pixels are read straight from each file at the offset
its header gave (no pydicom decoding: one ``readinto`` a frame), anything else (JPEG, JPEG
2000, JPEG-LS, RLE, deflate, big endian) is decoded by pydicom. Signed pixels with fewer
stored than allocated bits are sign-extended as pydicom does; a series whose rescale
differs between slices is scaled here, slice by slice, to float32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import UID

from volprep.errors import DataError, HeaderError
from volprep.io.dicom_series import Series, quiet

EXTRA = "pip install 'volprep[dicom]'"


def check_decodable(path: Path, syntax: str, label: str) -> None:
    """Refuses a transfer syntax that pydicom cannot decode with the plugins installed.

    Raises:
        HeaderError: an unknown syntax, or a compressed one without a decoder.
    """
    uid = UID(syntax)
    if not syntax or not uid.is_transfer_syntax:
        raise HeaderError(path, f"{label}: {path.name}: transfer syntax {syntax or 'missing'!r} "
                                "is not a DICOM transfer syntax")
    if not uid.is_compressed:
        return
    try:
        decoder = pydicom.pixels.get_decoder(uid)
    except NotImplementedError:
        raise HeaderError(path, f"{label}: {path.name}: transfer syntax {uid.name} ({syntax}) "
                                "cannot be decoded by pydicom") from None
    if not decoder.is_available:
        raise HeaderError(path, f"{label}: {path.name}: transfer syntax {uid.name} ({syntax}) "
                                f"needs a decoder that is not installed: {EXTRA}")


def read_voxels(series: Series) -> np.ndarray:
    """The series' voxels, flat, in Fortran order over ``(column, row, slice)``.

    The dtype is ``series.dtype``: the stored pixel type, or float32 already rescaled when
    the rescale differs between slices (the uniform rescale is left to the caller).

    Raises:
        DataError: a file changed since its header was read, or pixel data pydicom cannot
            decode (naming the file).
    """
    columns, rows, count = series.dims
    out = np.empty((count, rows, columns), dtype=series.dtype)
    per_slice = series.dtype != series.frames[0].instance.dtype
    decoded: dict[Path, np.ndarray] = {}
    for k, frame in enumerate(series.frames):
        inst = frame.instance
        if inst.value_at is not None:
            plane = np.empty((rows, columns), dtype=inst.dtype)
            with inst.path.open("rb") as fh:
                fh.seek(inst.value_at + frame.index * plane.nbytes)
                if fh.readinto(plane.data.cast("B")) != plane.nbytes:
                    raise DataError(inst.path, f"{series.label}: {inst.path.name}: pixel data is "
                                               "shorter than its header said (file changed?)")
            if inst.dtype.kind == "i" and inst.bits_stored < inst.dtype.itemsize * 8:
                shift = inst.dtype.itemsize * 8 - inst.bits_stored
                plane = (plane << shift) >> shift  # sign-extend from BitsStored
        else:
            if inst.path not in decoded:
                decoded.clear()  # one multi-frame file's frames are used together
                decoded[inst.path] = _decode(inst.path, series.label)
            pixels = decoded[inst.path]
            plane = pixels[frame.index] if pixels.ndim == 3 else pixels
            if plane.shape != (rows, columns):
                raise DataError(inst.path, f"{series.label}: {inst.path.name}: decoded "
                                           f"{plane.shape}, the header says {(rows, columns)}")
        if per_slice:
            out[k] = plane.astype(np.float32) * np.float32(frame.slope) + np.float32(frame.inter)
        else:
            out[k] = plane
    return out.reshape(-1)


def _decode(path: Path, label: str) -> np.ndarray:
    """All frames of one file, decoded by pydicom (no rescale, no VOI LUT)."""
    try:
        with quiet():
            return np.asarray(pydicom.dcmread(path).pixel_array)
    except Exception as err:  # noqa: BLE001 - decoders raise anything; the message may quote data
        raise DataError(path, f"{label}: {path.name}: pixel data could not be decoded "
                              f"({type(err).__name__})") from None
