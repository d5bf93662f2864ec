"""A mixed job: bad cases are refused with one line each, every good case is published."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from io_corpus import phantom, write_metaimage, write_nifti, write_raw

from volprep.records import decode_example, iter_records


def _mixed_dataset(root: Path) -> tuple[set[str], set[str]]:
    """A folder of volumes + labels.csv: good cases in every format, and broken ones."""
    root.mkdir(parents=True)
    good = {}
    good["nii"] = write_nifti(root / "nii.nii", phantom((16, 16, 12), seed=1))
    good["niigz"] = write_nifti(root / "niigz.nii.gz", phantom((16, 16, 12), seed=2))
    good["bigendian"] = write_nifti(root / "bigendian.nii", phantom((16, 16, 12), ">i2", seed=3))
    good["mha"] = write_metaimage(root / "mha.mha", phantom((16, 16, 12), seed=4))
    good["raw"] = write_raw(root / "raw.raw", phantom((16, 16, 12), seed=5))
    good["nosform"] = write_nifti(root / "nosform.nii", phantom((16, 16, 12), seed=9))
    img = nib.load(good["nosform"], mmap=False)
    img.set_sform(np.zeros((4, 4)), code=2)  # a singular sform: the reader falls back to the qform
    nib.save(img, good["nosform"])
    bad = {}
    (root / "empty.nii").write_bytes(b"")
    bad["empty"] = root / "empty.nii"
    full = gzip.compress(write_nifti(root / "tmp.nii", phantom((16, 16, 12), seed=6)).read_bytes())
    (root / "tmp.nii").unlink()
    (root / "truncgz.nii.gz").write_bytes(full[: len(full) // 2])
    bad["truncgz"] = root / "truncgz.nii.gz"
    nan = phantom((16, 16, 12), "float32", seed=7)
    nan[3, 3, 3] = np.nan
    bad["nan"] = write_nifti(root / "nan.nii.gz", nan)
    bad["twod"] = write_nifti(root / "twod.nii", phantom((16, 16), seed=8))
    (root / "._hidden.nii.gz").write_bytes(b"junk")  # macOS resource fork: skipped
    with open(root / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_id", "label"])
        for i, name in enumerate(sorted([*good, *bad])):
            writer.writerow([name, i % 2])
    return set(good), set(bad)


def test_mixed_job_exits_3_and_publishes_every_good_case(tmp_path: Path) -> None:
    good, bad = _mixed_dataset(tmp_path / "data")
    out = tmp_path / "out"
    config = tmp_path / "p.toml"
    config.write_text("[job]\nsplits = { train = 1.0 }\n[balance]\nenabled = false\n"
                      "[preprocess]\nreduce = 'none'\ntarget_shape = [16, 16, 12]\n")
    exe = Path(sys.executable).with_name("volprep")
    proc = subprocess.run(
        [str(exe), "shards", str(tmp_path / "data"), "--out", str(out), "--config", str(config),
         "--workers", "2", "--quiet", "--no-report"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    failure_lines = [line for line in proc.stderr.splitlines() if line.startswith("case ")]
    assert {line.split(":")[0].removeprefix("case ") for line in failure_lines} == bad
    for line in failure_lines:
        case = line.split(":")[0].removeprefix("case ")
        assert str(tmp_path / "data") in line and case in line
    manifest = json.loads((out / "manifest.json").read_text())
    assert {f["case"] for f in manifest["failures"]} == bad
    with open(out / "failures.csv") as fh:
        assert {row["case"] for row in csv.DictReader(fh)} == bad
    held = set()
    for shard in manifest["splits"]["train"]["shards"]:
        for record in iter_records(out / shard["file"]):
            held.add(decode_example(record)["case_id"][0].decode())
    assert held == good
    [(note, count)] = manifest["case_notes"].items()  # the fallback is said, once
    assert count == 1 and note.startswith("affine from") and "sform unusable" in note
    assert f"1 case(s): {note}" in proc.stdout


def test_on_error_fail_stops_and_publishes_nothing(tmp_path: Path) -> None:
    from volprep.cli import main

    _mixed_dataset(tmp_path / "data")
    out = tmp_path / "out"
    code = main(["shards", str(tmp_path / "data"), "--out", str(out), "--on-error", "fail",
                 "--workers", "1", "--quiet", "--no-report"])
    assert code == 1
    assert not (out / "manifest.json").exists()
    assert not list(out.glob("*.tfrecord"))


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["shards", "/no/such/dataset", "--out", "{tmp}/o"], "no such dataset"),
        (["shards", "{tmp}/empty", "--out", "{tmp}/o"], "no volumes found"),
        (["shards", "{tmp}/empty", "--out", "/proc/volprep-out"], "cannot write"),
        (["shards", "{tmp}/empty", "--out", "{tmp}/o", "--config", "{tmp}/missing.toml"], "missing.toml"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(tmp_path: Path, args: list[str], phrase: str,
                                                capsys: pytest.CaptureFixture) -> None:
    from volprep.cli import main

    (tmp_path / "empty").mkdir()
    code = main([a.replace("{tmp}", str(tmp_path)) for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert phrase in err and len(err.splitlines()) == 1
