"""Interrupts and worker counts with real processes and real signals.

SIGINT or SIGTERM, twice 5 ms apart (an impatient user, a scheduler that insists) and
once more into the cleanup, sent to the job's main process or to its whole process group
(a terminal's Ctrl-C), at a seeded random moment of the conversion or while shards are
written, on local workers or a Dask cluster: the job ends within seconds with exactly one
line on stderr, status 130 (SIGINT) or 143 (SIGTERM), no process of its tree left and no
task of it on the cluster; the same command rerun then finishes and verifies; a program
that swallows the interrupt is ended by the watchdog. ``--workers 1000`` runs on at most
the usable cores and says so. :class:`volprep.interrupts.Trap` and
:func:`volprep.backends.worker_count` are also checked in this process."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from conftest import pipeline_toml, start_cli

from volprep.backends import usable_cores, worker_count
from volprep.interrupts import Interrupted, Trap

RUNS = 10  # interrupted conversions a signal kind (the loop the brief asks for)
EXIT_WITHIN_S = 5.0  # "within a few seconds"; the watchdog (6 s) alone is too slow


@pytest.fixture(scope="module")
def big_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo dataset whose conversion lasts a second or two on two workers."""
    from volprep.demo import write_demo

    return write_demo(tmp_path_factory.mktemp("signals") / "data", n_cases=24,
                      shape=(48, 48, 32), seed=3)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pipeline_toml(tmp_path_factory.mktemp("signals-config") / "pipeline.toml",
                         shard_size_mb=0.05)


