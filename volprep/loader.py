"""The training loader: ``volprep.load(path)`` -> a ``tf.data.Dataset`` of batches.

Reads the manifest, so training code needs only the folder: it builds the parse spec,
knows each split's cardinality, interleaves shard files in parallel, batches serialized
records and parses a whole batch at once (``tf.io.parse_example``), decodes to static
shapes, casts to float32, applies batched augmentation (TF ops, on the GPU when there is
one) and prefetches. Shuffling is two-level: the shards are globally pre-shuffled by the
converter; the loader shuffles the file order and a small record buffer each epoch.
Several hosts reading one split together (``num_shards``/``shard_index``, or a
``tf.distribute.InputContext``) each get the same number of records, so no host waits
for another at the end of an epoch.

The defaults below come from ``benchmarks/bench_load.py --tune`` on the 2-core reference
machine (128x128x80x1 float16 records, batch 4; ``benchmarks/results/loader_tuning.json``).
By default :func:`load` also keeps glibc from serving multi-MB tensors with fresh mmaps
(:func:`tune_allocator`, process-wide; ``tune_malloc=False`` opts out).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from volprep.errors import UsageError
from volprep.manifest import read_manifest
from volprep.schema import Schema

log = logging.getLogger(__name__)

# Figures below: benchmarks/results/loader_tuning.json (bench_load.py --tune; 2-core AMD
# EPYC VM shared with other jobs, so differences under ~15% are noise; volumes/s, with
# process CPU ms per volume in brackets, the steadier figure on a busy machine).
#
# cycle_length 1: 386 (2.79), 2: 391 (2.86), 4: 455 (2.94), 8: 438 (2.87): 4 parallel files
# is the best here, and keeps reads overlapping where storage has latency (network disks).
DEFAULT_CYCLE_LENGTH = 4
# block_length 1: 372 (2.98), 4: 444 (2.73): 4 reads a little faster, but one record per
# file per turn keeps the converter's global shuffle intact, so 1.
DEFAULT_BLOCK_LENGTH = 1
# parse: one parse_example over a batch of serialized records 371 (3.09) vs per record
# then batch 353 (3.18): records are batched, then parsed.
# threads: shared pool 473 (2.83), private 2: 410 (2.85), 4: 363 (3.00): 0 keeps tf.data's
# shared pool (no extra threads per dataset when a script builds several).
DEFAULT_THREADS = 0
# prefetch 1: 441, 2: 421, AUTOTUNE: 456 (all ~2.78): equal within noise; 2 batches overlap a
# training step and bound memory (AUTOTUNE may buffer many 5 MB batches). With online
# augmentation (cost varies with the device) AUTOTUNE is used.
DEFAULT_PREFETCH = 2
# read_buffer 256 KiB: 421 (2.94), 1 MiB: 442 (2.94), 8 MiB: 358 (3.50): a buffer larger than
# a record costs an extra copy of every record.
READ_BUFFER_BYTES = 1 << 20
# shuffle_buffer 0: 451 (2.74), 8: 475 (2.78), 16: 406 (2.97), 32: 390 (3.24): records held
# in the buffer fall out of the CPU caches before they are batched. The converter already
# shuffled globally and file order is reshuffled each epoch, so a small buffer (2 batches,
# at least 8) only varies the batches from epoch to epoch.
DEFAULT_SHUFFLE_BATCHES = 2
MIN_SHUFFLE_BUFFER = 8
# allocator ("allocator" in the same file, fresh processes): glibc's malloc serves the
# multi-MB tensors allocated and freed every step with fresh mmaps, each costing page
# faults (kernel time). Keeping them on the heap (mmap threshold 32 MiB, the most glibc
# allows; trim threshold 1 GiB): 351 -> 385 volumes/s, system CPU 1.80 -> 0.57 ms a
# volume (an earlier, busier run: 220 -> 351 volumes/s, 1.81 -> 0.80 ms).
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameter numbers
_allocator_tuned = False


def tune_allocator() -> bool:
    """Keeps multi-MB allocations on glibc's heap instead of fresh mmaps (see above).

    Process-wide and idempotent; a no-op (returning False) where the C library is not
    glibc. :func:`load` calls it unless ``tune_malloc=False``. The cost: up to
    :data:`TRIM_THRESHOLD_BYTES` of freed memory stays with the process for reuse.

    Returns:
        True when the settings are in effect.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    _allocator_tuned = ok
    if ok:
        log.info("malloc: mmap threshold %d MiB, trim threshold %d MiB", MMAP_THRESHOLD_BYTES >> 20,
                 TRIM_THRESHOLD_BYTES >> 20)
    return ok


