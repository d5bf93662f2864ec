"""DICOM series: the :class:`~volprep.io.protocol.Format` unit of a format that reads folders.

A DICOM series is many files (one a slice) or a multi-frame file (Enhanced MR/CT, RT dose),
so this format reads *folders*: it has no volume suffix (``SUFFIXES`` is empty: a ``.dcm``
file is never a case on its own) and declares ``FOLDERS = True``, and discovery asks its
:func:`folder_cases` which cases a folder holds. A folder of one image series is one case
(the folder); a folder of several is one case a series, each named by the first file of
its series (a file given to the reader stands for its whole series, gathered from the
files beside it). What :func:`layout` reads:

* a folder: its one image series; a folder holding several is refused, naming them;
* a DICOM file (recognised by ``DICM`` after the 128-byte preamble, whatever its name): the
  series it belongs to, among the files beside it; with ``[read] dicom_series = "refuse"``
  a folder holding several series is refused, naming them, instead of split;
* a DICOM-SEG file: a label volume (:mod:`volprep.io.dicom_seg`, through highdicom).

The headers are read and checked first (:mod:`volprep.io.dicom_series`: sorting, spacing,
orientation; :func:`~volprep.io.dicom_pixels.check_decodable`: a decoder for compressed
pixels), the memory the volume claims is checked against ``read.max_bytes`` by the read
stage like any format, and only then are pixels read (:mod:`volprep.io.dicom_pixels`).
``RescaleSlope``/``RescaleIntercept`` (or an Enhanced file's pixel value transformation, or
an RT dose's ``DoseGridScaling``) are applied: voxels come back as float32 unless the
rescale is the identity. Arrays are ``(column, row, slice)``, Fortran-ordered; the affine is
RAS+. Non-image objects (structured reports, presentation states, segmentations) in a
folder are skipped. Messages name files, series numbers and geometry, never a patient.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import pydicom

from volprep.config import ReadConfig
from volprep.errors import HeaderError
from volprep.io.base import Layout
from volprep.io.dicom_pixels import check_decodable, read_voxels
from volprep.io.dicom_seg import SEG_SOP_CLASS
from volprep.io.dicom_seg import layout as seg_layout
from volprep.io.dicom_series import assemble, describe, files, quiet, scan
from volprep.io.dicom_series import name as series_name
from volprep.io.paths import require_regular_file
from volprep.io.protocol import Companion

MAGIC_AT = 128  # "DICM" follows a 128-byte preamble (DICOM Part 10)

# The Format protocol (volprep.io.protocol).
NAME = "dicom"
TITLE = "DICOM"
EXPECTED = "DICOM header"
SUFFIXES: tuple[str, ...] = ()  # a series is a folder: discovery lists folder_cases instead
COMPANIONS: tuple[Companion, ...] = ()
HEAD_BYTES = MAGIC_AT + 4
GZIP = False
FOLDERS = True
_SPLIT_HINT = "name one file of the series wanted, or give each series its own folder"


def is_dicom(head: bytes) -> bool:
    """Whether a file's first bytes are a DICOM Part 10 file (``DICM`` after the preamble)."""
    return head[MAGIC_AT:MAGIC_AT + 4] == b"DICM"


def dicom_files(folder: Path, *, first: bool = False) -> list[Path]:
    """The DICOM files directly in ``folder``, sorted by name (hidden and non-regular files
    skipped: a FIFO is never opened); with ``first``, at most the first one found."""
    found = []
    for name in sorted(os.listdir(folder)):
        path = folder / name
        if name.startswith(".") or not path.is_file():
            continue
        require_regular_file(path)  # is_file() follows links to regular files only: a backstop
        with path.open("rb") as fh:
            if is_dicom(fh.read(HEAD_BYTES)):
                found.append(path)
                if first:
                    break
    return found


def claims(path: Path, head: bytes) -> bool:
    """Whether ``path`` is a folder holding DICOM files (files are recognised by ``sniff``)."""
    return path.is_dir() and bool(dicom_files(path, first=True))


def sniff(head: bytes) -> bool:
    """Whether ``head`` is the start of a DICOM Part 10 file."""
    return is_dicom(head)


