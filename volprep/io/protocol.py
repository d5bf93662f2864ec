"""What an input format is: the :class:`Format` protocol and its :class:`Companion` rules.

A format is one module of :mod:`volprep.io` (``nifti``, ``metaimage``, ``raw``) whose
module-level names satisfy :class:`Format`, listed once in :data:`volprep.io.formats.FORMATS`.
Everything volprep knows about a format lives in that module; the rest of volprep only
iterates the table:

* the read stage (:mod:`volprep.io.read`) offers each file to every format: first by name
  (``claims``: a file without a signature, such as a raw volume with its ``.json`` sidecar
  or an Analyze ``.img`` with its ``.hdr``), then by content (``sniff`` on the file's first
  bytes, inflated first when the file is gzip and the format accepts gzip), and the format
  that takes it turns it into a :class:`~volprep.io.base.Layout` (``layout``);
* discovery (:mod:`volprep.names`, :mod:`volprep.layouts`, :mod:`volprep.cases`) lists as
  volumes the file names ending with a format's ``SUFFIXES``, strips those suffixes (and
  the companions') to make case ids, and applies the formats' ``COMPANIONS`` rules: a
  companion is never a case, a volume that needs a missing companion is a problem, a
  companion without its volume may be one, and a companion the reader would open is
  checked to be a regular file before anything opens it.

All suffixes are lower-case and start with a dot; names are matched case-insensitively.

A format may read *folders* (a DICOM series is many files): it is a :class:`FolderFormat`,
declaring ``FOLDERS = True`` and ``folder_cases``. The read stage offers a folder to such
formats' ``claims`` (with ``head = b""``) and the one that claims it builds its Layout;
discovery asks ``folder_cases`` which cases a folder holds (its own files, not its
subfolders), in the folder and ``imagesTr`` layouts, and accepts a folder listed by a CSV
or dataset.json when such a format claims it. Nothing in discovery names a folder format.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol

from volprep.config import ReadConfig
from volprep.io.base import Layout


@dataclasses.dataclass(frozen=True)
class Companion:
    """A file read together with a volume of a format, found beside it; never a case itself.

    Attributes:
        volume: the suffix of the volume it belongs to, e.g. ``".hdr"``.
        suffix: its own suffix, e.g. ``".img"``. A file ``<stem><suffix>`` beside a volume
            ``<stem><volume>`` is that volume's companion, not a case.
        needed: when set, a ``<stem><volume>`` file without its companion is no volume, and
            discovery reports it with this message (raw data without its ``.json``). When
            ``None`` the companion is optional at discovery (the reader reports a missing
            one when it needs it).
        orphan: when set, a ``<stem><suffix>`` file without its volume is reported with
            this message (an ``.img`` without its ``.hdr``); when ``None`` it is ignored.
        in_header: the volume's header names the companion (MetaImage ``ElementDataFile``)
            instead of the reader deriving its name: any file with this suffix beside such
            a volume may be one, so it is not reported as missing what it ``needed`` for
            another format, and discovery leaves checking it to the reader. When ``False``
            the reader opens ``<stem><suffix>`` (or ``<STEM><SUFFIX>``), so discovery checks
            that it is a regular file (a FIFO would block the reader).
    """

    volume: str
    suffix: str
    needed: str | None = None
    orphan: str | None = None
    in_header: bool = False

    def __post_init__(self) -> None:
        for name, value in (("volume", self.volume), ("suffix", self.suffix)):
            if not value.startswith(".") or value != value.lower() or len(value) < 2:
                raise ValueError(f"Companion {name} {value!r}: a lower-case suffix like '.img'")


class Format(Protocol):
    """One input format (members are read-only; a module defines them as constants).

    ``NAME``: the format's key in the table (``"nifti"``). ``TITLE``: how messages name it
    (``"NIfTI"``). ``EXPECTED``: what the read stage's "not a volume volprep reads" error
    says the file lacks (``"MetaImage header"``, ``".raw + .json sidecar"``; phrases ending
    in ``" header"`` are joined as ``"no A or B header"``). ``SUFFIXES``: lower-case
    suffixes of the file names that are volumes of this format, for discovery and case ids
    (companions are not volumes: they are in ``COMPANIONS``). ``HEAD_BYTES``: how many of
    a file's first bytes ``claims``, ``sniff`` and ``layout`` need (the read stage reads
    the most any format needs). ``GZIP``: a gzip file whose inflated start ``sniff``
    recognises is this format (the read stage inflates; ``layout`` then gets
    ``compressed=True``).
    """

    @property
    def NAME(self) -> str: ...

    @property
    def TITLE(self) -> str: ...

    @property
    def EXPECTED(self) -> str: ...

    @property
    def SUFFIXES(self) -> tuple[str, ...]: ...

    @property
    def COMPANIONS(self) -> tuple[Companion, ...]: ...

    @property
    def HEAD_BYTES(self) -> int: ...

    @property
    def GZIP(self) -> bool: ...

    def claims(self, path: Path, head: bytes) -> bool:
        """Whether ``path`` is this format by its name and the files beside it, whatever its
        content (a signature-less file). Asked before any format sniffs; False for most.

        Raises:
            HeaderError: a companion it looked for is not a regular file.
        """
        ...

    def sniff(self, head: bytes) -> bool:
        """Whether the file's first bytes (inflated when gzip) carry this format's signature.

        Never raises; False for a format without a signature (chosen by ``claims``).
        """
        ...

    def layout(self, path: Path, head: bytes, cfg: ReadConfig, compressed: bool) -> Layout:
        """The Layout of a file this format claimed or sniffed.

        Args:
            path: the file the user named.
            head: its first ``HEAD_BYTES`` bytes or more (inflated when ``compressed``).
            cfg: the ``[read]`` config.
            compressed: ``path`` is a gzip stream and ``head`` its inflated start (only for
                a format with ``GZIP`` that sniffed it); a file taken by name gets False,
                and the format looks at its files itself.

        Raises:
            HeaderError: anything in the header volprep refuses, naming ``path``.
        """
        ...


class FolderFormat(Format, Protocol):
    """A format that reads folders (optional members of a format module; see the module doc).

    ``FOLDERS``: True. ``SUFFIXES`` may be empty (no single file is a case on its own).
    ``claims(folder, b"")`` says whether a folder is one of this format's; it may open the
    folder's regular files (never a FIFO) to look at their first bytes.
    """

    @property
    def FOLDERS(self) -> bool: ...

    def folder_cases(self, folder: Path, naming: str = "name") -> list[tuple[str, Path]]:
        """The cases ``folder``'s own files hold, as ``(tag, path)``: ``[]`` for none.

        ``naming="name"``: a tag ``""`` for a folder that is one case (its path the
        folder), otherwise a short non-identifying tag per case (``"s3"``) and the path
        the reader takes for it; discovery makes the case id from the folder's name and
        the tag. ``naming="uid"``: every case's tag is a stable, non-identifying id made
        from the data itself (not from names, which exports often make from a patient's
        name), and discovery uses the tag alone. Never raises for what a file holds (a
        broken file is the reader's to report).
        """
        ...
