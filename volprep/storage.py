"""Places, not paths: where volprep writes and reads, a local folder or an object-store URL.

A *location* is a :class:`pathlib.Path` (local) or a URL string (``s3://bucket/prefix``,
``gs://bucket/prefix``, anything fsspec knows). Local locations go through the same
os/pathlib calls as always (temporary name in the same folder, fsync, rename), byte for
byte; URLs go through fsspec, whose filesystems (s3fs, gcsfs: the ``volprep[cloud]``
extra) take credentials and endpoints from each store's usual environment and config
(``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``,
``STORAGE_EMULATOR_HOST``, ...), never from volprep's files.

Object stores have no atomic rename, so an object is written *whole*: its bytes are staged
in a local temporary file, then uploaded in one request (a single PUT, or a multipart
upload that the store only completes at the end). An object therefore appears under its
final name only once complete, and a job killed mid-upload leaves nothing under that
name. Store errors (no such bucket, no credentials, a missing package) become one
:class:`~volprep.errors.UsageError` line naming the URL.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from volprep.errors import UsageError

Location = Path | str
"""A local folder or file (``Path``), or an object-store URL (``str``)."""

_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}


def is_url(where: str | os.PathLike[str]) -> bool:
    """True for ``scheme://...`` (other than ``file://``): a place fsspec reaches."""
    text = str(where) if isinstance(where, str) else ""
    return "://" in text and not text.startswith("file://")


def location(where: str | os.PathLike[str]) -> Location:
    """A URL stays a string (without a trailing ``/``); anything else is a local ``Path``."""
    if is_url(where):
        return str(where).rstrip("/")
    text = os.fspath(where)
    return Path(text.removeprefix("file://"))


def join(base: Location, *names: str) -> Location:
    """``base / name / ...`` for either kind of location."""
    if isinstance(base, Path):
        return base.joinpath(*names)
    return "/".join([base.rstrip("/"), *names])


def basename(where: Location) -> str:
    return where.name if isinstance(where, Path) else where.rstrip("/").rsplit("/", 1)[-1]


def scheme(where: Location) -> str:
    return "" if isinstance(where, Path) else where.split("://", 1)[0]


def filesystem(url: str) -> tuple[Any, str]:
    """``(filesystem, path inside it)``; UsageError naming the package a scheme needs."""
    import fsspec

    # No listings cache: another process (a worker, a concurrent job) changes the folder.
    options = {"use_listings_cache": False} if scheme(url) in _PACKAGES else {}
    try:
        return fsspec.core.url_to_fs(url, **options)
    except ImportError:
        package = _PACKAGES.get(scheme(url), "the fsspec filesystem of this scheme")
        raise UsageError(f"{url}: {scheme(url)}:// needs {package}: pip install 'volprep[cloud]'") from None
    except ValueError as err:
        raise UsageError(f"{url}: not a storage URL volprep can use ({err})") from None


