"""The output folder's lock: one job at a time on an OUT.

Local OUT: ``OUT/.volprep.lock`` is held with ``flock`` for the whole job, its content
naming the holder (``pid N``). The lock is the open file: it goes with the process, so a
killed job never leaves a stale lock behind.

Object-store OUT (no flock there): ``OUT/.volprep.lease``, a small JSON object naming its
owner (host, pid, a random token) and its expiry. It is created with the store's
exclusive create (S3 ``If-None-Match: *``, GCS ``ifGenerationMatch=0``), so of two jobs
starting together one gets it; a thread renews it every third of its term while the job
runs, and the job deletes it at the end. A job killed with its lease held leaves it
behind: once expired (``VOLPREP_LEASE_SECONDS``, default 60 s, after its last renewal) the
next job takes it over; a live one refuses a second job in one line. Before publishing,
the job checks that the lease is still its own (:meth:`Lease.check`), so a job that was
stalled past its expiry and overtaken publishes nothing.

:func:`holder` tells readers (``volprep verify``) whether a job is writing OUT right now.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from volprep import storage
from volprep.errors import JobError, UsageError

LOCK = ".volprep.lock"
LEASE = ".volprep.lease"
LEASE_SECONDS_ENV = "VOLPREP_LEASE_SECONDS"


@contextmanager
def output_lock(out_dir: storage.Location) -> Iterator[Lease | None]:
    """An exclusive lock on OUT (a flock, or a lease object); a second job gets a clear error.

    Yields the :class:`Lease` of an object-store OUT (None for a local one).
    """
    if not isinstance(out_dir, Path):
        with Lease(out_dir, lease_seconds()) as lease:
            yield lease
        return
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
        yield None
    finally:
        fh.close()


def holder(out_dir: storage.Location) -> str | None:
    """``"pid N"`` of the job holding OUT's lock right now, or None (nobody, or no lock file)."""
    if not isinstance(out_dir, Path):
        data = _read_lease(storage.join(out_dir, LEASE))
        return str(data["owner"]) if data and float(data["expires"]) > time.time() else None
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


def lease_seconds() -> float:
    """The lease term: ``VOLPREP_LEASE_SECONDS`` (default 60)."""
    text = os.environ.get(LEASE_SECONDS_ENV, "60")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise UsageError(f"{LEASE_SECONDS_ENV}={text!r}: not a positive number of seconds")
    return value


def _read_lease(where: storage.Location) -> dict[str, Any] | None:
    """The lease's JSON, or None when there is none (an unreadable one counts as expired)."""
    try:
        data = json.loads(storage.read_text(where))
        return {"owner": str(data["owner"]), "token": str(data["token"]), "expires": float(data["expires"])}
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return {"owner": "an unreadable lease", "token": "", "expires": 0.0}


class Lease:
    """OUT's lease object on an object store: taken, renewed while held, released at the end."""

    def __init__(self, out_dir: str, seconds: float) -> None:
        self.out_dir, self.seconds = out_dir, seconds
        self.where = storage.join(out_dir, LEASE)
        self.token = uuid.uuid4().hex
        self.owner = f"{socket.gethostname()} pid {os.getpid()}"
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({"owner": self.owner, "token": self.token, "expires": time.time() + self.seconds,
                           "seconds": self.seconds}).encode()

    def acquire(self) -> None:
        """Takes the lease, or raises UsageError in one line naming its live holder."""
        for _ in range(2):
            if storage.create_exclusive(str(self.where), self._body()):
                break
            current = _read_lease(self.where)
            if current is None:
                continue  # released between our create and our read: try once more
            if current["expires"] > time.time():
                until = time.strftime("%H:%M:%S", time.localtime(current["expires"]))
                raise UsageError(f"{self.out_dir}: in use by another volprep job ({current['owner']}, lease "
                                 f"until {until}); wait for it or use another --out")
            again = _read_lease(self.where)  # expired: take it over, unless it changed meanwhile
            if again is not None and again["token"] == current["token"]:
                storage.remove(self.where)
        else:
            raise UsageError(f"{self.out_dir}: another volprep job took the lease at the same time; try again")
        self._thread = threading.Thread(target=self._renew, name="volprep-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            with contextlib.suppress(Exception):  # a failed renewal is retried; check() decides
                current = _read_lease(self.where)
                if current is None or current["token"] != self.token:
                    self.lost = current["owner"] if current else "nobody (the lease was deleted)"
                    return
                storage.write_bytes(self.where, self._body())

    def check(self) -> None:
        """Raises JobError if the lease is no longer ours (we stalled past expiry, another job took it)."""
        current = _read_lease(self.where)
        if self.lost or current is None or current["token"] != self.token:
            who = self.lost or (current["owner"] if current else "nobody (the lease was deleted)")
            raise JobError(f"{self.out_dir}: lost the output lease (now held by {who}); nothing published")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        current = _read_lease(self.where)
        if current is not None and current["token"] == self.token:
            storage.remove(self.where)

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
