"""The lease on an object-store OUT, and SIGKILL during remote jobs (real subprocesses).

A live lease refuses a second job in one line; a killed job's lease refuses jobs until it
expires, then the next job takes it over and finishes byte-identical to an uninterrupted
local run; a job killed at any point leaves a manifest whose every object is whole.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import hold_env, outputs, pipeline_toml, start_cli
from s3server import objects, s3_server

from volprep.cases import discover
from volprep.cli import main
from volprep.lock import LEASE, holder
from volprep.verify import verify

BUCKET = "volprep-lease"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    with s3_server(BUCKET) as env:
        yield env


def _env(lease_seconds: float) -> dict[str, str]:
    return {**os.environ, "VOLPREP_LEASE_SECONDS": str(lease_seconds)}


def _finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def _kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)


def _wait_expired(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds + 5
    while holder(url) is not None:
        assert time.monotonic() < deadline, f"the lease of {url} never expired"
        time.sleep(0.2)


def _published(url: str) -> dict[str, bytes]:
    """The manifest and the shard objects it names (as conftest.outputs does for a folder)."""
    remote = objects(url)
    manifest = remote["manifest.json"]
    names = [s["file"] for info in json.loads(manifest)["splits"].values() for s in info["shards"]]
    return {"manifest.json": manifest, **{n: remote[n] for n in names}}


def test_live_lease_refuses_and_expired_lease_is_taken_over(demo_data: Path, pipeline: Path, tmp_path: Path,
                                                            s3: dict[str, str]) -> None:
    reference = tmp_path / "reference"
    assert main(["shards", str(demo_data), "--out", str(reference), "--config", str(pipeline),
                 "--quiet", "--no-report", "--workers", "2"]) == 0
    url = f"s3://{BUCKET}/lease/demo"
    held = tmp_path / "held"
    held.mkdir()
    first_case = sorted(c.case_id for c in discover(demo_data).cases)[0]
    job_a = start_cli(demo_data, url, pipeline, "--workers", "2", "--cache", str(tmp_path / "cache-a"),
                      env=hold_env(first_case, held, _env(8)))
    try:
        deadline = time.monotonic() + 90
        while not any(held.iterdir()):  # A holds the lease and is converting
            assert job_a.poll() is None, job_a.communicate()
            assert time.monotonic() < deadline, "job A never reached the held case"
            time.sleep(0.1)
        assert holder(url) is not None and f"pid {job_a.pid}" in holder(url)
        code, err = _finish(start_cli(demo_data, url, pipeline, env=_env(8)))
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"{url}: in use by another volprep job" in err and f"pid {job_a.pid}" in err
    finally:
        _kill(job_a)
    assert LEASE in objects(url), "a SIGKILLed job cannot delete its lease"
    code, err = _finish(start_cli(demo_data, url, pipeline, env=_env(8)))
    assert code == 2 and "in use by another volprep job" in err, "a killed job's lease holds until it expires"
    assert "manifest.json" not in objects(url)
    _wait_expired(url, 8)
    code, err = _finish(start_cli(demo_data, url, pipeline, "--cache", str(tmp_path / "cache-d"), env=_env(8)))
    assert code == 0, err
    assert _published(url) == outputs(reference)
    assert LEASE not in objects(url), "a finished job releases its lease"


def test_killed_remote_jobs_never_leave_a_partial_generation(demo_data: Path, tmp_path: Path,
                                                             s3: dict[str, str]) -> None:
    """Reruns with a new seed SIGKILLed at random points, then a full rerun."""
    config = pipeline_toml(tmp_path / "p.toml", shard_size_mb=0.01)
    reference = tmp_path / "reference"  # seed 1, then 9: the splits of the first job stay
    for seed in ("1", "9"):
        assert main(["shards", str(demo_data), "--out", str(reference), "--config", str(config),
                     "--quiet", "--no-report", "--seed", seed]) == 0
    url = f"s3://{BUCKET}/kills/demo"
    cache = ["--cache", str(tmp_path / "cache")]
    code, err = _finish(start_cli(demo_data, url, config, "--seed", "1", *cache, env=_env(2)))
    assert code == 0, err
    rng = random.Random(5)
    seeds = set()
    for i in range(5):
        proc = start_cli(demo_data, url, config, "--seed", str(2 + i % 3), "--workers", "2", *cache, env=_env(2))
        time.sleep(rng.uniform(1.0, 6.0))
        _kill(proc)
        assert verify(url, parse=False) == [], "the manifest names a missing or partial object"
        seeds.add(json.loads(objects(url)["manifest.json"])["seed"])
        _wait_expired(url, 2)
    code, err = _finish(start_cli(demo_data, url, config, "--seed", "9", *cache, env=_env(2)))
    assert code == 0, err
    assert _published(url) == outputs(reference)
    assert verify(url) == []
    print(f"generations seen after the kills: {sorted(seeds)}")
