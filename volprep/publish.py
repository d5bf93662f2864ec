"""Publishing a generation of shards so that OUT never shows a manifest and files that disagree.

The invariant, at every instant (a job killed at any point included): ``manifest.json``
and the files it names agree byte for byte. How:

1. New shards are written under names the published manifest does not use, unless the
   bytes would be the same: a shard's name carries a tag hashed from everything that
   decides its content (:func:`volprep.shards.split_tag`), so a rerun that would write
   other bytes writes other names, and one that would write the same bytes finds them in
   place (checked against the manifest's size and sha256) and skips them.
2. Before writing, the names about to be written are recorded in a journal
   (``OUT/.volprep-pending.json``); a rerun after a kill deletes those a manifest does
   not name. That is how volprep knows a file is its own.
3. The manifest is replaced atomically (temporary name, fsync, rename; on an object store
   one upload of the whole object: :mod:`volprep.storage`) only after every shard is in
   place.
4. Then the shards of the manifest before are *retired*, not deleted: a loader that
   opened the old manifest can finish its epoch. They are listed in
   ``OUT/.volprep-retired.json`` and deleted by the next job that publishes (so the files
   of one earlier generation are kept until the next job finishes).

Nothing else is ever deleted: a ``*.tfrecord`` that no manifest, journal or retired list
of volprep's names (say, the user's ``my_other_dataset.tfrecord``) is left alone and
reported (:func:`foreign_files`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from volprep import storage
from volprep.shards import SHARD_PATTERN, ShardInfo, ShardTask
from volprep.storage import Location, join

PENDING = ".volprep-pending.json"
RETIRED = ".volprep-retired.json"
MANIFEST = "manifest.json"


def _read_names(path: Location, key: str) -> set[str]:
    try:
        data = json.loads(storage.read_text(path))
        return {str(n) for n in data[key]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def manifest_files(out_dir: Location) -> dict[str, dict[str, Any]]:
    """``{file name: its manifest entry}`` of the published manifest, any format version.

    Read leniently (a damaged or older manifest names what it names), since it only
    decides which files are volprep's; ``{}`` without a readable manifest.
    """
    try:
        manifest = json.loads(storage.read_text(join(out_dir, MANIFEST)))
        return {str(s["file"]): dict(s) for info in manifest["splits"].values() for s in info["shards"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _ours(name: str) -> bool:
    """Only names of volprep's own pattern are ever deleted (old unversioned ones included)."""
    return bool(SHARD_PATTERN.match(name)) or _OLD_PATTERN(name)


def _OLD_PATTERN(name: str) -> bool:  # noqa: N802 - reads like the regex it wraps
    """``<split>-<index:05d>-of-<count:05d>.tfrecord`` of volprep before the tag (format 1)."""
    parts = name.removesuffix(".tfrecord").rsplit("-", 3)
    return (name.endswith(".tfrecord") and len(parts) == 4 and parts[2] == "of"
            and parts[1].isdigit() and parts[3].isdigit())


def sweep(out_dir: Location) -> list[str]:
    """Removes what a killed job left: temporary files and unpublished shards it recorded.

    Call it holding the output lock, before planning a new generation.

    Returns:
        The names removed.
    """
    published = set(manifest_files(out_dir))
    removed: list[str] = []
    for name in sorted(_read_names(join(out_dir, PENDING), "pending") - published):
        if _ours(name) and storage.remove(join(out_dir, name)):
            removed.append(name)
    if isinstance(out_dir, Path):  # an object store has no temporary names (see volprep.storage)
        for path in sorted(out_dir.glob(".*.tmp-*")):
            if storage.remove(path):
                removed.append(path.name)
    storage.remove(join(out_dir, PENDING))
    return removed


def begin(out_dir: Location, names: Iterable[str]) -> None:
    """Records the shard names a job is about to write (before writing any)."""
    storage.write_json(join(out_dir, PENDING), {"pending": sorted(set(names))})


def finish(out_dir: Location, before: Iterable[str], now: Iterable[str]) -> tuple[list[str], list[str]]:
    """After the new manifest is published: retire the old generation, delete the one before.

    Args:
        out_dir: the output folder.
        before: the files the previous manifest named.
        now: the files the new manifest names.

    Returns:
        ``(deleted, retired)``: files of the generation before last, now deleted, and the
        previous manifest's files no longer named, kept until the next job.
    """
    now_set = set(now)
    old_retired = _read_names(join(out_dir, RETIRED), "retired")
    deleted = [n for n in sorted(old_retired - now_set) if _ours(n) and storage.remove(join(out_dir, n))]
    retired = sorted((set(before) | old_retired) - now_set - set(deleted))
    present = set(storage.list_names(out_dir, "*.tfrecord"))
    retired = [n for n in retired if n in present]
    if retired:
        storage.write_json(join(out_dir, RETIRED), {"retired": retired})
    else:
        storage.remove(join(out_dir, RETIRED))
    storage.remove(join(out_dir, PENDING))
    return deleted, retired


def foreign_files(out_dir: Location) -> list[str]:
    """``*.tfrecord`` files in OUT that volprep did not write (left alone, reported)."""
    known = set(manifest_files(out_dir)) | _read_names(join(out_dir, RETIRED), "retired")
    known |= _read_names(join(out_dir, PENDING), "pending")
    return [n for n in storage.list_names(out_dir, "*.tfrecord") if n not in known]


def already_written(out_dir: Location, entry: dict[str, Any] | None, task: ShardTask) -> ShardInfo | None:
    """The published shard of the same name, if its file still holds exactly its bytes."""
    if entry is None or entry.get("num_records") != len(task.records):
        return None
    path = join(out_dir, task.file_name)
    try:
        if storage.size(path) != entry["num_bytes"]:
            return None
        if storage.sha256(path) != entry["sha256"]:
            return None
    except (OSError, KeyError):
        return None
    counts: dict[int, int] = {}
    for ref in task.records:
        if ref.counts_as is not None:
            counts[ref.counts_as] = counts.get(ref.counts_as, 0) + 1
    return ShardInfo(task.file_name, len(task.records), int(entry["num_bytes"]), str(entry["sha256"]), counts)


def describe(out_dir: Location, deleted: list[str], retired: list[str]) -> list[str]:
    """What :func:`finish` did and what OUT holds beside volprep's files, for the summary."""
    lines = []
    if deleted:
        lines.append(f"removed {len(deleted)} shard file(s) retired by the job before")
    if retired:
        lines.append(f"kept {len(retired)} shard file(s) of the previous manifest until the next job "
                     "(a loader still reading them can finish its epoch)")
    foreign = foreign_files(out_dir)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        lines.append(f"left alone: {len(foreign)} .tfrecord file(s) volprep did not write ({shown})")
    return lines


def write_failures(out_dir: Location, failures: Iterable[tuple[str, str, str]]) -> None:
    """Writes ``OUT/failures.csv``: ``case,path,error`` rows, sorted."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case", "path", "error"])
    for row in sorted(failures, key=lambda f: (f[0], f[1])):
        writer.writerow(list(row))
    storage.write_text(join(out_dir, "failures.csv"), buf.getvalue())
