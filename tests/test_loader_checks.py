"""The loader refuses records that disagree with the manifest, and reads an empty split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import volprep
from volprep.cli import main
from volprep.config import config_from_dict
from volprep.runner import run_job


@pytest.fixture(scope="module")
def out(demo_data: Path, pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("checks") / "out"
    assert main(["shards", str(demo_data), "--out", str(folder), "--config", str(pipeline),
                 "--workers", "1", "--quiet", "--no-report"]) == 0
    return folder


def _edited(out: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("cache"))
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_a_shape_that_disagrees_with_the_bytes_is_an_error_not_a_bigger_batch(out: Path, tmp_path: Path) -> None:
    """The reported defect: half the declared size made batches of 2 come out as 4."""

    def halve(m: dict) -> None:
        m["features"]["image"]["shape"][0] //= 2

    copy = _edited(out, tmp_path, halve)
    ds = volprep.load(copy, split="train", batch_size=2, shuffle=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature image: the record bytes"):
        for _ in ds:
            pass


def test_a_mask_dtype_that_disagrees_is_named(out: Path, tmp_path: Path) -> None:
    def widen(m: dict) -> None:
        m["features"]["mask"]["dtype"] = "int16"

    copy = _edited(out, tmp_path, widen)
    ds = volprep.load(copy, split="train", batch_size=2, shuffle=False, target="mask")
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature mask: the record (inflated )?bytes"):
        next(iter(ds))


def test_good_records_pass_the_check(out: Path) -> None:
    m = json.loads((out / "manifest.json").read_text())
    ds = volprep.load(out, split="train", batch_size=2, shuffle=False)
    n = sum(int(x.shape[0]) for x, _ in ds)
    assert n == m["splits"]["train"]["num_records"]


def test_a_split_with_no_records_warns_at_job_time_and_loads_empty(demo_data: Path, tmp_path: Path) -> None:
    config = config_from_dict({"job": {"splits": {"train": 1.0, "val": 0.0}, "seed": 1},
                               "balance": {"enabled": False}})
    result = run_job(demo_data, tmp_path / "out", config, workers=1, quiet=True)
    assert result.manifest.splits["val"].num_records == 0
    assert any("'val' holds 0 records" in w for w in result.warnings)
    ds = volprep.load(tmp_path / "out", split="val", batch_size=4)
    assert int(ds.cardinality()) == 0
    assert list(ds) == []
    assert np.isfinite(next(iter(volprep.load(tmp_path / "out", split="train", batch_size=2)))[0].numpy()).all()


def test_only_the_features_asked_for_are_parsed(out: Path, tmp_path: Path) -> None:
    """A feature the dataset does not yield is never parsed: a wrong spec for it is harmless."""

    def break_unused(m: dict) -> None:
        m["features"]["affine"]["shape"] = [5, 5]  # the records hold 4x4
        m["features"]["mask"]["dtype"] = "int16"  # the records hold uint8

    copy = _edited(out, tmp_path, break_unused)
    n = sum(int(x.shape[0]) for x, _ in volprep.load(copy, split="train", batch_size=2, shuffle=False))
    assert n == json.loads((out / "manifest.json").read_text())["splits"]["train"]["num_records"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature mask"):
        next(iter(volprep.load(copy, split="train", batch_size=2, shuffle=False, target="mask")))