@contextlib.contextmanager
def store_errors(where: Location) -> Iterator[None]:
    """Turns a store's own exceptions (credentials, permissions, network) into one line."""
    if isinstance(where, Path):
        yield
        return
    try:
        yield
    except (UsageError, FileNotFoundError, KeyboardInterrupt):
        raise
    except PermissionError as err:
        raise UsageError(f"{where}: permission denied ({_first_line(err)})") from None
    except Exception as err:  # noqa: BLE001 - botocore/google errors have no common base
        if type(err).__module__.split(".")[0] in {"builtins", "volprep"} and not isinstance(err, OSError):
            raise
        raise UsageError(f"{where}: {type(err).__name__}: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def exists(where: Location) -> bool:
    if isinstance(where, Path):
        return where.exists()
    fs, path = filesystem(where)
    with store_errors(where):
        return bool(fs.exists(path))


def size(where: Location) -> int:
    """Bytes of a file or object; FileNotFoundError if there is none."""
    if isinstance(where, Path):
        return where.stat().st_size
    fs, path = filesystem(where)
    with store_errors(where):
        return int(fs.size(path))


@contextlib.contextmanager
def open_read(where: Location) -> Iterator[IO[bytes]]:
    """A binary reader of a file or object; FileNotFoundError if there is none."""
    if isinstance(where, Path):
        with open(where, "rb") as fh:
            yield fh
        return
    fs, path = filesystem(where)
    with store_errors(where), fs.open(path, "rb", block_size=1 << 23) as fh:
        yield fh


def read_bytes(where: Location) -> bytes:
    if isinstance(where, Path):
        return where.read_bytes()
    fs, path = filesystem(where)
    with store_errors(where):
        return bytes(fs.cat_file(path))


def read_text(where: Location) -> str:
    return read_bytes(where).decode("utf-8")


def list_names(base: Location, pattern: str = "*") -> list[str]:
    """Names (not paths) of the files directly in ``base`` that match a glob pattern."""
    if isinstance(base, Path):
        return sorted(p.name for p in base.glob(pattern) if p.is_file())
    fs, path = filesystem(base)
    with store_errors(base):
        try:
            entries = fs.ls(path, detail=True, refresh=True)
        except FileNotFoundError:
            return []
    names = (str(e["name"]).rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "file")
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def remove(where: Location) -> bool:
    """Deletes a file or object; False if there was none."""
    if isinstance(where, Path):
        with contextlib.suppress(FileNotFoundError):
            where.unlink()
            return True
        return False
    fs, path = filesystem(where)
    with store_errors(where):
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            return False
    return True


def sha256(where: Location, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file or object, read in chunks."""
    digest = hashlib.sha256()
    with open_read(where) as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def prepare_dir(where: Location) -> None:
    """Makes a local folder (parents included) or checks that a URL's bucket exists."""
    if isinstance(where, Path):
        where.mkdir(parents=True, exist_ok=True)
        return
    fs, path = filesystem(where)
    bucket = path.split("/", 1)[0]
    with store_errors(where):
        if not fs.exists(bucket):
            raise UsageError(f"{where}: no bucket {bucket!r} (or no permission to see it)")


def check_writable(where: Location) -> None:
    """Makes a local folder (or checks a URL's bucket), then writes and deletes a probe there.

    Raises:
        UsageError: one line naming the place and what is wrong.
    """
    probe = join(where, f".write-test-{os.getpid()}")
    try:
        prepare_dir(where)
        write_bytes(probe, b"")
        remove(probe)
    except OSError as err:
        raise UsageError(f"{where}: cannot write here ({err.strerror or err})") from None


@contextlib.contextmanager
def writing(where: Location, *, text: bool = False) -> Iterator[IO[Any]]:
    """Writes a file or object whole: nothing appears under its name until the block ends.

    Local: a temporary name in the same folder, fsync, rename, fsync of the folder. URL: a
    local temporary file, uploaded in one request when the block ends without an error.
    Either way an error (or a kill) inside the block leaves nothing under the final name.
    """
    mode = "w" if text else "wb"
    encoding = "utf-8" if text else None
    if isinstance(where, Path):
        tmp = where.with_name(f".{where.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, mode, encoding=encoding) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, where)
            fsync_dir(where.parent)
        finally:
            tmp.unlink(missing_ok=True)
        return
    fs, path = filesystem(where)
    fd, tmp_name = tempfile.mkstemp(prefix=".volprep-upload-")
    os.close(fd)
    try:
        with open(tmp_name, mode, encoding=encoding) as fh:
            yield fh
        with store_errors(where):
            fs.put_file(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def write_bytes(where: Location, data: bytes) -> None:
    """Writes a file or object whole (see :func:`writing`)."""
    with writing(where) as fh:
        fh.write(data)


def create_exclusive(where: str, data: bytes) -> bool:
    """Creates an object only if there is none (S3 ``If-None-Match``, GCS generation 0).

    Returns:
        False if an object of that name already exists.
    """
    fs, path = filesystem(where)
    with store_errors(where):
        try:
            fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
    return True


def write_text(where: Location, text: str) -> None:
    """Writes a text file or object whole (see :func:`writing`)."""
    with writing(where, text=True) as fh:
        fh.write(text)


def write_json(where: Location, data: Any) -> None:
    """Writes JSON whole, sorted keys, so equal content gives equal bytes."""
    write_text(where, json.dumps(data, indent=1, sort_keys=True) + "\n")


def upload_tree(local: Path, where: Location) -> None:
    """Copies the files of a local folder to a URL, each object whole (the report)."""
    fs, path = filesystem(str(where))
    with store_errors(where):
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            fs.put_file(str(file), f"{path}/{file.relative_to(local).as_posix()}")


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
