"""volprep.load: cardinality, shuffling and determinism, cache, static shapes, hosts, augment."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from volprep.config import config_from_dict
from volprep.errors import UsageError
from volprep.loader import host_plan


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny shard folder: 12 cases, 16x16x10 records, 2-3 records a shard."""
    from volprep.demo import write_demo
    from volprep.runner import run_job

    base = tmp_path_factory.mktemp("loader")
    data = write_demo(base / "data", n_cases=12, shape=(32, 32, 20), seed=5)
    config = config_from_dict({
        "job": {"seed": 1, "splits": {"train": 0.75, "val": 0.25}, "shard_size_mb": 0.02},
        "preprocess": {"factor": 2, "target_shape": [16, 16, 10], "dtype": "float16"},
        "balance": {"enabled": False},
    })
    result = run_job(data, base / "out", config, workers=1, quiet=True)
    assert result.exit_code == 0
    return base / "out"


def _num(out: Path, split: str = "train") -> int:
    import volprep.manifest

    return volprep.manifest.read_manifest(out).splits[split].num_records


def _keys(ds: tf.data.Dataset) -> list[str]:
    """One stable key (sha of the voxels) per volume, in the order the dataset yields them."""
    keys = []
    for images, _ in ds:
        for image in images.numpy():
            keys.append(hashlib.sha256(image.tobytes()).hexdigest()[:16])
    return keys


def test_fixture_has_several_shards(shards: Path) -> None:
    import volprep.manifest

    m = volprep.manifest.read_manifest(shards)
    assert len(m.splits["train"].shards) >= 3


