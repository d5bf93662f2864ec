"""The manifest: what a shard folder holds, written last and atomically, read typed.

``manifest.json`` is the contract between the converter and every reader: the record
schema (``features``: names, dtypes, shapes, encodings; :mod:`volprep.schema`), each
split's shards with record counts, bytes and sha256, class histograms before and after
balancing (classes by id and name), the normalisation, fidelity of lossy reductions,
failed cases with their reasons, and the config and seed that made it. Its content
depends only on inputs, config and seed; wall-clock figures live apart in
``timings.json``. In Python it is a typed, frozen :class:`Manifest`:
:func:`build_manifest` assembles it from the job's stages, :func:`write_manifest`
publishes it, :func:`read_manifest` reads it back and refuses, in one line naming the
key, a manifest that lacks what readers rely on. The summary, report, bench, verify and
the loader all read this one type.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from volprep import __version__, storage
from volprep.errors import JobError, UsageError
from volprep.schema import Schema, SchemaError

if TYPE_CHECKING:  # the job's side only: readers of a manifest (loader, report, verify) skip
    # importing the converter (numba kernels, reductions: ~0.9 s)
    from volprep.record_spec import RecordSpec
    from volprep.shards import ShardInfo

FORMAT_VERSION = 2  # 2: shard names carry a content tag; every record has its "affine"
MANIFEST = "manifest.json"


class ManifestError(ValueError):
    """A manifest that lacks a key or holds one of the wrong kind (the message names it)."""


def _need(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    value = data.get(key) if isinstance(data, Mapping) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        what = "missing" if not isinstance(data, Mapping) or key not in data else "of the wrong kind"
        raise ManifestError(f"key {where}{key!r} {what}")
    return value


@dataclasses.dataclass(frozen=True)
class ShardEntry:
    """One shard file as the manifest lists it."""

    file: str
    num_records: int
    num_bytes: int
    sha256: str
    generation: int = 0  # appended generations count from 1 (volprep.append); 0 is not written


def _shard_dict(shard: ShardEntry) -> dict[str, Any]:
    """A shard entry as written: ``generation`` only for appended ones (older readers never see it)."""
    data = dataclasses.asdict(shard)
    if not shard.generation:
        del data["generation"]
    return data


@dataclasses.dataclass(frozen=True)
class SplitEntry:
    """A split: its records (originals + augmented copies) and its shards."""

    num_records: int
    num_originals: int
    shards: tuple[ShardEntry, ...]

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(s.file for s in self.shards)


@dataclasses.dataclass(frozen=True)
class ClassTable:
    """Classes by id (ids may be sparse) and name, and the train counts per class name."""

    names: tuple[str, ...]
    ids: tuple[int, ...]
    class_by: str
    counts_before: Mapping[str, int]
    counts_after: Mapping[str, int]
    per_split: Mapping[str, Mapping[str, int]]

    def name_of(self, class_id: int) -> str:
        """The name of a class id (never by list position: ids may be sparse)."""
        return self.names[self.ids.index(int(class_id))]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    layout: str
    num_cases: int
    label_names: Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class FailureEntry:
    case: str
    path: str
    error: str


@dataclasses.dataclass(frozen=True)
class Manifest:
    """``manifest.json``, typed. ``to_dict()`` gives back exactly the JSON written."""

    format_version: int
    volprep_version: str
    dataset: DatasetInfo
    features: Schema
    splits: Mapping[str, SplitEntry]
    classes: ClassTable
    normalization: Mapping[str, Any]
    fidelity: Mapping[str, Any] | None
    target_shape: tuple[int, ...]
    notes: tuple[str, ...]
    case_notes: Mapping[str, int]
    failures: tuple[FailureEntry, ...]
    config: Mapping[str, Any]
    seed: int
    cases: Mapping[str, str] = dataclasses.field(default_factory=dict)  # case id -> fingerprint (append)
    record_spec: str = ""  # the record spec's content hash (append)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "volprep_version": self.volprep_version,
            "dataset": dataclasses.asdict(self.dataset) | {"label_names": dict(self.dataset.label_names)},
            "features": self.features.to_dict(),
            "splits": {name: {"num_records": s.num_records, "num_originals": s.num_originals,
                              "shards": [_shard_dict(sh) for sh in s.shards]}
                       for name, s in self.splits.items()},
            "classes": {"names": list(self.classes.names), "ids": list(self.classes.ids),
                        "class_by": self.classes.class_by,
                        "counts_before": dict(self.classes.counts_before),
                        "counts_after": dict(self.classes.counts_after),
                        "per_split": {k: dict(v) for k, v in self.classes.per_split.items()}},
            "normalization": dict(self.normalization),
            "fidelity": None if self.fidelity is None else dict(self.fidelity),
            "target_shape": list(self.target_shape),
            "notes": list(self.notes),
            "case_notes": dict(self.case_notes),
            "failures": [dataclasses.asdict(f) for f in self.failures],
            "config": dict(self.config),
            "seed": self.seed,
        } | ({"cases": dict(self.cases), "record_spec": self.record_spec} if self.record_spec else {})

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Checks and types a parsed ``manifest.json``.

        Raises:
            ManifestError: a key missing or of the wrong kind (the message names it).
        """
        if not isinstance(data, Mapping):
            raise ManifestError("not a JSON object")
        version = _need(data, "format_version", int)
        if version != FORMAT_VERSION:
            raise ManifestError(f"format_version {version!r}, this volprep reads {FORMAT_VERSION} "
                                "(rerun `volprep shards` to rewrite the folder)")
        try:
            features = Schema.from_dict(_need(data, "features", dict))
        except SchemaError as err:
            raise ManifestError(str(err)) from None
        splits = {}
        for name, info in _need(data, "splits", dict).items():
            where = f"splits.{name}."
            shards = tuple(ShardEntry(str(_need(s, "file", str, where + "shards[].")),
                                      _need(s, "num_records", int, where + "shards[]."),
                                      _need(s, "num_bytes", int, where + "shards[]."),
                                      str(_need(s, "sha256", str, where + "shards[].")),
                                      int(s.get("generation", 0)))
                           for s in _need(info, "shards", list, where))
            num = _need(info, "num_records", int, where)
            splits[str(name)] = SplitEntry(num, int(info.get("num_originals", num)), shards)
        c = _need(data, "classes", dict)
        names = tuple(str(n) for n in c.get("names", []))
        classes = ClassTable(names, tuple(int(i) for i in c.get("ids", range(len(names)))),
                             str(c.get("class_by", "label")), dict(c.get("counts_before") or {}),
                             dict(c.get("counts_after") or {}),
                             {k: dict(v) for k, v in (c.get("per_split") or {}).items()})
        ds = data.get("dataset") or {}
        failures = tuple(FailureEntry(str(f.get("case", "")), str(f.get("path", "")), str(f.get("error", "")))
                         for f in _need(data, "failures", list))
        return cls(
            format_version=version,
            volprep_version=str(data.get("volprep_version", "?")),
            dataset=DatasetInfo(str(ds.get("name", "")), str(ds.get("layout", "")), int(ds.get("num_cases", 0)),
                                {str(k): str(v) for k, v in (ds.get("label_names") or {}).items()}),
            features=features,
            splits=splits,
            classes=classes,
            normalization=dict(data.get("normalization") or {}),
            fidelity=data.get("fidelity"),
            target_shape=tuple(int(n) for n in data.get("target_shape") or features["image"].shape[:3]),
            notes=tuple(str(n) for n in data.get("notes") or ()),
            case_notes={str(k): int(v) for k, v in (data.get("case_notes") or {}).items()},
            failures=failures,
            config=dict(_need(data, "config", dict)),
            seed=_need(data, "seed", int),
            cases={str(k): str(v) for k, v in (data.get("cases") or {}).items()},
            record_spec=str(data.get("record_spec") or ""),
        )


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
    cases: Mapping[str, str] | None = None,
    record_spec: str = "",
    carried_counts: Mapping[int, int] | None = None,
) -> Manifest:
    """Assembles the manifest of a finished job.

    ``cases`` (case fingerprints) and ``record_spec`` (the spec's hash) let a later job
    append (:mod:`volprep.append`); ``carried_counts`` are the train records per class id
    of published shards an append keeps (their class counts are not in the manifest).

    Raises:
        JobError: the train shards' class counts disagree with the plan (a bug; checked by
            class id, never by a name's position, since ids may be sparse).
    """
    counted: dict[int, int] = {int(k): int(v) for k, v in (carried_counts or {}).items()}
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
    return Manifest(
        format_version=FORMAT_VERSION,
        volprep_version=__version__,
        dataset=DatasetInfo(data_name, dataset.layout, len(dataset.cases),
                            {str(k): v for k, v in (dataset.label_names or {}).items()}),
        features=spec.schema(),
        splits={split: SplitEntry(sum(s.num_records for s in infos), len(plan.splits.get(split, [])),
                                  tuple(ShardEntry(s.file, s.num_records, s.num_bytes, s.sha256, s.generation)
                                        for s in infos))
                for split, infos in shards.items()},
        classes=ClassTable(tuple(plan.classes), tuple(int(i) for i in plan.class_ids), plan.class_by,
                           dict(plan.counts_before), dict(plan.counts_after),
                           {k: dict(v) for k, v in plan.per_split_counts.items()}),
        normalization={"method": config.preprocess.normalize,
                       "dataset_stats": list(spec.dataset_stats) if spec.dataset_stats else None},
        fidelity=_fidelity(metas),
        target_shape=tuple(spec.target_shape),
        notes=tuple(sorted(set(notes))),
        case_notes=_case_notes(metas),
        failures=tuple(FailureEntry(f.case, f.path, f.error) for f in sorted(failures, key=lambda f: (f.case, f.path))),
        config=config.to_dict(),
        seed=config.job.seed,
        cases=dict(sorted((cases or {}).items())),
        record_spec=record_spec,
    )


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


def write_manifest(out_dir: storage.Location, manifest: Manifest) -> storage.Location:
    """Writes ``manifest.json`` whole and atomically (sorted keys: equal content, equal bytes)."""
    path = storage.join(out_dir, MANIFEST)
    storage.write_json(path, manifest.to_dict())
    return path


def read_manifest(out_dir: str | Path) -> Manifest:
    """Reads a shard folder's manifest and checks that it has what readers rely on.

    Raises:
        UsageError: no manifest (not a volprep output folder, or a job that never
            finished), not JSON, another format version, or a key missing or of the wrong
            kind (one line naming the key).
    """
    path = storage.join(storage.location(out_dir), MANIFEST)
    try:
        data = json.loads(storage.read_text(path))
    except FileNotFoundError:
        raise UsageError(f"{out_dir}: no {MANIFEST} (not a volprep output, or the job did not finish)") from None
    except (ValueError, OSError) as err:
        raise UsageError(f"{path}: not valid JSON ({err})") from None
    try:
        return Manifest.from_dict(data)
    except ManifestError as err:
        raise UsageError(f"{path}: not a complete volprep manifest: {err}") from None
