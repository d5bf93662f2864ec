"""The job: runs the stages of the flow in order, on a backend, resumably.

discover -> survey headers (memory, channels) -> convert cases (read, preprocess, cache;
parallel) -> target shape -> plan (splits, balance) -> write shards (parallel, a new
generation) -> publish (plan.json, then the manifest, atomically) -> retire the old
generation -> failures.csv, timings.json.

Every stage's output is on disk, so a killed job rerun reuses what was finished, and the
published folder is never a mix of generations (:mod:`volprep.publish`). An input
problem fails its case, not the job: it is printed as one line ``case <id>: <path>:
<problem>``, listed in the manifest and ``failures.csv``, and the exit status is 3. With
``on_error = "fail"`` the first failure stops the job with status 1 and nothing new is
published. A lock keeps two jobs off the same output folder. The stages' own decisions
live with the stages (:mod:`volprep.survey`, :mod:`volprep.preprocess`,
:mod:`volprep.plan`, :mod:`volprep.shards`, :mod:`volprep.manifest`); this module only
runs them and keeps the books.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from volprep import append, backends, inputs, publish, storage
from volprep.augment.spec import Params, sample
from volprep.backends import WorkerDied, local_workers, run_tasks
from volprep.cache import CaseCache, default_cache_dir
from volprep.cases import Case, Dataset, discover, read_split_file, subset_from_column
from volprep.classes import PlanEntry
from volprep.config import DICOM_CASE_IDS, PipelineConfig
from volprep.convert import CaseResult, convert_case, warm_up
from volprep.errors import InputError, JobError, UsageError
from volprep.job_result import Failure, JobResult
from volprep.lock import Lease, output_lock
from volprep.manifest import build_manifest, write_manifest
from volprep.plan import Plan, make_plan, plan_json, previous_splits
from volprep.preprocess import plan_target_shape
from volprep.progress import Progress
from volprep.record_spec import RecordSpec, make_record_spec, record_bytes_estimate
from volprep.seeds import order_key
from volprep.shards import (
    RecordRef,
    ShardFailed,
    ShardInfo,
    ShardTask,
    order_records,
    shard_bounds,
    shard_count,
    split_tag,
    write_shard,
)
from volprep.survey import available_memory, check_record_size, disk_bytes, survey

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


def run_job(
    data: str | Path,
    out_dir: str | Path,
    config: PipelineConfig,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    memory_limit: int | None = None,
    quiet: bool = False,
    cache_dir: str | Path | None = None,
    rebuild: bool = False,
) -> JobResult:
    """Converts a dataset into sharded TFRecords plus a manifest under ``out_dir``.

    ``out_dir`` is a local folder or an object-store URL (``s3://``, ``gs://``:
    :mod:`volprep.storage`). The conversion cache is always a local folder: ``cache_dir``,
    by default ``OUT/cache`` for a local OUT and :func:`volprep.cache.default_cache_dir` for a URL.
    A rerun that finds only new cases appends them as a new generation of shards; removed or
    changed cases are refused unless ``rebuild`` (a full rewrite): :mod:`volprep.append`.
    ``workers`` local processes convert and write (default: all cores, or for a dataset
    under 32 MiB on disk none, the tasks running in this process: ``backends.local_workers``).

    Raises:
        UsageError: a missing dataset, an unwritable or locked output folder, a target
            shape whose records cannot fit in memory.
            Cases removed or changed since the published shards, without ``rebuild``.
        DatasetError: a dataset with no usable layout or no cases.
        JobError: nothing could be published (every case failed, ``on_error = "fail"``,
            no space left on the output's disk).
    """
    url, data, out_dir = inputs.url_of(data), Path(data), storage.location(out_dir)
    if url is None and not data.exists():
        raise UsageError(f"{data}: no such dataset (a folder, a dataset.json folder or a CSV/TSV file)")
    if url is None and (not os.access(data, os.R_OK) or (data.is_dir() and not os.access(data, os.X_OK))):
        raise UsageError(f"{data}: cannot read the dataset (permission denied)")
    storage.check_writable(out_dir)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(out_dir)
    with output_lock(out_dir) as lease:  # DATA at a URL: mirrored beside the cache, under the lock
        staged = inputs.stage(url, inputs.staging_dir(cache, url)) if url else None
        with inputs.messages_name_url(staged):
            return _Job(staged.local if staged else data, out_dir, config, workers,
                        scheduler, memory_limit, quiet, cache, lease, rebuild, staged).run()


class _Job:
    def __init__(self, data: Path, out_dir: storage.Location, config: PipelineConfig, workers: int | None,
                 scheduler: str | None, memory_limit: int | None, quiet: bool, cache_dir: Path,
                 lease: Lease | None, rebuild: bool = False, staged: inputs.Staged | None = None) -> None:
        self.data, self.out_dir, self.config, self.staged = data, out_dir, config, staged
        self.scheduler, self.memory_limit = scheduler, memory_limit
        self.requested, self.workers = workers, 0  # the worker count: decided once the cases are known
        self.quiet, self.lease = quiet, lease
        self.failures: list[Failure] = []
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []  # about the content: they go into the manifest
        self.events: list[str] = []  # about this run on this OUT (reuse, clean-up): summary only
        self.warnings: list[str] = []
        self.cache_dir, self.rebuild = cache_dir, rebuild
        self.decision = append.Decision("fresh")
        self.inputs: dict[str, list[Any]] = {}

    def fail(self, failure: Failure, progress: Progress | None = None) -> None:
        if self.staged is not None:  # name the object, not its local mirror
            failure = Failure(failure.case, *map(self.staged.url_of, (failure.path, failure.error)))
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
        cfg = self.config
        with self.stage("discover"):
            dataset = discover(self.data, unlabelled=cfg.job.unlabelled,
                               folder_ids=DICOM_CASE_IDS[cfg.read.dicom_case_id])
        self.workers = local_workers(self.requested, disk_bytes(dataset.cases, backends.IN_PROCESS_BYTES))
        if not self.scheduler and self.memory_limit is None:
            backends.warm_up(warm_up, self.workers)  # workers start while the headers are read
        self.notes.extend(dataset.notes)
        for case_id, path, problem in dataset.problems:
            self.fail(Failure(case_id, path, problem))
        if cfg.preprocess.target_shape is not None:
            self.check_record_size(cfg.preprocess.target_shape, 1)
        with self.stage("headers"):
            surveyed = survey(dataset, cfg, lambda c, p, e: self.fail(Failure(c, p, e)),
                              memory_limit=self.memory_limit, available=available_memory())
        if not surveyed.cases:
            raise JobError(f"{self.data}: no case could be read ({len(self.failures)} failed); nothing published")
        if cfg.preprocess.target_shape is not None:
            self.check_record_size(cfg.preprocess.target_shape, surveyed.channels)
        removed = publish.sweep(self.out_dir)
        if removed:
            self.events.append(f"removed {len(removed)} unpublished file(s) an interrupted job left")
        with self.stage("convert"):
            results = self.convert(dataset, list(surveyed.cases), list(surveyed.weights))
        ok = {r.case_id: r for r in results if r.ok}
        if not ok:
            raise JobError(f"{self.data}: no case could be converted ({len(self.failures)} failed); nothing published")
        self.inputs = append.record_inputs({k: r.meta for k, r in ok.items()})
        fingerprints = append.fingerprints(self.inputs, {c.case_id: c.label for c in dataset.cases})
        self.decision = append.decide(append.read_previous(self.out_dir), fingerprints, cfg.to_dict(),
                                      cfg.job.seed, rebuild=self.rebuild)
        if self.decision.why:
            self.events.append(self.decision.why)
        target = self.target_shape(ok)
        self.check_record_size(target, surveyed.channels)
        with self.stage("plan"):
            plan = self.plan(dataset, ok, target)
            spec = make_record_spec(
                self.config.preprocess, str(self.cache_dir), target, surveyed.channels,
                has_class=any(case.label is not None for case in dataset.cases if case.case_id in ok),
                metas=[ok[c].meta for c in sorted(ok)])
            append.check_spec(self.decision, append.spec_key(spec.content_key()))
        with self.stage("write"):
            try:
                shards = self.write(plan, spec, dataset, ok)
            except BaseException as err:
                if isinstance(err, KeyboardInterrupt):
                    backends.stop()  # no worker may rename a shard into place after the sweep
                publish.sweep(self.out_dir)  # what this job wrote and never published
                raise
        before = set(publish.manifest_files(self.out_dir))
        manifest = build_manifest(dataset=dataset, data_name=self.data.name, plan=plan, spec=spec,
                                  shards=shards, metas={k: r.meta for k, r in ok.items()},
                                  failures=self.failures, notes=self.notes, config=cfg, cases=fingerprints,
                                  record_spec=append.spec_key(spec.content_key()),
                                  carried_counts=append.carried_counts(plan, self.decision))
        if self.lease is not None:
            self.lease.check()  # a job overtaken after its lease expired publishes nothing
        storage.write_text(storage.join(self.out_dir, "plan.json"), plan_json(plan))
        write_manifest(self.out_dir, manifest)
        deleted, retired = publish.finish(self.out_dir, before, publish.manifest_files(self.out_dir))
        self.events.extend(publish.describe(self.out_dir, deleted, retired))
        publish.write_failures(self.out_dir, [(f.case, f.path, f.error) for f in self.failures])
        storage.write_json(storage.join(self.out_dir, "timings.json"), self.timings)
        for split, info in manifest.splits.items():
            if info.num_records == 0:
                self.warnings.append(f"split {split!r} holds 0 records: volprep.load(split={split!r}) "
                                     "yields nothing (too few cases for its fraction?)")
        return JobResult(
            out_dir=self.out_dir,
            exit_code=EXIT_PARTIAL if self.failures else EXIT_OK,
            manifest=manifest,
            failures=self.failures,
            cases_found=len(dataset.cases) + len(dataset.problems),
            cases_converted=len(ok),
            cases_reused=sum(1 for r in ok.values() if r.reused),
            timings=self.timings,
            notes=self.events,
            warnings=self.warnings,
        )

    # -- convert -------------------------------------------------------------------------
    def convert(self, dataset: Dataset, cases: list[Case], weights: list[int]) -> list[CaseResult]:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        CaseCache(self.cache_dir).sweep()  # half-written cases of a killed run (we hold the lock)
        old = self.out_dir / "cache.zarr" if isinstance(self.out_dir, Path) else None  # the first release's
        if old is not None and old.is_dir():  # cache: another format
            shutil.rmtree(old, ignore_errors=True)
            self.events.append("removed the cache of an earlier volprep (cache.zarr): every case converted afresh")
        declared = tuple(sorted(dataset.label_names)) if dataset.label_names else None
        # Fidelity (PSNR/SSIM of a lossy reduction) on a fixed, seed-independent sample.
        sample_keys = set(sorted(order_key(0, c.case_id) for c in cases)[:self.config.job.fidelity_sample])
        tasks = [(case, self.config, str(self.cache_dir), declared, order_key(0, case.case_id) in sample_keys)
                 for case in cases]
        results: list[CaseResult | None] = [None] * len(cases)
        recomputed = 0
        with Progress(len(tasks), "convert cases", quiet=self.quiet) as progress:
            for index, result in run_tasks(convert_case, tasks, workers=self.workers,
                                           scheduler=self.scheduler, weights=weights,
                                           memory_limit=self.memory_limit):
                case = cases[index]
                if isinstance(result, WorkerDied):
                    result = CaseResult(case.case_id, ok=False, path=str(case.images[0]), error=result.reason)
                if result.fatal:
                    raise JobError(f"{result.fatal}; nothing published")
                results[index] = result
                recomputed += bool(result.recomputed)
                if not result.ok:
                    self.fail(Failure(case.case_id, result.path, result.error), progress)
                progress.update(1, "reused" if result.reused else None)
        if recomputed:
            self.events.append(f"cache: {recomputed} damaged entr{'y' if recomputed == 1 else 'ies'} recomputed")
        return [r for r in results if r is not None]

    # -- target shape --------------------------------------------------------------------
    def check_record_size(self, target: tuple[int, ...], channels: int) -> None:
        workers = backends.worker_count(max(1, self.workers), backends.usable_cores())[0] if not self.scheduler else 1
        check_record_size(target, channels, workers, self.memory_limit)

    def target_shape(self, ok: dict[str, CaseResult]) -> tuple[int, int, int]:
        pre = self.config.preprocess
        if pre.target_shape is not None:
            return pre.target_shape
        previous = self.decision.previous  # an append keeps the published records' shape
        target = (previous.target_shape if previous is not None
                  else plan_target_shape([r.meta["shape"] for r in ok.values()], pre))
        what = "after reduction and foreground crop" if pre.crop_foreground else "after reduction"
        self.notes.append(f"target_shape planned from the dataset (median {what}): {list(target)}")
        return target

    # -- plan ----------------------------------------------------------------------------
    def plan(self, dataset: Dataset, ok: dict[str, CaseResult], target: tuple[int, int, int]) -> Plan:
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

        def sampler(job_seed: int, case_id: str, copy: int) -> dict[str, Any]:
            return sample(augment, (job_seed, case_id, copy), target).to_dict()

        subset = set(cfg.balance.subset) if cfg.balance.subset else None
        if cfg.balance.subset_column:
            subset = subset_from_column(dataset, cfg.balance.subset_column)
        user = {c.case_id: c.split for c in dataset.cases if c.split}  # a `split` column...
        if cfg.job.split_file:  # ... and the config's split file, which wins (the more explicit)
            user = {**user, **read_split_file(cfg.job.split_file, cfg.job.split_fold)}
        previous = previous_splits(storage.join(self.out_dir, "plan.json"))
        plan = make_plan(entries, dataset.class_names, cfg.job, cfg.balance, subset=subset,
                         augment_sampler=sampler, label_names=dataset.label_names,
                         user_splits=user, previous=previous)
        if self.decision.mode == "append":
            plan.explanation.extend(append.extend_copies(plan, self.decision, cfg.balance, subset, sampler))
        origin = plan.split_origin
        if origin.get("kept") or origin.get("user"):
            new = {s: sum(1 for c in ids if c not in previous and c not in user) for s, ids in plan.splits.items()}
            dealt = ", ".join(f"{s} {n}" for s, n in new.items())
            self.events.append(f"splits: {origin.get('kept', 0)} case(s) kept the split they had, "
                              f"{origin.get('user', 0)} from the user's split, {origin.get('new', 0)} new ({dealt})")
        return plan

    # -- write shards --------------------------------------------------------------------
    def write(self, plan: Plan, spec: RecordSpec, dataset: Dataset,
              ok: dict[str, CaseResult]) -> dict[str, list[ShardInfo]]:
        by_case = {c.case_id: c for c in dataset.cases}
        checksums, decision = self.inputs, self.decision
        keep = decision.previous is not None  # an append: the published shards stay
        generation = decision.previous.next_generation if decision.previous and decision.new else 0
        kept = {s: append.kept_shards(self.out_dir, decision, s) for s in self.config.job.splits}
        shard_bytes = int(self.config.job.shard_size_mb * 1e6)
        published = publish.manifest_files(self.out_dir)
        tasks: list[ShardTask] = []
        for split in self.config.job.splits:
            refs = []
            for cid in plan.splits.get(split, []):
                if keep and cid not in decision.new:
                    continue  # its records are in the published shards, kept as they are
                copies = plan.copies.get(cid, []) if split == "train" else []
                for copy in [{"copy": 0, "params": None}, *copies]:
                    params = Params.from_dict(copy["params"]).to_json() if copy.get("params") else ""
                    case = by_case[cid]
                    refs.append(RecordRef(cid, int(copy["copy"]), params, str(case.images[0]),
                                          label=case.label, counts_as=plan.case_class.get(cid)))
            try:
                ordered = order_records(refs, self.config.job.seed)
            except ValueError as err:
                raise JobError(f"split {split}: {err}") from None
            tag = split_tag(spec, split, ordered, checksums, generation)
            count = shard_count(len(ordered), record_bytes_estimate(spec), shard_bytes)
            for i, (start, end) in enumerate(shard_bounds(len(ordered), count)):
                tasks.append(ShardTask(str(self.out_dir), split, i, count, tuple(ordered[start:end]), spec, tag,
                                       generation))
        by_split: dict[str, list[ShardInfo | None]] = {
            s: [None] * sum(1 for t in tasks if t.split == s) for s in self.config.job.splits
        }
        todo: list[ShardTask] = []
        for task in tasks:
            same = publish.already_written(self.out_dir, published.get(task.file_name), task)
            if same is not None:
                by_split[task.split][task.index] = same
            else:
                todo.append(task)
        publish.begin(self.out_dir, [t.file_name for t in todo])
        with Progress(len(todo), "write shards", quiet=self.quiet) as progress:
            for index, info in run_tasks(write_shard, [(t,) for t in todo], workers=self.workers,
                                         scheduler=self.scheduler):
                task = todo[index]
                if isinstance(info, WorkerDied):
                    raise JobError(f"{task.file_name}: {info.reason}; the previous manifest is unchanged")
                if isinstance(info, ShardFailed):
                    raise JobError(f"{info.file}: {info.reason}; the previous manifest is unchanged")
                by_split[task.split][task.index] = info
                progress.update(1)
        if len(todo) < len(tasks):
            self.events.append(f"{len(tasks) - len(todo)} shard(s) already held these exact records: not rewritten")
        if generation:
            self.events.append(f"appended generation {generation}: {len(decision.new)} new case(s) in {len(todo)} "
                               f"new shard(s); the {sum(map(len, kept.values()))} published shard(s) kept as they are")
        return {s: [*kept[s], *(i for i in infos if i is not None)] for s, infos in by_split.items()}


__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_PARTIAL", "EXIT_USAGE", "Failure", "InputError", "JobResult", "run_job"]
