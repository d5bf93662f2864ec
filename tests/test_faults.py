"""Faults with real processes: a worker killed from outside while it converts one case
fails that case only (exit status 3, the others in the shards); a second job on the same
output folder is refused while the first holds it; a case over ``--memory-limit`` is
refused before any voxel is read. The worker to kill is found through the test-only
``VOLPREP_TEST_HOLD_CASE`` hook (volprep.convert), which makes it wait and name its pid."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from conftest import DEMO_CASES, start_cli

from volprep.convert import HOLD_ENV

VICTIM = "demo_004"


def _wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_worker_killed_mid_case_fails_that_case_only(demo_data: Path, pipeline: Path,
                                                      tmp_path: Path) -> None:
    holds = tmp_path / "holds"
    holds.mkdir()
    env = {**os.environ, HOLD_ENV: f"{VICTIM}:{holds}"}
    proc = start_cli(demo_data, tmp_path / "out", pipeline, "--workers", "2", env=env)
    killed: set[int] = set()
    deadline = time.monotonic() + 120
    try:
        # Kill every worker that takes the victim (the first try, then its solo rerun).
        while proc.poll() is None:
            assert time.monotonic() < deadline, "the job did not finish"
            for path in holds.iterdir():
                pid = int(path.name)
                if pid not in killed:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
            time.sleep(0.02)
    finally:
        proc.kill()
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 3, stderr
    assert killed and os.getpid() not in killed
    assert f"case {VICTIM}:" in stderr and "killed" in stderr
    out = tmp_path / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    assert [f["case"] for f in manifest["failures"]] == [VICTIM]
    assert "killed" in manifest["failures"][0]["error"]
    plan = json.loads((out / "plan.json").read_text())
    written = {c for cases in plan["splits"].values() for c in cases}
    assert VICTIM not in written and len(written) == DEMO_CASES - 1
    assert sum(s["num_originals"] for s in manifest["splits"].values()) == DEMO_CASES - 1


def test_second_job_on_the_same_output_is_refused(demo_data: Path, pipeline: Path,
                                                  tmp_path: Path) -> None:
    holds = tmp_path / "holds"
    holds.mkdir()
    out = tmp_path / "out"
    first = start_cli(demo_data, out, pipeline, "--workers", "2",
                      env={**os.environ, HOLD_ENV: f"{VICTIM}:{holds}"})
    try:
        _wait_for(lambda: any(holds.iterdir()))  # the first job is mid-conversion
        second = start_cli(demo_data, out, pipeline, "--workers", "1")
        _, stderr = second.communicate(timeout=60)
        assert second.returncode == 2
        assert "in use by another volprep job" in stderr and f"pid {first.pid}" in stderr
        assert first.poll() is None  # the first job is untouched
    finally:
        first.kill()  # SIGKILL: its workers die with it
        first.communicate(timeout=30)
    assert not (out / "manifest.json").exists()
    # The lock died with its holder: a new job runs.
    third = start_cli(demo_data, out, pipeline, "--workers", "2")
    stdout, stderr = third.communicate(timeout=120)
    assert third.returncode == 0, stderr
    assert json.loads((out / "manifest.json").read_text())["failures"] == []


def test_case_over_memory_limit_is_refused_before_reading(demo_data: Path, pipeline: Path,
                                                         tmp_path: Path) -> None:
    proc = start_cli(demo_data, tmp_path / "out", pipeline, "--memory-limit", "64KiB")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1  # no case fits: nothing published
    assert stderr.count("more than --memory-limit") == DEMO_CASES
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert not list((tmp_path / "out").glob("cache.zarr/cases/*"))


def test_memory_limit_that_fits_one_case_at_a_time_converts_all(demo_data: Path, pipeline: Path,
                                                                tmp_path: Path) -> None:
    from volprep import io
    from volprep.cases import discover
    from volprep.config import ReadConfig

    out = tmp_path / "out"
    # 1.5x one case's estimate (image + mask headers) admits one case at a time, on two workers.
    case = discover(demo_data).cases[0]
    headers = [io.read_header(p, ReadConfig()) for p in (*case.images, case.mask)]
    limit = int(1.5 * sum(io.estimate_working_bytes(h) for h in headers))
    proc = start_cli(demo_data, out, pipeline, "--workers", "2", "--memory-limit", str(limit))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert json.loads((out / "manifest.json").read_text())["dataset"]["num_cases"] == DEMO_CASES