def folder_cases(folder: Path, naming: str = "name") -> list[tuple[str, Path]]:
    """The cases ``folder``'s own files hold (not its subfolders): ``(tag, path)`` pairs.

    ``[]`` without an image series; ``[("", folder)]`` for one series; for several, one
    pair a series: the tag ``s<SeriesNumber>`` (``-2``, ``-3``... when numbers repeat) and
    the series' first file, which the reader takes for its series. Series are in the order
    of their first file names. Discovery makes the case id from the folder and the tag.
    With ``naming="uid"`` every series' tag is :func:`uid_tag` of its SeriesInstanceUID
    (the path as above), and discovery takes the tag alone as the case id.
    """
    series = scan(dicom_files(folder))
    if naming == "uid":
        one = len(series) == 1
        return [(uid_tag(uid), folder if one else members[0].path) for uid, members in series.items()]
    if len(series) <= 1:
        return [("", folder)] if series else []
    seen: dict[str, int] = {}
    cases = []
    for members in series.values():
        number = members[0].number
        tag = f"s{number}" if number is not None else "s"
        seen[tag] = seen.get(tag, 0) + 1
        cases.append((tag if seen[tag] == 1 else f"{tag}-{seen[tag]}", members[0].path))
    return cases


def uid_tag(series_uid: str) -> str:
    """A case id from a SeriesInstanceUID: ``dcm-`` and 12 hex digits of its SHA-256.

    Stable across exports and machines, the same for every file of the series, and says
    nothing about the patient (a UID is an opaque number; the hash shortens it).
    """
    return "dcm-" + hashlib.sha256(series_uid.encode("ascii", "replace")).hexdigest()[:12]


def layout(path: Path, head: bytes, cfg: ReadConfig, compressed: bool) -> Layout:
    """The Layout of the series that ``path`` (a folder, or a file of the series) names.

    Raises:
        HeaderError: no image series, several where one is needed, or a series refused
            by its headers (see the module docstring).
    """
    folder = path if path.is_dir() else path.parent
    uid, sop = ("", "") if path.is_dir() else _series_uid(path)
    if sop == SEG_SOP_CLASS:
        return seg_layout(path)
    series = scan(dicom_files(folder), full=True)
    if path.is_dir():
        if not series:
            raise HeaderError(path, "folder holds no DICOM image series")
        if len(series) > 1:
            raise HeaderError(path, f"DICOM folder holds {len(series)} series ({describe(series)}): "
                                    f"{_SPLIT_HINT}")
        members = next(iter(series.values()))
    else:
        members = series.get(uid, [])
        if not any(m.path == path for m in members):
            raise HeaderError(path, "DICOM file is not an image (a report, presentation state, "
                                    "segmentation or other non-image object)")
        if len(series) > 1 and cfg.dicom_series == "refuse":
            raise HeaderError(folder, f"DICOM folder holds {len(series)} series ({describe(series)}): "
                                      "[read] dicom_series = \"refuse\"")
    label = f"DICOM {series_name(members[0].number)} ({files(len(members))})"
    checked = assemble(members, label)
    for instance in sorted({f.instance.path: f.instance for f in checked.frames}.items()):
        check_decodable(instance[0], instance[1].syntax, label)
    scales = {(f.slope, f.inter) for f in checked.frames}
    slope, inter = next(iter(scales)) if len(scales) == 1 else (1.0, 0.0)
    scaled = len(scales) == 1 and (slope, inter) != (1.0, 0.0)
    notes = list(checked.notes)
    return Layout(
        path=path, data_path=checked.frames[0].instance.path, offset=0, dims=checked.dims,
        channels=0, stored=checked.dtype, order="F", compression=None,
        slope=slope if scaled else None, inter=inter if scaled else 0.0,
        affines=(("DICOM ImagePositionPatient/ImageOrientationPatient (LPS -> RAS)", checked.affine),),
        notes=tuple(notes), reader=functools.partial(read_voxels, checked),
        files=tuple(sorted({f.instance.path for f in checked.frames})),
    )


def _series_uid(path: Path) -> tuple[str, str]:
    with quiet():
        ds = pydicom.dcmread(path, stop_before_pixels=True,
                             specific_tags=["SeriesInstanceUID", "SOPClassUID"])
    return str(ds.get("SeriesInstanceUID", "")), str(ds.get("SOPClassUID", ""))

