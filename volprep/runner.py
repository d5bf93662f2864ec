"""The job: runs the stages of the flow in order, on a backend, resumably.

discover -> headers (target shape, channels, memory estimates) -> convert cases (read,
preprocess, cache; parallel) -> plan (splits, balance; plan.json) -> write shards
(parallel) -> manifest (last, atomic) -> failures.csv, timings.json, summary.

Every stage's output is on disk, so a killed job rerun reuses what was finished. An
input problem fails its case, not the job: it is printed as one line ``case <id>: <path>:
<problem>``, listed in the manifest and ``failures.csv``, and the exit status is 3. With
``on_error = "fail"`` the first failure stops the job with status 1 and nothing new is
published. A lock file keeps two jobs off the same output folder.
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import io as _io
import logging
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from volprep import __version__
from volprep.backends import WorkerDied, default_workers, run_tasks
from volprep.cases import Case, Dataset, discover
from volprep.config import PipelineConfig
from volprep.convert import CaseResult, convert_case
from volprep.errors import InputError, JobError, UsageError
from volprep.manifest import FORMAT_VERSION, write_manifest
from volprep.progress import Progress
from volprep.seeds import order_key
from volprep.shards import (
    RecordRef,
    RecordSpec,
    ShardInfo,
    ShardTask,
    atomic_write_text,
    order_records,
    record_bytes_estimate,
    shard_bounds,
    shard_count,
    write_shard,
)

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


@dataclasses.dataclass
class Failure:
    """A case that could not be converted."""

    case: str
    path: str
    error: str

    def line(self) -> str:
        return f"case {self.case}: {self.path}: {self.error}"


@dataclasses.dataclass
class JobResult:
    """What a finished job did (the summary and the tests read it)."""

    out_dir: Path
    exit_code: int
    manifest: dict[str, Any]
    failures: list[Failure]
    cases_found: int
    cases_converted: int
    cases_reused: int
    timings: dict[str, float]
    notes: list[str]


@contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """An exclusive lock on ``OUT/.volprep.lock``; a second job gets a clear error."""
    lock_path = out_dir / ".volprep.lock"
    fh = open(lock_path, "a+")  # noqa: SIM115 - held open for the whole job: the lock is the open file
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise UsageError(f"{out_dir}: in use by another volprep job ({holder}); wait for it or use another --out") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    try:
        yield
    finally:
        fh.close()


def run_job(
    data: str | Path,
    out_dir: str | Path,
    config: PipelineConfig,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    memory_limit: int | None = None,
    quiet: bool = False,
    report: bool = True,
) -> JobResult:
    """Converts a dataset into sharded TFRecords plus a manifest under ``out_dir``.

    Raises:
        UsageError: a missing dataset, an unwritable or locked output folder.
        DatasetError: a dataset with no usable layout or no cases.
        JobError: nothing could be published (every case failed, or ``on_error = "fail"``).
    """
    data, out_dir = Path(data), Path(out_dir)
    if not data.exists():
        raise UsageError(f"{data}: no such dataset (a folder, a dataset.json folder or a CSV/TSV file)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"{out_dir}: cannot write here ({err.strerror or err})") from None
    with output_lock(out_dir):
        return _Job(data, out_dir, config, workers or default_workers(), scheduler,
                    memory_limit, quiet, report).run()


class _Job:
    def __init__(self, data: Path, out_dir: Path, config: PipelineConfig, workers: int,
                 scheduler: str | None, memory_limit: int | None, quiet: bool, report: bool) -> None:
        self.data, self.out_dir, self.config = data, out_dir, config
        self.workers, self.scheduler, self.memory_limit = workers, scheduler, memory_limit
        self.quiet, self.report = quiet, report
        self.failures: list[Failure] = []
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []
        self.cache_dir = out_dir / "cache.zarr"

    def fail(self, failure: Failure, progress: Progress | None = None) -> None:
        self.failures.append(failure)
        line = failure.line()
        if progress is not None:
            progress.write(line)
        else:
            print(line, file=sys.stderr, flush=True)
        if self.config.job.on_error == "fail":
            raise JobError(f"stopped at the first failure (on_error = 'fail'): {line}")

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 3)

    def run(self) -> JobResult:
        with self.stage("discover"):
            dataset = discover(self.data)
        for case_id, path, problem in dataset.problems:
            self.fail(Failure(case_id, path, problem))
        with self.stage("headers"):
            cases, weights, target_shape, channels = self.headers(dataset)
        with self.stage("convert"):
            results = self.convert(dataset, cases, weights)
        ok = {r.case_id: r for r in results if r.ok}
        if not ok:
            raise JobError(f"{self.data}: no case could be converted ({len(self.failures)} failed); nothing published")
        with self.stage("plan"):
            plan, spec = self.plan(dataset, ok, target_shape, channels)
        with self.stage("write"):
            shards = self.write(plan, spec, dataset, ok)
        manifest = self.manifest(dataset, plan, spec, shards, ok)
        write_manifest(self.out_dir, manifest)
        self.cleanup(manifest)
        self.write_failures()
        from volprep.shards import atomic_write_json

        atomic_write_json(self.out_dir / "timings.json", self.timings)
        result = JobResult(
            out_dir=self.out_dir,
            exit_code=EXIT_PARTIAL if self.failures else EXIT_OK,
            manifest=manifest,
            failures=self.failures,
            cases_found=len(dataset.cases) + len(dataset.problems),
            cases_converted=len(ok),
            cases_reused=sum(1 for r in ok.values() if r.reused),
            timings=self.timings,
            notes=self.notes,
        )
        if self.report:
            from volprep.report import write_report

            with self.stage("report"):
                try:
                    write_report(self.out_dir, result)
                except Exception as err:  # noqa: BLE001 - a plot must never fail a finished job
                    log.warning("report not written: %s", err)
        return result

    # -- headers: target shape, channels, memory ------------------------------------------
    def headers(self, dataset: Dataset) -> tuple[list[Case], list[int], tuple[int, int, int], int]:
        from volprep import io
        from volprep.preprocess import reduced_shape, shape_multiple

        cfg = self.config
        cases: list[Case] = []
        weights: list[int] = []
        shapes: list[tuple[int, int, int]] = []
        chans: list[int] = []
        for case in dataset.cases:
            try:
                headers = [io.read_header(p, cfg.read) for p in case.images]
            except InputError as err:
                self.fail(Failure(case.case_id, err.path, err.problem))
                continue
            first = headers[0]
            n_chan = first.shape[3] if len(first.shape) == 4 else len(headers)
            if case.mask is not None:
                try:
                    headers_mask = [io.read_header(case.mask, cfg.read)]
                except InputError as err:
                    self.fail(Failure(case.case_id, err.path, err.problem))
                    continue
            else:
                headers_mask = []
            weight = sum(io.estimate_working_bytes(h) for h in [*headers, *headers_mask])
            if self.memory_limit is not None and weight > self.memory_limit:
                self.fail(Failure(case.case_id, str(first.path),
                                  f"needs about {_human(weight)} to convert, more than --memory-limit {_human(self.memory_limit)}"))
                continue
            cases.append(case)
            weights.append(weight)
            chans.append(n_chan)
            shapes.append(tuple(reduced_shape(tuple(first.shape[:3]), first.affine, cfg.preprocess)))  # type: ignore[arg-type]
        if not cases:
            raise JobError(f"{self.data}: no case could be read ({len(self.failures)} failed); nothing published")
        channels = statistics.mode(chans)
        kept_cases, kept_weights, kept_shapes = [], [], []
        for case, weight, n_chan, shape in zip(cases, weights, chans, shapes, strict=True):
            if n_chan != channels:
                self.fail(Failure(case.case_id, str(case.images[0]),
                                  f"has {n_chan} channel(s), the dataset has {channels}"))
                continue
            kept_cases.append(case)
            kept_weights.append(weight)
            kept_shapes.append(shape)
        if cfg.preprocess.target_shape is not None:
            target: tuple[int, ...] = cfg.preprocess.target_shape
        else:
            multiple = shape_multiple(cfg.preprocess)
            median = np.median(np.array(kept_shapes), axis=0)
            target = tuple(int(max(multiple, multiple * round(m / multiple))) for m in median)
            self.notes.append(f"target_shape planned from the dataset (median after reduction): {list(target)}")
        return kept_cases, kept_weights, target, channels  # type: ignore[return-value]

    # -- convert -------------------------------------------------------------------------
    def convert(self, dataset: Dataset, cases: list[Case], weights: list[int]) -> list[CaseResult]:
        self.cache_dir.mkdir(exist_ok=True)
        from volprep.cache import CaseCache

        CaseCache(self.cache_dir).sweep()  # half-written cases of a killed run (we hold the lock)
        declared = tuple(sorted(dataset.label_names)) if dataset.label_names else None
        # Fidelity (PSNR/SSIM of a lossy reduction) on a fixed, seed-independent sample.
        sample = set(sorted(order_key(0, c.case_id) for c in cases)[:self.config.job.fidelity_sample])
        tasks = [(case, self.config, str(self.cache_dir), declared, order_key(0, case.case_id) in sample)
                 for case in cases]
        results: list[CaseResult | None] = [None] * len(cases)
        with Progress(len(tasks), "convert cases", quiet=self.quiet) as progress:
            for index, result in run_tasks(convert_case, tasks, workers=self.workers,
                                           scheduler=self.scheduler, weights=weights,
                                           memory_limit=self.memory_limit):
                case = cases[index]
                if isinstance(result, WorkerDied):
                    result = CaseResult(case.case_id, ok=False, path=str(case.images[0]), error=result.reason)
                results[index] = result
                if not result.ok:
                    self.fail(Failure(case.case_id, result.path, result.error), progress)
                progress.update(1, "reused" if result.reused else None)
        return [r for r in results if r is not None]

    # -- plan ----------------------------------------------------------------------------
    def plan(self, dataset: Dataset, ok: dict[str, CaseResult], target_shape: tuple[int, int, int],
             channels: int) -> tuple[Any, RecordSpec]:
        from volprep.augment.spec import sample
        from volprep.plan import PlanEntry, make_plan, write_plan
        from volprep.preprocess import dataset_statistics

        cfg = self.config
        entries = []
        for case in dataset.cases:
            if case.case_id not in ok:
                continue
            counts = ok[case.case_id].meta.get("voxel_counts")
            entries.append(PlanEntry(
                case_id=case.case_id, subject=case.subject, label=case.label,
                voxel_counts={int(k): int(v) for k, v in counts.items()} if counts else None,
            ))
        augment = cfg.augmentation()

        def sampler(rng: np.random.Generator, case_id: str) -> dict[str, Any]:
            return sample(augment, rng, target_shape).to_dict()

        subset = set(cfg.balance.subset) if cfg.balance.subset else None
        if cfg.balance.subset_column:
            subset = _subset_from_column(self.data, cfg.balance.subset_column)
        plan = make_plan(entries, dataset.class_names, cfg.job, cfg.balance, subset=subset,
                         augment_sampler=sampler,
                         label_names=dataset.label_names)
        write_plan(self.out_dir / "plan.json", plan)
        has_class = any(e.label is not None for e in entries)
        has_mask = any(ok[e.case_id].meta.get("voxel_counts") is not None for e in entries)
        label_kind = {(True, True): "class+mask", (True, False): "class",
                      (False, True): "mask", (False, False): "none"}[(has_class, has_mask)]
        mask_max = max((int(r.meta.get("mask_max", 0)) for r in ok.values()), default=0)
        stats = None
        if cfg.preprocess.dataset_stats:
            stats = tuple(dataset_statistics([ok[e.case_id].meta["stats"] for e in entries]))
        encoding, layout = "raw", None
        if cfg.preprocess.reduce == "wavelet" and cfg.preprocess.mode == "compress":
            from volprep.preprocess import wavelet

            encoding = "wavelet-compress"
            layout = wavelet.layout((*target_shape, channels), cfg.preprocess.wavelet,
                                    cfg.preprocess.level, cfg.preprocess.keep,
                                    values=cfg.preprocess.wavelet_values)
        spec = RecordSpec(
            cache_dir=str(self.cache_dir), target_shape=tuple(target_shape), channels=channels,  # type: ignore[arg-type]
            image_dtype=cfg.preprocess.dtype, image_encoding=encoding, label_kind=label_kind,
            mask_dtype="uint8" if mask_max <= 255 else "int16", preprocess=cfg.preprocess,
            dataset_stats=stats,
            class_of_case=tuple(sorted((k, int(v)) for k, v in plan.case_class.items() if v is not None)),
            wavelet_layout=layout,
        )
        return plan, spec

    # -- write shards --------------------------------------------------------------------
    def write(self, plan: Any, spec: RecordSpec, dataset: Dataset,
              ok: dict[str, CaseResult]) -> dict[str, list[ShardInfo]]:
        from volprep.augment.spec import Params

        source = {c.case_id: str(c.images[0]) for c in dataset.cases}
        shard_bytes = int(self.config.job.shard_size_mb * 1e6)
        tasks: list[ShardTask] = []
        for split in self.config.job.splits:
            refs = [RecordRef(cid, 0, "", source.get(cid, "")) for cid in plan.splits.get(split, [])]
            if split == "train":
                for cid, copies in sorted(plan.copies.items()):
                    for copy in copies:
                        params = Params.from_dict(copy["params"]).to_json() if copy.get("params") else ""
                        refs.append(RecordRef(cid, int(copy["copy"]), params, source.get(cid, "")))
            try:
                ordered = order_records(refs, self.config.job.seed)
            except ValueError as err:
                raise JobError(f"split {split}: {err}") from None
            count = shard_count(len(ordered), record_bytes_estimate(spec), shard_bytes)
            for i, (start, end) in enumerate(shard_bounds(len(ordered), count)):
                tasks.append(ShardTask(str(self.out_dir), split, i, count, tuple(ordered[start:end]), spec))
        by_split: dict[str, list[ShardInfo | None]] = {
            s: [None] * sum(1 for t in tasks if t.split == s) for s in self.config.job.splits
        }
        with Progress(len(tasks), "write shards", quiet=self.quiet) as progress:
            for index, info in run_tasks(write_shard, [(t,) for t in tasks], workers=self.workers,
                                         scheduler=self.scheduler):
                task = tasks[index]
                if isinstance(info, WorkerDied):
                    raise JobError(f"{task.file_name}: {info.reason}; the previous manifest is unchanged")
                by_split[task.split][task.index] = info
                progress.update(1)
        return {s: [i for i in infos if i is not None] for s, infos in by_split.items()}

    # -- manifest ------------------------------------------------------------------------
    def manifest(self, dataset: Dataset, plan: Any, spec: RecordSpec,
                 shards: dict[str, list[ShardInfo]], ok: dict[str, CaseResult]) -> dict[str, Any]:
        cfg = self.config
        features: dict[str, Any] = {
            "image": {"dtype": spec.image_dtype, "shape": [*spec.target_shape, spec.channels],
                      "encoding": spec.image_encoding},
            "case_id": {"dtype": "string", "shape": [], "encoding": "bytes"},
            "copy": {"dtype": "int64", "shape": [], "encoding": "int64"},
            "augment": {"dtype": "string", "shape": [], "encoding": "bytes"},
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
        names = list(plan.classes) if plan.classes else []
        train_counts: dict[int, int] = {}
        for info in shards.get("train", []):
            for k, v in info.class_counts.items():
                train_counts[k] = train_counts.get(k, 0) + v
        counts_after = {names[k] if 0 <= k < len(names) else str(k): v for k, v in sorted(train_counts.items())}
        if counts_after and counts_after != {k: v for k, v in plan.counts_after.items() if v}:
            raise JobError(f"internal error: train shards hold {counts_after}, the plan says {plan.counts_after}")
        return {
            "format_version": FORMAT_VERSION,
            "volprep_version": __version__,
            "dataset": {"name": self.data.name, "layout": dataset.layout,
                        "num_cases": len(dataset.cases), "label_names": {str(k): v for k, v in (dataset.label_names or {}).items()}},
            "features": features,
            "splits": {
                split: {
                    "num_records": sum(s.num_records for s in infos),
                    "num_originals": len(plan.splits.get(split, [])),
                    "shards": [{"file": s.file, "num_records": s.num_records,
                                "num_bytes": s.num_bytes, "sha256": s.sha256} for s in infos],
                }
                for split, infos in shards.items()
            },
            "classes": {"names": names, "counts_before": dict(plan.counts_before),
                        "counts_after": dict(plan.counts_after),
                        "per_split": {k: dict(v) for k, v in plan.per_split_counts.items()}},
            "normalization": {"method": cfg.preprocess.normalize,
                              "dataset_stats": list(spec.dataset_stats) if spec.dataset_stats else None},
            "fidelity": _fidelity(ok),
            "target_shape": list(spec.target_shape),
            "notes": sorted(set(self.notes)),
            "case_notes": _case_notes(ok),
            "failures": [dataclasses.asdict(f) for f in sorted(self.failures, key=lambda f: (f.case, f.path))],
            "config": cfg.to_dict(),
            "seed": cfg.job.seed,
        }

    def cleanup(self, manifest: dict[str, Any]) -> None:
        """Removes shards of earlier runs that the new manifest no longer lists."""
        keep = {s["file"] for split in manifest["splits"].values() for s in split["shards"]}
        for path in self.out_dir.glob("*.tfrecord"):
            if path.name not in keep:
                path.unlink()
        for path in self.out_dir.glob(".*.tmp-*"):
            path.unlink(missing_ok=True)

    def write_failures(self) -> None:
        buf = _io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["case", "path", "error"])
        for f in sorted(self.failures, key=lambda f: (f.case, f.path)):
            writer.writerow([f.case, f.path, f.error])
        atomic_write_text(self.out_dir / "failures.csv", buf.getvalue())


def _routine(note: str) -> bool:
    """Notes every healthy case carries (which header field gave the affine)."""
    return note.startswith("affine from") and "unusable" not in note


def _case_notes(ok: dict[str, CaseResult]) -> dict[str, int]:
    """How many converted cases carry each non-routine note (e.g. an affine fallback)."""
    counts: dict[str, int] = {}
    for result in ok.values():
        for note in result.meta.get("notes", []):
            if not _routine(note):
                counts[note] = counts.get(note, 0) + 1
    return dict(sorted(counts.items()))


def _fidelity(ok: dict[str, CaseResult]) -> dict[str, Any] | None:
    values = [r.meta["fidelity"] for _, r in sorted(ok.items()) if r.meta.get("fidelity")]
    if not values:
        return None
    out: dict[str, Any] = {"num_cases": len(values)}
    for key in ("psnr", "ssim", "ratio"):
        xs = [float(v[key]) for v in values if v.get(key) is not None]
        if xs:
            out[key] = {"min": round(min(xs), 4), "median": round(float(np.median(xs)), 4)}
    return out


def _subset_from_column(data: Path, column: str) -> set[str]:
    """Case ids whose ``column`` in the dataset's labels CSV is true (1/true/yes)."""
    for name in ("labels.csv", "labels.tsv"):
        path = data / name if data.is_dir() else data
        if path.is_file():
            with open(path, newline="") as fh:
                rows = list(csv.DictReader(fh, delimiter="\t" if path.suffix == ".tsv" else ","))
            if rows and column in rows[0]:
                return {r.get("case_id", "") for r in rows if str(r[column]).strip().lower() in ("1", "true", "yes")}
    raise UsageError(f"{data}: no labels CSV with a column {column!r} (balance.subset_column)")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"
