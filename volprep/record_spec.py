"""The record spec: how a job's cached cases become records (shapes, dtypes, encodings).

:func:`make_record_spec` decides it once a job from the config and what conversion found
(label values, the largest label, dataset statistics); :class:`RecordSpec` gives the
records' :class:`~volprep.schema.Schema` and the content key that names shard files
(:func:`volprep.shards.split_tag`); :func:`record_bytes_estimate` sizes shards.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from volprep import reductions
from volprep.encodings import ARRAY_ENCODINGS
from volprep.errors import UsageError
from volprep.preprocess import dataset_statistics
from volprep.schema import Schema


@dataclasses.dataclass(frozen=True)
class RecordSpec:
    """How cached cases become records: shapes, dtypes, normalisation, encodings.

    ``image_layout`` is the image encoding's layout (a wavelet code's, or a deflate
    level); ``mask_encoding``/``mask_layout`` the label volume's (when there is one).
    """

    cache_dir: str
    target_shape: tuple[int, int, int]
    channels: int
    image_dtype: str
    image_encoding: str  # an exact array encoding ("raw", "deflate", ...) or "wavelet-compress"
    label_kind: str  # "class", "mask", "class+mask" or "none"
    mask_dtype: str
    preprocess: Any  # PreprocessConfig
    dataset_stats: tuple[dict[str, float], ...] | None
    image_layout: dict[str, Any] | None = None
    mask_encoding: str = "raw"
    mask_layout: dict[str, Any] | None = None
    locations: int = 0  # class locations a record (0: none; see volprep.locations)
    location_labels: tuple[int, ...] = ()

    def schema(self) -> Schema:
        """The schema of the records this spec makes (what the manifest's features say)."""
        return Schema.for_records(target_shape=self.target_shape, channels=self.channels,
                                  image_dtype=self.image_dtype, image_encoding=self.image_encoding,
                                  label_kind=self.label_kind, mask_dtype=self.mask_dtype,
                                  image_layout=self.image_layout, mask_encoding=self.mask_encoding,
                                  mask_layout=self.mask_layout, locations=self.locations,
                                  location_labels=self.location_labels)

    def content_key(self) -> dict[str, Any]:
        """What of the spec decides record bytes (not where the cache lives), JSON-able.

        The payload encodings enter it only when one is not "raw", under the names they
        had before compressed payloads existed, so an existing config's shards keep their
        names (a rerun after an upgrade rewrites nothing).
        """
        data = dataclasses.asdict(self)
        data.pop("cache_dir")
        data["wavelet_layout"] = data.pop("image_layout")
        if self.mask_encoding == "raw" and self.mask_layout is None:
            data.pop("mask_encoding")
            data.pop("mask_layout")
        if not self.locations:
            data.pop("locations")
            data.pop("location_labels")
        if dataclasses.is_dataclass(self.preprocess) and not isinstance(self.preprocess, type):
            data["preprocess"] = dataclasses.asdict(self.preprocess)
            for name in ENCODING_KEYS:  # what they decide is in the spec's own fields above
                data["preprocess"].pop(name, None)
        return json.loads(json.dumps(data, default=str))


LOCATION_SPARSITY = 64

ENCODING_KEYS = ("image_encoding", "mask_encoding", "deflate_level", "class_locations")
"""The ``[preprocess]`` keys that choose payload encodings (read by :func:`make_record_spec`)."""


def make_record_spec(pre: Any, cache_dir: str, target: tuple[int, int, int], channels: int, *,
                     has_class: bool, metas: Sequence[Mapping[str, Any]]) -> RecordSpec:
    """The record spec of a job: what its converted cases (``metas``) and config decide.

    The image's encoding is the reduction's (:meth:`~volprep.reductions.base.Reduction.image_encoding`);
    where that is "raw", ``[preprocess] image_encoding`` may compress it. The label volume
    is stored in ``[preprocess] mask_encoding``; compressed payloads at ``deflate_level``
    (by default :data:`DEFAULT_DEFLATE_LEVEL`).

    Raises:
        UsageError: a target shape the reduction cannot encode (not a multiple it needs).
    """
    has_mask = any(m.get("voxel_counts") is not None for m in metas)
    label_kind = {(True, True): "class+mask", (True, False): "class",
                  (False, True): "mask", (False, False): "none"}[(has_class, has_mask)]
    mask_max = max((int(m.get("mask_max", 0)) for m in metas), default=0)
    stats = tuple(dataset_statistics([m["stats"] for m in metas])) if pre.dataset_stats else None
    reduction = reductions.for_config(pre)
    multiple = reduction.shape_multiple(pre)
    if any(int(t) % multiple for t in target):
        raise UsageError(f"[preprocess] target_shape {list(target)} must be a multiple of {multiple} "
                         f"for reduce = {pre.reduce!r} (mode {pre.mode!r}, level {pre.level})")
    encoding, layout = reduction.image_encoding(pre, (*target, channels))
    if encoding == "raw":
        encoding, layout = _payload_encoding(pre.image_encoding, pre, "image")
    # Without label volumes there is nothing to encode: "raw" keeps their shard names as before.
    mask_encoding, mask_layout = _payload_encoding(pre.mask_encoding if has_mask else "raw", pre, "mask")
    labels = sorted({int(v) for m in metas for v, n in (m.get("voxel_counts") or {}).items() if int(v) > 0 and n})
    # at most one voxel in LOCATION_SPARSITY (a small record's locations stay small beside
    # its image), and never fewer rows than labels
    budget = min(int(pre.class_locations), max(len(labels), int(np.prod(target)) // LOCATION_SPARSITY))
    budget = budget if has_mask and labels and pre.class_locations else 0
    return RecordSpec(cache_dir=cache_dir, target_shape=tuple(target), channels=channels,  # type: ignore[arg-type]
                      image_dtype=pre.dtype, image_encoding=encoding, label_kind=label_kind,
                      mask_dtype="uint8" if mask_max <= 255 else "int16", preprocess=pre,
                      dataset_stats=stats, image_layout=layout, mask_encoding=mask_encoding,
                      mask_layout=mask_layout, locations=budget, location_labels=tuple(labels) if budget else ())


# zlib levels when [preprocess] deflate_level is not set, measured on real anatomy
# (benchmarks/results/storage.json): float16 images gain at most 6% from level 6 over 1, at
# 2-4x the encode time; label volumes 1.5-1.8x (13-44x in all) for 5-70 ms a record. Level 9
# adds at most 10% over 6, at up to 28x the encode time (0.9 s for a 1 mm brain's mask).
DEFAULT_DEFLATE_LEVEL = {"image": 1, "mask": 6}


def _payload_encoding(name: str, pre: Any, payload: str) -> tuple[str, dict[str, Any] | None]:
    """``(encoding, layout)`` of an array payload: deflate ones record their zlib level."""
    if name == "raw":
        return name, None
    level = pre.deflate_level if pre.deflate_level is not None else DEFAULT_DEFLATE_LEVEL[payload]
    return name, {"level": int(level)}


# Nominal compression ratios for shard sizing only (shard boundaries must be a pure function
# of counts, so they cannot wait for the bytes): a little under the least that deflate gave
# on the real corpus (benchmarks/results/storage.json: masks 13-44x at level 6, float16
# images 1.4-7.5x at level 1).
NOMINAL_RATIO = {"mask": 10.0, "image": 1.3}


def record_bytes_estimate(spec: RecordSpec) -> int:
    """Approximate bytes of one record (image and mask dominate; the rest is small)."""
    voxels = int(np.prod(spec.target_shape))
    if spec.image_encoding in ARRAY_ENCODINGS:
        image = voxels * spec.channels * np.dtype(spec.image_dtype).itemsize
        if spec.image_encoding != "raw":
            image = int(image / NOMINAL_RATIO["image"])
    else:
        image = int((spec.image_layout or {}).get("nbytes", voxels))
    mask = voxels * np.dtype(spec.mask_dtype).itemsize if "mask" in spec.label_kind else 0
    if spec.mask_encoding != "raw":
        mask = int(mask / NOMINAL_RATIO["mask"])
    return image + mask + 512
