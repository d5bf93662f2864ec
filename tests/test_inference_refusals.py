"""``prepare`` refuses what the job refuses, with the job's own one-line message.

A real job runs on a dataset of tissue scans (tests/realdata.py) plus four the job must
refuse: NaN voxels (``non_finite = "fail"``), two channels where the dataset has one, a
header claiming more than ``max_bytes``, an RGB volume. The expected messages are the
job's: the manifest's ``failures`` (path and problem). ``prepare`` of each refused scan
must raise exactly ``<path>: <problem>``; ``volprep prepare`` (a real process) must exit
1 with that one line and no traceback, and usage mistakes exit 2 in one line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import volprep
from volprep.cli import main
from volprep.errors import InputError
from volprep.manifest import read_manifest

GOOD = ("tissue_01", "tissue_03", "tissue_05")
CONFIG = """
[job]
on_error = "skip"
[read]
max_bytes = "6MiB"
non_finite = "fail"
[balance]
enabled = false
[preprocess]
reduce = "downsample"
target_shape = [44, 56, 46]
"""


def _write(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(data, affine), path)


@pytest.fixture(scope="module")
def refused_job(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """(dataset, OUT, {refused image path: the job's "<path>: <problem>"})."""
    base = tmp_path_factory.mktemp("refusals")
    data, src = base / "data", realdata / "tissue"
    for folder in ("imagesTr", "labelsTr"):
        (data / folder).mkdir(parents=True)
    for case in GOOD:
        for folder in ("imagesTr", "labelsTr"):
            (data / folder / f"{case}.nii.gz").symlink_to(src / folder / f"{case}.nii.gz")
    t1 = nib.load(src / "imagesTr" / "tissue_07.nii.gz")  # float32
    label = nib.load(src / "labelsTr" / "tissue_07.nii.gz")
    values = np.asarray(t1.dataobj, dtype=np.float32).copy()
    values[40:42, 50, 30] = np.nan
    _write(data / "imagesTr" / "nan_07.nii.gz", values, t1.affine)
    two = np.stack([values, values], axis=-1)
    two[np.isnan(two)] = 0
    _write(data / "imagesTr" / "two_07.nii.gz", two, t1.affine)
    rgb = np.zeros(t1.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    _write(data / "imagesTr" / "rgb_07.nii.gz", rgb, t1.affine)
    _write(data / "imagesTr" / "big_07.nii.gz", np.zeros((200, 200, 100), np.int16), t1.affine)  # 8 MB
    _write(data / "labelsTr" / "big_07.nii.gz", np.zeros((200, 200, 100), np.uint8), t1.affine)
    for case in ("nan_07", "two_07", "rgb_07"):
        _write(data / "labelsTr" / f"{case}.nii.gz", np.asarray(label.dataobj), label.affine)
    config = base / "job.toml"
    config.write_text(CONFIG)
    out = base / "out"
    code = main(["shards", str(data), "--out", str(out), "--config", str(config), "--workers", "1",
                 "--quiet", "--no-report"])
    assert code == 3
    failures = {f.path: f"{f.path}: {f.error}" for f in read_manifest(out).failures}
    assert {Path(p).name for p in failures} == {f"{c}.nii.gz" for c in ("nan_07", "two_07", "rgb_07", "big_07")}
    return data, out, failures


def test_prepare_refuses_what_the_job_refused_with_its_message(refused_job: tuple[Path, Path, dict[str, str]]) -> None:
    data, out, failures = refused_job
    problems = set()
    for path, message in failures.items():
        with pytest.raises(InputError) as caught:
            volprep.prepare(path, out)
        assert str(caught.value) == message
        problems.add(caught.value.problem)
    assert any("NaN" in p for p in problems) and any("channel(s), the dataset has 1" in p for p in problems)
    assert any("max_bytes" in p for p in problems) and any("allow_rgb" in p for p in problems)
    x, _ = volprep.prepare(data / "imagesTr" / f"{GOOD[0]}.nii.gz", out)  # the others still pass
    assert x.shape == (44, 56, 46, 1)


def _volprep(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "volprep", *args], capture_output=True, text=True, timeout=300)


def test_cli_prepare_exits_1_with_the_jobs_lines_and_goes_on(refused_job: tuple[Path, Path, dict[str, str]],
                                                             tmp_path: Path) -> None:
    data, out, failures = refused_job
    good = data / "imagesTr" / f"{GOOD[1]}.nii.gz"
    done = _volprep("prepare", *failures, str(good), "--like", str(out), "--save", str(tmp_path))
    assert done.returncode == 1, done.stderr
    assert sorted(done.stderr.splitlines()) == sorted(f"volprep: error: {m}" for m in failures.values())
    assert "Traceback" not in done.stderr
    assert (tmp_path / f"{GOOD[1]}.npy").exists() and (tmp_path / f"{GOOD[1]}.json").exists()
    assert not any(tmp_path.glob("nan_07*")) and done.stdout.count("volprep prepare:") == 1


def test_cli_usage_mistakes_exit_2_in_one_line(refused_job: tuple[Path, Path, dict[str, str]], tmp_path: Path) -> None:
    data, out, _ = refused_job
    good = data / "imagesTr" / f"{GOOD[0]}.nii.gz"
    assert main(["prepare", str(good), "--like", str(out), "--save", str(tmp_path)]) == 0
    np.save(tmp_path / "wrong.npy", np.zeros((44, 56, 45), np.uint8))
    info = tmp_path / f"{GOOD[0]}.json"
    cases = {
        ("prepare", str(good), "--like", str(tmp_path / "nothing"), "--save", str(tmp_path)): "no manifest.json",
        ("invert", str(tmp_path / "wrong.npy"), "--info", str(info), "--save", str(tmp_path / "x.nii.gz")):
            "expected labels [44, 56, 46]",
        ("invert", str(tmp_path / f"{GOOD[0]}.npy"), "--info", str(tmp_path / "none.json"), "--save",
         str(tmp_path / "x.nii.gz")): "no such scan info",
        ("invert", str(tmp_path / "missing.npy"), "--info", str(info), "--save", str(tmp_path / "x.nii.gz")):
            "no such prediction file",
    }
    for argv, words in cases.items():
        done = _volprep(*argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert len(done.stderr.splitlines()) == 1 and words in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x.nii.gz").exists()
