"""Write shards: record order, shard boundaries, record rendering and atomic shard files.

Record order is a salted hash of each record's stable key ``(case_id, copy)``
(:func:`volprep.seeds.order_key`), never worker timing, so every backend and worker count
gives the same shards; a duplicate key is an error naming both sources. Shard boundaries
are a pure function of the record count and the estimated bytes (TFDS habit: we split by
count, not by running byte totals, so a shard's content never depends on another
shard's). Each shard is one task: it loads its cases from the cache (checked against their
checksums), cuts each case's target window (:func:`volprep.preprocess.window_case`, the
one crop/pad of the flow), normalises, renders planned augmented copies, encodes
``tf.train.Example`` records and writes them whole (:func:`volprep.storage.writing`: a
temporary name and a rename locally, one upload to an object store); its sha256 is
computed on the bytes written.

Shard files are named ``<split>-<tag>-<index:05d>-of-<count:05d>.tfrecord``. The tag is a
hash of everything that decides the split's bytes (record spec, ordered records, each
case's cache checksums; :func:`split_tag`), so a rerun that would write other bytes writes
them under other names, never over the files the published manifest names, while a rerun
that would write the same bytes finds them already there (see :mod:`volprep.publish`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from volprep import kernels, storage
from volprep.augment import numpy_ops
from volprep.augment.spec import Params
from volprep.cache import CacheDamaged, CaseCache
from volprep.encodings import ARRAY_ENCODINGS
from volprep.errors import UsageError
from volprep.geometry import Grid
from volprep.locations import sample_locations
from volprep.preprocess import normalize, window_case
from volprep.preprocess.intensity import normalization_params
from volprep.record_spec import RecordSpec
from volprep.records import frame_parts
from volprep.schema import Schema
from volprep.seeds import order_key

RECORD_FORMAT = 2  # 2: the "affine" feature; windows placed by the anchor (see volprep.geometry)


@dataclasses.dataclass(frozen=True)
class RecordRef:
    """One record to write: an original (``copy == 0``) or a planned augmented copy."""

    case_id: str
    copy: int = 0
    params: str = ""  # the augmentation parameters as canonical JSON (copies only)
    source: str = ""  # where the case came from, for duplicate-key messages
    label: int | None = None  # the case's class label (the record's "label" of a class dataset)
    counts_as: int | None = None  # the class the plan counts it under (balancing), if any


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """Everything one worker needs to write one shard (picklable, no open handles)."""

    out_dir: str
    split: str
    index: int
    count: int
    records: tuple[RecordRef, ...]
    spec: RecordSpec

    tag: str = ""
    generation: int = 0  # 0: a full rewrite; n: the n-th appended generation (volprep.append)

    @property
    def file_name(self) -> str:
        return shard_name(self.split, self.index, self.count, self.tag)


@dataclasses.dataclass(frozen=True)
class ShardFailed:
    """A shard that could not be written (a damaged cache entry, a full disk), and why."""

    file: str
    reason: str


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """A written shard, as the manifest lists it."""

    file: str
    num_records: int
    num_bytes: int
    sha256: str
    class_counts: dict[int, int]
    generation: int = 0


def shard_name(split: str, index: int, count: int, tag: str) -> str:
    """``<split>-<tag>-<index:05d>-of-<count:05d>.tfrecord``."""
    return f"{split}-{tag}-{index:05d}-of-{count:05d}.tfrecord"


SHARD_PATTERN = re.compile(r"^(?P<split>[a-z][a-z0-9_]*)-(?P<tag>[0-9a-f]{8})-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")
"""What volprep's own shard names look like (other ``*.tfrecord`` files are never touched)."""


def split_tag(spec: RecordSpec, split: str, ordered: Sequence[RecordRef], checksums: Mapping[str, Any],
              generation: int = 0) -> str:
    """8 hex digits naming one split's generation of shards: a hash of what decides its bytes.

    Args:
        spec: the record spec.
        split: the split's name.
        ordered: its records, in shard order.
        checksums: ``{case id: the cache entry's checksums}`` of the cases it holds.
        generation: an appended generation's number (:mod:`volprep.append`); 0, the
            full rewrite, leaves the hash as it always was.
    """
    content: dict[str, Any] = {
        "format": RECORD_FORMAT, "spec": spec.content_key(), "split": split,
        "records": [[r.case_id, r.copy, r.params, checksums.get(r.case_id)] for r in ordered],
    }
    if generation:
        content["generation"] = generation
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def order_records(records: Sequence[RecordRef], seed: int) -> list[RecordRef]:
    """Records in their global shuffled order; raises ValueError on a duplicate key."""
    seen: dict[tuple[str, int], RecordRef] = {}
    for ref in records:
        key = (ref.case_id, ref.copy)
        if key in seen:
            raise ValueError(
                f"duplicate record key {key}: from {seen[key].source or '?'} and {ref.source or '?'}"
            )
        seen[key] = ref
    return sorted(records, key=lambda r: order_key(seed, r.case_id, r.copy))


