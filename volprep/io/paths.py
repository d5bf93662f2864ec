"""Which files a reader may open: companions kept beside their file, regular files only.

A file name written inside an input file (a MetaImage ``ElementDataFile``) or derived from
its name (a pair's other half, a raw volume's sidecar) goes through :func:`companion_path`,
which keeps it beside the file that names it; :func:`find_companion` looks for derived
names. Every file is checked to be a regular file (:func:`require_regular_file`) before it
is opened, since opening a FIFO blocks until a writer comes.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from volprep.errors import HeaderError

# What ``stat`` says a path is, for the files a reader must not open.
_FILE_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
)


def require_regular_file(path: Path) -> os.stat_result:
    """Checks, without opening it, that ``path`` (symlinks followed) is a regular file.

    Every file a reader opens passes here first: opening a FIFO for reading blocks until
    a writer appears (forever, in a job), and a device (``/dev/zero``, a disk) would feed
    endless or foreign bytes into the shards.

    Returns:
        The file's ``os.stat`` result (its size is ``st_size``).

    Raises:
        HeaderError: a folder, FIFO, socket or device, e.g. ``not a regular file (a FIFO)``.
        OSError: the path cannot be stat'ed (missing, permission denied); the read stage's
            error boundary turns it into a one-line ``HeaderError``.
    """
    info = os.stat(path)
    mode = info.st_mode
    if stat.S_ISREG(mode):
        return info
    if stat.S_ISDIR(mode):
        raise HeaderError(path, "is a folder, not a volume file")
    kind = next((name for test, name in _FILE_KINDS if test(mode)),
                f"file type {stat.S_IFMT(mode):#o}")
    raise HeaderError(path, f"not a regular file ({kind})")


def companion_path(referrer: Path, written: str) -> Path:
    """The file that a name written inside ``referrer`` (or derived from its name) means.

    The one place where a reader turns a file name found in an input into a path: a
    MetaImage ``ElementDataFile``, an Analyze/NIfTI pair's other half, a raw volume's
    sidecar or data file, and the readers to come (NRRD ``data file``, DICOM) use it too.
    The name is resolved relative to ``referrer``'s folder. As for the paths a dataset
    lists (``volprep.cases``), the rule is lexical, on the name as written: an absolute
    path and a path that climbs out through ``..`` are refused, a plain name or a path
    into a subfolder is accepted, and a symlink placed in the folder is followed like any
    other file there (its target is the dataset author's choice, not the header's).
    The path returned is the normalised one that was checked (``sub/../x`` -> ``x``).
    Nothing is opened or stat'ed here; check the file with :func:`require_regular_file`.

    Args:
        referrer: the file whose content (or name) gave ``written``, as the user named it.
        written: the file name as written, e.g. ``"case1.dat"`` or ``"data/case1.dat"``.

    Raises:
        HeaderError: (naming ``referrer``) an absolute path, a ``..`` escape, or a name
            that is the folder itself (empty, ``.``).
    """
    if os.path.isabs(written):
        raise HeaderError(
            referrer, f"absolute data file path {written!r} refused: a data file must sit "
            "beside its header",
        )
    normal = os.path.normpath(written)
    if normal == os.curdir:  # "", "." or "sub/..": the folder itself
        raise HeaderError(referrer, f"data file {written!r} names no file")
    if normal == os.pardir or normal.startswith(os.pardir + os.sep):
        raise HeaderError(
            referrer, f"data file {written!r} climbs out of the header's folder through "
            "'..': refused",
        )
    return referrer.parent / normal


def find_companion(referrer: Path, names: Iterable[str]) -> Path | None:
    """The first of ``names`` that exists beside ``referrer``, checked to be a regular file.

    For companions derived from a file's own name (a pair's other half), which the
    readers look for rather than read from a header.

    Raises:
        HeaderError: the companion found is not a regular file (a FIFO, a folder...).
    """
    for name in names:
        candidate = companion_path(referrer, name)
        if candidate.exists():
            require_regular_file(candidate)
            return candidate
    return None
