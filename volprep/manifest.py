"""The manifest: what a shard folder holds, written last and atomically.

``manifest.json`` is the contract between the converter and every reader: the feature
spec (names, dtypes, shapes, encodings), each split's shards with record counts, bytes and
sha256, class histograms before and after balancing (classes by id and name), the
normalisation, fidelity of lossy reductions, failed cases with their reasons, and the
config and seed that made it. Its content depends only on inputs, config and seed;
wall-clock figures live apart in ``timings.json``. :func:`build_manifest` assembles it
from the job's stages, :func:`write_manifest` publishes it, :func:`read_manifest` reads
it back and refuses, in one line, a manifest that lacks what readers rely on.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from volprep import __version__
from volprep.errors import JobError, UsageError
from volprep.shards import RecordSpec, ShardInfo, atomic_write_json

FORMAT_VERSION = 2  # 2: shard names carry a content tag; every record has its "affine"
MANIFEST = "manifest.json"
REQUIRED = {
    "format_version": int, "features": dict, "splits": dict, "classes": dict, "failures": list,
    "config": dict, "seed": int,
}


def record_features(spec: RecordSpec) -> dict[str, Any]:
    """The manifest's ``features``: name -> dtype, shape, encoding (and a wavelet layout)."""
    features: dict[str, Any] = {
        "image": {"dtype": spec.image_dtype, "shape": [*spec.target_shape, spec.channels],
                  "encoding": spec.image_encoding},
        "case_id": {"dtype": "string", "shape": [], "encoding": "bytes"},
        "copy": {"dtype": "int64", "shape": [], "encoding": "int64"},
        "augment": {"dtype": "string", "shape": [], "encoding": "bytes"},
        "affine": {"dtype": "float64", "shape": [4, 4], "encoding": "raw"},
    }
    if spec.wavelet_layout is not None:
        features["image"]["layout"] = spec.wavelet_layout
    mask_feature = {"dtype": spec.mask_dtype, "shape": list(spec.target_shape), "encoding": "raw"}
    if spec.label_kind in ("class", "class+mask"):
        features["label"] = {"dtype": "int64", "shape": [], "encoding": "int64"}
    if spec.label_kind == "class+mask":
        features["mask"] = mask_feature
    elif spec.label_kind == "mask":
        features["label"] = mask_feature
    return features


def build_manifest(
    *,
    dataset: Any,
    data_name: str,
    plan: Any,
    spec: RecordSpec,
    shards: Mapping[str, Sequence[ShardInfo]],
    metas: Mapping[str, Mapping[str, Any]],
    failures: Sequence[Any],
    notes: Sequence[str],
    config: Any,
) -> dict[str, Any]:
    """Assembles the manifest of a finished job.

    Raises:
        JobError: the train shards' class counts disagree with the plan (a bug; checked by
            class id, never by a name's position, since ids may be sparse).
    """
    counted: dict[int, int] = {}
    for info in shards.get("train", []):
        for k, v in info.class_counts.items():
            counted[int(k)] = counted.get(int(k), 0) + v
    planned = {int(c): 0 for c in plan.class_ids}
    for case_id in plan.splits.get("train", []):
        cls = plan.case_class.get(case_id)
        if cls is not None:
            planned[int(cls)] += 1 + len(plan.copies.get(case_id, []))
    if {k: v for k, v in counted.items() if v} != {k: v for k, v in planned.items() if v}:
        raise JobError(f"internal error: train shards hold {counted} records per class id, the plan says {planned}")
    return {
        "format_version": FORMAT_VERSION,
        "volprep_version": __version__,
        "dataset": {"name": data_name, "layout": dataset.layout, "num_cases": len(dataset.cases),
                    "label_names": {str(k): v for k, v in (dataset.label_names or {}).items()}},
        "features": record_features(spec),
        "splits": {
            split: {
                "num_records": sum(s.num_records for s in infos),
                "num_originals": len(plan.splits.get(split, [])),
                "shards": [{"file": s.file, "num_records": s.num_records,
                            "num_bytes": s.num_bytes, "sha256": s.sha256} for s in infos],
            }
            for split, infos in shards.items()
        },
        "classes": {"names": list(plan.classes), "ids": [int(i) for i in plan.class_ids],
                    "class_by": plan.class_by,
                    "counts_before": dict(plan.counts_before), "counts_after": dict(plan.counts_after),
                    "per_split": {k: dict(v) for k, v in plan.per_split_counts.items()}},
        "normalization": {"method": config.preprocess.normalize,
                          "dataset_stats": list(spec.dataset_stats) if spec.dataset_stats else None},
        "fidelity": _fidelity(metas),
        "target_shape": list(spec.target_shape),
        "notes": sorted(set(notes)),
        "case_notes": _case_notes(metas),
        "failures": [dataclasses.asdict(f) for f in sorted(failures, key=lambda f: (f.case, f.path))],
        "config": config.to_dict(),
        "seed": config.job.seed,
    }