def load(
    path: str | Path,
    split: str = "train",
    batch_size: int = 8,
    shuffle: bool = True,
    seed: int | None = None,
    repeat: bool = False,
    augment: Any = None,
    cache: bool | str = False,
    deterministic: bool | None = None,
    *,
    target: str = "label",
    drop_remainder: bool = False,
    shuffle_buffer: int | None = None,
    cycle_length: int | None = None,
    block_length: int | None = None,
    prefetch: int | None = None,
    threads: int | None = None,
    num_shards: int = 1,
    shard_index: int = 0,
    input_context: Any = None,
    tune_malloc: bool = True,
    with_info: bool = False,
) -> Any:
    """A ``tf.data.Dataset`` of ``(image, label)`` batches from a volprep shard folder.

    Args:
        path: the folder holding ``manifest.json`` and the shards.
        split: which split to read.
        batch_size: volumes a batch (with ``input_context``: the *global* batch size; each
            replica gets ``input_context.get_per_replica_batch_size(batch_size)``).
        shuffle: shuffle file order and records each epoch (seeded by ``seed``).
        seed: makes shuffling and online augmentation reproducible.
        repeat: repeat forever (for ``model.fit(steps_per_epoch=...)``).
        augment: a :class:`volprep.Augment` applied to whole batches after decoding.
        cache: ``True`` caches decoded batches in memory, a string caches them to that file
            (the first epoch fills it; later epochs read no shard). Batches are then fixed
            and only their order is shuffled each epoch; augmentation runs after the cache.
        deterministic: ``True`` gives the same element order on every run with the same
            ``seed`` (parallel stages keep their input order); ``None``/``False`` lets
            tf.data hand out whichever element is ready first, for speed.
        target: ``"label"`` (the class or the label volume) or ``"mask"`` (the label volume
            when the data has both); the dataset yields images only when there is none.
        drop_remainder: drop the last partial batch (static batch dimension).
        shuffle_buffer: records in the shuffle buffer (default: 2 batches, at least 8);
            0 shuffles only the file order.
        cycle_length: shard files read in parallel (default :data:`DEFAULT_CYCLE_LENGTH`).
        block_length: records taken from one file before moving to the next (default 1).
        prefetch: batches prefetched (default :data:`DEFAULT_PREFETCH`; AUTOTUNE with
            augmentation).
        threads: size of a private tf.data thread pool; 0 or None uses the shared pool.
        num_shards: hosts reading this split together (``tf.distribute`` multi-worker).
        shard_index: this host's index in ``0..num_shards-1``.
        input_context: a ``tf.distribute.InputContext`` (what
            ``strategy.distribute_datasets_from_function`` passes); sets ``num_shards``,
            ``shard_index`` and the per-replica batch size.
        tune_malloc: call :func:`tune_allocator` (process-wide; ~1.5x faster loading of
            multi-MB records here). False leaves the C allocator alone.
        with_info: also return the manifest.

    Returns:
        The dataset (and the manifest with ``with_info``). Its cardinality is known (or
        infinite with ``repeat``); every host gets the same number of batches.

    Raises:
        UsageError: no such split, or a bad sharding request.
        ValueError: a bad ``target`` or ``batch_size``.
    """
    import tensorflow as tf

    from volprep.schema_tf import decode_batch, parse_spec

    if input_context is not None:
        num_shards = int(input_context.num_input_pipelines)
        shard_index = int(input_context.input_pipeline_id)
        batch_size = int(input_context.get_per_replica_batch_size(batch_size))
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    manifest = read_manifest(path)
    if tune_malloc:
        tune_allocator()
    if split not in manifest.splits:
        raise UsageError(f"{path}: no split {split!r}; splits: {', '.join(sorted(manifest.splits))}")
    features = manifest.features
    label_name = _target_feature(features, target)
    shards = manifest.splits[split].shards
    plan = host_plan([s.num_records for s in shards], num_shards, shard_index)
    files = [str(Path(path) / shards[i].file) for i in plan.files]
    autotune = tf.data.AUTOTUNE
    ordered = bool(deterministic)

    if not files:
        log.warning("%s: split %r holds no records: the dataset is empty", path, split)
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(files, dtype=tf.string))
    if shuffle and len(files) > 1 and not plan.by_record:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, buffer_size=READ_BUFFER_BYTES),
        cycle_length=max(1, min(len(files), cycle_length or DEFAULT_CYCLE_LENGTH)),
        block_length=block_length or DEFAULT_BLOCK_LENGTH,
        num_parallel_calls=autotune,
        # Record-level sharding needs the same order on every host to deal disjoint records.
        deterministic=ordered or plan.by_record,
    )
    if plan.by_record:
        ds = ds.shard(num_shards, shard_index)
    if num_shards > 1:
        ds = ds.take(plan.num_records)  # equal counts on every host: no host waits at epoch end
    ds = ds.apply(tf.data.experimental.assert_cardinality(plan.num_records))
    buffer = max(MIN_SHUFFLE_BUFFER, DEFAULT_SHUFFLE_BATCHES * batch_size) if shuffle_buffer is None else shuffle_buffer
    if shuffle and not cache and buffer > 1:
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    wanted = [k for k in ("image", label_name) if k is not None]  # parse only what is asked for
    spec = parse_spec(features, wanted)

    def parse(serialized: Any) -> Any:
        decoded = decode_batch(tf.io.parse_example(serialized, spec), features)
        image = tf.cast(decoded["image"], tf.float32)
        if label_name is None:
            return image
        return image, decoded[label_name]

    ds = ds.map(parse, num_parallel_calls=autotune, deterministic=ordered)
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
        if shuffle:
            ds = ds.shuffle(max(1, -(-plan.num_records // batch_size)), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    augmenting = augment is not None and not augment.is_identity
    if augmenting:
        ds = _augmented(ds, augment, seed, label_name, features, ordered)
    ds = ds.prefetch(prefetch or (autotune if augmenting else DEFAULT_PREFETCH))
    ds = ds.with_options(_options(tf, ordered, threads or DEFAULT_THREADS, sharded=num_shards > 1 or input_context is not None))
    return (ds, manifest) if with_info else ds


def _options(tf: Any, ordered: bool, threads: int, sharded: bool) -> Any:
    """tf.data options: reproducible order when asked, parallelism and autotuning otherwise."""
    options = tf.data.Options()
    options.deterministic = ordered
    options.autotune.enabled = True
    options.experimental_optimization.map_parallelization = True
    options.experimental_optimization.parallel_batch = True
    if threads > 0:
        options.threading.private_threadpool_size = threads
    if sharded:
        # The loader deals files (or records) to hosts itself; tf.distribute must not
        # shard again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def _target_feature(features: Schema, target: str) -> str | None:
    if target not in ("label", "mask"):
        raise ValueError(f"target must be 'label' or 'mask', got {target!r}")
    if target == "mask":
        if features.label_volume is None:
            raise ValueError("target='mask' but these shards hold no label volumes")
        return features.label_volume
    return "label" if "label" in features else None


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


def _augmented(ds: Any, augment: Any, seed: int | None, label_name: str | None,
               features: Schema, ordered: bool) -> Any:
    """Batched online augmentation with stateless randomness seeded by (seed, step)."""
    import tensorflow as tf

    from volprep.augment.tf_ops import augment_batch

    base = int(seed if seed is not None else (augment.seed if augment.seed is not None else 0))
    label_is_volume = label_name is not None and features[label_name].is_volume

    def apply(step: Any, batch: Any) -> Any:
        step_seed = tf.stack([tf.constant(base, tf.int64), tf.cast(step, tf.int64)])
        if label_name is None:
            images, _ = augment_batch(batch, None, augment, step_seed)
            return images
        images, labels = batch
        if label_is_volume:
            images, labels = augment_batch(images, labels, augment, step_seed)
        else:
            images, _ = augment_batch(images, None, augment, step_seed)
        return images, labels

    return ds.enumerate().map(apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=ordered)