def shard_count(num_records: int, record_bytes: int, shard_bytes: int) -> int:
    """How many shards: enough that none exceeds ``shard_bytes`` (at least one record each)."""
    if num_records == 0:
        return 0
    return max(1, min(num_records, math.ceil(num_records * record_bytes / shard_bytes)))


def shard_bounds(num_records: int, num_shards: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each shard: record counts differ by at most one between shards."""
    return [
        (num_records * i // num_shards, num_records * (i + 1) // num_shards)
        for i in range(num_shards)
    ]


def render_record(spec: RecordSpec, ref: RecordRef, cached: Any, schema: Schema | None = None) -> tuple[bytes, int | None]:
    """Builds the serialised Example for one record from its cached case.

    Returns the record bytes and the class the plan counts it under (None without classes).
    """
    schema = schema if schema is not None else spec.schema()
    grid = Grid.from_dict(cached.meta["grid"])
    stats = cached.meta["stats"]
    image, mask, window_grid = window_case(cached.image, cached.mask, grid, cached.meta["anchor"],
                                           spec.target_shape, [st["floor"] for st in stats])
    dataset_stats = _stats_list(spec.dataset_stats)
    augmented = bool(ref.copy and ref.params)  # no params: an identity augmentation
    floors = np.array([st["floor"] for st in stats], np.float32).reshape(1, 1, 1, -1)
    if not augmented and spec.image_dtype == "float16" and spec.image_encoding in ARRAY_ENCODINGS:
        # the common case in one compiled pass, bit for bit what normalize + astype give
        params = normalization_params(stats, spec.preprocess, dataset_stats)
        image = kernels.normalize16(image, *params)
        fill = kernels.normalize16(floors, *params)
    else:
        image = normalize(image, stats, spec.preprocess, dataset_stats)
        fill = normalize(floors, stats, spec.preprocess, dataset_stats).astype(spec.image_dtype)
        if augmented:
            image, mask = numpy_ops.apply(Params.from_json(ref.params), image, mask)
    values: dict[str, Any] = {
        "case_id": ref.case_id,
        "copy": ref.copy,
        "augment": ref.params,
        "image": image,
        "affine": window_grid.affine,
    }
    if "label" in schema and not schema["label"].is_volume:
        if ref.label is None:
            raise ValueError(f"case {ref.case_id} has no class label, but the records hold class labels")
        values["label"] = ref.label
    if schema.label_volume is not None:
        values[schema.label_volume] = mask
    if "locations" in schema and mask is not None:
        coords, counts = sample_locations(mask, spec.location_labels, spec.locations, 0, ref.case_id, ref.copy)
        values.update(locations=coords, location_counts=counts, fill=fill.reshape(-1).astype(np.float32))
    return schema.encode(values), ref.counts_as


def _stats_list(stats: tuple[dict[str, float], ...] | None) -> list[dict[str, float]] | None:
    return list(stats) if stats is not None else None


def write_shard(task: ShardTask) -> ShardInfo | ShardFailed:
    """Writes one shard whole (:func:`volprep.storage.writing`); returns its checksum.

    A shard is never visible under its final name until it is complete: locally a
    temporary name, fsync and rename; in an object store one upload of the finished file.
    Memory holds one case (and its record) at a time. A cache entry that fails its checks,
    or a write that fails (no space left, a store that refuses), gives :class:`ShardFailed`
    and leaves nothing behind.
    """
    cache = CaseCache(Path(task.spec.cache_dir))
    schema = task.spec.schema()
    final = storage.join(storage.location(task.out_dir), task.file_name)
    digest = hashlib.sha256()
    counts: dict[int, int] = {}
    size = 0
    try:
        with storage.writing(final) as fh:
            for ref in task.records:
                record, class_id = render_record(task.spec, ref, cache.load(ref.case_id), schema)
                for part in frame_parts(record):
                    fh.write(part)
                    digest.update(part)
                    size += len(part)
                if class_id is not None:
                    counts[class_id] = counts.get(class_id, 0) + 1
    except CacheDamaged as err:
        return ShardFailed(task.file_name, str(err))
    except OSError as err:
        return ShardFailed(task.file_name, f"cannot write {err.filename or final}: {err.strerror or err}")
    except UsageError as err:  # a store's refusal, in one line
        return ShardFailed(task.file_name, str(err))
    return ShardInfo(task.file_name, len(task.records), size, digest.hexdigest(), counts, task.generation)
