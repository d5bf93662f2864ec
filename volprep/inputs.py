"""Inputs at an object-store URL: a dataset (DATA) on S3/GCS mirrored into a local folder.

Discovery and every reader work on local files (stat, FIFO checks, companions found by
name, DICOM folders sniffed by their first bytes, gzip decoded by isal from a file), so a
dataset at a URL is first *staged*: :func:`stage` lists the dataset's folder through
:mod:`volprep.storage` (fsspec, the ``volprep[cloud]`` extra) and copies each object to
the same relative name under a local staging folder (beside the conversion cache, kept
between runs), then the job runs on that folder unchanged. An object is downloaded again
only when its version token (size plus ETag, md5 or generation) changed since the last
run; an object gone from the store is deleted from the mirror. Each downloaded file gets
the object's modification time, moved on by at least a microsecond when its token
changed, so the cache's fingerprint of a case's files (size and mtime,
``convert.case_inputs``) changes whenever an object changes and the case is converted
again. Paths in messages are translated back to the URL (:meth:`Staged.url_of`).

Limits: the staging folder lives on the machine that runs the job, so a Dask cluster's
workers need it on a shared filesystem (as they need ``--cache``); the whole dataset is
copied once, not streamed case by case.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from volprep import storage
from volprep.errors import DatasetError, JobError, UsageError

INDEX = ".volprep-staged.json"  # {relative name: version token} of the objects mirrored
_TMP = ".volprep-download-"


@dataclass(frozen=True)
class Staged:
    """A dataset URL and the local path that mirrors it."""

    url: str  # the dataset's URL (folder or CSV), as given without a trailing /
    local: Path  # the same dataset in the staging folder
    downloaded: int  # objects copied this run
    removed: int  # files deleted from the mirror because their object is gone

    def url_of(self, text: str) -> str:
        """``text`` with the staging folder's path replaced by the URL."""
        return text.replace(str(self.local), self.url)


def url_of(data: str | os.PathLike[str]) -> str | None:
    """DATA as a URL without a trailing ``/``, or None for a local path."""
    return str(data).rstrip("/") if storage.is_url(data) else None


def staging_dir(cache_dir: Path, url: str) -> Path:
    """Where the mirror of ``url`` lives: ``CACHE/inputs/<16 hex of sha256(URL)>``."""
    return cache_dir / "inputs" / hashlib.sha256(url.encode()).hexdigest()[:16]


def _token(info: dict[str, Any]) -> str:
    """The object's version: size plus the first version key the store gives."""
    for key in ("ETag", "etag", "md5Hash", "generation", "LastModified", "updated", "mtime", "created"):
        if info.get(key) is not None:
            return f"{info.get('size')}:{key}={info[key]}"
    return f"{info.get('size')}"


def _mtime_ns(info: dict[str, Any]) -> int | None:
    """The object's modification time in ns since the epoch, if the store gives one."""
    value = info.get("LastModified") or info.get("updated") or info.get("mtime")
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return int(value.timestamp() * 1_000_000) * 1000
    if isinstance(value, int | float):
        return int(value * 1e9)
    return None


def _listing(url: str) -> tuple[str, dict[str, dict[str, Any]], str]:
    """``(folder URL, {relative name: info}, name of the dataset inside it)``.

    A folder URL lists its whole tree; a CSV/TSV URL lists the folder it sits in (its
    rows name volumes relative to it) and names the table.
    """
    fs, path = storage.filesystem(url)
    with storage.store_errors(url):
        try:
            info = fs.info(path)
        except FileNotFoundError:
            info = None
        if info is None or info.get("type") not in ("file", "directory"):
            raise UsageError(f"{url}: no such dataset (no object or folder there, or no bucket "
                             f"{path.split('/', 1)[0]!r})")
        folder, name = (path, "") if info["type"] == "directory" else path.rsplit("/", 1)
        found = fs.find(folder, detail=True)
    folder_url = url if not name else url.rsplit("/", 1)[0]
    objects = {}
    for full, entry in found.items():
        rel = str(full)[len(folder):].lstrip("/")
        if rel and not rel.endswith("/") and entry.get("type", "file") == "file":
            objects[rel] = entry
    if not objects:
        raise UsageError(f"{url}: no such dataset (the folder holds no objects)")
    return folder_url, objects, name


def _download(fs: Any, url: str, remote: list[str], local: list[Path]) -> None:
    """Copies objects to local files, several at a time where the filesystem is async
    (s3fs, gcsfs: one ``get`` call with lists of paths)."""
    if not remote:
        return
    with storage.store_errors(url):
        try:
            fs.get(remote, [str(p) for p in local])
        except FileNotFoundError as err:
            raise UsageError(f"{url}: an object went away while it was copied ({err}); run the job again") from None


def stage(url: str, staging: Path) -> Staged:
    """Mirrors the dataset at ``url`` into ``staging``; returns where it lies locally.

    Raises:
        UsageError: one line naming the URL (no such object or bucket, no credentials,
            no s3fs/gcsfs: ``pip install 'volprep[cloud]'``, a name that climbs out).
    """
    folder_url, objects, name = _listing(url)
    fs, folder = storage.filesystem(folder_url)
    root = staging / storage.basename(folder_url)
    root.mkdir(parents=True, exist_ok=True)
    for leftover in root.rglob(f"{_TMP}*"):  # downloads a killed job left half-written
        leftover.unlink(missing_ok=True)
    index_path = staging / INDEX
    try:
        index: dict[str, str] = json.loads(index_path.read_text()) if index_path.exists() else {}
    except (OSError, ValueError):
        index = {}  # a damaged index: everything is downloaded again
    todo = []  # (relative name, info, local file, its temporary name)
    for rel, info in sorted(objects.items()):
        target = Path(os.path.normpath(root / rel))
        if root not in target.parents:
            raise UsageError(f"{folder_url}/{rel}: an object name that climbs out of the dataset")
        if index.get(rel) == _token(info) and target.is_file() and target.stat().st_size == info.get("size"):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        todo.append((rel, info, target, target.with_name(f"{_TMP}{os.getpid()}-{target.name}")))
    try:
        _download(fs, folder_url, [f"{folder}/{rel}" for rel, *_ in todo], [tmp for *_, tmp in todo])
        for rel, info, target, tmp in todo:
            previous = target.stat().st_mtime_ns if target.is_file() else None
            mtime = _mtime_ns(info) or previous or tmp.stat().st_mtime_ns
            if previous is not None and mtime <= previous:
                mtime = previous + 1000  # a changed object must look changed to the cache
            os.utime(tmp, ns=(mtime, mtime))
            os.replace(tmp, target)
            index[rel] = _token(info)
    finally:
        for *_, tmp in todo:
            tmp.unlink(missing_ok=True)
    downloaded, removed = len(todo), 0
    for rel in sorted(set(index) - set(objects)):
        with contextlib.suppress(FileNotFoundError):
            (root / rel).unlink()
            removed += 1
        del index[rel]
    storage.write_json(index_path, index)
    return Staged(url=url, local=root / name if name else root, downloaded=downloaded, removed=removed)


@contextlib.contextmanager
def messages_name_url(staged: Staged | None) -> Iterator[None]:
    """Re-raises a job's one-line errors with the staging folder's path replaced by the URL."""
    if staged is None:
        yield
        return
    try:
        yield
    except (DatasetError, JobError, UsageError) as err:
        raise type(err)(staged.url_of(str(err))) from None
