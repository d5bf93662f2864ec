"""Mistakes a user can make end in one line and an exit status, never a traceback.

Each runs the real command line in a subprocess (so what is printed is what a person
sees) and asserts the exit status, that stderr has no traceback, and the line it says.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from volprep.cli import main
from volprep.lock import output_lock
from volprep.verify import verify


def volprep_cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "volprep", *args], capture_output=True, text=True,
                          timeout=timeout)


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def _toml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(body)
    return path


def test_unreadable_data_is_a_usage_error(demo_data: Path, tmp_path: Path) -> None:
    """chmod 000 on DATA. The job runs without the capabilities that let root read through
    any mode (setpriv, from util-linux), as an ordinary user would."""
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    data.chmod(0)
    try:
        proc = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable,
                               "-m", "volprep", "shards", str(data), "--out", str(tmp_path / "out"), "--quiet"],
                              capture_output=True, text=True, timeout=120)
    finally:
        data.chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    assert lines(proc.stderr) == [f"volprep: error: {data}: cannot read the dataset (permission denied)"]


def test_an_absurd_target_shape_is_refused_before_any_work(demo_data: Path, tmp_path: Path) -> None:
    config = _toml(tmp_path, "[preprocess]\ntarget_shape = [4096, 4096, 4096]\n")
    out = tmp_path / "out"
    proc = volprep_cli("shards", str(demo_data), "--out", str(out), "--config", str(config), "--quiet")
    assert proc.returncode == 2, proc.stderr
    [line] = lines(proc.stderr)
    assert "target_shape [4096, 4096, 4096]" in line and "more than the" in line and "Traceback" not in line
    assert not (out / "cache").exists(), "refused before converting anything"


def test_a_resample_spacing_that_explodes_the_grid_fails_every_case_clearly(demo_data: Path, tmp_path: Path) -> None:
    config = _toml(tmp_path, '[preprocess]\nreduce = "resample"\nspacing = [0.000001, 0.000001, 0.000001]\n')
    proc = volprep_cli("shards", str(demo_data), "--out", str(tmp_path / "out"), "--config", str(config), "--quiet")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    out = lines(proc.stderr)
    assert all(ln.startswith("case ") and "of memory this machine has" in ln for ln in out[:-1])
    assert out[-1].startswith("volprep: job failed:") and "nothing published" in out[-1]


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_shard_size_is_a_config_error(demo_data: Path, tmp_path: Path, value: str) -> None:
    config = _toml(tmp_path, f"[job]\nshard_size_mb = {value}\n")
    proc = volprep_cli("shards", str(demo_data), "--out", str(tmp_path / "out"), "--config", str(config))
    assert proc.returncode == 2
    [line] = lines(proc.stderr)
    assert "[job.shard_size_mb]" in line and str(config) in line


@pytest.fixture(scope="module")
def good_out(demo_data: Path, pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("usage") / "out"
    assert main(["shards", str(demo_data), "--out", str(out), "--config", str(pipeline), "--workers", "1",
                 "--quiet", "--no-report"]) == 0
    return out


@pytest.mark.parametrize("missing", ["splits", "features", "classes", "failures", "config"])
@pytest.mark.parametrize("command", ["inspect", "verify", "report", "bench"])
def test_a_manifest_missing_a_key_is_one_line(good_out: Path, tmp_path: Path, missing: str, command: str) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(good_out, copy, ignore=shutil.ignore_patterns("cache"))
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest[missing]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    proc = volprep_cli(command, str(copy))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert [ln for ln in lines(proc.stderr) if ln.startswith("volprep")] == [
        f"volprep: error: {copy / 'manifest.json'}: not a complete volprep manifest: key {missing!r} missing"]


def test_verify_while_a_job_holds_the_folder_says_so_instead_of_mismatches(good_out: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(good_out, copy, ignore=shutil.ignore_patterns("cache"))
    assert verify(copy, parse=False) == []
    shard = copy / json.loads((copy / "manifest.json").read_text())["splits"]["train"]["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[100] ^= 1
    shard.write_bytes(bytes(data))
    assert any(shard.name in p for p in verify(copy, parse=False))
    with output_lock(copy):  # what a running job holds
        problems = verify(copy, parse=False)
    assert len(problems) == 1 and "a job is writing this folder" in problems[0]
