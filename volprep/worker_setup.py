"""How a worker process starts: Ctrl-C stays with the job, and a worker dies with it.

Used by :mod:`volprep.backends` for the local (loky) pool.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread while it may start worker processes.

    A new process inherits the signal mask of the thread that forks it and keeps it
    across exec: a worker then cannot receive a Ctrl-C (sent to the whole process group)
    before its initializer ignores SIGINT, while it still imports. This process loses
    nothing: another of its threads takes the signal, or it waits until the mask is
    restored, and Python runs the handler in the main thread either way.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # Python's own resource tracker, started lazily by the first worker's launch, unblocks
    # SIGINT afterwards instead of restoring the mask (3.11): start it before blocking.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: a worker ignores Ctrl-C and dies with the job that started it.

    SIGINT: a terminal's Ctrl-C reaches every process of the group; a worker that raised
    ``KeyboardInterrupt`` itself would print a traceback and break the pool under the main
    process's cleanup, which kills the workers anyway (it was blocked since the fork, see
    :func:`sigint_blocked`; now ignored, then unblocked). SIGTERM keeps its default:
    a worker told to terminate does.

    Without ``PR_SET_PDEATHSIG``, loky workers outlive a SIGKILLed job and finish the tasks
    they hold, writing to the cache while a rerun may already be using it. Linux only
    (prctl); elsewhere a no-op.
    """
    import ctypes

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux/glibc
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
