"""Which records a host reads, in which order, each epoch: pure functions of counts and seeds.

Hosts get the records ``volprep.load`` gives them: :func:`host_plan` deals
the split's shard files (or, with fewer files than hosts, every ``num_shards``-th record)
and fixes the record count every host yields. Unshuffled, the order is the one
``volprep.load(shuffle=False, deterministic=True)`` yields: tf.data's ``interleave`` of
the host's files (``cycle_length`` files open at once, ``block_length`` records from each
in turn, an exhausted file's slot refilled by the next file), reproduced exactly by
:func:`interleave`. Shuffled, the reader has random access, so it draws a full permutation
of the host's records each epoch from ``rng_for(seed, "epoch", epoch)`` (stronger than the
loader's file order + record buffer, and the same on every machine); the records a host
leaves out to keep counts equal change from epoch to epoch. Positions are pairs ``(file,
record)``: ``file`` indexes the split's shard list in the manifest, ``record`` the record
within that file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from volprep.errors import UsageError
from volprep.seeds import rng_for

log = logging.getLogger(__name__)

# The loader's interleave of streamed files (measured in volprep.loader's notes,
# benchmarks/results/loader_tuning.json), and so the unshuffled order of every reader.
# cycle_length 1 (streamed reads): 430 (3.16), 2: 410 (3.44), 4: 377 (3.27), 8: 440 (3.03): noise (an earlier
# run had 4 ahead); 4 files keep reads overlapping where storage has latency.
DEFAULT_CYCLE_LENGTH = 4
# block_length 1: 443 (3.16), 4: 443 (3.51): equal; one record per file per turn keeps the
# converter's global shuffle intact, so 1.
DEFAULT_BLOCK_LENGTH = 1


class HostPlan:
    """What one host reads: shard file indices, record count, and how it is sharded.

    Attributes:
        files: indices into the split's shard list, in manifest order.
        num_records: records this host yields an epoch (the same on every host).
        by_record: True when hosts share every file and take every n-th record.
    """

    def __init__(self, files: list[int], num_records: int, by_record: bool) -> None:
        self.files, self.num_records, self.by_record = files, num_records, by_record

    def __repr__(self) -> str:
        return f"HostPlan(files={self.files}, num_records={self.num_records}, by_record={self.by_record})"


def host_plan(counts: list[int], num_shards: int, shard_index: int) -> HostPlan:
    """Deals a split's shard files (record ``counts``) to ``num_shards`` hosts.

    With at least as many files as hosts, files are dealt round-robin (file ``i`` to host
    ``i % num_shards``) so every file is read by exactly one host, and every host stops
    at the smallest host's record total: the converter cuts shards whose counts differ by
    at most one, so at most a few records an epoch are left out, and since file order and
    record order are reshuffled each epoch, different ones each epoch. With fewer files
    than hosts, every host reads every file in the same order and keeps every
    ``num_shards``-th record (``Dataset.shard``), ``total // num_shards`` of them.

    Raises:
        UsageError: ``shard_index`` out of range, or fewer records than hosts.
    """
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise UsageError(f"shard_index {shard_index} out of range for num_shards {num_shards}")
    total = sum(counts)
    if num_shards == 1:
        return HostPlan(list(range(len(counts))), total, False)
    if total < num_shards:
        raise UsageError(f"{total} records cannot be spread over {num_shards} hosts")
    if len(counts) >= num_shards:
        per_host = [sum(counts[i::num_shards]) for i in range(num_shards)]
        return HostPlan(list(range(shard_index, len(counts), num_shards)), min(per_host), False)
    log.info("%d shard files for %d hosts: sharding by record (every host reads every file)",
             len(counts), num_shards)
    return HostPlan(list(range(len(counts))), total // num_shards, True)

__all__ = ["HostPlan", "epoch_positions", "host_plan", "host_records", "interleave", "worker_share"]


def interleave(counts: Sequence[int], cycle_length: int = DEFAULT_CYCLE_LENGTH,
               block_length: int = DEFAULT_BLOCK_LENGTH) -> np.ndarray:
    """The order ``tf.data.Dataset.interleave`` (deterministic) yields records of files in order.

    Args:
        counts: records in each file, in the order the files enter the interleave.
        cycle_length: files open at once (capped at ``len(counts)``, at least 1).
        block_length: records taken from one file before moving to the next.

    Returns:
        ``[N, 2]`` int64 rows ``(file, record)``: indices into ``counts`` and record numbers.
    """
    cycle = max(1, min(len(counts), int(cycle_length)))
    block = max(1, int(block_length))
    slots: list[list[int] | None] = [None] * cycle  # [file, next record] per open slot
    out: list[tuple[int, int]] = []
    next_file, slot, taken, open_slots = 0, 0, 0, 0
    # tf.data's InterleaveDatasetOp::GetNextInternal, step by step: a slot with an open
    # file yields its next record (moving on after block_length), an exhausted file frees
    # its slot and the cycle moves on, an empty slot opens the next file in place.
    while next_file < len(counts) or open_slots:
        current = slots[slot]
        if current is not None:
            file, record = current
            if record < counts[file]:
                out.append((file, record))
                current[1] += 1
                taken += 1
                if taken == block:
                    slot, taken = (slot + 1) % cycle, 0
                continue
            slots[slot] = None
            open_slots -= 1
            slot, taken = (slot + 1) % cycle, 0
        elif next_file < len(counts):
            slots[slot] = [next_file, 0]
            next_file += 1
            open_slots += 1
        else:
            slot, taken = (slot + 1) % cycle, 0
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def host_records(counts: Sequence[int], plan: HostPlan, num_shards: int, shard_index: int,
                 cycle_length: int = DEFAULT_CYCLE_LENGTH, block_length: int = DEFAULT_BLOCK_LENGTH) -> np.ndarray:
    """Every record a host may read, ``[M, 2]`` ``(file, record)``, in the unshuffled order.

    Files dealt to the host (``plan.files``) are interleaved; when hosts share files
    (``plan.by_record``), the whole split is interleaved and the host keeps every
    ``num_shards``-th record from ``shard_index`` on. ``M >= plan.num_records``: an epoch
    yields ``plan.num_records`` of them.
    """
    if plan.by_record:
        return interleave(counts, cycle_length, block_length)[shard_index::num_shards]
    order = interleave([counts[f] for f in plan.files], cycle_length, block_length)
    if len(order):
        order[:, 0] = np.asarray(plan.files, dtype=np.int64)[order[:, 0]]
    return order


def epoch_positions(available: int, num_records: int, *, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """Which of a host's ``available`` records (rows of :func:`host_records`) an epoch yields.

    Unshuffled: the first ``num_records``, every epoch. Shuffled: the first ``num_records``
    of a permutation drawn from ``rng_for(seed, "epoch", epoch)``.
    """
    if not shuffle:
        return np.arange(num_records, dtype=np.int64)
    return rng_for(seed, "epoch", epoch).permutation(available)[:num_records].astype(np.int64)


def worker_share(num_items: int, worker: int, num_workers: int, block: int = 1) -> np.ndarray:
    """The items (``0..num_items-1``) worker ``worker`` of ``num_workers`` handles.

    Workers take turns in blocks of ``block`` items: worker ``w`` gets blocks ``w, w + n,
    w + 2n, ...``. With ``block`` equal to a DataLoader's batch size, the loader (which
    takes one batch from each worker in turn) yields the items in their original order
    whatever the number of workers. Shares are disjoint and cover every item.
    """
    if num_workers < 1 or not 0 <= worker < num_workers or block < 1:
        raise ValueError(f"bad worker split: worker {worker} of {num_workers}, block {block}")
    blocks = np.arange(num_items, dtype=np.int64) // block
    return np.flatnonzero(blocks % num_workers == worker)
