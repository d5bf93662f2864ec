"""Parallelism as a backend: the same tasks on local processes (loky) or a Dask cluster.

:func:`run_tasks` submits picklable tasks to joblib's loky process pool (``--workers N``)
or to an existing ``dask.distributed`` cluster (``--scheduler tcp://HOST:PORT``) and yields
results as they complete. Admission is bounded twice: at most one task a worker slot in
flight, and with a memory limit, tasks whose estimated working sets add up to no more
than the limit (a task over the limit alone runs alone). A worker process that dies
(killed, out of memory, crashed) breaks a loky pool for every task in flight; those tasks
are then rerun one at a time on a fresh pool, so only the task that kills its worker
alone is reported as failed (:class:`WorkerDied`), and the job goes on. Loky workers die
with the job that started them (``PR_SET_PDEATHSIG``), so a killed job leaves no worker
writing behind it. Dask retries a task whose worker died on other workers and gives up
with ``KilledWorker`` (``distributed.scheduler.allowed-failures``), which becomes the same
failure. Results carry the task's index; order of completion never reaches the output.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from volprep.errors import UsageError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class WorkerDied:
    """The result of a task whose worker process died while running it."""

    reason: str


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


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
        workers: local worker processes (ignored with a scheduler).
        scheduler: a Dask scheduler address; None for local processes.
        weights: estimated peak bytes of each task (memory admission).
        memory_limit: bytes the tasks in flight may use together; None for no limit.
    """
    weights = list(weights) if weights is not None else [0] * len(tasks)
    if scheduler:
        yield from _run_dask(fn, tasks, scheduler, weights, memory_limit)
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

    pending = list(range(len(tasks)))
    suspects: list[int] = []
    while pending or suspects:
        # Suspects (in flight when a worker died) run alone, so the guilty one is found.
        solo = bool(suspects)
        queue = suspects if solo else pending
        slots = 1 if solo else workers
        executor = get_reusable_executor(max_workers=slots, reuse=True,
                                         initializer=_die_with_parent, initargs=(os.getpid(),))
        in_flight: dict[cf.Future[Any], int] = {}
        broken = False
        while (queue or in_flight) and not broken:
            for index in _admit(queue, in_flight, weights, limit, slots):
                in_flight[executor.submit(fn, *tasks[index])] = index
            done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
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


def _die_with_parent(parent_pid: int) -> None:
    """Worker initializer: a worker dies with the job that started it.

    Without this, loky workers outlive a SIGKILLed job and finish the tasks they hold,
    writing to the cache while a rerun may already be using it. Linux only (prctl
    ``PR_SET_PDEATHSIG``); elsewhere a no-op.
    """
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux/glibc
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


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

        def submit() -> None:
            for index in _admit(pending, in_flight, weights, limit, slots):
                # pure=False: a task is a side effect (it writes the cache), never deduplicated.
                future = client.submit(fn, *tasks[index], key=f"{prefix}-{index}", pure=False, retries=0)
                in_flight[future] = index
                completed.add(future)

        submit()
        for future in completed:
            index = in_flight.pop(future)
            try:
                result: Any = future.result()
            except (KilledWorker, FutureCancelledError) as err:
                result = WorkerDied(f"the Dask worker died while running this task ({type(err).__name__})")
            finally:
                future.release()
            submit()
            yield index, result