def _routine(note: str) -> bool:
    """Notes every healthy case carries (which header field gave the affine)."""
    return note.startswith("affine from") and "unusable" not in note


def _case_notes(metas: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """How many converted cases carry each non-routine note (e.g. an affine fallback)."""
    counts: dict[str, int] = {}
    for meta in metas.values():
        for note in meta.get("notes", []):
            if not _routine(note):
                counts[note] = counts.get(note, 0) + 1
    return dict(sorted(counts.items()))


def _fidelity(metas: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    values = [m["fidelity"] for _, m in sorted(metas.items()) if m.get("fidelity")]
    if not values:
        return None
    out: dict[str, Any] = {"num_cases": len(values)}
    for key in ("psnr", "ssim", "ratio"):
        xs = [float(v[key]) for v in values if v.get(key) is not None]
        if xs:
            out[key] = {"min": round(min(xs), 4), "median": round(float(np.median(xs)), 4)}
    return out


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    """Writes ``manifest.json`` atomically (sorted keys: equal content, equal bytes)."""
    path = Path(out_dir) / MANIFEST
    atomic_write_json(path, manifest)
    return path


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """Reads a shard folder's manifest and checks that it has what readers rely on.

    Raises:
        UsageError: no manifest (not a volprep output folder, or a job that never
            finished), not JSON, another format version, or a key missing or of the wrong
            kind (one line naming the key).
    """
    path = Path(out_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{out_dir}: no {MANIFEST} (not a volprep output, or the job did not finish)") from None
    except (ValueError, OSError) as err:
        raise UsageError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict):
        raise UsageError(f"{path}: not a volprep manifest (expected a JSON object)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UsageError(f"{path}: format_version {manifest.get('format_version')!r}, this volprep reads "
                         f"{FORMAT_VERSION} (rerun `volprep shards` to rewrite the folder)")
    for key, kind in REQUIRED.items():
        if not isinstance(manifest.get(key), kind):
            what = "missing" if key not in manifest else f"not a {kind.__name__}"
            raise UsageError(f"{path}: not a complete volprep manifest: key {key!r} {what}")
    for split, info in manifest["splits"].items():
        if not isinstance(info, dict) or not isinstance(info.get("shards"), list) \
                or not isinstance(info.get("num_records"), int):
            raise UsageError(f"{path}: not a complete volprep manifest: splits.{split} lacks shards/num_records")
        for shard in info["shards"]:
            if not isinstance(shard, dict) or not {"file", "num_records", "num_bytes", "sha256"} <= set(shard):
                raise UsageError(f"{path}: not a complete volprep manifest: a shard of split {split!r} "
                                 "lacks file/num_records/num_bytes/sha256")
    for name, feature in manifest["features"].items():
        if not isinstance(feature, dict) or not {"dtype", "shape", "encoding"} <= set(feature):
            raise UsageError(f"{path}: not a complete volprep manifest: feature {name!r} lacks dtype/shape/encoding")
    return manifest
