"""Write shards: record order, shard boundaries, record rendering and atomic shard files.

Record order is a salted hash of each record's stable key ``(case_id, copy)``
(:func:`volprep.seeds.order_key`), never worker timing, so every backend and worker count
gives the same shards; a duplicate key is an error naming both sources. Shard boundaries
are a pure function of the record count and the estimated bytes (TFDS habit: we split by
count, not by running byte totals, so a shard's content never depends on another
shard's). Each shard is one task: it loads its cases from the cache, normalises, renders
planned augmented copies, encodes ``tf.train.Example`` records, writes them to a
temporary name, fsyncs and renames; its sha256 is computed on the bytes written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from volprep.seeds import order_key


@dataclasses.dataclass(frozen=True)
class RecordRef:
    """One record to write: an original (``copy == 0``) or a planned augmented copy."""

    case_id: str
    copy: int = 0
    params: str = ""  # the augmentation parameters as canonical JSON (copies only)
    source: str = ""  # where the case came from, for duplicate-key messages


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """Everything one worker needs to write one shard (picklable, no open handles)."""

    out_dir: str
    split: str
    index: int
    count: int
    records: tuple[RecordRef, ...]
    spec: RecordSpec

    @property
    def file_name(self) -> str:
        return shard_name(self.split, self.index, self.count)


@dataclasses.dataclass(frozen=True)
class RecordSpec:
    """How cached cases become records: shapes, dtypes, normalisation, encodings."""

    cache_dir: str
    target_shape: tuple[int, int, int]
    channels: int
    image_dtype: str
    image_encoding: str  # "raw" or "wavelet-compress"
    label_kind: str  # "class", "mask", "class+mask" or "none"
    mask_dtype: str
    preprocess: Any  # PreprocessConfig
    dataset_stats: tuple[dict[str, float], ...] | None
    class_of_case: tuple[tuple[str, int], ...]
    wavelet_layout: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """A written shard, as the manifest lists it."""

    file: str
    num_records: int
    num_bytes: int
    sha256: str
    class_counts: dict[int, int]


def shard_name(split: str, index: int, count: int) -> str:
    """``<split>-<index:05d>-of-<count:05d>.tfrecord``."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


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


def record_bytes_estimate(spec: RecordSpec) -> int:
    """Approximate bytes of one record (image and mask dominate; the rest is small)."""
    voxels = int(np.prod(spec.target_shape))
    if spec.image_encoding == "raw":
        image = voxels * spec.channels * np.dtype(spec.image_dtype).itemsize
    else:
        image = int((spec.wavelet_layout or {}).get("nbytes", voxels))
    mask = voxels * np.dtype(spec.mask_dtype).itemsize if "mask" in spec.label_kind else 0
    return image + mask + 512


def render_record(spec: RecordSpec, ref: RecordRef, cached: Any) -> tuple[bytes, int | None]:
    """Builds the serialised Example for one record from its cached case.

    Returns the record bytes and the class it counts under (None without classes).
    """
    from volprep.augment import numpy_ops
    from volprep.augment.spec import Params
    from volprep.preprocess import normalize
    from volprep.records import encode_example

    image, mask = fit_to_shape(cached.image, cached.mask, spec.target_shape)
    image = normalize(image, cached.meta["stats"], spec.preprocess, _stats_list(spec.dataset_stats))
    if ref.copy and ref.params:  # no params: an identity augmentation
        image, mask = numpy_ops.apply(Params.from_json(ref.params), image, mask)
    features: dict[str, Any] = {
        "case_id": ref.case_id,
        "copy": ref.copy,
        "augment": ref.params,
        "image": encode_image(image, spec),
    }
    class_id = dict(spec.class_of_case).get(ref.case_id)
    if spec.label_kind in ("class", "class+mask"):
        features["label"] = int(class_id if class_id is not None else -1)
    if mask is not None and "mask" in spec.label_kind:
        name = "label" if spec.label_kind == "mask" else "mask"
        features[name] = np.ascontiguousarray(mask, dtype=np.dtype(spec.mask_dtype).newbyteorder("<")).tobytes()
    return encode_example(features), class_id


def fit_to_shape(image: np.ndarray, mask: np.ndarray | None,
                 target: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Centre crop/pad of a cached case to the job's target shape.

    The image is padded with each channel's minimum (its background), the mask with 0.
    Cropping happens here, not in the cache, so a new target shape (say, after cases are
    added to the dataset) rewrites shards without recomputing any case.
    """
    from volprep.preprocess import crop

    if tuple(image.shape[:3]) == tuple(target):
        return image, mask  # nothing to crop or pad: no copy
    plan = crop.centre_crop_pad_plan(image.shape, target)
    fill = image.reshape(-1, image.shape[3]).min(axis=0) if image.size else 0.0
    out = crop.centre_crop_pad(image, plan, fill)
    return out, (crop.centre_crop_pad(mask, plan, 0) if mask is not None else None)


def encode_image(image: np.ndarray, spec: RecordSpec) -> bytes:
    """The ``image`` feature's bytes in the spec's encoding."""
    if spec.image_encoding == "raw":
        dtype = np.dtype(spec.image_dtype).newbyteorder("<")
        return np.ascontiguousarray(image, dtype=dtype).tobytes()
    from volprep.preprocess import wavelet

    layout = spec.wavelet_layout or {}
    return wavelet.encode(np.ascontiguousarray(image, np.float32), layout["wavelet"], int(layout["level"]),
                          float(layout["keep"]), values=layout["value_dtype"])


def _stats_list(stats: tuple[dict[str, float], ...] | None) -> list[dict[str, float]] | None:
    return list(stats) if stats is not None else None


def write_shard(task: ShardTask) -> ShardInfo:
    """Writes one shard atomically: temporary name, fsync, rename; returns its checksum.

    A shard is never visible under its final name until it is complete. Memory holds one
    case (and its record) at a time.
    """
    from volprep.cache import CaseCache
    from volprep.records import frame_record

    cache = CaseCache(Path(task.spec.cache_dir))
    final = Path(task.out_dir) / task.file_name
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    digest = hashlib.sha256()
    counts: dict[int, int] = {}
    size = 0
    try:
        with open(tmp, "wb") as fh:
            for ref in task.records:
                record, class_id = render_record(task.spec, ref, cache.load(ref.case_id))
                frame = frame_record(record)
                fh.write(frame)
                digest.update(frame)
                size += len(frame)
                if class_id is not None:
                    counts[class_id] = counts.get(class_id, 0) + 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(final.parent)
    return ShardInfo(task.file_name, len(task.records), size, digest.hexdigest(), counts)


def fsync_dir(path: Path) -> None:
    """Makes a rename in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Writes a text file atomically (temporary name, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_json(path: Path, data: Any) -> None:
    """Writes JSON atomically, sorted keys, so equal content gives equal bytes."""
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
