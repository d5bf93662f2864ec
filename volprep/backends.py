"""Parallelism as a backend: the same tasks on local processes (loky) or a Dask cluster.

:func:`run_tasks` submits picklable tasks to joblib's loky process pool (``--workers N``)
or to an existing ``dask.distributed`` cluster (``--scheduler tcp://HOST:PORT``) and yields
results as they complete. Admission is bounded twice: at most ``max_in_flight`` tasks, and
with a memory limit, tasks whose estimated working sets add up to no more than the limit.
A worker process that dies (killed, out of memory, crashed) breaks a loky pool for every
task in flight; those tasks are then rerun one at a time on a fresh pool, so only the task
that kills its worker alone is reported as failed (:class:`WorkerDied`), and the job goes
on. Dask retries a task whose worker died on other workers and gives up with
``KilledWorker``, which becomes the same failure. Results carry the task's index; order
of completion never reaches the output.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

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
        executor = get_reusable_executor(max_workers=1 if solo else workers, reuse=True)
        in_flight: dict[cf.Future[Any], int] = {}
        broken = False
        while (queue or in_flight) and not broken:
            for index in _admit(queue, in_flight, weights, limit, 1 if solo else workers):
                in_flight[executor.submit(fn, *tasks[index])] = index
            done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
            for future in done:
                index = in_flight.pop(future)
                try:
                    yield index, future.result()
                except (TerminatedWorkerError, BrokenProcessPool) as err:
                    if solo:
                        yield index, WorkerDied(_died_reason(err))
                    else:
                        suspects.append(index)
                    broken = True
        if broken:
            # Everything still in flight ran on the broken pool: rerun those alone.
            for future, index in in_flight.items():
                future.cancel()
                suspects.append(index)
            suspects.sort()
            executor.shutdown(wait=True, kill_workers=True)


def _died_reason(err: BaseException) -> str:
    text = str(err)
    if "SIGKILL" in text or "-9" in text:
        return "the worker process was killed (SIGKILL; out of memory?) while converting this case"
    return f"the worker process died while converting this case ({text.splitlines()[0][:120]})"


def _run_dask(fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]], scheduler: str,
              weights: Sequence[int], limit: int | None) -> Iterator[tuple[int, Any]]:
    from distributed import Client, wait
    from distributed.client import FutureCancelledError

    try:
        from distributed.scheduler import KilledWorker
    except ImportError:  # pragma: no cover - moved between releases
        from distributed import KilledWorker  # type: ignore[no-redef,attr-defined]

    with Client(scheduler, timeout="30s", set_as_default=False) as client:
        slots = max(1, sum(client.nthreads().values()))
        pending = list(range(len(tasks)))
        in_flight: dict[Any, int] = {}
        while pending or in_flight:
            for index in _admit(pending, in_flight, weights, limit, slots):
                # pure=False: a task is a side effect (it writes the cache), never deduplicated.
                in_flight[client.submit(fn, *tasks[index], pure=False, retries=0)] = index
            done = wait(list(in_flight), return_when="FIRST_COMPLETED").done
            for future in done:
                index = in_flight.pop(future)
                try:
                    yield index, future.result()
                except (KilledWorker, FutureCancelledError) as err:
                    yield index, WorkerDied(f"the Dask worker died while running this task ({type(err).__name__})")
                finally:
                    future.release()
