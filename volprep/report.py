"""The visual report of a shard folder: ``OUT/report/`` (PNG plots, summary, index.html).

:func:`write_report` reads what a job left on disk (``manifest.json``, ``plan.json``,
``failures.csv``, a few records of the shards) and writes ``class_counts.png``
(:mod:`volprep.report_figures`), ``montage.png`` (:mod:`volprep.report_montage`, records
and planes chosen by :mod:`volprep.report_select`), ``histograms.png``, ``summary.txt`` and
a self-contained ``index.html`` (:mod:`volprep.report_html`). This module owns the reading:
records are read with :mod:`volprep.records` (no TensorFlow) and decoded with the
manifest's record schema (:class:`volprep.schema.Schema`, the one description of a record),
only the ones a plot needs, and only three slices of each are kept, so memory does not grow
with the dataset or the volume size. Which records are shown is a pure function of the manifest and plan. Data it
cannot read is listed in the report as a problem (one warning line is logged); any other
error is raised to the caller, never swallowed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from volprep import storage
from volprep.errors import DataError
from volprep.manifest import Manifest, SplitEntry, read_manifest
from volprep.records import decode_example, iter_records
from volprep.report_classes import read_plan
from volprep.report_figures import plot_class_counts, plot_histograms
from volprep.report_html import REPORT_DIR, page_html
from volprep.report_montage import plot_montage
from volprep.report_select import MontageRow, Sample, choose_montage, take_slices, voxel_sample
from volprep.schema import Schema
from volprep.storage import Location, join, write_text
from volprep.summary import inspect_text, summary_text
from volprep.worker_setup import die_with_parent

if TYPE_CHECKING:
    from volprep.job_result import JobResult

log = logging.getLogger(__name__)

FIGURES = ("class_counts.png", "montage.png", "histograms.png")


# ----------------------------------------------------------------------------- decoding
# A record is decoded with the manifest's schema; what does not fit it is a ValueError
# naming the feature, which the report lists as a problem, never a crash.


def _parse(record: bytes) -> dict[str, Any]:
    """A framed record's ``tf.train.Example``.

    Raises:
        ValueError: the bytes are not an Example (``records.decode_example`` meets
            malformed protobuf as ValueError, IndexError or a failed assert).
    """
    try:
        return decode_example(record)
    except (ValueError, IndexError, TypeError, AssertionError) as err:
        raise ValueError(f"not a tf.train.Example ({type(err).__name__}: {err or 'malformed'})") from None


def _decode(example: Mapping[str, Any], features: Schema, name: str) -> Any:
    """One feature of a parsed record, decoded and checked by the schema (:meth:`Feature.decode`).

    Raises:
        ValueError: the schema or the record lacks the feature, or its value does not fit
            the schema (the message names the feature).
    """
    if name not in features:
        raise ValueError(f"the manifest's features have no {name!r}")
    if name not in example:
        raise ValueError(f"record has no {name!r} feature")
    try:
        return features[name].decode(example[name])
    except (TypeError, IndexError, KeyError) as err:
        # numpy refusing the manifest's dtype, a wavelet layout lacking a key, kept indices
        # past the band: still data this report cannot read, so a problem, not a crash
        raise ValueError(f"feature {name!r}: {type(err).__name__}: {err}") from None


# ----------------------------------------------------------------------------- reading


@dataclasses.dataclass
class ReadBack:
    """What :func:`read_samples` collected."""

    samples: dict[tuple[str, int], Sample]
    voxels: dict[tuple[str, bool], list[np.ndarray]]  # (split, augmented) -> [C, n] arrays
    records_read: int
    problems: list[str] = dataclasses.field(default_factory=list)  # what could not be read, one line each


def _spacing(example: Mapping[str, Any], features: Schema) -> tuple[float, float, float] | None:
    """The voxel size (mm along i, j, k) of a record's grid: the column norms of its ``affine``
    (``None`` when the schema has no ``affine``).

    Raises:
        ValueError: the record's affine does not fit the schema's float64 [4, 4].
    """
    if "affine" not in features:
        return None
    affine = _decode(example, features, "affine")
    i, j, k = (float(v) for v in np.linalg.norm(np.asarray(affine, np.float64)[:3, :3], axis=0))
    return (i, j, k)


def _iter_split(out_dir: Location, split: str, info: SplitEntry,
                problems: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The split's records, parsed, each with where it is (``"FILE: record N"``); what cannot
    be read goes to ``problems`` (and is skipped)."""
    for shard in info.shards:
        path = join(out_dir, shard.file)
        if not (path.is_file() if isinstance(path, Path) else storage.exists(path)):
            problems.append(f"{shard.file} ({split}): missing; its records are not in the plots")
            continue
        try:
            for index, record in enumerate(iter_records(path)):
                where = f"{shard.file}: record {index}"
                try:
                    example = _parse(record)
                except ValueError as err:
                    problems.append(f"{where}: {err}")
                    continue
                yield where, example
        except DataError as err:
            problems.append(f"{err}; the rest of this shard was not read")


