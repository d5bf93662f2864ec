"""The table of input formats: which formats volprep reads, in the order they are tried.

:data:`FORMATS` is the one place a format is listed. The read stage's dispatch
(:mod:`volprep.io.read`), discovery's volume and companion rules and case-id suffix
stripping (:mod:`volprep.names`) all iterate it, through the helpers below; no other module
names a format's suffixes. Adding a format is one module of :mod:`volprep.io` satisfying
:class:`~volprep.io.protocol.Format` and one line here (its name in ``FORMAT_MODULES``; the
same one-line tables list reductions and augmentation ops). :func:`check_table` holds each
module to the protocol when the table is built, and ``tests/test_formats_registry.py`` runs
every listed format through the same checks. Order matters only where formats overlap: the first format that claims a file by
name, else the first whose signature matches, reads it; messages list formats in this order.
A format that reads folders (a DICOM series) declares ``FOLDERS = True`` and a
``folder_cases`` function (see :class:`~volprep.io.protocol.FolderFormat`); it may list no
volume suffix. :func:`folder_formats` is how the read stage and discovery find them.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence

from volprep.io.protocol import Companion, FolderFormat, Format

# One line a format: its module (each module is a format, see volprep.io.protocol.Format).
FORMAT_MODULES: tuple[str, ...] = (
    "volprep.io.nifti",
    "volprep.io.metaimage",
    "volprep.io.nrrd",
    "volprep.io.dicom",
    "volprep.io.raw",
)
_MEMBERS = ("NAME", "TITLE", "EXPECTED", "SUFFIXES", "COMPANIONS", "HEAD_BYTES", "GZIP",
            "claims", "sniff", "layout")


def check_table(formats: Sequence[Format]) -> tuple[Format, ...]:
    """``formats`` as a tuple, refused if two formats share a name or a volume suffix.

    Raises:
        ValueError: a duplicate name, a suffix claimed twice or not a lower-case ``.xyz``,
            a format without ``SUFFIXES``, or a companion rule about another format's
            volumes (each format states the rules of its own volumes).
    """
    names: set[str] = set()
    owner: dict[str, str] = {}
    for fmt in formats:
        if fmt.NAME in names:
            raise ValueError(f"input format {fmt.NAME!r} is listed twice")
        names.add(fmt.NAME)
        if not fmt.SUFFIXES and not reads_folders(fmt):
            raise ValueError(f"input format {fmt.NAME!r} lists no volume suffix")
        if reads_folders(fmt) and not callable(getattr(fmt, "folder_cases", None)):
            raise ValueError(f"input format {fmt.NAME!r} reads folders but has no folder_cases")
        for suffix in fmt.SUFFIXES:
            if not suffix.startswith(".") or suffix != suffix.lower() or len(suffix) < 2:
                raise ValueError(f"input format {fmt.NAME!r}: suffix {suffix!r} is not like '.nii'")
            if suffix in owner:
                raise ValueError(f"input format {fmt.NAME!r}: suffix {suffix!r} is already "
                                 f"{owner[suffix]!r}'s")
            owner[suffix] = fmt.NAME
        for rule in fmt.COMPANIONS:
            if rule.volume not in fmt.SUFFIXES:
                raise ValueError(f"input format {fmt.NAME!r}: companion {rule.suffix!r} belongs "
                                 f"to {rule.volume!r}, not one of its own volume suffixes")
    return tuple(formats)


def reads_folders(fmt: Format) -> bool:
    """Whether a format reads folders (declares ``FOLDERS = True``; optional, default False)."""
    return getattr(fmt, "FOLDERS", False) is True


def load_formats(names: Sequence[str]) -> list[Format]:
    """The format modules ``names``, each checked to provide every member of the protocol.

    Raises:
        ValueError: a module lacks a member of :class:`~volprep.io.protocol.Format`.
    """
    formats = []
    for name in names:
        module = importlib.import_module(name)
        missing = [m for m in _MEMBERS if not hasattr(module, m)]
        if missing:
            raise ValueError(f"input format module {name} lacks {', '.join(missing)}")
        formats.append(module)
    return formats  # type: ignore[return-value]


FORMATS: tuple[Format, ...] = check_table(load_formats(FORMAT_MODULES))


@functools.cache
def folder_formats(formats: tuple[Format, ...] = FORMATS) -> tuple[FolderFormat, ...]:
    """The formats of the table that read folders, in table order."""
    return tuple(f for f in formats if reads_folders(f))  # type: ignore[misc]


@functools.cache
def volume_suffixes(formats: tuple[Format, ...] = FORMATS) -> tuple[str, ...]:
    """Every format's volume suffixes, in table order (``.nii.gz`` before ``.nii``)."""
    return tuple(s for fmt in formats for s in fmt.SUFFIXES)


@functools.cache
def id_suffixes(formats: tuple[Format, ...] = FORMATS) -> tuple[str, ...]:
    """The suffixes removed to make a case id: volumes' and companions', longest first."""
    found = dict.fromkeys([*volume_suffixes(formats),
                           *(c.suffix for c in companions(formats))])
    return tuple(sorted(found, key=len, reverse=True))


@functools.cache
def companions(formats: tuple[Format, ...] = FORMATS) -> tuple[Companion, ...]:
    """Every format's companion rules, in table order."""
    return tuple(c for fmt in formats for c in fmt.COMPANIONS)


def head_bytes(formats: Sequence[Format], *, gzip: bool = False) -> int:
    """The most first bytes any format (of those reading gzip, with ``gzip``) needs."""
    return max((f.HEAD_BYTES for f in formats if f.GZIP or not gzip), default=0)
