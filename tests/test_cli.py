"""The CLI is thin: each command calls one API function and maps errors to exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import pytest

from volprep.cli import main


def test_demo_command_writes_an_msd_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", str(tmp_path / "d"), "--cases", "5"]) == 0
    assert "5 cases" in capsys.readouterr().out
    assert (tmp_path / "d" / "dataset.json").is_file()
    images = sorted((tmp_path / "d" / "imagesTr").glob("*.nii.gz"))
    assert len(images) == 5
    assert nib.load(images[0]).get_fdata().ndim == 3


def test_bad_config_exits_2_naming_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "d").mkdir()
    config = tmp_path / "bad.toml"
    config.write_text("[preprocess]\nnormalize = 'minmax'\n")
    assert main(["shards", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "preprocess.normalize" in err and "'zscore'" in err


def test_verify_and_inspect_refuse_a_folder_without_manifest(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    assert main(["verify", str(tmp_path)]) == 2
    assert main(["inspect", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli() -> None:
    proc = subprocess.run([sys.executable, "-m", "volprep", "--version"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("volprep ")
