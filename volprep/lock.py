"""The output folder's lock: one job at a time on an OUT.

``OUT/.volprep.lock`` is held with ``flock`` for the whole job, its content naming the
holder (``pid N``). The lock is the open file: it goes with the process, so a killed job
never leaves a stale lock behind. :func:`holder` tells readers (``volprep verify``)
whether a job is writing the folder right now.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from volprep.errors import UsageError

LOCK = ".volprep.lock"


@contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """An exclusive lock on ``OUT/.volprep.lock``; a second job gets a clear error."""
    lock_path = out_dir / LOCK
    fh = open(lock_path, "a+")  # noqa: SIM115 - held open for the whole job: the lock is the open file
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder_text = fh.read().strip() or "another process"
        fh.close()
        raise UsageError(f"{out_dir}: in use by another volprep job ({holder_text}); wait for it or use another --out") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    try:
        yield
    finally:
        fh.close()


def holder(out_dir: Path) -> str | None:
    """``"pid N"`` of the job holding OUT's lock right now, or None (nobody, or no lock file)."""
    path = Path(out_dir) / LOCK
    try:
        fh = open(path)  # noqa: SIM115 - closed below; never created here
    except OSError:
        return None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return fh.read().strip() or "another process"
        fcntl.flock(fh, fcntl.LOCK_UN)
        return None
