"""volprep.torch: DataLoader workers, epochs, hosts, layouts, errors, and no TensorFlow.

Values are held to ``volprep.load`` in test_reader_e2e.py; here, what a PyTorch user
relies on: workers split records without duplicates (and, with a matching batch size,
give the very batches of a single process), ``set_epoch`` and seeds decide the order, a
corrupted shard stops the loader naming the file and the record, and the whole path runs
in a process that never imports TensorFlow.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_reader import demo_job  # tests/ is on sys.path: one job a session for all reader tests
from torch.utils.data import DataLoader

import volprep
from volprep.manifest import read_manifest
from volprep.readers import Reader
from volprep.readers.index import clear_caches, shard_index
from volprep.torch import VolumeDataset, VolumeIterableDataset

KEYS = ("case_id", "copy")


@pytest.fixture(scope="module")
def shards(demo_data: Path, pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_job(demo_data, pipeline, tmp_path_factory)


def _keys(loader: DataLoader) -> list[tuple[str, int]]:
    """(case id, copy) of every sample, in the order the loader yields them."""
    out = []
    for batch in loader:
        out += list(zip(batch["case_id"], batch["copy"].tolist(), strict=True))
    return out


def test_workers_split_records_without_duplicates_and_keep_the_batches(shards: Path) -> None:
    total = read_manifest(shards).splits["train"].num_records
    ds = VolumeIterableDataset(shards, seed=5, batch_size=3, as_dict=True, extra_features=KEYS)
    single = _keys(DataLoader(ds, batch_size=3, num_workers=0))
    ds.set_epoch(0)
    workers = _keys(DataLoader(ds, batch_size=3, num_workers=2))
    assert len(single) == len(set(single)) == total == len(ds)
    assert workers == single  # the same batches, in the same order, whatever num_workers
    ds.set_epoch(0)
    odd = _keys(DataLoader(ds, batch_size=2, num_workers=2))  # a batch size the turns do not match
    assert sorted(odd) == sorted(single)
    # Without a seed, the dataset draws one when built: every worker deals the same permutation.
    unseeded = _keys(DataLoader(VolumeIterableDataset(shards, batch_size=3, as_dict=True, extra_features=KEYS),
                                batch_size=3, num_workers=2))
    assert sorted(unseeded) == sorted(single)


def test_map_style_with_a_shuffling_sampler_and_workers(shards: Path) -> None:
    ds = VolumeDataset(shards, as_dict=True, extra_features=KEYS)
    loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(0))
    keys = _keys(loader)
    assert len(keys) == len(set(keys)) == len(ds)
    plain = Reader(shards, shuffle=False, extra_features=KEYS)
    assert sorted(keys) == sorted((s["case_id"], s["copy"]) for s in plain.epoch(0))


def test_seeds_and_epochs_decide_the_order(shards: Path) -> None:
    def run(seed: int, epochs: list[int], workers: int) -> list[list[tuple[str, int]]]:
        ds = VolumeIterableDataset(shards, seed=seed, batch_size=2, as_dict=True, extra_features=KEYS)
        out = []
        for epoch in epochs:
            ds.set_epoch(epoch)
            out.append(_keys(DataLoader(ds, batch_size=2, num_workers=workers)))
        return out

    first, second = run(1, [0, 1], workers=2)
    assert first != second and sorted(first) == sorted(second)
    assert run(1, [0, 1], workers=0) == [first, second]  # same seed, same order
    assert run(2, [0], workers=0)[0] != first
    # Without set_epoch, each iter() in the iterating process counts an epoch.
    auto = VolumeIterableDataset(shards, seed=1, batch_size=2, as_dict=True, extra_features=KEYS)
    loader = DataLoader(auto, batch_size=2, num_workers=0)
    assert [_keys(loader), _keys(loader)] == [first, second]


def test_hosts_are_disjoint_with_equal_counts(shards: Path) -> None:
    for kind in (VolumeDataset, VolumeIterableDataset):
        seen: list[tuple[str, int]] = []
        lengths = set()
        for host in range(3):
            ds = kind(shards, num_shards=3, shard_index=host, as_dict=True, extra_features=KEYS)
            keys = _keys(DataLoader(ds, batch_size=2, num_workers=0))
            lengths.add(len(keys))
            seen += keys
        assert len(lengths) == 1 and len(seen) == len(set(seen))


def test_layouts_dtypes_and_targets(shards: Path) -> None:
    features = read_manifest(shards).features
    d, h, w, c = features["image"].shape
    image, label = next(iter(DataLoader(VolumeDataset(shards), batch_size=2)))
    assert image.shape == (2, c, d, h, w) and image.dtype == torch.float32 and image.is_contiguous()
    assert label.shape == (2,) and label.dtype == torch.int64
    image, mask = VolumeDataset(shards, target="mask", channels_first=False)[0]
    assert image.shape == (d, h, w, c) and mask.shape == (d, h, w) and mask.dtype == torch.uint8
    half = VolumeIterableDataset(shards, shuffle=False, dtype="float16")
    stored, _ = next(iter(half))
    assert stored.dtype == torch.float16
    np.testing.assert_array_equal(stored.float().numpy(), VolumeDataset(shards)[0][0].numpy())


def test_augmentation_runs_in_workers_reproducibly(shards: Path) -> None:
    aug = volprep.Augment(flip_axes=[0, 1], rotate_deg=8, gamma=[0.8, 1.2])

    def images(workers: int) -> list[np.ndarray]:
        ds = VolumeIterableDataset(shards, seed=9, augment=aug, batch_size=2, target="mask")
        ds.set_epoch(3)
        return [x.numpy() for x, _ in DataLoader(ds, batch_size=2, num_workers=workers)]

    in_workers, in_process = images(2), images(0)
    assert all(np.array_equal(a, b) for a, b in zip(in_workers, in_process, strict=True))
    plain = [x.numpy() for x, _ in DataLoader(VolumeIterableDataset(shards, seed=9, batch_size=2), batch_size=2)]
    assert not all(np.array_equal(a, b) for a, b in zip(in_process, plain, strict=True))
    # Map-style renders the same record of the same epoch with the same parameters.
    mapped = VolumeDataset(shards, seed=9, augment=aug, target="mask")
    mapped.set_epoch(3)
    reader = Reader(shards, seed=9, augment=aug, target="mask", shuffle=False)
    np.testing.assert_array_equal(mapped[2][0].numpy(), np.moveaxis(reader.sample(2, epoch=3)["image"], -1, 0))


def test_a_corrupt_shard_stops_the_loader_naming_file_and_record(shards: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in shards.iterdir():
        if p.is_file():
            (copy / p.name).write_bytes(p.read_bytes())
    shard = read_manifest(copy).splits["train"].shards[2]
    index = shard_index(copy / shard.file)
    data = bytearray((copy / shard.file).read_bytes())
    data[int(index.offsets[1]) + 40] ^= 0xFF
    (copy / shard.file).write_bytes(bytes(data))
    clear_caches()
    loader = DataLoader(VolumeIterableDataset(copy, seed=0, batch_size=2), batch_size=2, num_workers=2)
    with pytest.raises(Exception, match=rf"{shard.file}: record 1: data CRC mismatch"):
        for _ in loader:
            pass


def test_no_tensorflow_on_the_torch_path(shards: Path) -> None:
    script = f"""
import sys
import torch
from torch.utils.data import DataLoader
import volprep
from volprep.torch import VolumeDataset, VolumeIterableDataset
aug = volprep.Augment(flip_axes=[0], rotate_deg=5)
ds = VolumeIterableDataset({str(shards)!r}, seed=0, augment=aug, batch_size=2, check_sha256=True)
n = sum(len(x) for x, _ in DataLoader(ds, batch_size=2, num_workers=0))
n += sum(len(x) for x, _ in DataLoader(VolumeDataset({str(shards)!r}, target="mask"), batch_size=2, num_workers=1))
assert n == 2 * len(ds), n
assert "tensorflow" not in sys.modules, "tensorflow was imported"
print("ok", n)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stderr[-3000:]
