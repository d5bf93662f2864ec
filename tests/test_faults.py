"""Faults with real processes: a worker killed from outside while it converts one case
fails that case only (exit status 3, the others in the shards); a second job on the same
output folder is refused while the first holds it; a case over ``--memory-limit`` is
refused before any voxel is read. The worker to kill is found through the test-only
``VOLPREP_TEST_HOLD_CASE`` hook (tests/faultinject/sitecustomize.py, test-only), which makes it wait and name its pid."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil
from conftest import DEMO_CASES, hold_env, start_cli

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
    env = hold_env(VICTIM, holds)
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
                      env=hold_env(VICTIM, holds))
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
    assert not list((tmp_path / "out").glob("cache/cases/*"))


def test_memory_limit_that_fits_one_case_at_a_time_converts_all(demo_data: Path, pipeline: Path,
                                                                tmp_path: Path) -> None:
    from volprep import io
    from volprep.cases import discover
    from volprep.config import ReadConfig

    out = tmp_path / "out"
    # 1.5x one case's estimate (image + mask headers): every case alike, so one fits at a
    # time and the job starts one worker, not the two asked for (it says so). Admission
    # with two live workers is watched in test_memory_limit_admits_one_large_case_at_a_time.
    case = discover(demo_data).cases[0]
    headers = [io.read_header(p, ReadConfig()) for p in (*case.images, case.mask)]
    limit = int(1.5 * sum(io.estimate_working_bytes(h) for h in headers))
    proc = start_cli(demo_data, out, pipeline, "--workers", "2", "--memory-limit", str(limit))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "2 workers capped to 1" in stderr and "holds 1 task at a time" in stderr
    assert json.loads((out / "manifest.json").read_text())["dataset"]["num_cases"] == DEMO_CASES


def _mixed_sizes(root: Path) -> tuple[Path, list[str], list[str]]:
    """An MSD dataset of two small cases (8^3) and three large ones (40 x 40 x 24)."""
    small, large = ["a_small0", "a_small1"], ["b_large0", "b_large1", "b_large2"]
    rng = np.random.default_rng(3)
    training = []
    for k, case in enumerate(small + large):
        shape = (8, 8, 8) if case in small else (40, 40, 24)
        image = rng.normal(500, 50, shape).astype(np.int16)
        labels = np.zeros(shape, np.uint8)
        labels[2:5, 2:5, 2:5] = 1 + k % 2
        for folder, volume in (("imagesTr", image), ("labelsTr", labels)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(volume, np.diag([2.0, 2.0, 2.0, 1.0])), root / folder / f"{case}.nii.gz")
        training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({
        "name": "mixed", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "a", "2": "b"},
        "training": training, "numTraining": len(training)}))
    return root, small, large


def _completed(out: Path) -> set[str]:
    """Cases whose cache entry is in place (written under a hidden ``.tmp-`` name, renamed when complete)."""
    cases = out / "cache" / "cases"
    return {p.stem for p in cases.iterdir() if not p.name.startswith(".")} if cases.is_dir() else set()


def test_memory_limit_admits_one_large_case_at_a_time(pipeline: Path, tmp_path: Path) -> None:
    """While a large case is in flight, no other large case may be: watched from outside.

    The limit is 1.3 large cases (by the header estimate; the job adds a little for the
    reduced grid, well under 30%): the small cases fit beside anything, so two workers
    start, but two large cases never fit together. The hold hook parks a worker on one
    large case; while it is parked the second worker is alive, and no other large case may
    complete, however long we wait. Ignoring the limit would let it convert the next one.
    """
    from volprep import io
    from volprep.cases import discover
    from volprep.config import ReadConfig

    data, small, large = _mixed_sizes(tmp_path / "data")
    hold = large[0]
    weight = {}
    for case in discover(data).cases:
        headers = [io.read_header(p, ReadConfig()) for p in (*case.images, case.mask)]
        weight[case.case_id] = sum(io.estimate_working_bytes(h) for h in headers)
    limit = int(1.3 * max(weight[c] for c in large))
    assert 2 * min(weight[c] for c in large) > limit  # two large cases never fit together
    assert sum(weight[c] for c in small) < 0.1 * limit  # the smalls fit beside one: 2 workers

    holds = tmp_path / "holds"
    holds.mkdir()
    out = tmp_path / "out"
    proc = start_cli(data, out, pipeline, "--workers", "2", "--memory-limit", str(limit),
                     env=hold_env(hold, holds))
    try:
        _wait_for(lambda: any(holds.iterdir()) or proc.poll() is not None, timeout=120)
        assert proc.poll() is None, proc.communicate()[1]
        held_pid = int(next(holds.iterdir()).name)
        before = _completed(out)
        pending = set(large) - before - {hold}
        assert pending, "no large case left to admit while one is held: the test could not fail"
        # Two live workers: the job could run a second case beside the held one.
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                   if "resource_tracker" not in " ".join(p.cmdline())]
        assert held_pid in {p.pid for p in workers} and len(workers) >= 2
        time.sleep(4.0)  # a case here converts in well under a second once a worker is warm
        during = (_completed(out) - before) & set(large)
        assert during == set(), f"converted beside the held {hold} (over the limit): {sorted(during)}"
        assert proc.poll() is None and hold not in _completed(out)
    finally:
        proc.kill()  # SIGKILL: its workers die with it
        proc.communicate(timeout=30)
