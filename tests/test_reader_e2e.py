"""One shard folder, four readers, the same arrays: ``volprep.load`` (TensorFlow), the numpy
reader, the PyTorch datasets and the Grain source, record by record, on real jobs.

Two jobs through the real CLI on the demo dataset: the default reduction (raw float16
records, small shards so a split has several files) and wavelet compression (records
reconstructed from kept coefficients). Unshuffled, every reader must yield the records
in ``volprep.load(shuffle=False, deterministic=True)``'s order, for one host and for
several; the interleave that fixes that order is also held to ``tf.data`` itself on
literal tables.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import grain
import numpy as np
import pytest
import tensorflow as tf
import torch
from test_reader import demo_job  # tests/ is on sys.path: one job a session for all reader tests

import volprep
from volprep.grain import Source
from volprep.readers import Reader, interleave
from volprep.torch import VolumeDataset, VolumeIterableDataset

WAVELET = """
[job]
seed = 3
splits = { train = 0.75, val = 0.25 }
shard_size_mb = 0.02
[preprocess]
reduce = "wavelet"
mode = "compress"
level = 2
keep = 0.1
target_shape = [24, 24, 16]
[balance]
enabled = false
"""


@pytest.fixture(scope="module")
def raw_job(demo_data: Path, pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_job(demo_data, pipeline, tmp_path_factory)


@pytest.fixture(scope="module")
def wavelet_job(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tmp_path_factory.mktemp("e2e-wavelet") / "wavelet.toml"
    config.write_text(WAVELET)
    out = demo_job(demo_data, config, tmp_path_factory, "wavelet")
    assert volprep.manifest.read_manifest(out).features["image"].encoding == "wavelet-compress"
    return out


def _tf(out: Path, split: str, target: str, **kw: int) -> list[tuple[np.ndarray, np.ndarray]]:
    ds = volprep.load(out, split=split, batch_size=1, shuffle=False, deterministic=True, target=target, **kw)
    return [(image.numpy()[0], label.numpy()[0]) for image, label in ds]


def _same(got: np.ndarray, want: np.ndarray, exact: bool) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    if exact:
        np.testing.assert_array_equal(got, want)
    else:  # TF's in-graph inverse DWT vs pywt's: the same sums in another order
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("job", ["raw_job", "wavelet_job"])
def test_four_readers_yield_the_same_arrays(job: str, request: pytest.FixtureRequest) -> None:
    out = request.getfixturevalue(job)
    exact_tf = job == "raw_job"
    targets = ["label", "mask"] if job == "raw_job" else ["label"]
    for split, target in itertools.product(["train", "val"], targets):
        want = _tf(out, split, target)
        reader = Reader(out, split, shuffle=False, target=target)
        mapped = VolumeDataset(out, split, target=target, channels_first=False)
        iterated = list(torch.utils.data.DataLoader(
            VolumeIterableDataset(out, split, shuffle=False, target=target), batch_size=None, num_workers=0))
        source = Source(out, split, target=target)
        assert len(reader) == len(mapped) == len(iterated) == len(source) == len(want) > 0
        for i, (image, label) in enumerate(want):
            ours = reader[i]
            _same(ours["image"], image, exact_tf)
            _same(np.asarray(ours["label"]), label, True)
            # torch and Grain go through the numpy reader's decoding: exactly its arrays
            t_image, t_label = mapped[i]
            _same(t_image.numpy(), ours["image"], True)
            _same(t_label.numpy(), np.asarray(ours["label"]), True)
            c_image, c_label = iterated[i]
            _same(c_image.numpy(), np.moveaxis(ours["image"], -1, 0), True)
            _same(c_label.numpy(), np.asarray(ours["label"]), True)
            g = source[i]
            _same(g["image"], ours["image"], True)
            _same(np.asarray(g["label"]), np.asarray(ours["label"]), True)


@pytest.mark.parametrize(("num_shards", "shard_index", "cycle_length"),
                         [(1, 0, 2), (2, 1, None), (4, 3, None), (9, 4, None)])
def test_unshuffled_order_matches_volprep_load_on_every_host(raw_job: Path, num_shards: int, shard_index: int,
                                                             cycle_length: int | None) -> None:
    kw = {"num_shards": num_shards, "shard_index": shard_index}
    if cycle_length:
        kw["cycle_length"] = cycle_length
    want = [image for image, _ in _tf(raw_job, "train", "label", **kw)]
    got = [s["image"] for s in Reader(raw_job, shuffle=False, **kw).epoch(0)]
    assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    grain_items = list(grain.MapDataset.source(Source(raw_job, num_shards=num_shards, shard_index=shard_index)))
    if cycle_length is None:
        assert all(np.array_equal(a["image"], b) for a, b in zip(grain_items, want, strict=True))


def test_interleave_is_tf_data_interleave() -> None:
    rng = np.random.default_rng(0)
    tables = [[3, 1, 2], [0, 2, 0, 5], [1], [4, 4, 4, 4, 4, 3, 3], [2, 0, 0, 0, 1]]
    tables += [list(rng.integers(0, 6, size=int(rng.integers(1, 9)))) for _ in range(4)]
    for counts in tables:
        for cycle, block in [(1, 1), (2, 1), (3, 2), (4, 1), (8, 3)]:
            files = tf.data.Dataset.from_tensor_slices(tf.constant(list(range(len(counts))), tf.int64))
            table = tf.constant([int(c) for c in counts], tf.int64)
            ds = files.interleave(
                lambda f, table=table: tf.data.Dataset.range(table[f]).map(lambda r, f=f: tf.stack([f, r])),
                cycle_length=cycle, block_length=block, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            want = [row.tolist() for row in ds.as_numpy_iterator()]
            assert interleave(counts, cycle, block).tolist() == want, (counts, cycle, block)
