"""Names and paths for dataset discovery: case ids from file names, and which files may be used.

This module owns three fixed rules that the rest of discovery (:mod:`volprep.tables`,
:mod:`volprep.layouts`, :mod:`volprep.cases`) shares: how a file name becomes a case id
(:func:`strip_extension`, :func:`safe_case_id`, :func:`id_from_images`); how a path listed by
a user is resolved against the dataset folder (:func:`resolve`: ``..`` and hidden files
refused); and what counts as a usable file (:func:`file_problem`: a regular file, symlinks
followed; a FIFO, socket, device, folder or dangling link is named as such). Nothing here
opens a file: a FIFO is recognised from ``stat`` alone, since opening one blocks until a
writer comes. It imports nothing from the rest of volprep.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

# Files a folder discovery takes as volumes (``.img`` and ``.raw`` data files are companions).
VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".mha", ".mhd", ".hdr", ".raw")
# Extensions removed to make a case id, longest first so ``.nii.gz`` wins over ``.gz``.
ID_EXTENSIONS = (".nii.gz", ".nii", ".mha", ".mhd", ".raw", ".hdr", ".img")
MAX_ID_LENGTH = 200

CHANNEL = re.compile(r"^(?P<base>.+)_(?P<index>\d{4})$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# Files read with a volume but not listed: (volume extension, companion extension).
_COMPANIONS = {".hdr": ".img", ".raw": ".json"}


def strip_extension(name: str) -> str:
    """A file name without its volume extension (``x.nii.gz`` -> ``x``; case-insensitive)."""
    lower = name.lower()
    for ext in ID_EXTENSIONS:
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


def volume_ext(name: str) -> str | None:
    """The volume extension ``name`` ends with (case-insensitive), or ``None``."""
    lower = name.lower()
    return next((ext for ext in VOLUME_EXTENSIONS if lower.endswith(ext)), None)


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


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a volume file, or ``None`` (symlinks are followed).

    Only ``stat`` is called: a FIFO or device is refused without being opened.
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
        return "not a file (a folder)"
    return f"not a regular file ({_kind(mode)})"


def companion_problem(path: Path) -> tuple[Path, str] | None:
    """A companion that a reader would open with ``path`` and that is not a regular file.

    ``x.hdr`` is read with ``x.img``, a raw ``x.raw`` with its ``x.json`` sidecar; a missing
    companion is the reader's to report, but a FIFO in its place would block it forever.
    """
    companion_ext = _COMPANIONS.get(path.suffix.lower())
    if companion_ext is None:
        return None
    stem = path.name[: -len(path.suffix)]
    for ext in (companion_ext, companion_ext.upper()):
        companion = path.with_name(stem + ext)
        if os.path.lexists(companion):
            why = file_problem(companion)
            return (companion, why) if why else None
    return None
