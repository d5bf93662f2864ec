"""Backends and byte determinism: in-process, ``--workers 1``, ``--workers 2`` and a real Dask cluster
(``dask scheduler`` + ``dask worker`` processes on 127.0.0.1) write identical shards and
manifests; a Dask worker killed mid-case fails that case only; record order is a seeded
hash of stable keys; admission bounds the work in flight."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DEMO_CASES, hold_env, outputs

from volprep.backends import _admit
from volprep.config import load_config
from volprep.runner import run_job
from volprep.shards import RecordRef, order_records

ROOT = Path(__file__).resolve().parents[1]
VICTIM = "demo_004"


def test_record_order_is_a_seeded_permutation_independent_of_input_order() -> None:
    refs = [RecordRef(f"case_{i:02d}", copy, source=f"/d/case_{i:02d}.nii.gz")
            for i in range(20) for copy in range(2)]
    a = order_records(refs, seed=0)
    assert sorted(a, key=lambda r: (r.case_id, r.copy)) == refs  # a permutation
    assert order_records(list(reversed(refs)), seed=0) == a  # completion order never matters
    assert order_records(refs, seed=1) != a  # the seed salts the order
    assert a != refs


def test_duplicate_record_key_names_both_sources() -> None:
    refs = [RecordRef("x", 0, source="/a/x.nii.gz"), RecordRef("y", 0), RecordRef("x", 0, source="/b/x.nii")]
    with pytest.raises(ValueError, match=r"/a/x.nii.gz.*/b/x.nii"):
        order_records(refs, seed=0)


@pytest.mark.parametrize(("weights", "limit", "slots", "expected"), [
    ([5, 5, 5, 5], None, 2, [0, 1]),       # bounded by slots
    ([5, 5, 5, 5], 10, 4, [0, 1]),         # bounded by memory
    ([5, 5, 5, 5], 9, 4, [0]),             # one at a time
    ([50, 5, 5], 10, 4, [0]),              # a task over the limit still runs, alone
    ([5, 6, 1], 10, 4, [0]),               # FIFO: no overtaking (order stays predictable)
])
def test_admission_is_bounded_by_slots_and_memory(weights: list[int], limit: int | None,
                                                  slots: int, expected: list[int]) -> None:
    pending = list(range(len(weights)))
    assert _admit(pending, {}, weights, limit, slots) == expected
    assert pending == [i for i in range(len(weights)) if i not in expected]


def test_admission_counts_what_is_in_flight() -> None:
    assert _admit([2, 3], {"f0": 0, "f1": 1}, [4, 4, 4, 4], 10, 4) == []
    assert _admit([2, 3], {"f0": 0}, [4, 4, 4, 4], 10, 4) == [2]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we started, SIGKILL it after a grace period."""
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # leftovers of the group (nannies, workers)
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real Dask cluster: one scheduler and two single-threaded worker processes."""
    from distributed import Client

    folder = tmp_path_factory.mktemp("dask")
    scheduler_file = folder / "scheduler.json"
    dask = str(Path(sys.executable).with_name("dask"))
    # Workers hold VICTIM (the test-only hook) once the holds folder exists; the scheduler
    # gives up on a task after its second worker death (the default allows 3).
    env = {**hold_env(VICTIM, folder / "holds", {**os.environ, "PYTHONPATH": str(ROOT)}),
           "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
    log = open(folder / "cluster.log", "wb")  # noqa: SIM115 - closed at teardown
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--scheduler-file", str(scheduler_file), "--no-dashboard"],
                              stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder,
                              start_new_session=True)]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.is_file() or not scheduler_file.read_text().strip():
            if time.monotonic() > deadline or procs[0].poll() is not None:
                pytest.fail(f"dask scheduler did not start: {(folder / 'cluster.log').read_text()[-2000:]}")
            time.sleep(0.1)
        procs.append(subprocess.Popen([dask, "worker", "--scheduler-file", str(scheduler_file),
                                       "--nworkers", "2", "--nthreads", "1", "--no-dashboard"],
                                      stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder,
                                      start_new_session=True))
        address = json.loads(scheduler_file.read_text())["address"]
        with Client(address, timeout="30s", set_as_default=False) as client:
            client.wait_for_workers(2, timeout=90)
        yield address, folder / "holds"
    finally:
        for proc in reversed(procs):
            _stop(proc)
        log.close()


def test_workers_1_2_and_dask_write_identical_bytes(demo_data: Path, pipeline: Path,
                                                    dask_cluster: tuple[str, Path], tmp_path: Path) -> None:
    config = load_config(pipeline)
    runs = {"w1": {"workers": 1}, "w2": {"workers": 2}, "dask": {"scheduler": dask_cluster[0]}}
    got = {}
    for name, backend in runs.items():
        out = tmp_path / name
        result = run_job(demo_data, out, config, quiet=True, **backend)  # type: ignore[arg-type]
        assert result.exit_code == 0
        assert result.cases_converted == DEMO_CASES and result.cases_reused == 0
        text = (out / "manifest.json").read_text()
        assert str(out) not in text and str(tmp_path) not in text  # no output paths
        assert set(json.loads((out / "timings.json").read_text())) >= {"convert", "write"}
        got[name] = outputs(out)
    assert sum(n.endswith(".tfrecord") for n in got["w1"]) >= 4  # several shards, written in parallel
    assert got["w1"] == got["w2"]
    assert got["w1"] == got["dask"]


def test_in_process_and_two_workers_write_identical_bytes(demo_data: Path, pipeline: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(pipeline)
    two = run_job(demo_data, tmp_path / "w2", config, quiet=True, workers=2)

    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("a worker pool was started")

    # without --workers, a dataset this small (a few MB) starts no worker process
    monkeypatch.setattr("joblib.externals.loky.get_reusable_executor", no_pool)
    here = run_job(demo_data, tmp_path / "here", config, quiet=True)
    assert here.exit_code == two.exit_code == 0 and here.cases_converted == DEMO_CASES
    assert sum(n.endswith(".tfrecord") for n in outputs(tmp_path / "w2")) >= 4
    assert outputs(tmp_path / "here") == outputs(tmp_path / "w2")


def test_small_datasets_run_in_process_unless_workers_are_asked_for(tmp_path: Path) -> None:
    from volprep.backends import IN_PROCESS_BYTES, default_workers, local_workers
    from volprep.cases import Case
    from volprep.survey import disk_bytes

    assert local_workers(None, IN_PROCESS_BYTES - 1) == 0
    assert local_workers(None, IN_PROCESS_BYTES) == default_workers()
    assert local_workers(1, 0) == 1 and local_workers(3, IN_PROCESS_BYTES) == 3
    (tmp_path / "a.nii.gz").write_bytes(b"x" * 100)
    (tmp_path / "b.hdr").write_bytes(b"x" * 10)
    (tmp_path / "b.img").write_bytes(b"x" * 1000)  # an Analyze pair: the .img counts too
    series = tmp_path / "series"
    series.mkdir()
    for n in range(3):
        (series / f"{n}.dcm").write_bytes(b"x" * 50)  # a DICOM folder: its files count

    def case(name: str, *images: Path, mask: Path | None = None) -> Case:
        return Case(name, name, images, mask, None)

    cases = [case("a", tmp_path / "a.nii.gz", mask=tmp_path / "b.hdr"), case("s", series)]
    assert disk_bytes(cases, 10**6) == 100 + 10 + 1000 + 150
    assert disk_bytes(cases, 500) == 1110  # stops once past the limit: the folder is not listed
    assert disk_bytes([case("gone", tmp_path / "gone.nii")], 500) == 500  # unreadable: counted as large


def test_dask_worker_killed_mid_case_fails_that_case_only(demo_data: Path, pipeline: Path,
                                                          dask_cluster: tuple[str, Path],
                                                          tmp_path: Path) -> None:
    address, holds = dask_cluster
    holds.mkdir()
    killed: set[int] = set()

    def killer() -> None:  # kills every Dask worker process that takes VICTIM
        while not done.is_set():
            for path in holds.iterdir():
                if int(path.name) not in killed:
                    killed.add(int(path.name))
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(path.name), signal.SIGKILL)
            time.sleep(0.02)

    done = threading.Event()
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        result = run_job(demo_data, tmp_path / "out", load_config(pipeline), scheduler=address,
                         quiet=True)
    finally:
        done.set()
        thread.join(timeout=10)
        shutil.rmtree(holds, ignore_errors=True)
    assert result.exit_code == 3
    assert [f.case for f in result.failures] == [VICTIM] and "Dask worker died" in result.failures[0].error
    assert len(killed) >= 2  # the first try and its retry elsewhere (allowed-failures = 1)
    assert result.cases_converted == DEMO_CASES - 1
    assert sum(s.num_originals for s in result.manifest.splits.values()) == DEMO_CASES - 1
