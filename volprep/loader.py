"""The training loader: ``volprep.load(path)`` -> a ``tf.data.Dataset`` of batches.

Reads the manifest, so training code needs only the folder: it reads only the features it
yields, knows each split's cardinality, decodes to static shapes, casts the images to the
``dtype`` asked for (float32 by default; ``"float16"`` leaves float16 shards uncast),
applies batched augmentation (TF ops, on the GPU when there is one) and prefetches.

Shards are read one of two ways:

- **directly** (local files, the default there: :mod:`volprep.loader_direct`): records by
  random access, hardware CRC32C, each array copied once into its batch; an epoch is a
  fresh permutation of all the host's records (shuffled), or the interleaved file order
  below (``shuffle=False``). Measured about 2x the streamed path, decoded float32
  batches as fast as TensorFlow's bare parallel TFRecord read (README, "Speed");
- **streamed** (URLs, or ``direct=False``: :func:`volprep.loader_files.streamed`):
  ``TFRecordDataset`` over the shard files interleaved in parallel, shuffled two-level
  (file order and a small record buffer each epoch, over the converter's global
  shuffle), batches of serialized records parsed at once (``tf.io.parse_example``).

Several hosts reading one split together (``num_shards``/``shard_index``, or a
``tf.distribute.InputContext``) each get the same number of records, so no host waits
for another at the end of an epoch.

The defaults below come from ``benchmarks/bench_load.py --tune`` on the 2-core reference
machine (128x128x80x1 float16 records, batch 4; ``benchmarks/results/loader_tuning.json``).
By default :func:`load` also keeps glibc from serving multi-MB tensors with fresh mmaps
and from spreading them over many arenas (:func:`tune_allocator`, process-wide;
``tune_malloc=False`` opts out).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from volprep import loader_direct, loader_files, loader_patches, storage
from volprep.errors import UsageError
from volprep.malloc import tune_allocator
from volprep.manifest import read_manifest
from volprep.readers.order import (
    DEFAULT_BLOCK_LENGTH,
    DEFAULT_CYCLE_LENGTH,
    host_plan,
    host_records,
)
from volprep.schema import Schema

log = logging.getLogger(__name__)

# Figures below: benchmarks/results/loader_tuning.json (bench_load.py --tune; 2-core AMD
# EPYC VM shared with other jobs, load average 2-3, so differences under ~15% are noise;
# volumes/s, process CPU ms a volume in brackets; float32 output unless said), measured on
# the streamed path (before direct reads; the knobs of that path).
# Where its time goes (perf, float16 output): TF's TFRecord CRC32C (absl's portable code in
# this TF build) 34%, the page-cache copy into each record 17%, parse_example's and
# decode_raw's copies 28%, threads and malloc the rest; a plain TFRecordDataset read is 55%
# CRC, 28% page-cache copy. float32 output adds the cast (14%). Direct reads
# (volprep.loader_direct) remove the first and one of the copies: hardware CRC32C costs
# ~0.1 ms a 2.6 MB record, and the payload is copied from the read buffer into the batch.
# parse: one parse_example over a batch of serialized records 412 (3.34) vs per record then
# batch 367 (3.40) vs tf.data's parse_example_dataset 389 (3.76): records are batched (a
# batch of strings moves them, no copy), then parsed, and decode_raw reads the parsed
# batch directly.
# Direct reads, measured again (loader_tuning.json, "reads"; two runs): direct 882 / 819
# (1.71 / 1.73) vs streamed 398 / 423 (3.06 / 3.19); threads shared 1003 / 868, private 2:
# 1025 / 883, 4: 826 / 883; prefetch 1: 898 / 779, 2: 914 / 883, AUTOTUNE: 928 / 1034; the
# tf.data options 828-950 / 855-944: within noise, so the defaults below stay for both paths.
# threads: shared pool 400 (3.04), private 2: 382 (3.16), 4: 427 (3.22): 0 keeps tf.data's
# shared pool (no extra threads per dataset when a script builds several).
DEFAULT_THREADS = 0
# prefetch 1: 429 (3.14), 2: 417 (3.24), AUTOTUNE: 377 (3.06): equal within noise; 2 batches
# overlap a training step and bound memory (AUTOTUNE may buffer many 5 MB batches). With
# online augmentation (cost varies with the device) AUTOTUNE is used.
DEFAULT_PREFETCH = 2
# Other tf.data options, each against the loader's 397 (3.16): max_intra_op_parallelism 1:
# 429 (3.13), autotune ram_budget 256 MiB: 390 (3.28), map_parallelization and parallel_batch
# off: 421 (3.16), inject_prefetch off: 454 (3.10): all within noise, so tf.data's defaults
# plus map_parallelization/parallel_batch (see _options) stay.
# read_buffer 0 (unbuffered): 405 (3.33), 256 KiB: 403 (3.54), 1 MiB: 396 (3.48), 8 MiB: 380
# (3.45); a plain read: 0: 668 (1.36), TF's 256 KiB: 624 (1.68) (results/load.json). Unbuffered,
# TF preads each record straight into its string; a buffer is one more copy of every byte
# (18 KB records: the same CPU either way; remote storage would want a buffer, not measured).
READ_BUFFER_BYTES = 0
# shuffle_buffer 0: 418 (3.23), 8: 406 (3.26), 16: 386 (3.47), 32: 416 (3.52): more records
# held cost CPU (they fall out of the CPU caches before they are batched). The converter
# already shuffled globally and file order is reshuffled each epoch, so a small buffer (2
# batches, at least 8) only varies the batches from epoch to epoch.
DEFAULT_SHUFFLE_BATCHES = 2
MIN_SHUFFLE_BUFFER = 8
# dtype: float32 442 (3.19), float16 509 (2.57): the cast is a pass over every voxel and
# doubles the bytes a batch holds; float16 output leaves it to the accelerator.


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
    dtype: str | None = "float32",
    patch: Sequence[int] | None = None,
    patches_per_volume: int = 1,
    foreground: float = 0.33,
    class_weights: Any = None,
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
    direct: bool | None = None,
    with_info: bool = False,
) -> Any:
    """A ``tf.data.Dataset`` of ``(image, label)`` batches from a volprep shard folder.

    Args:
        path: the folder holding ``manifest.json`` and the shards, or its URL (``gs://`` is
            read by TensorFlow itself; ``s3://`` and other fsspec stores are streamed through
            fsspec: :mod:`volprep.loader_files`).
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
        dtype: the images' dtype: ``"float32"`` (default), ``"float16"`` or None (as
            stored). ``"float16"`` on float16 shards skips the cast (a CPU pass over every
            voxel) and halves the bytes sent to the accelerator, which casts: a Keras model
            does (its ``Input`` casts to float32; under ``mixed_float16`` layers compute in
            float16 anyway). float32 is the default: every consumer takes it (raw TF ops
            with float32 weights, numpy). With ``augment``, images are computed in float32
            and yielded in ``dtype``.
        patch: ``(D, H, W)``: yield random patches of this size instead of whole volumes
            (image and label volume cropped together, batched in TF; past the border the
            image takes the record's padding value, the mask 0). ``batch_size`` then counts
            patches; see :mod:`volprep.loader_patches`.
        patches_per_volume: patches cut from each volume read (amortises the read; a batch
            holds patches of ``ceil(batch_size / patches_per_volume)`` volumes).
        foreground: the fraction of patches centred on a voxel of a foreground class, drawn
            from the class locations the converter stored (the rest: uniform origins).
        class_weights: how the class of a foreground patch is chosen among the classes a
            volume holds: None (uniformly, rare classes as often as common ones), a mapping
            of label value or name to weight, or a sequence of weights in the order of the
            manifest's ``location_counts`` labels.
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
        direct: how shard files are read. None (default): local files directly
            (:mod:`volprep.loader_direct`: random access, hardware CRC32C, one copy of
            every byte), anything else streamed. True insists on direct reads (a
            ``UsageError`` at a URL); False streams local files too (``TFRecordDataset``).
            Direct reads shuffle a full permutation of the records each epoch, so
            ``shuffle_buffer`` only applies to streamed reads.
        with_info: also return the manifest.

    Returns:
        The dataset (and the manifest with ``with_info``). Its cardinality is known (or
        infinite with ``repeat``); every host gets the same number of batches.

    Raises:
        UsageError: no such split, or a bad sharding request.
        ValueError: a bad ``target``, ``batch_size``, ``dtype`` or patch request.
    """
    import tensorflow as tf

    from volprep.schema_tf import decode_batch, parse_spec

    if input_context is not None:
        num_shards = int(input_context.num_input_pipelines)
        shard_index = int(input_context.input_pipeline_id)
        batch_size = int(input_context.get_per_replica_batch_size(batch_size))
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    image_dtype = _image_dtype(tf, dtype)
    where = storage.location(path)
    direct = _use_direct(direct, where)
    manifest = read_manifest(path)
    if tune_malloc:
        tune_allocator()
    if split not in manifest.splits:
        raise UsageError(f"{path}: no split {split!r}; splits: {', '.join(sorted(manifest.splits))}")
    features = manifest.features
    label_name = features.target(target)
    wanted = [k for k in ("image", label_name) if k is not None]  # parse only what is asked for
    records_a_batch = batch_size
    if patch is not None:
        size, extra = loader_patches.check_request(features, patch, patches_per_volume, foreground, class_weights)
        weights = loader_patches.weight_vector(features, class_weights, manifest.dataset.label_names)
        wanted += extra
        records_a_batch = loader_patches.volume_batch(batch_size, patches_per_volume,
                                                      loader_patches.decoded_bytes(features, wanted))
    shards = manifest.splits[split].shards
    plan = host_plan([s.num_records for s in shards], num_shards, shard_index)
    files = [str(storage.join(where, shards[i].file)) for i in plan.files]
    autotune = tf.data.AUTOTUNE
    ordered = bool(deterministic)

    if not files:
        log.warning("%s: split %r holds no records: the dataset is empty", path, split)
    # The functions below hold no Python control flow on tensors, so AutoGraph is told to
    # leave them as they are: converting them cost ~450 ms of the first load() in a
    # process (62-83 ms without; the time to the first batch in bench_load.py).
    plain = tf.autograph.experimental.do_not_convert

    def finish(decoded: Any) -> Any:
        if patch is not None:
            return decoded  # cast after cropping: a pass over the patches, not the volumes
        image = decoded["image"]
        if image_dtype is not None and image.dtype != image_dtype:
            image = tf.cast(image, image_dtype)
        if label_name is None:
            return image
        return image, decoded[label_name]

    if direct:
        reader = loader_direct.DirectReader([str(storage.join(where, s.file)) for s in shards],
                                            [s.num_records for s in shards], [s.num_bytes for s in shards],
                                            features, wanted)
        rows = host_records([s.num_records for s in shards], plan, num_shards, shard_index,
                            cycle_length or DEFAULT_CYCLE_LENGTH, block_length or DEFAULT_BLOCK_LENGTH)
        ds = loader_direct.dataset(tf, reader, rows, plan.num_records, records_a_batch, shuffle=shuffle and not cache,
                                   seed=seed, drop_remainder=drop_remainder and patch is None, ordered=ordered)
        ds = ds.map(plain(finish), num_parallel_calls=autotune, deterministic=ordered)
    else:
        buffer = (max(MIN_SHUFFLE_BUFFER, DEFAULT_SHUFFLE_BATCHES * records_a_batch) if shuffle_buffer is None
                  else shuffle_buffer)
        ds = loader_files.streamed(tf, files, where, plan, num_shards, shard_index, shuffle=shuffle, seed=seed,
                                   ordered=ordered, cache=cache, shuffle_buffer=buffer, records_a_batch=records_a_batch,
                                   cycle_length=cycle_length or DEFAULT_CYCLE_LENGTH,
                                   block_length=block_length or DEFAULT_BLOCK_LENGTH,
                                   drop_remainder=drop_remainder and patch is None, read_buffer=READ_BUFFER_BYTES)
        spec = parse_spec(features, wanted)
        # decode_raw reads the parsed batch's strings directly: two copies of every byte
        # (parse_example's, decode_raw's); the cast is a third pass, skipped when the
        # stored dtype is the one asked for.
        ds = ds.map(plain(lambda serialized: finish(decode_batch(tf.io.parse_example(serialized, spec), features))),
                    num_parallel_calls=autotune, deterministic=ordered)
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
        if shuffle:
            ds = ds.shuffle(max(1, -(-plan.num_records // records_a_batch)), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if patch is not None:
        ds = loader_patches.patched(
            ds, size=size, per_volume=int(patches_per_volume), foreground=float(foreground), weights=weights,
            shape=features["image"].shape, label_name=label_name,
            label_is_volume=label_name is not None and features[label_name].is_volume,
            seed=int(seed or 0), ordered=ordered, image_dtype=image_dtype)
        if not repeat:
            ds = ds.apply(tf.data.experimental.assert_cardinality(plan.num_records * int(patches_per_volume)))
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    augmenting = augment is not None and not augment.is_identity
    if augmenting:
        ds = _augmented(ds, augment, seed, label_name, features, ordered, image_dtype)
    ds = ds.prefetch(prefetch or (autotune if augmenting else DEFAULT_PREFETCH))
    ds = ds.with_options(_options(tf, ordered, threads or DEFAULT_THREADS, sharded=num_shards > 1 or input_context is not None))
    return (ds, manifest) if with_info else ds


def _use_direct(direct: bool | None, where: storage.Location) -> bool:
    """Whether to read the shards directly (see ``load``'s ``direct``)."""
    if direct is None:
        return loader_direct.usable(where)
    if direct and not loader_direct.usable(where):
        raise UsageError(f"{where}: direct reads need local files (and os.preadv); pass direct=None or False")
    return bool(direct)


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


IMAGE_DTYPES = ("float32", "float16")


def _image_dtype(tf: Any, dtype: str | None) -> Any:
    """The TF dtype of the yielded images (None: as stored)."""
    if dtype is None:
        return None
    if not isinstance(dtype, str) or dtype not in IMAGE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(map(repr, IMAGE_DTYPES))} or None, got {dtype!r}")
    return tf.dtypes.as_dtype(dtype)


def _augmented(ds: Any, augment: Any, seed: int | None, label_name: str | None,
               features: Schema, ordered: bool, image_dtype: Any) -> Any:
    """Batched online augmentation with stateless randomness seeded by (seed, step).

    ``augment_batch`` computes in float32; its images are cast back to ``image_dtype``
    (None: the dtype the batches came in), so the dataset yields one dtype either way.
    """
    import tensorflow as tf

    from volprep.augment.tf_ops import augment_batch

    base = int(seed if seed is not None else (augment.seed if augment.seed is not None else 0))
    label_is_volume = label_name is not None and features[label_name].is_volume

    def apply(step: Any, batch: Any) -> Any:
        step_seed = tf.stack([tf.constant(base, tf.int64), tf.cast(step, tf.int64)])
        images, labels = (batch, None) if label_name is None else batch
        out_dtype = image_dtype if image_dtype is not None else images.dtype
        if label_is_volume:
            images, labels = augment_batch(images, labels, augment, step_seed)
        else:
            images, _ = augment_batch(images, None, augment, step_seed)
        images = tf.cast(images, out_dtype)  # augment_batch computes (and returns) float32
        return images if label_name is None else (images, labels)

    return ds.enumerate().map(apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=ordered)