def read_samples(out_dir: Location, manifest: Manifest, rows: Sequence[MontageRow], *,
                 hist_records: int = 8, fallback_per_class: int = 2) -> ReadBack:
    """Reads the records the plots need, and no more.

    Each split is read shard by shard until every montage record of that split has been
    seen and ``hist_records`` originals (and, for train, as many augmented copies) have
    been sampled for the histograms. Without chosen ``rows`` (no plan), the first
    ``fallback_per_class`` originals of each class met in the train split are shown (of the
    train split as a whole where the records' labels are not the manifest's classes). A
    record the manifest's schema cannot decode is listed in ``problems``.

    Args:
        out_dir: the shard folder.
        manifest: its manifest.
        rows: the montage rows (:func:`choose_montage`).
        hist_records: records sampled per split (and kind) for the histograms.
        fallback_per_class: montage originals per class when ``rows`` is empty.

    Returns:
        The samples by ``(case_id, copy)``, the voxel samples and the records read.
    """
    features = manifest.features
    by_label = _labels_are_classes(manifest)
    wanted: dict[tuple[str, int], MontageRow] = {}
    for row in rows:
        wanted[(row.case_id, 0)] = row
        for k in row.copies:
            wanted[(row.case_id, k)] = row
    out = ReadBack({}, {}, 0)
    fallback: dict[str | None, int] = {}
    for split, info in manifest.splits.items():
        todo = {key for key, row in wanted.items() if row.split == split}
        kinds = (False, True) if info.num_records > info.num_originals else (False,)
        pick_fallback = not rows and split == "train"

        for where, example in _iter_split(out_dir, split, info, out.problems):
            out.records_read += 1
            try:
                case_id, copy = str(_decode(example, features, "case_id")), int(_decode(example, features, "copy"))
                cls = _class_name(example, manifest) if by_label and pick_fallback and copy == 0 else None
            except ValueError as err:
                out.problems.append(f"{where}: {err}")
                continue
            key = (case_id, copy)
            take_hist = len(out.voxels.get((split, copy > 0), [])) < hist_records
            pick = wanted.get(key) if key in todo else None
            if pick is None and pick_fallback and copy == 0 and fallback.get(cls, 0) < fallback_per_class:
                fallback[cls] = fallback.get(cls, 0) + 1
                pick = MontageRow(case_id, split, cls, ())
            if pick is not None or take_hist:
                _collect(example, key, split, pick, take_hist, features, out)
                todo.discard(key)
            if _split_done(out, split, kinds, hist_records, todo,
                           fallback if pick_fallback else None, manifest.classes.names if by_label else (),
                           fallback_per_class):
                break
    return out


def _split_done(out: ReadBack, split: str, kinds: Sequence[bool], hist_records: int,
                todo: set[tuple[str, int]], fallback: Mapping[str | None, int] | None,
                names: Sequence[str], per_class: int) -> bool:
    """Whether a split has given every record the plots want from it."""
    if todo or any(len(out.voxels.get((split, k), [])) < hist_records for k in kinds):
        return False
    if fallback is not None:  # no plan: stop once every class has its originals
        classes: list[str | None] = [*names] if names else [None]
        return bool(fallback) and all(fallback.get(n, 0) >= per_class for n in classes)
    return True


