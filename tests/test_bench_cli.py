"""`volprep bench OUT`: loader figures and the verdict, through cli.main on a tiny shard folder."""

from __future__ import annotations

import os
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow  # noqa: F401

from volprep.cli import main
from volprep.config import config_from_dict


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
    assert run_job(data, base / "out", config, workers=1, quiet=True).exit_code == 0
    return base / "out"


def test_tiny_step_waits_on_input_and_names_knobs(shards: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(shards), "--batch-size", "2", "--batches", "3", "--step-ms", "0.001"]) == 0
    out = capsys.readouterr().out
    assert "volumes/s" in out and "read limit" in out
    assert "verdict: training would wait on input" in out
    assert "cache=True" in out
    assert "store float16" in out  # these shards hold float32
    assert "dtype='float16'" not in out  # ... so there is no stored float16 to yield
    assert "first batch" in out and "after volprep.load() was called" in out


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


class _Clock:
    """A clock that moves only when a batch is handed out, so every figure has a known value."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


class _Timed:
    """Wraps a ``tf.data.Dataset``: each ``next()`` on its iterator advances the clock.

    The k-th batch handed out (k = 0, 1, ...) "takes" ``unit * (k + 1)`` seconds, so each
    batch has its own duration and a figure computed over the wrong batches (or the wrong
    number of them) comes out wrong. Every batch handed out is recorded.
    """

    def __init__(self, ds: Any, clock: _Clock, unit: float, log: list[tuple[float, Any]]) -> None:
        self._ds, self._clock, self._unit, self._log = ds, clock, unit, log

    def __getattr__(self, name: str) -> Any:  # repeat / batch / prefetch keep the wrapper
        attr = getattr(self._ds, name)
        if not callable(attr):
            return attr
        return lambda *a, **k: _Timed(attr(*a, **k), self._clock, self._unit, self._log)

    def __iter__(self) -> Iterator[Any]:
        for batch in self._ds:
            duration = self._unit * (len(self._log) + 1)
            self._clock.now += duration
            self._log.append((duration, batch))
            yield batch


def test_measure_loader_figures_follow_from_what_was_read_and_timed(
        shards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every figure against an independent source: a scripted clock, TF's count, file sizes.

    The loader's batches are scripted to take 1, 2, 3, ... ms and the plain reader's 0.25,
    0.5, ... ms (a fake ``perf_counter`` in volprep.bench), so the expected volumes/s, ms a
    batch, read limit and MB/s are hand-computed from the durations of the batches that
    were really timed and the volumes those batches really held. Records come from
    TensorFlow counting the split's files, bytes from the files' sizes on disk.
    """
    import tensorflow as tf

    from volprep import bench, loader

    batch_size, batches = 2, 3
    files = sorted(str(p) for p in shards.glob("train-*.tfrecord"))
    assert files
    records = int(tf.data.TFRecordDataset(files).reduce(np.int64(0), lambda n, _: n + 1))
    assert records == 6  # 6 demo cases, train = 1.0, no balancing
    file_bytes = sum(os.path.getsize(f) for f in files)

    clock = _Clock()
    loader_log: list[tuple[float, Any]] = []
    raw_log: list[tuple[float, Any]] = []
    raw_files: list[Any] = []
    real_load, real_reader = loader.load, tf.data.TFRecordDataset

    def reader(filenames: Any, *args: Any, **kwargs: Any) -> _Timed:
        raw_files.append(filenames)
        return _Timed(real_reader(filenames, *args, **kwargs), clock, 0.25e-3, raw_log)

    def timed_load(*args: Any, **kwargs: Any) -> Any:
        ds, manifest = real_load(*args, **kwargs)
        # Only now: the loader's own interleave has already built its readers.
        monkeypatch.setattr(tf.data, "TFRecordDataset", reader)
        return _Timed(ds, clock, 1e-3, loader_log), manifest

    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    monkeypatch.setattr(loader, "load", timed_load)
    f = bench.measure_loader(shards, batch_size=batch_size, batches=batches)

    # What was timed: the last `batches` batches of each iterator, after a warm-up.
    assert len(loader_log) > batches and len(raw_log) > batches
    timed = [d for d, _ in loader_log[-batches:]]
    raw_timed = [d for d, _ in raw_log[-batches:]]
    # Every batch held batch_size volumes (repeat=True: no partial batch), as read from TF.
    for _, (images, _labels) in loader_log:
        assert tuple(images.shape) == (batch_size, 16, 16, 10, 1) and images.dtype == tf.float32
    assert all(int(b.shape[0]) == batch_size for _, b in raw_log)
    # The read limit read exactly the split's files.
    assert sorted(np.asarray(raw_files[-1]).astype(str).tolist()) == files

    # Hand-computed from the scripted durations (after a warm-up of 3: timed 4, 5, 6 ms, so
    # 400 volumes/s and 5 ms a batch; the reader's 1.0, 1.25, 1.5 ms, so 1600 volumes/s).
    volumes = batches * batch_size
    assert f["volumes_per_s"] == pytest.approx(volumes / sum(timed))
    assert f["mean_ms_per_batch"] == pytest.approx(1e3 * sum(timed) / batches)
    assert f["ms_per_batch"] == pytest.approx(1e3 * float(np.median(timed)))
    assert (1e3 * np.percentile(timed, 90, method="lower") - 1e-9 <= f["p90_ms_per_batch"]
            <= 1e3 * np.percentile(timed, 90, method="higher") + 1e-9)
    assert f["read_limit_volumes_per_s"] == pytest.approx(volumes / sum(raw_timed))
    assert f["fraction_of_read_limit"] == pytest.approx(sum(raw_timed) / sum(timed))

    # Sizes: records from TF, bytes from disk, bytes a volume from the manifest's dtype/shape.
    assert f["records"] == records and f["batches"] == batches and f["batch_size"] == batch_size
    assert f["record_mb"] == pytest.approx(file_bytes / records / 1e6)
    assert f["mb_per_s"] == pytest.approx(volumes / sum(timed) * file_bytes / records / 1e6)
    assert f["image"] == {"shape": [16, 16, 10, 1], "dtype": "float32", "encoding": "raw"}
    payload = 16 * 16 * 10 * 4 + 16 * 16 * 10 * 1 + 16 * 8  # image f32, mask u8 (deflated: less), affine f64
    assert 16 * 16 * 10 * 4 + 16 * 8 <= file_bytes / records <= payload + 1024  # plus keys, ids and framing
    assert f["decoded_gb"] == pytest.approx(6 * 16 * 16 * 10 * 1 * 4 / 1e9)  # float32 in memory

    # The verdict's arithmetic, from the same hand-computed batch time.
    mean_ms = 1e3 * sum(timed) / batches
    text = bench.bench_text(f, step_ms=mean_ms - 3.0)
    assert f"{volumes / sum(timed):.1f} volumes/s" in text
    assert "verdict: training would wait on input: about 3.0 ms a step" in text
    assert f"idles {round(100 * 3.0 / mean_ms)}% of the time" in text


def test_float16_shards_read_as_float32_suggest_yielding_float16() -> None:
    from volprep.bench import bench_text

    figures = {"out": "x", "split": "train", "batch_size": 4, "batches": 10, "device": "CPU",
               "image": {"shape": [8, 8, 8, 1], "dtype": "float16", "encoding": "raw"}, "records": 8,
               "record_mb": 0.001, "volumes_per_s": 100.0, "mb_per_s": 0.1, "ms_per_batch": 40.0,
               "p90_ms_per_batch": 41.0, "mean_ms_per_batch": 40.0, "read_limit_volumes_per_s": 400.0,
               "fraction_of_read_limit": 0.25, "decoded_gb": 1e-5, "output_dtype": "float32",
               "first_batch_s": 0.25, "model_step_ms": None}
    text = bench_text(figures, step_ms=1.0)
    assert "turn: volprep.load(..., dtype='float16')" in text
    assert "first batch  250 ms" in text
    assert "dtype='float16'" not in bench_text({**figures, "output_dtype": "float16"}, step_ms=1.0)