def _start(data: Path, out: Path, config: Path, *extra: str, group: bool) -> subprocess.Popen[str]:
    """``start_cli``, or the same command in a session of its own (to signal its group)."""
    if not group:
        return start_cli(data, out, config, *extra)
    cmd = [sys.executable, "-m", "volprep", "shards", str(data), "--out", str(out),
           "--config", str(config), "--quiet", "--no-report", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _tree(pid: int, into: dict[int, psutil.Process]) -> None:
    """Adds ``pid``'s descendants now alive to ``into``."""
    try:
        for child in psutil.Process(pid).children(recursive=True):
            into.setdefault(child.pid, child)
    except psutil.NoSuchProcess:
        pass


def _is_worker(proc: psutil.Process) -> bool:
    """A loky worker (not one of the resource trackers)."""
    try:
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return "loky" in cmdline and "resource_tracker" not in cmdline


def _survivors(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of ``procs`` still running (zombies count as gone) after up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for proc in procs:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


@dataclasses.dataclass
class Outcome:
    returncode: int | None
    stderr: str
    seconds: float  # from the first signal to the exit
    tree: list[psutil.Process]  # every descendant seen before the signal
    survivors: list[psutil.Process]

    def check(self, status: int, sig: signal.Signals) -> None:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        assert self.returncode == status, self.stderr
        assert lines == [f"volprep: interrupted ({sig.name})"], self.stderr
        assert "Traceback" not in self.stderr
        assert self.seconds < EXIT_WITHIN_S
        assert not self.survivors, f"left behind: {self.survivors}"


def _interrupt(proc: subprocess.Popen[str], ready: Callable[[], bool], delay: float,
               sig: signal.Signals, group: bool, again: float | None = None) -> Outcome:
    """Waits until ``ready()`` and ``delay`` s more, sends ``sig`` twice 5 ms apart (and
    once more ``again`` s later, into the cleanup, if the job still runs)."""
    tree: dict[int, psutil.Process] = {}
    deadline = time.monotonic() + 90
    try:
        while not (ready() and any(_is_worker(p) for p in tree.values())):
            assert proc.poll() is None, f"the job ended before the signal: {proc.communicate()}"
            assert time.monotonic() < deadline, "the job never reached the moment to interrupt"
            _tree(proc.pid, tree)
            time.sleep(0.002)
        end = time.monotonic() + delay
        while time.monotonic() < end:
            _tree(proc.pid, tree)
            time.sleep(0.005)
        _tree(proc.pid, tree)
        assert proc.poll() is None, f"the job ended before the signal: {proc.communicate()}"
        send = (lambda: os.killpg(proc.pid, sig)) if group else (lambda: proc.send_signal(sig))
        start = time.monotonic()
        send()
        time.sleep(0.005)
        if proc.poll() is None:
            send()
        if again is not None:
            time.sleep(again)
            if proc.poll() is None:
                send()
        try:
            _, stderr = proc.communicate(timeout=EXIT_WITHIN_S + 20)
        except subprocess.TimeoutExpired:
            stderr = "<hung>"
        seconds = time.monotonic() - start
    finally:
        if proc.poll() is None:  # a hang: clean up, the assertions say what went wrong
            for p in [*tree.values(), psutil.Process(proc.pid)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            proc.communicate(timeout=30)
    procs = list(tree.values())
    return Outcome(proc.returncode, stderr, seconds, procs, _survivors(procs, timeout=5.0))


def _converting(out: Path) -> Callable[[], bool]:
    return lambda: (out / "cache").is_dir()


def _writing(out: Path) -> Callable[[], bool]:
    return lambda: bool(list(out.glob("*.tfrecord")) or list(out.glob(".*.tfrecord.tmp-*")))


@pytest.mark.parametrize(("sig", "status", "runs"), [
    (signal.SIGINT, 130, RUNS),
    (signal.SIGTERM, 143, RUNS // 2),
], ids=["SIGINT", "SIGTERM"])
def test_two_signals_while_converting_end_the_job_cleanly(big_demo: Path, config: Path,
                                                           tmp_path: Path, sig: signal.Signals,
                                                           status: int, runs: int) -> None:
    rng = random.Random(20240601 + int(sig))
    for run in range(runs):
        out = tmp_path / f"out{run}"
        group = run % 2 == 1  # every other run: the whole process group, as a terminal does
        proc = _start(big_demo, out, config, "--workers", "2", group=group)
        outcome = _interrupt(proc, _converting(out), rng.uniform(0.0, 0.8), sig, group,
                             again=rng.uniform(0.0, 0.3))
        try:
            outcome.check(status, sig)
        except AssertionError as err:
            raise AssertionError(f"run {run} (group={group}): {err}") from err
        assert not (out / "manifest.json").exists()


def test_sigint_while_writing_shards_then_rerun_verifies(big_demo: Path, config: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _start(big_demo, out, config, "--workers", "2", group=False)
    _interrupt(proc, _writing(out), 0.0, signal.SIGINT, group=False).check(130, signal.SIGINT)
    assert not (out / "manifest.json").exists()

    rerun = start_cli(big_demo, out, config, "--workers", "2")
    _, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr
    verify = subprocess.run([sys.executable, "-m", "volprep", "verify", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stderr
    assert not list(out.glob(".*.tmp-*"))  # the interrupted run's temporaries were swept


@pytest.fixture(scope="module")
def dask_scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Dask cluster (a scheduler, two single-threaded workers) in a session of its own."""
    from distributed import Client

    folder = tmp_path_factory.mktemp("signals-dask")
    dask = str(Path(sys.executable).with_name("dask"))
    log = open(folder / "cluster.log", "wb")  # noqa: SIM115 - closed at teardown
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--scheduler-file", str(folder / "scheduler.json"), "--no-dashboard"],
                              stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True)]
    try:
        deadline = time.monotonic() + 60
        while not (folder / "scheduler.json").is_file() or not (folder / "scheduler.json").read_text().strip():
            assert time.monotonic() < deadline and procs[0].poll() is None, "dask scheduler did not start"
            time.sleep(0.05)
        procs.append(subprocess.Popen([dask, "worker", "--scheduler-file", str(folder / "scheduler.json"),
                                       "--nworkers", "2", "--nthreads", "1", "--no-dashboard"],
                                      stdout=log, stderr=subprocess.STDOUT, cwd=folder,
                                      start_new_session=True))
        address = json.loads((folder / "scheduler.json").read_text())["address"]
        with Client(address, timeout="30s", set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


def test_sigint_on_a_dask_job_cancels_its_tasks(big_demo: Path, config: Path, tmp_path: Path,
                                                 dask_scheduler: str) -> None:
    from distributed import Client

    out = tmp_path / "out"
    proc = start_cli(big_demo, out, config, "--scheduler", dask_scheduler)
    deadline = time.monotonic() + 60
    while not list(out.glob("cache/cases/*")):  # the cluster is converting
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the job never started converting"
        time.sleep(0.005)
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=EXIT_WITHIN_S + 20)
    assert proc.returncode == 130, stderr
    assert stderr.splitlines() == ["volprep: interrupted (SIGINT)"]
    assert time.monotonic() - start < EXIT_WITHIN_S

    def job_tasks() -> list[str]:  # the keys of volprep tasks the scheduler still knows
        keys = client.run_on_scheduler(lambda dask_scheduler: [str(k) for k in dask_scheduler.tasks])
        return [k for k in keys if "volprep-" in k]

    with Client(dask_scheduler, timeout="30s", set_as_default=False) as client:
        deadline = time.monotonic() + 10
        while (left := job_tasks()) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert not left, f"the interrupted job's tasks live on: {left}"


def test_workers_1000_runs_on_the_usable_cores_and_says_so(demo_data: Path, config: Path,
                                                           tmp_path: Path) -> None:
    cores = usable_cores()
    if cores >= 1000:
        pytest.skip("1000 workers fit on this machine")
    proc = start_cli(demo_data, tmp_path / "out", config, "--workers", "1000")
    most, deadline = 0, time.monotonic() + 120
    try:
        while proc.poll() is None:
            assert time.monotonic() < deadline, "the job did not finish"
            tree: dict[int, psutil.Process] = {}
            _tree(proc.pid, tree)
            most = max(most, sum(_is_worker(p) for p in tree.values()))
            assert most <= cores, f"{most} worker processes alive on {cores} usable cores"
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            for p in psutil.Process(proc.pid).children(recursive=True):
                p.kill()
            proc.kill()
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    unit = "core" if cores == 1 else "cores"
    assert stderr.splitlines() == [f"volprep: --workers 1000 capped to {cores} ({cores} usable {unit})"]
    assert most >= 1


@pytest.mark.parametrize(("requested", "cores", "limit", "weights", "expected"), [
    (None, 4, None, (), (4, None)),                       # default: every usable core
    (2, 4, None, (), (2, None)),                          # a request within the cores stands
    (1000, 2, None, (), (2, "2 usable cores")),
    (8, 1, None, (), (1, "1 usable core")),
    (4, 8, 10, (5, 5, 5, 5), (2, "--memory-limit holds 2 tasks at a time")),
    (4, 8, 9, (5, 5, 5), (1, "--memory-limit holds 1 task at a time")),
    (4, 8, 10, (50, 5, 5), (2, "--memory-limit holds 2 tasks at a time")),  # smallest first
    (4, 8, 3, (5, 5), (1, "--memory-limit holds 1 task at a time")),  # one runs alone anyway
    (2, 8, 100, (5, 5, 5), (2, None)),                    # the memory holds the request
    (2, 8, 100, (), (2, None)),                           # no estimates: no memory bound
    (1000, 2, 10, (5, 5, 5), (2, "2 usable cores")),      # both bind: the tighter one is named
    (1000, 4, 10, (5, 5, 5), (2, "--memory-limit holds 2 tasks at a time")),
])
def test_worker_count_is_bounded_by_cores_and_memory(
        requested: int | None, cores: int, limit: int | None, weights: tuple[int, ...],
        expected: tuple[int, str | None]) -> None:
    assert worker_count(requested, cores, memory_limit=limit, weights=weights) == expected


def test_trap_raises_once_ignores_the_rest_then_restores() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    trap = Trap()
    with pytest.raises(Interrupted) as caught, trap:
        signal.raise_signal(signal.SIGTERM)
        time.sleep(1)  # the handler runs at once; never reached
    assert caught.value.signum == signal.SIGTERM and caught.value.exit_status == 143
    assert isinstance(caught.value, KeyboardInterrupt)
    # Until the caller has cleaned up, later signals are dropped, whatever their kind.
    try:
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
        time.sleep(0.01)
    except KeyboardInterrupt as err:  # not out of the test: pytest would stop the session
        trap.restore()
        pytest.fail(f"a signal after the first raised again: {err!r}")
    assert trap.received is caught.value
    trap.restore()
    assert {s: signal.getsignal(s) for s in before} == before


def test_trap_without_a_signal_restores_the_handlers() -> None:
    before = signal.getsignal(signal.SIGINT)
    with Trap() as trap:
        assert signal.getsignal(signal.SIGINT) != before
    assert trap.received is None and signal.getsignal(signal.SIGINT) == before


def test_watchdog_ends_a_program_that_swallows_the_interrupt() -> None:
    """Code that catches the interrupt and carries on (signals ignored by then) cannot keep
    the program alive: the watchdog ends it with the signal's status and the one line."""
    script = """
import time
from volprep.interrupts import Trap
with Trap(program=True, grace=0.5):
    while True:
        try:
            print("ready", flush=True)
            time.sleep(30)
        except KeyboardInterrupt:
            pass  # swallowed, and on it goes
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    time.sleep(0.1)  # into the sleep, inside the try
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 143, stderr
    assert stderr.splitlines() == ["volprep: interrupted (SIGTERM)"]
    assert time.monotonic() - start < 5