def _collect(example: Mapping[str, Any], key: tuple[str, int], split: str, row: MontageRow | None,
             take_hist: bool, features: Schema, out: ReadBack) -> None:
    """Decodes one record and keeps what the plots need of it (slices, a voxel sample)."""
    case_id, copy = key
    mask_name = features.label_volume
    try:
        image = np.asarray(_decode(example, features, "image"), np.float32)
        mask = _decode(example, features, mask_name) if mask_name else None
        spacing = _spacing(example, features) if row is not None else None
        augment = str(_decode(example, features, "augment")) if row is not None and "augment" in features else ""
    except ValueError as err:
        out.problems.append(f"{case_id} copy {copy} ({split}): {err}")
        if row is not None:
            out.samples[key] = Sample(case_id, copy, split, row.class_name, "", None, str(err))
        return
    if take_hist:
        out.voxels.setdefault((split, copy > 0), []).append(voxel_sample(image))
    if row is not None:
        out.samples[key] = Sample(case_id, copy, split, row.class_name, augment, take_slices(image, mask),
                                  spacing=spacing)


def _labels_are_classes(manifest: Manifest) -> bool:
    """Whether a record's ``label`` is one of the manifest's class ids: the records hold a class
    label (not a label volume) and the classes are by label (under ``class_by = "rarest"``
    they are mask values, which a record's class label is not)."""
    return ("label" in manifest.features and manifest.features.label_volume != "label"
            and manifest.classes.class_by == "label")


def _class_name(example: Mapping[str, Any], manifest: Manifest) -> str:
    """The class name of a record's ``label``, through the manifest's class ids (never a list
    position; only where :func:`_labels_are_classes`).

    Raises:
        ValueError: the record's label does not decode, or is not one of the manifest's
            class ids.
    """
    class_id = int(_decode(example, manifest.features, "label"))
    if class_id not in manifest.classes.ids:
        raise ValueError(f"label {class_id} is not one of the manifest's class ids")
    return manifest.classes.name_of(class_id)


# ----------------------------------------------------------------------------- entry point


def write_report(out_dir: Location | str, result: JobResult | None = None, *, per_class: int = 2,
                 copies: int = 2, hist_records: int = 8, fork: bool = False) -> Location:
    """Writes ``OUT/report/``: class_counts.png, montage.png, histograms.png, summary.txt, index.html.

    Args:
        out_dir: a finished shard folder (its ``manifest.json`` is read unless ``result``
            carries it).
        result: the job's result, for the end-of-job summary (wall times, cases reused);
            ``None`` regenerates the report from the folder alone (``volprep report``),
            with the ``volprep inspect`` text as the summary.
        per_class: originals per class in the montage.
        copies: augmented copies shown beside each original.
        hist_records: records per split (and per kind: originals, copies) sampled for the
            histograms.
        fork: draw ``montage.png`` in a forked child process while this one draws the rest
            (about half the wall time on two cores); only for a process without threads,
            as the report's own process is (:mod:`volprep.report_process`).

    For an object-store OUT the files are drawn in a local temporary folder, then uploaded
    to ``OUT/report/``, one object each.

    Data the report cannot read (a missing shard, a record that fails its CRC or does not
    decode, an unreadable ``plan.json``) does not stop it: the figures are drawn without it,
    each problem is listed in ``index.html`` and one warning line is logged. Anything else
    that goes wrong (a plot that fails) is raised, never swallowed; the runner turns it
    into one warning line without failing the job.

    Returns:
        The path of ``index.html``.

    Raises:
        UsageError: the folder has no readable manifest.
    """
    out_dir = storage.location(out_dir)
    manifest = result.manifest if result is not None else read_manifest(out_dir)
    problems: list[str] = []
    try:
        plan = read_plan(out_dir)
    except ValueError as err:
        problems.append(f"{err}; the figures were drawn without the plan")
        plan = None
    with _drawing_folder(out_dir) as report_dir:
        _draw(out_dir, report_dir, manifest, plan, problems, result, per_class, copies, hist_records, fork)
    index = join(out_dir, REPORT_DIR, "index.html")
    log.info("report: %s", index)
    return index


