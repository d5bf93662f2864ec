"""volprep.grain: a Grain random-access source (and JAX arrays from it), without TensorFlow.

Values are held to ``volprep.load`` in test_reader_e2e.py; here: the source is what
Grain's MapDataset and DataLoader take (shuffled, batched, repeated, in worker
processes), hosts split it disjointly with equal counts, the augmenter is seeded by
Grain's per-element generator, and the path never imports TensorFlow.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import grain
import numpy as np
import pytest
from test_reader import demo_job  # tests/ is on sys.path: one job a session for all reader tests

import volprep
from volprep.grain import Source
from volprep.manifest import read_manifest
from volprep.readers import Reader

KEYS = ("case_id", "copy")


@pytest.fixture(scope="module")
def shards(demo_data: Path, pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_job(demo_data, pipeline, tmp_path_factory)


def test_map_dataset_shuffles_batches_and_repeats(shards: Path) -> None:
    source = Source(shards, target="mask", extra_features=KEYS)
    total = read_manifest(shards).splits["train"].num_records
    assert len(source) == total
    ds = grain.MapDataset.source(source).shuffle(seed=4).repeat(2)
    keys = [(item["case_id"], int(item["copy"])) for item in ds]
    first, second = keys[:total], keys[total:]
    assert len(set(first)) == total and sorted(first) == sorted(second) and first != second
    again = [(item["case_id"], int(item["copy"])) for item in grain.MapDataset.source(source).shuffle(seed=4)]
    assert again == first
    batch = next(iter(grain.MapDataset.source(Source(shards)).batch(4)))
    d, h, w, c = read_manifest(shards).features["image"].shape
    assert batch["image"].shape == (4, d, h, w, c) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (4,) and batch["label"].dtype == np.int64


def test_grain_data_loader_with_worker_processes(shards: Path) -> None:
    from absl import flags

    # Grain 0.2.18 reads an absl flag in its worker path before any program parsed flags
    # (google/grain#1355, fixed after that release): what a script outside absl.app does.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    source = Source(shards, extra_features=KEYS)
    assert pickle.loads(pickle.dumps(source))[0]["case_id"] == source[0]["case_id"]
    sampler = grain.samplers.IndexSampler(len(source), shard_options=grain.sharding.NoSharding(),
                                          shuffle=True, num_epochs=1, seed=0)
    loader = grain.DataLoader(data_source=source, sampler=sampler, worker_count=1)
    keys = [(item["case_id"], int(item["copy"])) for item in loader]
    assert len(keys) == len(set(keys)) == len(source)


def test_hosts_are_disjoint_with_equal_counts(shards: Path) -> None:
    seen: list[tuple[str, int]] = []
    lengths = set()
    for host in range(4):
        source = Source(shards, num_shards=4, shard_index=host, extra_features=KEYS)
        lengths.add(len(source))
        seen += [(item["case_id"], int(item["copy"])) for item in grain.MapDataset.source(source)]
    assert len(lengths) == 1 and len(seen) == len(set(seen))


def test_augmenter_is_seeded_by_grain_and_follows_the_mask(shards: Path) -> None:
    source = Source(shards, target="mask")
    flips = source.augmenter(volprep.Augment(flip_axes=[1]))

    def run(seed: int) -> list[dict]:
        return list(grain.MapDataset.source(source).repeat(2).random_map(flips, seed=seed))

    items, again = run(7), run(7)
    plain = Reader(shards, shuffle=False, target="mask")
    n = len(source)
    assert all(np.array_equal(a["image"], b["image"]) for a, b in zip(items, again, strict=True))
    assert any(not np.array_equal(items[i]["image"], items[i + n]["image"]) for i in range(n))  # epochs differ
    for i, item in enumerate(items):
        p = plain[i % n]
        if not np.array_equal(item["image"], p["image"]):
            np.testing.assert_array_equal(item["image"], p["image"][:, ::-1])
            np.testing.assert_array_equal(item["label"], p["label"][:, ::-1])
    assert pickle.loads(pickle.dumps(flips)) is not None


def test_no_tensorflow_on_the_grain_and_jax_path(shards: Path) -> None:
    script = f"""
import sys
import grain
import jax.numpy as jnp
from volprep.grain import Source
source = Source({str(shards)!r}, check_sha256=True)
batch = next(iter(grain.MapDataset.source(source).shuffle(seed=0).batch(2)))
image = jnp.asarray(batch["image"])
assert image.shape[0] == 2 and str(image.dtype) == "float32"
assert float(jnp.abs(image - batch["image"]).max()) == 0.0
assert "tensorflow" not in sys.modules, "tensorflow was imported"
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stderr[-3000:]
