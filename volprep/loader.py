"""The training loader: ``volprep.load(path)`` -> a ``tf.data.Dataset`` of batches.

Reads the manifest, so training code needs only the folder: it builds the parse spec,
knows each split's cardinality, interleaves shard files in parallel, batches serialized
records and parses a whole batch at once (``tf.io.parse_example``), decodes to static
shapes, casts to float32, applies batched augmentation (TF ops, on the GPU when there is
one) and prefetches. Shuffling is two-level: the shards are globally pre-shuffled by the
converter; the loader shuffles the file order and a small record buffer each epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from volprep.manifest import read_manifest

# Chosen from benchmarks/bench_loader.py on 2 cores (see README): more parallel files than
# cores adds nothing; one record per file per turn keeps the global shuffle intact.
DEFAULT_CYCLE_LENGTH = 4
DEFAULT_BLOCK_LENGTH = 1
READ_BUFFER_BYTES = 8 << 20


def parse_spec(features: dict[str, Any]) -> dict[str, Any]:
    """``tf.io.parse_example`` features for a manifest's feature spec."""
    import tensorflow as tf

    spec: dict[str, Any] = {}
    for name, feat in features.items():
        encoding = feat["encoding"]
        if encoding == "int64":
            spec[name] = tf.io.FixedLenFeature(feat["shape"], tf.int64)
        elif encoding == "float":
            spec[name] = tf.io.FixedLenFeature(feat["shape"], tf.float32)
        else:  # raw, bytes, wavelet-*: one bytes element
            spec[name] = tf.io.FixedLenFeature([], tf.string)
    return spec


