"""volprep's exception hierarchy, one small family per layer.

Every error a *user* can cause (a bad file, a bad config, a bad dataset layout) is a
subclass of :class:`VolprepError` and renders as one line that names the thing and the
problem; anything else escaping a stage is a bug and keeps its traceback. The job runner
turns an :class:`InputError` raised while converting a case into a reported failure
(``case <id>: <path>: <problem>``) and goes on with the other cases.
"""

from __future__ import annotations

from pathlib import Path


class VolprepError(Exception):
    """Base class of every error a user can act on."""


class ConfigError(VolprepError):
    """A pipeline config that cannot be used: names the file, the key and what is allowed."""

    def __init__(self, source: str | Path | None, key: str, problem: str) -> None:
        self.source = str(source) if source is not None else "<config>"
        self.key = key
        self.problem = problem
        super().__init__(f"{self.source}: [{key}] {problem}")


class UsageError(VolprepError):
    """A command used wrongly (missing DATA folder, unwritable OUT, a locked OUT...)."""


class DatasetError(VolprepError):
    """A dataset whose layout cannot be understood (no cases, bad dataset.json, bad CSV)."""


class InputError(VolprepError):
    """One input file that cannot be converted. ``str()`` is ``<path>: <problem>``."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class HeaderError(InputError):
    """The header is unreadable or describes something volprep refuses (checked before voxels)."""


class DataError(InputError):
    """The voxel data is missing, truncated, or holds values volprep refuses."""


class LabelError(InputError):
    """A label volume that does not fit its image (grid, values, declared labels)."""


class ResourceError(InputError):
    """A case that needs more memory than the job may use."""


class JobError(VolprepError):
    """The job as a whole failed and published nothing new."""
