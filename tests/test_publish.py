"""Nothing lost: the published manifest and the files it names agree at every instant.

Real processes, real signals and a real full filesystem (a small tmpfs the test mounts;
the suite runs as root on the project's machines, as CI does). A rerun that changes the
seed and is killed (SIGKILL, or SIGINT twice) at random points must leave OUT verifying
(the old generation or the new one, never a mix), and the final rerun must be
byte-identical to one never interrupted. Files volprep did not write are never deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import outputs, pipeline_toml, start_cli

import volprep
from volprep.cli import main
from volprep.verify import verify


def _run(data: Path, out: Path, config: Path, *extra: str) -> int:
    return main(["shards", str(data), "--out", str(out), "--config", str(config), "--workers", "2",
                 "--quiet", "--no-report", *extra])


def _cli(data: Path, out: Path, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``volprep shards`` in a real subprocess, run to completion."""
    cmd = [sys.executable, "-m", "volprep", "shards", str(data), "--out", str(out), "--config", str(config),
           "--quiet", "--no-report", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _generation(out: Path) -> int:
    return int(json.loads((out / "manifest.json").read_text())["seed"])


def _case_ids(out: Path, split: str) -> list[str]:
    """Every record's case id of a split, read through the loader (records once each)."""
    import tensorflow as tf

    manifest = json.loads((out / "manifest.json").read_text())
    files = [str(out / s["file"]) for s in manifest["splits"][split]["shards"]]
    spec = {"case_id": tf.io.FixedLenFeature([], tf.string), "copy": tf.io.FixedLenFeature([], tf.int64)}
    rows = [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(files)]
    return [f"{r['case_id'].numpy().decode()}#{int(r['copy'])}" for r in rows]


def _assert_consistent(out: Path) -> None:
    """verify passes, no record twice, no case in two splits, the loader reads every record."""
    assert verify(out, parse=False) == []
    train, val = _case_ids(out, "train"), _case_ids(out, "val")
    assert len(set(train)) == len(train) and len(set(val)) == len(val)
    assert not {t.split("#")[0] for t in train} & {v.split("#")[0] for v in val}
    manifest = json.loads((out / "manifest.json").read_text())
    ds = volprep.load(out, split="train", batch_size=4, shuffle=False)
    assert sum(int(x.shape[0]) for x, _ in ds) == manifest["splits"]["train"]["num_records"]


def test_foreign_files_are_left_alone_and_reported(demo_data: Path, pipeline: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    mine = {"my_other_dataset.tfrecord": b"precious", "train-00000-of-00001.tfrecord": b"also mine"}
    for name, data in mine.items():
        (out / name).write_bytes(data)
    for seed in ("1", "2", "3"):  # three generations: the first two get retired and deleted
        assert _run(demo_data, out, pipeline, "--seed", seed) == 0
    printed = capsys.readouterr().out
    assert "left alone: 2 .tfrecord file(s) volprep did not write" in printed
    for name, data in mine.items():
        assert (out / name).read_bytes() == data
    assert verify(out, parse=False) == []


def test_old_generation_is_kept_until_the_next_job(demo_data: Path, pipeline: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run(demo_data, out, pipeline, "--seed", "1") == 0
    first = {s["file"] for info in json.loads((out / "manifest.json").read_text())["splits"].values()
             for s in info["shards"]}
    assert _run(demo_data, out, pipeline, "--seed", "2") == 0
    assert all((out / f).exists() for f in first), "a loader that opened the old manifest can finish"
    assert _run(demo_data, out, pipeline, "--seed", "3") == 0
    second = {s["file"] for info in json.loads((out / "manifest.json").read_text())["splits"].values()
              for s in info["shards"]}
    gone = first - second
    assert gone and not any((out / f).exists() for f in gone)


def _kill(proc: subprocess.Popen[str], how: str) -> None:
    if how == "SIGKILL":
        os.kill(proc.pid, signal.SIGKILL)
    else:
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(0.005)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGINT)
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"the job did not end within 30 s of {how}")


def test_interrupted_reruns_never_mix_generations(demo_data: Path, tmp_path: Path) -> None:
    """About ten reruns with a new seed, each killed at a random point, then a full rerun."""
    config = pipeline_toml(tmp_path / "p.toml", shard_size_mb=0.01)
    reference = tmp_path / "reference"
    assert _run(demo_data, reference, config, "--seed", "1") == 0
    # a rerun's length on this machine now, in a subprocess like the killed ones (cache
    # reused): kill points scale with it, so a loaded machine still sees some kills land
    # after a publication
    started = time.monotonic()
    assert _cli(demo_data, reference, config, "--seed", "9", "--workers", "2").returncode == 0
    rerun_s = time.monotonic() - started

    out = tmp_path / "out"
    assert _run(demo_data, out, config, "--seed", "1") == 0
    rng = random.Random(12)
    seen = set()
    for i in range(10):
        seed = str(2 + i % 3)
        proc = start_cli(demo_data, out, config, "--seed", seed, "--workers", "2")
        time.sleep(rng.uniform(0.15, 1.3) * rerun_s)
        _kill(proc, "SIGKILL" if i % 2 == 0 else "SIGINT twice")
        _assert_consistent(out)
        seen.add(_generation(out))
    assert len(seen) >= 2, f"every kill landed in the same generation: {seen}"
    assert _run(demo_data, out, config, "--seed", "9") == 0
    assert outputs(out) == outputs(reference)
    _assert_consistent(out)


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A real filesystem of ``size`` bytes (tmpfs) mounted at ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the disk-full tests (they need root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk: Path, leave: int) -> None:
    """Fills ``disk`` until about ``leave`` bytes are free."""
    free = shutil.disk_usage(disk).free
    with open(disk / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))


def test_a_rerun_on_a_full_disk_fails_in_one_line_and_keeps_the_published_folder(
        demo_data: Path, pipeline: Path, tmp_path: Path) -> None:
    """The reported defect: exit 1 but val-00000 replaced, then wrong batches and NaNs."""
    with small_disk(tmp_path / "disk", "64m") as disk:
        out = disk / "out"
        assert _run(demo_data, out, pipeline, "--seed", "1") == 0
        before = outputs(out)
        float32 = tmp_path / "f32.toml"
        float32.write_text(pipeline.read_text().replace('dtype = "float16"', 'dtype = "float32"'))
        _fill(disk, 100_000)
        proc = _cli(demo_data, out, float32, "--seed", "2")
        assert proc.returncode == 1, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "No space left on device" in lines[0], proc.stderr
        assert outputs(out) == before
        (disk / "filler").unlink()
        _assert_consistent(out)


def test_a_full_disk_while_caching_fails_in_one_line(demo_data: Path, pipeline: Path, tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "16m") as disk:
        _fill(disk, 30_000)
        proc = _cli(demo_data, disk / "out", pipeline)
        assert proc.returncode == 1, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "No space left on device" in lines[0] and "Traceback" not in proc.stderr
        assert not (disk / "out" / "manifest.json").exists()
