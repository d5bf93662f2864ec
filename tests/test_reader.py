"""The TF-free reader (volprep.readers): random access, checks, order, hosts, augmentation.

One real job on the demo dataset (small shards, so a split has several files); each test
reads a copy when it damages files. TensorFlow is not imported here: the records' values
are held to ``volprep.load`` in test_reader_e2e.py.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

import volprep
from volprep.cli import main
from volprep.errors import DataError, UsageError
from volprep.manifest import read_manifest
from volprep.readers import Reader, interleave, read_record, shard_index
from volprep.readers.index import clear_caches
from volprep.readers.order import host_plan, worker_share
from volprep.records import iter_records


def demo_job(demo_data: Path, config: Path, tmp_path_factory: pytest.TempPathFactory, name: str = "raw") -> Path:
    """The demo dataset through the real CLI with ``config``, run once a session per ``name``
    (the reader, torch and Grain tests share it; a test that damages files copies them first)."""
    out = tmp_path_factory.getbasetemp() / "volprep-readers" / name
    if not (out / "manifest.json").is_file():
        code = main(["shards", str(demo_data), "--out", str(out), "--config", str(config),
                     "--workers", "1", "--quiet", "--no-report"])
        assert code == 0
    return out


@pytest.fixture(scope="module")
def shards(demo_data: Path, pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small shards (a split has several files), balancing copies, a mask and a class."""
    return demo_job(demo_data, pipeline, tmp_path_factory)


@pytest.fixture()
def damaged(shards: Path, tmp_path: Path) -> Path:
    """A copy of the shard folder a test may damage (manifest and shards only)."""
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in shards.iterdir():
        if p.is_file():
            shutil.copy2(p, copy / p.name)
    return copy


def _keys(reader: Reader, samples: list[dict]) -> list[tuple[str, int]]:
    return [(s["case_id"], int(s["copy"])) for s in samples]


def test_job_has_several_shards(shards: Path) -> None:
    assert len(read_manifest(shards).splits["train"].shards) >= 4


def test_index_reads_every_record_of_every_shard(shards: Path) -> None:
    for split in read_manifest(shards).splits.values():
        for shard in split.shards:
            path = shards / shard.file
            index = shard_index(path, num_records=shard.num_records, num_bytes=shard.num_bytes)
            with open(path, "rb") as fh:
                got = [read_record(fh.fileno(), index, i) for i in reversed(range(len(index)))]
            assert got[::-1] == list(iter_records(path))  # random access == sequential read


def test_samples_decode_through_the_schema(shards: Path) -> None:
    reader = Reader(shards, shuffle=False, extra_features=("case_id", "copy", "affine"))
    features = reader.features
    s = reader[0]
    assert s["image"].dtype == np.float32 and s["image"].shape == features["image"].shape
    assert s["label"].dtype == np.int64 and s["label"].shape == ()
    assert s["affine"].shape == (4, 4) and isinstance(s["case_id"], str)
    mask = Reader(shards, shuffle=False, target="mask")[0]["label"]
    assert mask.dtype == np.uint8 and mask.shape == features["mask"].shape
    # Independently of the reader: the same record's image bytes, as stored, cast.
    raw = reader.record(0, ("image",))["image"]
    np.testing.assert_array_equal(s["image"], raw.astype(np.float32))
    assert Reader(shards, shuffle=False, dtype=None)[0]["image"].dtype == np.float16
    assert Reader(shards, shuffle=False, dtype="float16")[0]["image"].dtype == np.float16


