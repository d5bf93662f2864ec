"""``volprep verify``: every shard checked against the manifest that names it.

Checks, per shard: the file exists, its size and sha256, its record count and every
record's CRC, and (``parse``) a full parse of every record with TensorFlow against the
manifest's feature spec, including each raw feature's byte length. A job publishing a
new generation never changes the files a manifest names (see :mod:`volprep.publish`), so
a folder verifies while a job runs; if a job did publish during the check, the manifest
read at the start may name files the job has since retired, and the problems are
reported as that ("a job is writing this folder"), not as corruption.
"""

from __future__ import annotations

from pathlib import Path

from volprep import storage
from volprep.lock import holder
from volprep.manifest import MANIFEST, Manifest, ShardEntry, read_manifest
from volprep.records import iter_records
from volprep.storage import Location, join


def verify(out_dir: str | Path, *, parse: bool = True) -> list[str]:
    """Checks every shard against the manifest; returns one line per problem (empty: all good)."""
    out_dir = storage.location(out_dir)
    before = _manifest_bytes(out_dir)
    manifest = read_manifest(out_dir)
    problems: list[str] = []
    for split, info in sorted(manifest.splits.items()):
        total = 0
        for shard in info.shards:
            problems.extend(_check_shard(out_dir, shard, manifest, parse))
            total += shard.num_records
        if total != info.num_records:
            problems.append(f"split {split}: its shards hold {total} records, manifest says {info.num_records}")
    if problems:
        after = _manifest_bytes(out_dir)
        who = holder(out_dir)
        if after != before or who is not None:
            return [f"{out_dir}: a job is writing this folder ({who or 'it published while verify ran'}); "
                    "run verify again when it has finished"]
    return problems


def _manifest_bytes(out_dir: Location) -> bytes:
    try:
        return storage.read_bytes(join(out_dir, MANIFEST))
    except (FileNotFoundError, IsADirectoryError):
        return b""


def _check_shard(out_dir: Location, shard: ShardEntry, manifest: Manifest, parse: bool) -> list[str]:
    path = join(out_dir, shard.file)
    try:
        size = storage.size(path)
    except FileNotFoundError:
        return [f"{shard.file}: missing"]
    if isinstance(path, Path) and not path.is_file():
        return [f"{shard.file}: missing"]
    problems = []
    if size != shard.num_bytes:
        problems.append(f"{shard.file}: {size} bytes, manifest says {shard.num_bytes}")
    digest = storage.sha256(path)
    if digest != shard.sha256:
        problems.append(f"{shard.file}: sha256 {digest[:12]}... does not match the manifest's {shard.sha256[:12]}...")
    try:
        count = sum(1 for _ in iter_records(path))
    except Exception as err:  # noqa: BLE001 - any corruption is reported, not raised
        return [*problems, f"{shard.file}: unreadable ({err})"]
    if count != shard.num_records:
        problems.append(f"{shard.file}: {count} records, manifest says {shard.num_records}")
    if parse:
        problems.extend(f"{shard.file}: {p}" for p in _parse_all(path, manifest))
    return problems


def _parse_all(path: Location, manifest: Manifest) -> list[str]:
    """Parses every record of one shard with TensorFlow; returns problems.

    A local file is read with TensorFlow's own TFRecord reader; an object (TensorFlow 2.21
    has no S3 filesystem) with :func:`volprep.records.iter_records`, parsed by TensorFlow.
    """
    import tensorflow as tf

    from volprep.schema_tf import decode_batch, parse_spec

    spec = parse_spec(manifest.features)
    problems: list[str] = []
    if isinstance(path, Path):
        records = tf.data.TFRecordDataset(str(path), buffer_size=1 << 20)
    else:
        records = tf.data.Dataset.from_generator(lambda: iter_records(path), output_signature=tf.TensorSpec([], tf.string))
    try:
        for batch in records.batch(16):
            decode_batch(tf.io.parse_example(batch, spec), manifest.features)
    except (tf.errors.OpError, ValueError) as err:
        problems.append(f"parse failed: {str(err).splitlines()[0][:200]}")
    return problems
