"""Record order and shard boundaries are pure functions of keys and counts."""

from __future__ import annotations

import pytest

from volprep.shards import (
    SHARD_PATTERN,
    RecordRef,
    order_records,
    shard_bounds,
    shard_count,
    shard_name,
)


@pytest.mark.parametrize(
    ("num_records", "num_shards", "expected"),
    [
        (10, 1, [(0, 10)]),
        (10, 3, [(0, 3), (3, 6), (6, 10)]),
        (7, 7, [(i, i + 1) for i in range(7)]),
        (5, 2, [(0, 2), (2, 5)]),
    ],
)
def test_shard_bounds_table(num_records: int, num_shards: int, expected: list) -> None:
    assert shard_bounds(num_records, num_shards) == expected


@pytest.mark.parametrize(
    ("num_records", "record_bytes", "shard_bytes", "expected"),
    [(0, 10, 100, 0), (10, 10, 100, 1), (11, 10, 100, 2), (10, 1000, 100, 10), (3, 10, 1, 3)],
)
def test_shard_count_table(num_records: int, record_bytes: int, shard_bytes: int, expected: int) -> None:
    assert shard_count(num_records, record_bytes, shard_bytes) == expected


def test_order_is_a_seeded_permutation_independent_of_input_order() -> None:
    refs = [RecordRef(f"case{i:03d}", c) for i in range(40) for c in range(2)]
    a = order_records(refs, seed=0)
    b = order_records(list(reversed(refs)), seed=0)
    c = order_records(refs, seed=1)
    assert a == b
    assert sorted(a, key=lambda r: (r.case_id, r.copy)) == sorted(refs, key=lambda r: (r.case_id, r.copy))
    assert a != c
    assert a != refs  # shuffled, not the input order


def test_duplicate_key_names_both_sources() -> None:
    refs = [RecordRef("a", 0, source="x/a.nii.gz"), RecordRef("a", 0, source="y/a.nii")]
    with pytest.raises(ValueError, match=r"x/a\.nii\.gz.*y/a\.nii"):
        order_records(refs, seed=0)


def test_shard_name() -> None:
    assert shard_name("train", 3, 12, "0a1b2c3d") == "train-0a1b2c3d-00003-of-00012.tfrecord"
    assert SHARD_PATTERN.match("train-0a1b2c3d-00003-of-00012.tfrecord")
    assert not SHARD_PATTERN.match("my_other_dataset.tfrecord")