@contextlib.contextmanager
def _drawing_folder(out_dir: Location) -> Iterator[Path]:
    """``OUT/report`` itself for a local OUT; a temporary folder uploaded after, for a URL."""
    if isinstance(out_dir, Path):
        (out_dir / REPORT_DIR).mkdir(parents=True, exist_ok=True)
        yield out_dir / REPORT_DIR
        return
    with tempfile.TemporaryDirectory(prefix="volprep-report-") as tmp:
        yield Path(tmp)
        storage.upload_tree(Path(tmp), join(out_dir, REPORT_DIR))


def _draw(out_dir: Location, report_dir: Path, manifest: Manifest, plan: dict[str, Any] | None,
          problems: list[str], result: JobResult | None, per_class: int, copies: int, hist_records: int,
          fork: bool) -> None:
    rows = choose_montage(manifest, plan, per_class=per_class, copies=copies)
    back = read_samples(out_dir, manifest, rows, hist_records=hist_records, fallback_per_class=per_class)
    problems += back.problems
    if not rows:  # no plan: show what the fallback picked, originals only
        rows = [MontageRow(cid, s.split, s.class_name, ()) for (cid, k), s in sorted(back.samples.items()) if k == 0]
    label_names = dict(manifest.dataset.label_names)
    method = str(manifest.normalization.get("method", "?"))

    montage = functools.partial(plot_montage, rows, back.samples, label_names, report_dir / "montage.png")
    child = _Forked(montage, "montage.png") if fork else None
    try:
        if child is None:
            montage()
        plot_class_counts(manifest, plan, report_dir / "class_counts.png")
        plot_histograms(back.voxels, method, report_dir / "histograms.png")
    finally:
        if child is not None:
            child.join()

    if result is not None:
        summary = summary_text(result, color=False, report=True, plan=plan or {})
    else:
        summary = inspect_text(manifest, str(out_dir))
    write_text(report_dir / "summary.txt", summary + "\n")
    index = report_dir / "index.html"
    write_text(index, page_html(out_dir, manifest, plan, summary, FIGURES, back.records_read, problems,
                                report_dir=report_dir))
    if problems:
        log.warning("report: %d problem(s) reading %s, listed in %s; first: %s",
                    len(problems), out_dir, join(out_dir, REPORT_DIR, "index.html"), problems[0])
    log.info("report: %d records read", back.records_read)


class _Forked:
    """``fn()`` run in a forked child process while this one goes on; :meth:`join` waits for
    it and raises what it raised, as ``RuntimeError("WHAT: TypeName: message")``."""

    def __init__(self, fn: Callable[[], None], what: str) -> None:
        self.what = what
        read, write = os.pipe()
        parent = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns, never runs the parent's cleanup
            status = 1
            try:
                os.close(read)
                die_with_parent(parent)
                fn()
                status = 0
            except BaseException as err:  # noqa: BLE001 - sent to the parent, which raises it
                os.write(write, describe_failure(err).encode())
            finally:
                os._exit(status)
        os.close(write)
        self.read = read

    def join(self) -> None:
        with os.fdopen(self.read, "rb") as pipe:
            said = pipe.read().decode(errors="replace")
        _, status = os.waitpid(self.pid, 0)
        if status != 0:
            raise RuntimeError(f"{self.what}: {said or f'its process ended (wait status {status})'}")


def write_report_warned(result: JobResult) -> None:
    """Writes OUT/report/; a failure is one warning line (and in ``result.warnings``), never
    silent, and never changes the job's result."""
    start = time.perf_counter()
    try:
        write_report(result.out_dir, result)
    except Exception as err:  # noqa: BLE001 - a plot must never fail a finished job
        line = f"report not written: {describe_failure(err)}"
        result.warnings.append(line)
        print(f"volprep: warning: {line}", file=sys.stderr, flush=True)
    result.timings["report"] = round(time.perf_counter() - start, 3)


def describe_failure(err: BaseException) -> str:
    """What the warning line says of a report that failed: ``TypeName: first line``."""
    return f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