def test_cardinality_and_covering_every_record(shards: Path) -> None:
    import volprep

    n = _num(shards)
    ds = volprep.load(shards, batch_size=4, shuffle=False, deterministic=True)
    assert ds.cardinality().numpy() == -(-n // 4)
    keys = _keys(ds)
    assert len(keys) == n == len(set(keys))
    dropped = volprep.load(shards, batch_size=4, drop_remainder=True)
    assert dropped.cardinality().numpy() == n // 4
    assert volprep.load(shards, batch_size=4, repeat=True).cardinality().numpy() == tf.data.INFINITE_CARDINALITY


def test_drop_remainder_gives_static_shapes(shards: Path) -> None:
    import volprep

    ds = volprep.load(shards, batch_size=3, drop_remainder=True)
    image_spec, label_spec = ds.element_spec
    assert image_spec.shape.as_list() == [3, 16, 16, 10, 1]
    assert image_spec.dtype == tf.float32
    assert label_spec.shape.as_list() == [3]
    loose = volprep.load(shards, batch_size=3).element_spec[0]
    assert loose.shape.as_list() == [None, 16, 16, 10, 1]


def test_seeded_deterministic_shuffle_repeats_and_reshuffles(shards: Path) -> None:
    import volprep

    def order(seed: int) -> list[str]:
        return _keys(volprep.load(shards, batch_size=2, seed=seed, deterministic=True))

    first, again, other = order(7), order(7), order(8)
    assert first == again
    assert sorted(first) == sorted(other) and first != other
    ds = volprep.load(shards, batch_size=2, seed=7, deterministic=True, repeat=True)
    n = _num(shards)
    stream = _keys(ds.take(2 * -(-n // 2)))  # two epochs (batches do not cross epochs)
    assert sorted(stream[:n]) == sorted(stream[n:]) and stream[:n] != stream[n:]


def test_options_follow_deterministic(shards: Path) -> None:
    import volprep

    assert volprep.load(shards, deterministic=True).options().deterministic is True
    fast = volprep.load(shards).options()
    assert fast.deterministic is False
    assert fast.experimental_optimization.map_parallelization is True
    assert volprep.load(shards, threads=3).options().threading.private_threadpool_size == 3


def test_cache_in_memory_keeps_the_records(shards: Path) -> None:
    import volprep

    ds = volprep.load(shards, batch_size=4, seed=0, cache=True)
    one, two = _keys(ds), _keys(ds)
    assert sorted(one) == sorted(two) and len(one) == _num(shards)


def test_cache_file_is_read_when_the_shards_are_gone(shards: Path, tmp_path: Path) -> None:
    import volprep

    copy = tmp_path / "copy"
    shutil.copytree(shards, copy, ignore=shutil.ignore_patterns("cache"))
    cache = tmp_path / "cache" / "train"
    cache.parent.mkdir()
    ds = volprep.load(copy, batch_size=4, shuffle=False, deterministic=True, cache=str(cache))
    first = _keys(ds)
    assert list(cache.parent.glob("train*"))
    for shard in copy.glob("*.tfrecord"):
        shard.unlink()
    assert _keys(ds) == first  # the second epoch comes from the cache file alone


@pytest.mark.parametrize("hosts", [2, 3])
def test_hosts_get_equal_batches_and_disjoint_records(shards: Path, hosts: int) -> None:
    import volprep

    n = _num(shards)
    per_host = []
    for index in range(hosts):
        ds = volprep.load(shards, batch_size=2, seed=index, num_shards=hosts, shard_index=index)
        batches = list(ds)
        assert len(batches) == ds.cardinality().numpy()
        per_host.append((len(batches), _keys(ds)))
    assert len({count for count, _ in per_host}) == 1
    assert len({len(keys) for _, keys in per_host}) == 1
    union = [k for _, keys in per_host for k in keys]
    assert len(union) == len(set(union))  # no record on two hosts
    assert len(union) >= n - hosts * 2  # at most a record per file pair left out an epoch


def test_more_hosts_than_files_shards_by_record(shards: Path) -> None:
    import volprep
    import volprep.manifest

    files = len(volprep.manifest.read_manifest(shards).splits["val"].shards)
    n = _num(shards, "val")
    hosts = files + 1
    if n < hosts:
        pytest.skip("too few val records for this check")
    keys = [_keys(volprep.load(shards, split="val", batch_size=1, num_shards=hosts, shard_index=i))
            for i in range(hosts)]
    assert {len(k) for k in keys} == {n // hosts}
    union = [k for ks in keys for k in ks]
    assert len(union) == len(set(union))


def test_input_context_sets_host_and_per_replica_batch(shards: Path) -> None:
    import volprep

    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2)
    ds = volprep.load(shards, batch_size=4, input_context=ctx, drop_remainder=True)
    assert ds.element_spec[0].shape[0] == 2
    same = volprep.load(shards, batch_size=2, num_shards=2, shard_index=1, drop_remainder=True)
    assert ds.cardinality().numpy() == same.cardinality().numpy()
    assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.OFF


def test_distribute_datasets_from_function(shards: Path) -> None:
    import volprep

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    dist = strategy.distribute_datasets_from_function(
        lambda ctx: volprep.load(shards, batch_size=4, input_context=ctx, shuffle=False))
    total = sum(int(strategy.experimental_local_results(images)[0].shape[0]) for images, _ in dist)
    assert total == _num(shards)


@pytest.mark.parametrize(("counts", "hosts", "files", "records", "by_record"), [
    ([3, 3, 2, 2], 2, [[0, 2], [1, 3]], 5, False),
    ([3, 3, 3, 2, 2], 2, [[0, 2, 4], [1, 3]], 5, False),
    ([5, 4], 3, [[0, 1], [0, 1], [0, 1]], 3, True),
    ([4, 4, 4], 1, [[0, 1, 2]], 12, False),
])
def test_host_plan_tables(counts: list[int], hosts: int, files: list[list[int]], records: int,
                          by_record: bool) -> None:
    plans = [host_plan(counts, hosts, i) for i in range(hosts)]
    assert [p.files for p in plans] == files
    assert {p.num_records for p in plans} == {records}
    assert {p.by_record for p in plans} == {by_record}


def test_host_plan_refuses_bad_requests() -> None:
    with pytest.raises(UsageError, match="out of range"):
        host_plan([2, 2], 2, 2)
    with pytest.raises(UsageError, match="cannot be spread"):
        host_plan([1], 3, 0)


def test_unknown_split_is_a_usage_error(shards: Path) -> None:
    import volprep

    with pytest.raises(UsageError, match="no split 'test'"):
        volprep.load(shards, split="test")


def test_augment_hook_gives_finite_changed_batches(shards: Path) -> None:
    import volprep

    aug = volprep.Augment(flip_axes=[0], rotate_deg=10, scale=[0.9, 1.1], shift_vox=2, noise_std=0.05)
    plain = volprep.load(shards, batch_size=4, shuffle=False, deterministic=True)
    augmented = volprep.load(shards, batch_size=4, shuffle=False, deterministic=True, augment=aug, seed=3)
    (x0, y0), (x1, y1) = next(iter(plain)), next(iter(augmented))
    assert x1.shape == x0.shape and x1.dtype == tf.float32
    assert np.isfinite(x1.numpy()).all()
    assert not np.allclose(x0.numpy(), x1.numpy())
    np.testing.assert_array_equal(y0.numpy(), y1.numpy())
    again = next(iter(volprep.load(shards, batch_size=4, shuffle=False, deterministic=True, augment=aug, seed=3)))
    np.testing.assert_array_equal(x1.numpy(), again[0].numpy())


def _stored_images(out: Path, split: str = "train") -> dict[str, tuple[np.ndarray, int]]:
    """Every record's image (and class) by a hash of its stored bytes, read by plain TF.

    The independent route: the parse spec comes from ``manifest.json`` as written, and the
    records through ``tf.io.parse_single_example`` + ``tf.io.decode_raw``, no volprep code.
    """
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    image = manifest["features"]["image"]
    assert image["encoding"] == "raw" and image["dtype"] == "float16"
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}
    files = [str(out / s["file"]) for s in manifest["splits"][split]["shards"]]
    stored = {}
    for record in tf.data.TFRecordDataset(files):
        parsed = tf.io.parse_single_example(record, spec)
        array = tf.reshape(tf.io.decode_raw(parsed["image"], tf.float16), image["shape"]).numpy()
        stored[hashlib.sha256(array.tobytes()).hexdigest()] = (array, int(parsed["label"]))
    assert len(stored) == manifest["splits"][split]["num_records"]
    return stored


def test_dtype_float16_yields_the_stored_values_and_float32_their_cast(shards: Path) -> None:
    import volprep

    stored = _stored_images(shards)
    half = volprep.load(shards, batch_size=4, shuffle=False, deterministic=True, dtype="float16")
    assert half.element_spec[0].dtype == tf.float16
    seen = []
    for images, labels in half:
        assert images.dtype == tf.float16
        for image, label in zip(images.numpy(), labels.numpy(), strict=True):
            key = hashlib.sha256(image.tobytes()).hexdigest()
            assert key in stored, "a float16 image that is not bit for bit a stored record"
            assert int(label) == stored[key][1]
            seen.append(key)
    assert sorted(seen) == sorted(stored)  # every record once

    full = volprep.load(shards, batch_size=4, shuffle=False, deterministic=True)  # default: float32
    assert full.element_spec[0].dtype == tf.float32
    count = 0
    for images, _ in full:
        for image in images.numpy():
            key = hashlib.sha256(image.astype(np.float16).tobytes()).hexdigest()
            np.testing.assert_array_equal(image, stored[key][0].astype(np.float32))
            count += 1
    assert count == len(stored)
    as_stored = volprep.load(shards, batch_size=4, dtype=None)
    assert as_stored.element_spec[0].dtype == tf.float16


def test_dtype_float16_with_cache_and_static_batches(shards: Path) -> None:
    import volprep

    ds = volprep.load(shards, batch_size=3, drop_remainder=True, dtype="float16", cache=True, seed=0)
    assert ds.element_spec[0].dtype == tf.float16
    assert ds.element_spec[0].shape.as_list() == [3, 16, 16, 10, 1]
    assert sorted(_keys(ds)) == sorted(_keys(ds))


@pytest.mark.parametrize("dtype", ["float64", "half", tf.float16, ""])
def test_a_bad_dtype_is_refused(shards: Path, dtype: object) -> None:
    import volprep

    with pytest.raises(ValueError, match="dtype must be one of 'float32', 'float16'"):
        volprep.load(shards, dtype=dtype)


def test_augmentation_computes_in_float32_and_yields_the_dtype_asked_for(shards: Path) -> None:
    import volprep

    aug = volprep.Augment(flip_axes=[0], rotate_deg=10, scale=[0.9, 1.1], shift_vox=2, intensity_scale=[0.9, 1.1])
    options = {"batch_size": 4, "shuffle": False, "deterministic": True, "augment": aug, "seed": 5}
    half = volprep.load(shards, dtype="float16", **options)
    full = volprep.load(shards, **options)
    plain = volprep.load(shards, batch_size=4, shuffle=False, deterministic=True, dtype="float16")
    assert half.element_spec[0].dtype == tf.float16 and full.element_spec[0].dtype == tf.float32
    for (x16, y16), (x32, y32), (x0, _) in zip(half, full, plain, strict=True):
        assert x16.dtype == tf.float16
        assert np.isfinite(x16.numpy()).all()
        assert not np.array_equal(x16.numpy(), x0.numpy())  # augmented
        # the same float32 computation on the same (float16-valued) inputs, rounded once
        np.testing.assert_array_equal(x16.numpy(), x32.numpy().astype(np.float16))
        np.testing.assert_array_equal(y16.numpy(), y32.numpy())
