"""What a finished job did: :class:`JobResult` (and each failed case, :class:`Failure`).

Kept apart from :mod:`volprep.runner`, which imports every stage, so what reads a result
(the summary, the report, and the report's own process, which unpickles it) needs no more
than the manifest's module.
"""

from __future__ import annotations

import dataclasses

from volprep import storage
from volprep.manifest import Manifest


@dataclasses.dataclass
class Failure:
    """A case that could not be converted."""

    case: str
    path: str
    error: str

    def line(self) -> str:
        return f"case {self.case}: {self.path}: {self.error}"


@dataclasses.dataclass
class JobResult:
    """What a finished job did (the summary and the tests read it)."""

    out_dir: storage.Location
    exit_code: int
    manifest: Manifest
    failures: list[Failure]
    cases_found: int
    cases_converted: int
    cases_reused: int
    timings: dict[str, float]
    notes: list[str]
    warnings: list[str] = dataclasses.field(default_factory=list)
