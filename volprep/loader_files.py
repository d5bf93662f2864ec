"""How the loader reads shard files: with TensorFlow's own filesystem where it has one,
streamed through fsspec where it has none.

TensorFlow 2.21 reads local files and ``gs://`` itself (``tf.io.gfile``'s registered
schemes); ``s3://`` left core TensorFlow in 2.6 (it lives in tensorflow-io). A shard at a
URL TensorFlow cannot open is streamed through fsspec (s3fs, gcsfs: ``volprep[cloud]``):
each file becomes a ``from_generator`` dataset of its records (:func:`volprep.records.
iter_records`, CRCs checked), and the loader's parallel interleave keeps several of them
in flight, so the network waits overlap; nothing is copied to local disk. Without the
scheme's fsspec package the loader refuses in one line naming what to install.

TensorFlow's GCS client talks to ``https://www.googleapis.com/storage/v1/`` only (no
setting points it elsewhere in 2.21), so with ``STORAGE_EMULATOR_HOST`` set (a local GCS
emulator, as gcsfs and Google's own clients honour it) ``gs://`` is read through fsspec.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from volprep import storage
from volprep.records import iter_records


def native(tf: Any, where: storage.Location) -> bool:
    """True when TensorFlow reads ``where`` itself; False when it is streamed through fsspec.

    Raises:
        UsageError: a URL neither TensorFlow nor an installed fsspec filesystem can read
            (one line saying what to install).
    """
    scheme = storage.scheme(where)
    if not scheme:
        return True
    if scheme == "gs" and os.environ.get("STORAGE_EMULATOR_HOST"):
        storage.filesystem(str(where))
        return False
    if scheme in tf.io.gfile.get_registered_schemes():
        return True
    storage.filesystem(str(where))  # raises, naming the package, when fsspec cannot either
    return False


def _records(file: bytes) -> Iterator[bytes]:
    yield from iter_records(file.decode())


def file_reader(tf: Any, native_files: bool, buffer_size: int) -> Callable[[Any], Any]:
    """The interleave's function: a shard's path (a string tensor) -> a dataset of its records."""
    if native_files:
        return lambda f: tf.data.TFRecordDataset(f, buffer_size=buffer_size)
    signature = tf.TensorSpec([], tf.string)
    return lambda f: tf.data.Dataset.from_generator(_records, args=(f,), output_signature=signature)


def streamed(tf: Any, files: list[str], where: storage.Location, plan: Any, num_shards: int, shard_index: int, *,
             shuffle: bool, seed: int | None, ordered: bool, cache: Any, shuffle_buffer: int, records_a_batch: int,
             cycle_length: int, block_length: int, drop_remainder: bool, read_buffer: int) -> Any:
    """Batches of serialised records, streamed file by file (``TFRecordDataset``, or fsspec).

    The loader's path where shards are not local files (``gs://`` read by TensorFlow,
    ``s3://`` and others through fsspec) or ``direct=False``: the host's files (shuffled
    each epoch) are interleaved ``cycle_length`` at a time, ``block_length`` records from
    each in turn, records pass a ``shuffle_buffer`` of that many and are batched.
    """
    read_file = file_reader(tf, native(tf, where), read_buffer)
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(files, dtype=tf.string))
    if shuffle and len(files) > 1 and not plan.by_record:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        tf.autograph.experimental.do_not_convert(read_file),
        cycle_length=max(1, min(len(files), cycle_length)),
        block_length=block_length,
        num_parallel_calls=tf.data.AUTOTUNE,
        # Record-level sharding needs the same order on every host to deal disjoint records.
        deterministic=ordered or plan.by_record,
    )
    if plan.by_record:
        ds = ds.shard(num_shards, shard_index)
    if num_shards > 1:
        ds = ds.take(plan.num_records)  # equal counts on every host: no host waits at epoch end
    ds = ds.apply(tf.data.experimental.assert_cardinality(plan.num_records))
    if shuffle and not cache and shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(records_a_batch, drop_remainder=drop_remainder)
