"""The header survey: every case's headers read and checked before any voxel is.

Reads each case's image and mask headers (``volprep.io.read_header``), so a bad header
fails its case before any worker starts, and estimates the memory each case needs to
convert (the array as read, float32 working copies, and the reduced grid, which a
resampling to a fine spacing can make far larger than the scan). A case whose estimate
alone exceeds ``--memory-limit``, or the memory the machine has, fails with a one-line
reason; the job's channel count is the most common one, and a case with another count
fails too. Returns what the convert stage needs: the surviving cases and their weights.
Before it, :func:`disk_bytes` sizes the dataset on disk (small ones are converted without
worker processes: :func:`volprep.backends.local_workers`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
from collections.abc import Callable, Sequence

import psutil

from volprep import io
from volprep.cases import Case, Dataset
from volprep.config import PipelineConfig
from volprep.errors import InputError, UsageError
from volprep.io.base import human_bytes
from volprep.io.formats import companions
from volprep.preprocess import reduced_shape

Fail = Callable[[str, str, str], None]
"""``fail(case_id, path, problem)``: reports one failed case."""


@dataclasses.dataclass(frozen=True)
class Survey:
    """The cases that passed the header checks, their memory estimates and channel count."""

    cases: tuple[Case, ...]
    weights: tuple[int, ...]
    channels: int


def survey(dataset: Dataset, config: PipelineConfig, fail: Fail, *, memory_limit: int | None,
           available: int) -> Survey:
    """Reads and checks every case's headers; ``fail`` is called for each case refused.

    Args:
        dataset: the discovered dataset.
        config: the job's config.
        fail: reports a failed case.
        memory_limit: ``--memory-limit`` in bytes, or None.
        available: bytes of memory the machine has for the job (a case needing more fails).

    Returns:
        The surviving cases (possibly none), in dataset order.
    """
    kept: list[tuple[Case, int, int]] = []
    for case in dataset.cases:
        try:
            headers = [io.read_header(p, config.read) for p in case.images]
            mask_headers = [io.read_header(case.mask, config.read)] if case.mask is not None else []
        except InputError as err:
            fail(case.case_id, err.path, err.problem)
            continue
        first = headers[0]
        n_chan = first.shape[3] if len(first.shape) == 4 else len(headers)
        reduced = reduced_shape(tuple(first.shape[:3]), first.affine, config.preprocess)
        weight = sum(io.estimate_working_bytes(h) for h in [*headers, *mask_headers])
        weight += 2 * math.prod(reduced) * n_chan * 4  # the reduced grid, and its copy
        if memory_limit is not None and weight > memory_limit:
            fail(case.case_id, str(first.path), f"needs about {human_bytes(weight)} to convert, "
                 f"more than --memory-limit {human_bytes(memory_limit)}")
            continue
        if weight > available:
            grid = "x".join(str(n) for n in reduced)
            fail(case.case_id, str(first.path), f"needs about {human_bytes(weight)} to convert (reduced grid "
                 f"{grid}), more than the {human_bytes(available)} of memory this machine has")
            continue
        kept.append((case, weight, n_chan))
    if not kept:
        return Survey((), (), 1)
    channels = statistics.mode(n for _, _, n in kept)
    cases, weights = [], []
    for case, weight, n_chan in kept:
        if n_chan != channels:
            fail(case.case_id, str(case.images[0]), f"has {n_chan} channel(s), the dataset has {channels}")
            continue
        cases.append(case)
        weights.append(weight)
    return Survey(tuple(cases), tuple(weights), channels)


# Peak memory of writing one record, in float32 copies of it (window, normalised, copy).
RECORD_WORKING_COPIES = 4


def available_memory() -> int:
    """Bytes of memory the job may count on: what the machine has available now."""
    return int(psutil.virtual_memory().available)


def check_record_size(target: tuple[int, ...], channels: int, workers: int, memory_limit: int | None) -> None:
    """Refuses, before any work, a target shape whose records cannot be held in memory.

    Raises:
        UsageError: ``workers`` records of ``target`` (their working copies) need more than
            ``memory_limit`` or the memory available.
    """
    voxels = math.prod(int(t) for t in target)
    need = voxels * channels * 4 * RECORD_WORKING_COPIES * max(1, workers)
    limit = min(memory_limit or available_memory(), available_memory())
    if need > limit:
        raise UsageError(
            f"[preprocess] target_shape {list(target)}: writing one record needs about "
            f"{human_bytes(need // max(1, workers))} per worker ({human_bytes(need)} for "
            f"{workers}), more than the {human_bytes(limit)} of memory available")


def disk_bytes(cases: Sequence[Case], stop_at: int) -> int:
    """Bytes on disk of the cases' image and mask files, counted until they reach ``stop_at``
    (a large dataset costs a few stats): a folder (a DICOM series) counts the files in it, a
    volume its companions found beside it by name (:func:`volprep.io.formats.companions`:
    an Analyze ``.hdr`` its ``.img``); a path that cannot be read counts as ``stop_at``."""
    rules = companions()
    total = 0
    for path in (p for case in cases for p in (*case.images, case.mask) if p is not None):
        try:
            if path.is_dir():
                total += sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file())
                continue
            total += path.stat().st_size
            name = path.name.lower()
            for rule in rules:
                if name.endswith(rule.volume) and not rule.in_header:
                    beside = path.with_name(path.name[:len(path.name) - len(rule.volume)] + rule.suffix)
                    if beside.is_file():
                        total += beside.stat().st_size
        except OSError:
            return stop_at
        if total >= stop_at:
            break
    return total
