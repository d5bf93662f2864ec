"""Interrupts: SIGINT and SIGTERM end a volprep command cleanly, whenever they come.

Python's defaults do not survive a real job: a terminal's Ctrl-C signals the whole
process group (every worker raises its own ``KeyboardInterrupt``), users press it twice,
and a second ``KeyboardInterrupt`` landing in the cleanup of the first leaves tracebacks,
locks released twice, worker processes blocked on pipes and a random exit status; SIGTERM
kills the main process without any cleanup at all.

:class:`Trap` owns both signals while a command runs. The *first* signal switches both
to "ignore" and raises :class:`Interrupted` (a ``KeyboardInterrupt``) in the main thread,
so blocking waits wake up and ``finally`` blocks run; every later signal is dropped, so
there is exactly one exception however many signals arrive, and the cleanup that follows
is never interrupted itself. The command then stops its workers, prints one line and
exits with ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM).

When the trap owns the process (``program=True``, the ``volprep`` command), a watchdog
started by the first signal ends the process with that status if it still runs
``grace`` seconds later (code that swallowed the exception, a wait that never wakes up,
an interpreter shutdown that waits on a thread): worker processes die with it
(``PR_SET_PDEATHSIG``, see :mod:`volprep.backends`). :func:`exit_now` ends the process
without interpreter shutdown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any, NoReturn

SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_SECONDS = 6.0  # the watchdog's wait; the main thread's cleanup is bounded well below it

_active: Trap | None = None  # the trap installed now (signal handlers are process-wide)


class Interrupted(KeyboardInterrupt):  # noqa: N818 - named for what happened, like KeyboardInterrupt
    """Raised in the main thread by the first SIGINT or SIGTERM a :class:`Trap` receives.

    A ``KeyboardInterrupt``, so ``except Exception`` never swallows it and code that already
    handles Ctrl-C handles it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(self.signal_name)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        """The shell's convention for a process ended by this signal: 128 + its number."""
        return 128 + self.signum


def as_interrupted(err: KeyboardInterrupt) -> Interrupted:
    """``err`` itself, or a plain ``KeyboardInterrupt`` (a Ctrl-C that beat the trap) as SIGINT."""
    return err if isinstance(err, Interrupted) else Interrupted(signal.SIGINT)


class Trap:
    """SIGINT and SIGTERM while a command runs: the first raises, later ones are ignored.

    Use as a context manager in the main thread. Leaving the block restores the previous
    handlers unless a signal was received: then both stay ignored until :meth:`restore`,
    so the caller's cleanup cannot be interrupted. Outside the main thread (where Python
    cannot set handlers) the trap does nothing.

    Args:
        program: the trap owns the process: a watchdog ends it ``grace`` seconds after the
            first signal if the main thread has not (never in library use: it would end
            the caller's process).
        grace: see ``program``.
    """

    def __init__(self, *, program: bool = False, grace: float = GRACE_SECONDS) -> None:
        self.program, self.grace = program, grace
        self.received: Interrupted | None = None
        self._previous: dict[int, Any] = {}
        self._exit_claim = threading.Lock()

    # -- installation ---------------------------------------------------------------------
    def __enter__(self) -> Trap:
        global _active
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.getsignal(s) for s in SIGNALS}
            for s in SIGNALS:
                signal.signal(s, self._handle)
            _active = self
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.received is None:
            self.restore()

    def ignore_from_now(self) -> None:
        """Both signals ignored from now on (the command is over; the process only exits)."""
        global _active
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        self._previous = {}
        if _active is self:
            _active = None

    def restore(self) -> None:
        """Puts back the handlers that were installed before the trap."""
        global _active
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}
        if _active is self:
            _active = None

    # -- the handler ----------------------------------------------------------------------
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Python runs this in the main thread between bytecodes, possibly nested in itself
        # (a second signal while the first is handled): whoever marks ``received`` first
        # raises, every other call returns.
        if self.received is not None:
            return
        self.received = Interrupted(signum)
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        if self.program:
            watchdog = threading.Timer(self.grace, self._force_exit)
            watchdog.daemon = True
            watchdog.start()
        raise self.received

    def claim_exit(self) -> bool:
        """True for the first caller only: who prints the line and ends the process."""
        return self._exit_claim.acquire(blocking=False)

    def _force_exit(self) -> None:
        """The watchdog: the process did not end in time; end it here (and say why, unless
        the main thread already did)."""
        received = self.received
        if received is None:  # never: the handler sets it before starting the watchdog
            return
        if self.claim_exit():
            _write_stderr(interrupted_line(received))
        exit_now(received.exit_status, flush_within=1.0)


def interrupted_line(err: Interrupted) -> str:
    """The one line a command prints when a signal stops it."""
    return f"volprep: interrupted ({err.signal_name})"


def raise_if_interrupted() -> None:
    """Raises the received :class:`Interrupted` again (for loops that outlive a swallowed one).

    Long waits call this between rounds: if code between the signal and the wait caught
    the exception and carried on, the job still stops (the signals are ignored by then).
    """
    trap = _active
    if trap is not None and trap.received is not None:
        raise trap.received


def exit_now(status: int, *, flush_within: float | None = None) -> NoReturn:
    """Flushes stdout and stderr and ends the process with ``status``, skipping interpreter
    shutdown (executor threads and queue feeders it would join may never finish once their
    worker processes are gone).

    Args:
        flush_within: give up flushing after this many seconds (from a thread other than
            the main one, which may hold a stream's lock while its reader has gone).
    """
    def flush() -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # closed, or a broken pipe
                stream.flush()

    if flush_within is None:
        flush()
    else:
        flusher = threading.Thread(target=flush, name="volprep-flush", daemon=True)
        flusher.start()
        flusher.join(flush_within)
    os._exit(status)


def _write_stderr(line: str) -> None:
    # os.write, not print: the main thread may be inside a write to sys.stderr right now.
    with contextlib.suppress(OSError):
        os.write(2, (line + "\n").encode())