def test_usage_errors(shards: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no split 'test'"):
        Reader(shards, "test")
    with pytest.raises(UsageError, match="no manifest.json"):
        Reader(tmp_path)
    with pytest.raises(ValueError, match="target must be"):
        Reader(shards, target="labels")
    with pytest.raises(ValueError, match="extra_features"):
        Reader(shards, extra_features=("nope",))
    with pytest.raises(UsageError, match="shard_index 2 out of range"):
        Reader(shards, num_shards=2, shard_index=2)
    with pytest.raises(IndexError):
        Reader(shards)[10_000]


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def test_a_flipped_data_byte_is_caught_naming_file_and_record(damaged: Path) -> None:
    shard = read_manifest(damaged).splits["train"].shards[1]
    path = damaged / shard.file
    index = shard_index(path)
    record = len(index) - 1
    _flip(path, int(index.offsets[record]) + 12 + int(index.lengths[record]) // 2)  # inside the image bytes
    clear_caches()
    reader = Reader(damaged, shuffle=False)
    with pytest.raises(DataError, match=rf"{shard.file}: record {record}: data CRC mismatch"):
        for _ in reader.epoch(0):
            pass
    # The same flip is what the manifest's sha256 catches before any record is read.
    with pytest.raises(DataError, match=rf"{shard.file}: sha256 .* the manifest says"):
        Reader(damaged, check_sha256=True)


def test_a_flipped_length_byte_and_a_truncated_shard_are_caught(damaged: Path) -> None:
    shards = read_manifest(damaged).splits["train"].shards
    first, second = damaged / shards[0].file, damaged / shards[1].file
    index = shard_index(second)
    _flip(second, int(index.offsets[1]) + 3)  # record 1's length field
    first.write_bytes(first.read_bytes()[:-5])
    clear_caches()
    reader = Reader(damaged, shuffle=False)
    with pytest.raises(DataError, match=rf"{shards[1].file}: record 1: length CRC mismatch"):
        reader.read(1, 0)
    with pytest.raises(DataError, match=rf"{shards[0].file}: record {shards[0].num_records - 1}: truncated"):
        reader.read(0, 0)
    (damaged / shards[2].file).unlink()
    with pytest.raises(DataError, match=rf"{shards[2].file}: cannot open the shard"):
        reader.read(2, 0)
    # A whole, valid shard that is not the one the manifest describes.
    third = damaged / shards[3].file
    other = next(s for s in read_manifest(damaged).splits["val"].shards if s.num_bytes != shards[3].num_bytes)
    third.write_bytes((damaged / other.file).read_bytes())
    with pytest.raises(DataError, match=rf"{shards[3].file}: the shard has \d+ bytes, the manifest says"):
        reader.read(3, 0)
    count = len(shard_index(third))
    with pytest.raises(DataError, match=rf"holds {count} records, the manifest says {count + 1}"):
        shard_index(third, num_records=count + 1)


def test_interleave_follows_tf_data_rules_on_a_literal_table() -> None:
    # cycle 2, block 1 over files of 3, 1 and 2 records: file 1 ends early and file 2
    # takes its slot (test_reader_e2e.py holds many more tables to tf.data itself).
    assert interleave([3, 1, 2], 2, 1).tolist() == [[0, 0], [1, 0], [0, 1], [0, 2], [2, 0], [2, 1]]
    assert interleave([3, 1, 2], 2, 2).tolist() == [[0, 0], [0, 1], [1, 0], [0, 2], [2, 0], [2, 1]]
    assert interleave([], 4, 1).shape == (0, 2)


def test_same_seed_same_order_and_epochs_differ(shards: Path) -> None:
    a = Reader(shards, seed=3, extra_features=("case_id", "copy"))
    b = Reader(shards, seed=3, extra_features=("case_id", "copy"))
    first, again = list(a), list(b)
    assert _keys(a, first) == _keys(b, again)
    second = list(a)  # iterating again runs epoch 1
    assert _keys(a, second) != _keys(a, first)
    assert sorted(_keys(a, second)) == sorted(_keys(a, first))  # a permutation of the same records
    assert len(set(_keys(a, first))) == len(a) == read_manifest(shards).splits["train"].num_records
    other = Reader(shards, seed=4, extra_features=("case_id", "copy"))
    assert _keys(other, list(other)) != _keys(a, first)
    unshuffled = Reader(shards, shuffle=False)
    assert [s["image"].tobytes() for s in unshuffled.epoch(0)] == [s["image"].tobytes() for s in unshuffled.epoch(5)]


@pytest.mark.parametrize("num_shards", [2, 4, 5, 8])
def test_hosts_are_disjoint_with_equal_counts(shards: Path, num_shards: int) -> None:
    counts = [s.num_records for s in read_manifest(shards).splits["train"].shards]
    seen: list[tuple[str, int]] = []
    lengths = set()
    for host in range(num_shards):
        reader = Reader(shards, seed=1, num_shards=num_shards, shard_index=host, extra_features=("case_id", "copy"))
        keys = _keys(reader, list(reader))
        lengths.add(len(keys))
        seen += keys
    assert lengths == {host_plan(counts, num_shards, 0).num_records}
    assert len(seen) == len(set(seen))  # no record on two hosts
    if num_shards > len(counts):  # record-level dealing: every host total // hosts
        assert lengths == {sum(counts) // num_shards}


def test_worker_shares_are_disjoint_and_cover() -> None:
    for n, workers, block in [(10, 3, 1), (10, 2, 4), (3, 4, 2), (0, 2, 1)]:
        shares = [worker_share(n, w, workers, block) for w in range(workers)]
        joined = np.sort(np.concatenate(shares))
        assert joined.tolist() == list(range(n))
    assert worker_share(10, 1, 2, 4).tolist() == [4, 5, 6, 7]
    with pytest.raises(ValueError):
        worker_share(4, 2, 2)


def test_online_augmentation_is_seeded_per_record_and_follows_the_mask(shards: Path) -> None:
    flips = volprep.Augment(flip_axes=[0])
    plain = Reader(shards, shuffle=False, target="mask")
    aug = Reader(shards, shuffle=False, target="mask", seed=11, augment=flips)
    flipped = same = 0
    for i in range(len(plain)):
        p, a = plain[i], aug.sample(i, epoch=2)
        if np.array_equal(a["image"], p["image"]):
            same += 1
            np.testing.assert_array_equal(a["label"], p["label"])
        else:  # flip_axes [0]: the only other outcome is the volume flipped along axis 0
            np.testing.assert_array_equal(a["image"], p["image"][::-1])
            np.testing.assert_array_equal(a["label"], p["label"][::-1])
            flipped += 1
    assert flipped and same
    # The same (seed, epoch, record) gives the same bytes, in any order of reading.
    again = Reader(shards, shuffle=False, target="mask", seed=11, augment=flips)
    for i in reversed(range(len(plain))):
        assert again.sample(i, epoch=2)["image"].tobytes() == aug.sample(i, epoch=2)["image"].tobytes()
    epochs = [[aug.sample(i, epoch=e)["image"].tobytes() for i in range(len(aug))] for e in (0, 1)]
    assert epochs[0] != epochs[1]


class Corners:
    """A toy patch sampler: ``per_volume`` 8^3 patches at seeded corners (the hook's contract)."""

    per_volume = 3

    def __call__(self, sample: dict, rng: np.random.Generator) -> list[dict]:
        out = []
        for _ in range(self.per_volume):
            i, j, k = (int(rng.integers(0, n - 8 + 1)) for n in sample["image"].shape[:3])
            out.append({"image": sample["image"][i:i + 8, j:j + 8, k:k + 8], "label": sample["label"]})
        return out


def test_patch_sampler_hook(shards: Path) -> None:
    whole = Reader(shards, shuffle=False)
    patched = Reader(shards, shuffle=False, seed=2, patches=Corners())
    assert len(patched) == 3 * len(whole)
    items = list(patched.epoch(0))
    assert len(items) == len(patched) and {p["image"].shape for p in items} == {(8, 8, 8, 1)}
    assert patched[4]["image"].tobytes() == items[4]["image"].tobytes()  # map access == iteration
    assert int(patched[4]["label"]) == int(whole[1]["label"])


def test_reader_pickles_without_open_files(shards: Path) -> None:
    reader = Reader(shards, shuffle=False)
    first = reader[0]["image"]
    copy = pickle.loads(pickle.dumps(reader))
    assert copy._open == {}
    np.testing.assert_array_equal(copy[0]["image"], first)
    reader.close()
    np.testing.assert_array_equal(reader[0]["image"], first)  # reopens
