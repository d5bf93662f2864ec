"""Parallelism as a backend: the same tasks on local processes (loky) or a Dask cluster.

:func:`run_tasks` submits picklable tasks to joblib's loky process pool (``--workers N``)
or to an existing ``dask.distributed`` cluster (``--scheduler tcp://HOST:PORT``) and yields
results as they complete; with ``workers=0`` it runs them one after another in this
process. That is what a job without ``--workers`` does when its dataset is small
(:func:`local_workers`: under ``IN_PROCESS_BYTES`` on disk), since starting the workers
(a process each, its imports, the compiled kernels: about a second) then costs more than
the whole conversion. Admission is bounded twice: at most one task a worker slot in
flight, and with a memory limit, tasks whose estimated working sets add up to no more
than the limit (a task over the limit alone runs alone). A worker process that dies
(killed, out of memory, crashed) breaks a loky pool for every task in flight; those tasks
are then rerun one at a time on a fresh pool, so only the task that kills its worker
alone is reported as failed (:class:`WorkerDied`), and the job goes on. Loky workers die
with the job that started them (``PR_SET_PDEATHSIG``), so a killed job leaves no worker
writing behind it. Dask retries a task whose worker died on other workers and gives up
with ``KilledWorker`` (``distributed.scheduler.allowed-failures``), which becomes the same
failure. Results carry the task's index; order of completion never reaches the output.

Interrupts (see :mod:`volprep.interrupts`): workers ignore SIGINT (a terminal's Ctrl-C
reaches the whole process group; only the main process acts on it), and :func:`stop`
kills the local workers and cancels the job's Dask tasks, from wherever the interrupt
left the caller. The worker count is capped at what the machine holds
(:func:`worker_count`): the usable cores, and with a memory limit the tasks that fit in it.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from volprep.errors import UsageError
from volprep.interrupts import raise_if_interrupted
from volprep.worker_setup import die_with_parent as _die_with_parent
from volprep.worker_setup import sigint_blocked as _sigint_blocked

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class WorkerDied:
    """The result of a task whose worker process died while running it."""

    reason: str


# How long a wait for results lasts before the loop looks again for an interrupt that
# code between the signal and the wait may have swallowed.
POLL_SECONDS = 0.5
# What stop() may spend on each pool before leaving the rest to PR_SET_PDEATHSIG.
STOP_SECONDS = 3.0


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """All cores this process may use."""
    return usable_cores()


# A dataset smaller than this on disk is converted in the job's own process (when the user
# did not ask for a worker count): 30 demo cases (11 MB) convert there in ~0.4 s, where
# starting two workers alone takes ~1 s.
IN_PROCESS_BYTES = 32 * 2**20


def local_workers(requested: int | None, input_bytes: int) -> int:
    """The local worker processes a job starts: ``requested``, or when None, 0 (the tasks run
    in this process) for a job whose input files total ``input_bytes`` < ``IN_PROCESS_BYTES``
    on disk (:func:`volprep.survey.disk_bytes`), else all cores."""
    if requested is not None:
        return requested
    return 0 if input_bytes < IN_PROCESS_BYTES else default_workers()


def worker_count(requested: int | None, cores: int, *, memory_limit: int | None = None,
                 weights: Sequence[int] = ()) -> tuple[int, str | None]:
    """How many local worker processes to start, and why fewer than requested.

    More processes than cores only share them (and each costs its own interpreter and
    imports); more than the memory limit lets run at once only wait, idle. So the count
    is the request (all cores if None), at most ``cores``, and with ``memory_limit`` at
    most the number of tasks that fit in it together: the smallest ``weights`` first, as
    admission could at best run them (at least 1: a task over the limit runs alone).

    Returns:
        ``(count, reason)``: reason names the bound that capped the request
        (e.g. "2 usable cores"), None when the request stands.
    """
    count = cores if requested is None else requested
    reason = None
    if count > cores:
        count, reason = cores, f"{cores} usable core{'s' if cores != 1 else ''}"
    if memory_limit is not None and weights:
        fit, used = 0, 0
        for weight in sorted(weights):
            if used + weight > memory_limit:
                break
            fit, used = fit + 1, used + weight
        fit = max(1, fit)
        if fit < count:
            count, reason = fit, f"--memory-limit holds {fit} task{'s' if fit != 1 else ''} at a time"
    return count, reason


def run_tasks(
    fn: Callable[..., Any],
    tasks: Sequence[tuple[Any, ...]],
    *,
    workers: int,
    scheduler: str | None = None,
    weights: Sequence[int] | None = None,
    memory_limit: int | None = None,
) -> Iterator[tuple[int, Any]]:
    """Runs ``fn(*task)`` for every task; yields ``(index, result)`` in completion order.

    Args:
        fn: a module-level function (picklable).
        tasks: argument tuples.
        workers: local worker processes (ignored with a scheduler); 0: none, each task runs
            in this process in turn (a task that crashes the process then ends the job, and
            a memory limit has nothing to admit: one task runs at a time).
        scheduler: a Dask scheduler address; None for local processes.
        weights: estimated peak bytes of each task (memory admission).
        memory_limit: bytes the tasks in flight may use together; None for no limit.
    """
    weights = list(weights) if weights is not None else [0] * len(tasks)
    if scheduler:
        yield from _run_dask(fn, tasks, scheduler, weights, memory_limit)
    elif workers == 0:
        for index, task in enumerate(tasks):
            raise_if_interrupted()
            yield index, fn(*task)
    else:
        yield from _run_local(fn, tasks, workers, weights, memory_limit)


def _admit(pending: list[int], in_flight: dict[Any, int], weights: Sequence[int],
           limit: int | None, max_in_flight: int) -> list[int]:
    """Indices to submit now: FIFO, bounded by count and by the memory in flight."""
    admitted: list[int] = []
    used = sum(weights[i] for i in in_flight.values())
    while pending and len(in_flight) + len(admitted) < max_in_flight:
        nxt = pending[0]
        if limit is not None and (in_flight or admitted) and used + weights[nxt] > limit:
            break
        admitted.append(pending.pop(0))
        used += weights[nxt]
    return admitted


def _run_local(fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]], workers: int,
               weights: Sequence[int], limit: int | None) -> Iterator[tuple[int, Any]]:
    from joblib.externals.loky import get_reusable_executor
    from joblib.externals.loky.process_executor import BrokenProcessPool, TerminatedWorkerError

    requested = workers
    workers, reason = worker_count(requested, usable_cores(), memory_limit=limit, weights=weights)
    if reason is not None:
        _warn_once(f"{requested} workers capped to {workers} ({reason})")
    pending = list(range(len(tasks)))
    suspects: list[int] = []
    try:
        while pending or suspects:
            # Suspects (in flight when a worker died) run alone, so the guilty one is found.
            solo = bool(suspects)
            queue = suspects if solo else pending
            slots = 1 if solo else workers
            with _sigint_blocked():  # may start workers: see _sigint_blocked
                executor = get_reusable_executor(max_workers=slots, reuse=True,
                                                 initializer=_die_with_parent,
                                                 initargs=(os.getpid(),))
            _live.executor = executor
            in_flight: dict[cf.Future[Any], int] = {}
            broken = False
            while (queue or in_flight) and not broken:
                raise_if_interrupted()
                for index in _admit(queue, in_flight, weights, limit, slots):
                    with _sigint_blocked():
                        in_flight[executor.submit(fn, *tasks[index])] = index
                done, _ = cf.wait(in_flight, timeout=POLL_SECONDS, return_when=cf.FIRST_COMPLETED)
                for future in sorted(done, key=in_flight.__getitem__):
                    index = in_flight.pop(future)
                    try:
                        result = future.result()
                    except (TerminatedWorkerError, BrokenProcessPool) as err:
                        if solo:
                            yield index, WorkerDied(_died_reason(err))
                        else:
                            suspects.append(index)
                        broken = True
                        continue
                    yield index, result
            if broken:
                # Everything still in flight ran on the broken pool: rerun those alone.
                for future, index in in_flight.items():
                    future.cancel()
                    suspects.append(index)
                suspects.sort()
                executor.shutdown(wait=True, kill_workers=True)
    except KeyboardInterrupt:
        # An interrupt inside the wait: the workers go now. (One raised while the caller
        # holds a result never passes here; the caller then calls stop() itself.)
        stop()
        raise


def warm_up(fn: Callable[[], Any], workers: int) -> None:
    """Starts the local pool now and runs ``fn`` once in each worker, without waiting.

    A job calls it once discovery has found the cases, so starting the workers and their
    imports (~1 s: numpy, nibabel, scipy, the compiled kernels) overlaps the header survey.
    The pool is the one :func:`run_tasks` reuses when it asks for the same number of
    workers; ``workers=0`` (the tasks run in this process) starts nothing.
    """
    if workers == 0:  # the tasks run in this process
        return
    from joblib.externals.loky import get_reusable_executor

    workers, _ = worker_count(workers, usable_cores())
    with _sigint_blocked():
        executor = get_reusable_executor(max_workers=workers, reuse=True, initializer=_die_with_parent,
                                         initargs=(os.getpid(),))
        for _ in range(workers):
            executor.submit(fn)
    _live.executor = executor


def _warn_once(message: str) -> None:
    """One warning a process for each distinct message (a job runs several stages)."""
    if message not in _live.said:
        _live.said.add(message)
        log.warning("%s", message)


class _Live:
    """What this process has running (what :func:`stop` must end), kept outside the
    generators that run it: an interrupt may leave a generator suspended in its caller."""

    def __init__(self) -> None:
        self.executor: Any = None  # the loky executor last used
        self.dask: dict[int, tuple[Any, dict[Any, int]]] = {}  # id -> (client, futures in flight)
        self.said: set[str] = set()  # warnings given (see _warn_once)


_live = _Live()


def stop(timeout: float = STOP_SECONDS) -> bool:
    """Kills the local workers and cancels the Dask tasks this process started.

    Safe to call at any moment and more than once (an interrupt may have hit the pool
    halfway through a call): each step runs on its own thread, bounded by ``timeout``.
    Returns True when every step finished in time (the workers are gone); if one did not,
    the rest is left to ``PR_SET_PDEATHSIG`` when the process exits.
    """
    ok = True
    executor, _live.executor = _live.executor, None
    if executor is not None:
        ok &= _bounded(lambda: executor.shutdown(wait=True, kill_workers=True), timeout)
        for process in list(getattr(executor, "_processes", {}).values()):  # what loky missed
            with contextlib.suppress(OSError, ValueError, AttributeError):  # gone, or never started
                process.kill()
    for key in list(_live.dask):
        client, in_flight = _live.dask.pop(key)
        ok &= _bounded(functools.partial(_cancel_and_close, client, list(in_flight)), timeout)
    return ok


def shutdown(timeout: float = STOP_SECONDS) -> None:
    """Ends the local workers once their work is done (a command's normal end)."""
    executor, _live.executor = _live.executor, None
    if executor is not None:
        _bounded(lambda: executor.shutdown(wait=True), timeout)


# Python's and loky's resource trackers, at exit, warn about every semaphore still
# registered, then remove it. A worker killed on purpose (an interrupt) leaves the ones it
# created (numcodecs' blosc mutex, once it has written the cache) registered.
_TRACKER_LEAK_FILTER = "ignore:resource_tracker:UserWarning"


def quiet_tracker_reports() -> None:
    """Resource trackers started from now on clean up killed workers' semaphores silently.

    The trackers are processes of their own that print to this process's stderr, after it
    has exited; their only channel is the environment they start with. Call it once, early,
    in a process that owns its environment (the ``volprep`` program).
    """
    current = os.environ.get("PYTHONWARNINGS", "")
    if _TRACKER_LEAK_FILTER not in current.split(","):
        os.environ["PYTHONWARNINGS"] = f"{current},{_TRACKER_LEAK_FILTER}" if current else _TRACKER_LEAK_FILTER


def _bounded(step: Callable[[], object], timeout: float) -> bool:
    """Runs ``step`` on a daemon thread; True if it ended (in any way) within ``timeout``."""
    def run() -> None:
        try:
            step()
        except Exception as err:  # noqa: BLE001 - cleanup of a pool being torn down: best effort
            log.debug("stop: %s", err)

    thread = threading.Thread(target=run, name="volprep-stop", daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive()


def _cancel_and_close(client: Any, futures: list[Any]) -> None:
    try:
        if futures:
            client.cancel(futures, force=True)
    finally:
        client.close(timeout=STOP_SECONDS)


def _died_reason(err: BaseException) -> str:
    text = str(err)
    if "SIGKILL" in text or "-9" in text:
        return "the worker process was killed (SIGKILL; out of memory?) while converting this case"
    return f"the worker process died while converting this case ({text.splitlines()[0][:120]})"


def _run_dask(fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]], scheduler: str,
              weights: Sequence[int], limit: int | None) -> Iterator[tuple[int, Any]]:
    import uuid

    from distributed import Client, as_completed
    from distributed.client import FutureCancelledError

    try:
        from distributed.scheduler import KilledWorker
    except ImportError:  # pragma: no cover - moved between releases
        from distributed import KilledWorker  # type: ignore[no-redef,attr-defined]

    try:
        client = Client(scheduler, timeout="30s", set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise UsageError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({err})") from None
    # Keys name the job and the task, so a dashboard shows what runs; the random part keeps
    # two jobs (or a rerun) on one cluster from sharing results.
    prefix = f"volprep-{getattr(fn, '__name__', 'task')}-{uuid.uuid4().hex[:8]}"
    with client:
        slots = max(1, sum(client.nthreads().values()))
        pending = list(range(len(tasks)))
        in_flight: dict[Any, int] = {}
        completed = as_completed(loop=client.loop)
        _live.dask[id(client)] = (client, in_flight)

        def submit() -> None:
            for index in _admit(pending, in_flight, weights, limit, slots):
                # pure=False: a task is a side effect (it writes the cache), never deduplicated.
                future = client.submit(fn, *tasks[index], key=f"{prefix}-{index}", pure=False, retries=0)
                in_flight[future] = index
                completed.add(future)

        try:
            submit()
            for future in completed:
                index = in_flight.pop(future)
                try:
                    result: Any = future.result()
                except (KilledWorker, FutureCancelledError) as err:
                    result = WorkerDied(f"the Dask worker died while running this task ({type(err).__name__})")
                finally:
                    future.release()
                raise_if_interrupted()
                submit()
                yield index, result
        except KeyboardInterrupt:
            stop()  # cancels this job's futures and closes the client
            raise
        finally:
            _live.dask.pop(id(client), None)
