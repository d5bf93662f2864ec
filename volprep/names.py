"""Names and paths for dataset discovery: case ids from file names, and which files may be used.

This module owns the rules that the rest of discovery (:mod:`volprep.tables`,
:mod:`volprep.layouts`, :mod:`volprep.cases`) shares: which file names are volumes and which
are companions read with them (:func:`volume_ext`, :func:`sort_folder`,
:func:`companion_problem`), how a file name becomes a case id (:func:`strip_extension`,
:func:`safe_case_id`, :func:`id_from_images`); how a path listed by a user is resolved
against the dataset folder (:func:`resolve`: ``..`` and hidden files refused); and what
counts as a usable file (:func:`file_problem`: a regular file, symlinks followed; a FIFO,
socket, device, folder or dangling link is named as such). The volume suffixes and
companion rules are not listed here: they are the input formats' own, read from the format
table :data:`volprep.io.formats.FORMATS` (see :class:`volprep.io.protocol.Companion` for
what each rule means); the functions that use it take that table, the registry's by default. Nothing
here opens a file: a FIFO is recognised from ``stat`` alone, since opening one blocks until
a writer comes. Folders are the exception that formats reading folders make (a DICOM
series): :func:`folder_cases` and :func:`file_problem` ask those formats
(:func:`volprep.io.formats.folder_formats`) about a folder, and they may read the first
bytes of the folder's regular files.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

from volprep.io.formats import FORMATS, companions, folder_formats, id_suffixes, volume_suffixes
from volprep.io.protocol import Format

# Files a folder discovery takes as volumes (companions are not listed), in table order.
VOLUME_EXTENSIONS = volume_suffixes(FORMATS)
MAX_ID_LENGTH = 200

CHANNEL = re.compile(r"^(?P<base>.+)_(?P<index>\d{4})$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def strip_extension(name: str, formats: tuple[Format, ...] = FORMATS) -> str:
    """A file name without its volume extension (``x.<suffix>`` -> ``x``; case-insensitive).

    The formats' volume and companion suffixes are tried longest first, so a two-part
    suffix wins over its last part; any other name loses its last ``.suffix``.
    """
    lower = name.lower()
    for ext in id_suffixes(formats):
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


def safe_case_id(text: str) -> str:
    """Maps a raw id to a filesystem-safe one, deterministically.

    Every character outside ``[A-Za-z0-9._-]`` (spaces, slashes, non-ASCII letters) becomes
    ``_``, and a leading ``.`` becomes ``_`` so no id names a hidden file. Two raw ids that
    map to the same id are then caught as duplicates, naming both sources.
    """
    mapped = _UNSAFE.sub("_", text.strip())
    return "_" + mapped[1:] if mapped.startswith(".") else mapped


def id_from_images(names: list[str]) -> str:
    """The raw case id of a listed image or channel list.

    The nnU-Net channel suffix is removed only when several images share it
    (``x_0000``, ``x_0001`` -> ``x``): on a single file ``patient_0001`` is more often a
    case number than a channel.
    """
    stems = [strip_extension(Path(n).name) for n in names]
    matches = [CHANNEL.match(s) for s in stems]
    if len(stems) > 1 and all(matches) and len({m.group("base") for m in matches if m}) == 1:
        return matches[0].group("base") if matches[0] else stems[0]
    return stems[0]


def volume_ext(name: str, formats: tuple[Format, ...] = FORMATS) -> str | None:
    """The volume extension ``name`` ends with (case-insensitive), or ``None``."""
    lower = name.lower()
    return next((ext for ext in volume_suffixes(formats) if lower.endswith(ext)), None)


def sort_folder(names: Sequence[str], formats: tuple[Format, ...] = FORMATS
                ) -> tuple[list[str], list[tuple[str, str]]]:
    """Which of a folder's file ``names`` are volumes, and which are reported (``(name, why)``).

    Every name is taken in order (give them sorted). A companion of a volume beside it (same
    stem, any letter case) is neither. A name that is no volume is reported only as a
    companion without its volume (the rule's ``orphan`` message). A volume missing a
    companion it ``needs`` is no volume and is reported with the rule's message, unless it
    may be the data file a header names (an ``in_header`` rule of its suffix, with such a
    header in the folder). Everything else with a volume suffix is listed, whatever its file
    type: the finishing check reports a FIFO or a dangling link.
    """
    rules = companions(formats)
    lower = {n.lower() for n in names}
    present = {c.volume for c in rules if any(n.endswith(c.volume) for n in lower)}
    volumes: list[str] = []
    problems: list[tuple[str, str]] = []
    for name in names:
        low = name.lower()
        mine = [c for c in rules if low.endswith(c.suffix)]  # rules naming it a companion
        if any(low[: -len(c.suffix)] + c.volume in lower for c in mine):
            continue
        ext = volume_ext(name, formats)
        if ext is None:
            why = next((c.orphan for c in mine if c.orphan), None)
            if why:
                problems.append((name, why))
            continue
        stem = low[: -len(ext)]
        lacking = [c for c in rules if c.volume == ext and c.needed and stem + c.suffix not in lower]
        if lacking:
            if not any(c.in_header and c.volume in present for c in mine):  # not a header's data
                problems.append((name, lacking[0].needed or ""))
            continue
        volumes.append(name)
    return volumes, problems


def resolve(raw: str, root: Path, where: str, *, allow_absolute: bool) -> tuple[Path, str | None]:
    """A listed path made absolute, and why it is refused (``None`` when it is not).

    The ``..`` check is lexical, on the path as written: a symlink inside the dataset that
    points elsewhere is followed as an ordinary file.
    """
    text = raw.strip()
    written = Path(text)
    if written.is_absolute():
        if not allow_absolute:
            return written, f"{where}: absolute path refused: paths in dataset.json must be relative to the dataset folder"
        path = Path(os.path.normpath(written))
    else:
        norm = Path(os.path.normpath(text))
        if norm.parts and norm.parts[0] == "..":
            return root / written, f"{where}: {text!r} climbs out of the dataset folder through '..': refused"
        path = root / norm
    if path.name.startswith("."):
        return path, f"{where}: hidden file (name starts with '.', e.g. a macOS '._' resource fork): refused"
    return path, None


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return f"file type {stat.S_IFMT(mode):o}"


def file_problem(path: Path, formats: tuple[Format, ...] = FORMATS) -> str | None:
    """Why ``path`` cannot be read as a volume file, or ``None`` (symlinks are followed).

    Only ``stat`` is called: a FIFO or device is refused without being opened. A folder is
    fine when a format that reads folders claims it (which may read its files' first bytes).
    """
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(path):
            try:
                return f"broken symbolic link (points to {os.readlink(path)})"
            except OSError:
                return "broken symbolic link"
        return "file not found"
    except OSError as err:  # permission denied on a parent folder, a symlink loop...
        return f"cannot access: {err.strerror or err}"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        if any(fmt.claims(path, b"") for fmt in folder_formats(formats)):
            return None
        return "not a file (a folder)"
    return f"not a regular file ({_kind(mode)})"


def companion_problem(path: Path, formats: tuple[Format, ...] = FORMATS) -> tuple[Path, str] | None:
    """A companion that a reader would open with ``path`` and that is not a regular file.

    The companions a reader derives from the volume's name (a pair's data file, a raw
    volume's sidecar: the rules without ``in_header``) are looked for as ``stem + suffix``
    and ``stem + SUFFIX``; a missing companion is the reader's to report,
    but a FIFO in its place would block it forever.
    """
    lower = path.name.lower()
    for rule in companions(formats):
        if rule.in_header or not lower.endswith(rule.volume):
            continue
        stem = path.name[: -len(rule.volume)]
        for ext in (rule.suffix, rule.suffix.upper()):
            companion = path.with_name(stem + ext)
            if os.path.lexists(companion):
                why = file_problem(companion)
                if why:
                    return companion, why
                break
    return None


def folder_cases(folder: Path, *, own: bool, naming: str = "name",
                 formats: tuple[Format, ...] = FORMATS) -> list[tuple[str, str]]:
    """The folder-cases in ``folder``: ``(raw case id, path relative to folder)``, sorted.

    Each non-hidden subfolder is offered to the formats that read folders (their
    ``folder_cases``): a subfolder that is one case is listed as itself (id: its name), one
    holding several as one entry a case (id: ``<name>_<tag>``, path: what the format gave).
    With ``own``, the folder's own files are offered too (id: the tag, or the folder's name
    when they are one case). Folders no format claims are not listed. With
    ``naming="uid"`` the id is the format's tag alone, made from the data (see
    :class:`volprep.io.protocol.FolderFormat`), whatever the folder is called.
    """
    readers = folder_formats(formats)
    if not readers:
        return []
    found: list[tuple[str, str]] = []
    subfolders = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())
    for sub in ([folder] if own else []) + subfolders:
        for fmt in readers:
            for tag, path in fmt.folder_cases(sub, naming):
                base = "" if sub == folder or naming == "uid" else sub.name
                raw = "_".join(p for p in (base, tag) if p) or folder.name
                found.append((raw, os.path.relpath(path, folder)))
    return found