def decode_batch(parsed: dict[str, Any], features: dict[str, Any]) -> dict[str, Any]:
    """Decodes a parsed batch: raw arrays to their static shapes, wavelets reconstructed."""
    import tensorflow as tf

    out: dict[str, Any] = {}
    for name, value in parsed.items():
        feat = features[name]
        encoding = feat["encoding"]
        if encoding == "raw":
            flat = tf.io.decode_raw(value, tf.dtypes.as_dtype(feat["dtype"]), little_endian=True)
            out[name] = tf.reshape(flat, [-1, *feat["shape"]])
        elif encoding.startswith("wavelet"):
            from volprep.preprocess.wavelet_tf import decode_batch as wavelet_decode

            out[name] = tf.ensure_shape(wavelet_decode(value, feat["layout"]), [None, *feat["shape"]])
        else:
            out[name] = value
    return out


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
    prefetch: int | None = None,
    num_shards: int = 1,
    shard_index: int = 0,
    with_info: bool = False,
) -> Any:
    """A ``tf.data.Dataset`` of ``(image, label)`` batches from a volprep shard folder.

    Args:
        path: the folder holding ``manifest.json`` and the shards.
        split: which split to read.
        batch_size: volumes a batch.
        shuffle: shuffle file order and records each epoch (seeded by ``seed``).
        seed: makes shuffling and online augmentation reproducible.
        repeat: repeat forever (for ``model.fit(steps_per_epoch=...)``).
        augment: a :class:`volprep.Augment` applied to whole batches after decoding.
        cache: ``True`` caches decoded batches in memory, a string caches them to that file.
        deterministic: ``True`` forces a reproducible element order; ``None``/``False`` lets
            tf.data trade order for speed (order still follows ``seed`` where it can).
        target: ``"label"`` (the class or the label volume) or ``"mask"`` (the label volume
            when the data has both); the dataset yields images only when there is none.
        drop_remainder: drop the last partial batch (static batch dimension).
        shuffle_buffer: records in the shuffle buffer (default: 4 batches, at least 16).
        cycle_length: shard files read in parallel.
        prefetch: batches prefetched (default: autotuned).
        num_shards: hosts reading this split together (``tf.distribute`` multi-worker).
        shard_index: this host's index; files are dealt so every host gets the same count.
        with_info: also return the manifest.

    Returns:
        The dataset (and the manifest with ``with_info``).
    """
    import tensorflow as tf

    manifest = read_manifest(path)
    if split not in manifest["splits"]:
        raise ValueError(f"{path}: no split {split!r}; splits: {', '.join(sorted(manifest['splits']))}")
    features: dict[str, Any] = manifest["features"]
    label_name = _target_feature(features, target)
    shards = manifest["splits"][split]["shards"]
    files, num_records = _host_files(Path(path), shards, num_shards, shard_index)
    autotune = tf.data.AUTOTUNE
    ordered = bool(deterministic)

    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle and len(files) > 1:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, buffer_size=READ_BUFFER_BYTES),
        cycle_length=max(1, min(len(files), cycle_length or DEFAULT_CYCLE_LENGTH)),
        block_length=DEFAULT_BLOCK_LENGTH,
        num_parallel_calls=autotune,
        deterministic=ordered,
    )
    if num_shards > 1:
        ds = ds.take(num_records)  # equal counts on every host: no host waits at epoch end
    ds = ds.apply(tf.data.experimental.assert_cardinality(num_records))
    if shuffle and not cache:
        ds = ds.shuffle(shuffle_buffer or max(16, 4 * batch_size), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    wanted = {k: features[k] for k in ("image", label_name) if k is not None}
    spec = parse_spec(wanted)

    def parse(serialized: Any) -> Any:
        decoded = decode_batch(tf.io.parse_example(serialized, spec), wanted)
        image = tf.cast(decoded["image"], tf.float32)
        if label_name is None:
            return image
        return image, decoded[label_name]

    ds = ds.map(parse, num_parallel_calls=autotune, deterministic=ordered)
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
        if shuffle:
            ds = ds.shuffle(max(1, -(-num_records // batch_size)), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if augment is not None and not augment.is_identity:
        ds = _augmented(ds, augment, seed, label_name, features)
    ds = ds.prefetch(prefetch or autotune)
    options = tf.data.Options()
    options.deterministic = ordered
    options.autotune.enabled = True
    options.experimental_optimization.map_parallelization = True
    ds = ds.with_options(options)
    return (ds, manifest) if with_info else ds


def _target_feature(features: dict[str, Any], target: str) -> str | None:
    if target not in ("label", "mask"):
        raise ValueError(f"target must be 'label' or 'mask', got {target!r}")
    if target == "mask":
        if "mask" in features:
            return "mask"
        if "label" in features and features["label"]["encoding"] == "raw":
            return "label"
        raise ValueError("target='mask' but these shards hold no label volumes")
    return "label" if "label" in features else None


def _host_files(root: Path, shards: list[dict[str, Any]], num_shards: int,
                shard_index: int) -> tuple[list[str], int]:
    """This host's shard files; every host gets as many files as every other.

    The converter cuts shards with record counts differing by at most one, so giving each
    host the same number of files (dropping the remainder files) keeps hosts in step at
    the end of an epoch instead of leaving one waiting on another.
    """
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index {shard_index} out of range for num_shards {num_shards}")
    if num_shards == 1:
        chosen = shards
    else:
        per_host = len(shards) // num_shards
        if per_host == 0:
            raise ValueError(f"{len(shards)} shard files cannot be spread over {num_shards} hosts; write smaller shards")
        chosen = shards[shard_index * per_host:(shard_index + 1) * per_host]
    if num_shards > 1:
        # Equal counts across hosts: trim to the smallest host's total.
        per_host_counts = [
            sum(s["num_records"] for s in shards[i * (len(shards) // num_shards):(i + 1) * (len(shards) // num_shards)])
            for i in range(num_shards)
        ]
        num_records = min(per_host_counts)
    else:
        num_records = sum(s["num_records"] for s in chosen)
    return [str(root / s["file"]) for s in chosen], num_records


def _augmented(ds: Any, augment: Any, seed: int | None, label_name: str | None,
               features: dict[str, Any]) -> Any:
    """Batched online augmentation with stateless randomness seeded by (seed, step)."""
    import tensorflow as tf

    from volprep.augment.tf_ops import augment_batch

    base = int(seed if seed is not None else (augment.seed if augment.seed is not None else 0))
    label_is_volume = label_name is not None and features[label_name]["encoding"] == "raw"

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

    return ds.enumerate().map(apply, num_parallel_calls=tf.data.AUTOTUNE)
