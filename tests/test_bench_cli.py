"""`volprep bench OUT`: loader figures and the verdict, through cli.main on a tiny shard folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from volprep.cli import main
from volprep.config import config_from_dict

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from volprep.demo import write_demo
    from volprep.runner import run_job

    base = tmp_path_factory.mktemp("bench")
    data = write_demo(base / "data", n_cases=6, shape=(32, 32, 20), seed=2)
    config = config_from_dict({
        "job": {"splits": {"train": 1.0}, "shard_size_mb": 0.02},
        "preprocess": {"factor": 2, "target_shape": [16, 16, 10], "dtype": "float32"},
        "balance": {"enabled": False},
    })
    assert run_job(data, base / "out", config, workers=1, quiet=True, report=False).exit_code == 0
    return base / "out"


def test_tiny_step_waits_on_input_and_names_knobs(shards: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(shards), "--batch-size", "2", "--batches", "3", "--step-ms", "0.001"]) == 0
    out = capsys.readouterr().out
    assert "volumes/s" in out and "read limit" in out
    assert "verdict: training would wait on input" in out
    assert "cache=True" in out
    assert "store float16" in out  # these shards hold float32


def test_huge_step_does_not_wait(shards: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(shards), "--batch-size", "2", "--batches", "3", "--step-ms", "1e7"]) == 0
    out = capsys.readouterr().out
    assert "verdict: training would not wait on input" in out
    assert "turn:" not in out


def test_no_step_time_asks_for_one(shards: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(shards), "--batches", "2"]) == 0
    assert "give --step-ms" in capsys.readouterr().out


def test_model_step_is_measured_and_judged(shards: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(shards), "--batch-size", "2", "--batches", "2", "--model"]) == 0
    out = capsys.readouterr().out
    assert "model step" in out and "reference 3D CNN" in out
    assert "verdict: training would" in out and "give --step-ms" not in out


def test_measure_loader_figures_are_consistent(shards: Path) -> None:
    from volprep.bench import measure_loader

    f = measure_loader(shards, batch_size=2, batches=3)
    assert f["records"] == 6 and f["image"]["shape"] == [16, 16, 10, 1]
    assert f["volumes_per_s"] > 0 and f["read_limit_volumes_per_s"] > 0
    assert f["mb_per_s"] == pytest.approx(f["volumes_per_s"] * f["record_mb"])
    assert f["decoded_gb"] == pytest.approx(6 * 16 * 16 * 10 * 4 / 1e9)
