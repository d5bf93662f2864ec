"""The cache stage: preprocessed cases under ``OUT/cache/``, one file a case.

A case's entry, ``cache/cases/<case_id>.vpc``, holds its reduced image (float32: records
are normalised from it and rounded once to their dtype, so they do not depend on the
cache), its label volume when it has one, and a JSON header with its metadata (grid, anchor, statistics),
the fingerprint of the inputs and config that made it, and CRC-32s of every array and of
the metadata. The layout is plain: ``b"VPCACHE\\0"``, a little-endian uint64 header
length, the UTF-8 JSON header, then each array's raw C-order little-endian bytes at the
offset the header gives (64-byte aligned). An entry is written to a temporary name and
renamed into place, so a file under its final name is always whole. It is not fsynced:
after a power loss an entry may read back empty or garbled, which its checksums catch
(it is then recomputed), so the ~5 ms an fsync costs a case buys nothing here.

Why not zarr (the first release's store): a zarr v3 group with two arrays costs ~10-30 ms
a case to write and ~4-16 ms to read (metadata files, codec pipeline, an event loop),
about as much as preprocessing itself; this costs ~1-3 ms each way, and an entry is one
file. The price is size: 5.2 MB a 128x128x80 case against 2.25 MB with zarr's lz4 (a
codec costs ~6 ms a case to encode), and a float16 cache (2.6 MB) would round the data
twice; the cache is a resume aid that may be deleted once a job is done.

Nothing in the cache is trusted blindly: a truncated file, a flipped byte or an edited
header fails its checksums. :meth:`CaseCache.lookup` with ``verify=True`` reads the
arrays back and reports a damaged or unreadable entry as :class:`Damaged` (the job
recomputes the case and says so); :meth:`CaseCache.load` raises :class:`CacheDamaged`.
An entry that is missing or made from other inputs or config is recomputed; every other
is reused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import struct
import uuid
import zlib
from pathlib import Path
from typing import Any

import numpy as np

CACHE_FORMAT = 3  # 3: one file a case, arrays in the records' dtype; 2: zarr + checksums
MAGIC = b"VPCACHE\0"
SUFFIX = ".vpc"
TMP_PREFIX = ".tmp-"  # an entry being written
_ALIGN = 64


@dataclasses.dataclass
class CachedCase:
    """A case as the cache holds it (arrays are read-only views of the file's bytes)."""

    image: np.ndarray
    mask: np.ndarray | None
    affine: np.ndarray
    meta: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Damaged:
    """A cache entry that exists under its final name but cannot be trusted (and why)."""

    reason: str


class CacheDamaged(Exception):
    """A cache entry failed its checks while being read (the message says how)."""


def _crc(data: bytes | np.ndarray) -> str:
    buffer = data if isinstance(data, bytes) else np.ascontiguousarray(data).data
    return f"{zlib.crc32(buffer) & 0xFFFFFFFF:08x}"


def _meta_crc(affine: Any, meta: Any, fingerprint: str) -> str:
    blob = json.dumps({"affine": affine, "meta": meta, "fingerprint": fingerprint}, sort_keys=True,
                      separators=(",", ":"))
    return _crc(blob.encode())


def input_fingerprint(paths: list[Path], config_key: str) -> str:
    """Fingerprint of a case's input files (path, size, mtime) and of the config that matters.

    ``mtime_ns`` and size are what make and rsync trust; hashing every input's bytes would
    double the read cost of a rerun.
    """
    h = hashlib.sha256(f"volprep-cache-{CACHE_FORMAT}\x00{config_key}".encode())
    for path in paths:
        st = os.stat(path)
        h.update(f"\x00{Path(path).resolve()}\x00{st.st_size}\x00{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def default_cache_dir(out_dir: Path | str) -> Path:
    """Where a job's cache lives by default: ``OUT/cache`` for a local OUT; for an
    object-store URL (the cache is always local), ``$XDG_CACHE_HOME/volprep/<16 hex digits
    of the URL's sha256>`` (``~/.cache`` without ``XDG_CACHE_HOME``)."""
    if isinstance(out_dir, Path):
        return out_dir / "cache"
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return home / "volprep" / hashlib.sha256(out_dir.encode()).hexdigest()[:16]


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


class CaseCache:
    """A folder of per-case entry files."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.cases = self.root / "cases"

    def _path(self, case_id: str) -> Path:
        return self.cases / f"{case_id}{SUFFIX}"

    def _header(self, path: Path) -> tuple[dict[str, Any], int]:
        """The entry's JSON header and where its arrays start; CacheDamaged if unreadable."""
        try:
            with open(path, "rb") as fh:
                head = fh.read(16)
                if len(head) < 16 or head[:8] != MAGIC:
                    raise CacheDamaged(f"cache entry {path.stem} is not a volprep cache file")
                (length,) = struct.unpack("<Q", head[8:16])
                if length > 64 << 20:
                    raise CacheDamaged(f"cache entry {path.stem}: header of {length} bytes")
                text = fh.read(length)
            header = json.loads(text.decode("utf-8"))
        except CacheDamaged:
            raise
        except (OSError, ValueError, UnicodeDecodeError, struct.error) as err:
            raise CacheDamaged(f"cache entry {path.stem} is unreadable ({type(err).__name__})") from None
        if not isinstance(header, dict):
            raise CacheDamaged(f"cache entry {path.stem}: header is not an object")
        return header, 16 + length

    def lookup(self, case_id: str, fingerprint: str | None, *,
               verify: bool = False) -> dict[str, Any] | Damaged | None:
        """The cached case's metadata if it is whole and made from ``fingerprint``.

        ``fingerprint=None`` accepts any entry (readers such as the report). With
        ``verify``, the arrays are read back and every checksum compared: a damaged or
        unreadable entry gives :class:`Damaged` instead of its metadata.

        Returns:
            The metadata (plus ``cache_checksum``); :class:`Damaged`; or None when there is
            no usable entry (none, or made from other inputs, config or cache format).
        """
        path = self._path(case_id)
        if not path.exists():
            return None
        try:
            header, _ = self._header(path)
        except CacheDamaged as err:
            return Damaged(str(err))
        if header.get("format") != CACHE_FORMAT:
            return None
        if fingerprint is not None and header.get("fingerprint") != fingerprint:
            return None
        if verify:
            try:
                self.load(case_id)
            except CacheDamaged as err:
                return Damaged(str(err))
        meta: dict[str, Any] = dict(header.get("meta") or {})
        meta["cache_checksum"] = header.get("checksum")
        return meta

    def store(self, case_id: str, fingerprint: str, image: np.ndarray, mask: np.ndarray | None,
              affine: np.ndarray, meta: dict[str, Any]) -> dict[str, str]:
        """Writes an entry: temporary name, rename into place; returns its checksums.

        """
        arrays = {"image": np.ascontiguousarray(image)}
        if mask is not None:
            arrays["mask"] = np.ascontiguousarray(mask)
        affine_list = np.asarray(affine, float).tolist()
        meta = json.loads(json.dumps(meta))  # what reads back, so its checksum matches
        checksum = {name: _crc(a) for name, a in arrays.items()}
        checksum.setdefault("mask", "")
        checksum["meta"] = _meta_crc(affine_list, meta, fingerprint)
        specs: dict[str, dict[str, Any]] = {}
        offset = 0
        for name, a in arrays.items():
            specs[name] = {"dtype": a.dtype.newbyteorder("<").str, "shape": list(a.shape),
                           "offset": offset, "nbytes": int(a.nbytes)}
            offset = _aligned(offset + a.nbytes)
        header = {"format": CACHE_FORMAT, "fingerprint": fingerprint, "affine": affine_list, "meta": meta,
                  "arrays": specs, "checksum": checksum}
        text = json.dumps(header, sort_keys=True).encode("utf-8")
        text += b" " * (_aligned(16 + len(text)) - 16 - len(text))  # arrays start aligned
        self.cases.mkdir(parents=True, exist_ok=True)
        final = self._path(case_id)
        tmp = self.cases / f"{TMP_PREFIX}{case_id}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "wb") as fh:
                fh.write(MAGIC + struct.pack("<Q", len(text)) + text)
                base = fh.tell()
                for name, a in arrays.items():
                    fh.seek(base + specs[name]["offset"])
                    fh.write(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).data.cast("B"))
            if final.is_dir():  # a damaged entry can be anything, a folder included
                shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return checksum

    def sweep(self) -> int:
        """Removes temporary files a killed job left behind; returns how many.

        Call it only while no job writes to this cache (the runner holds the output lock).
        """
        removed = 0
        if self.cases.is_dir():
            for path in self.cases.iterdir():
                if path.name.startswith(TMP_PREFIX):
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    def load(self, case_id: str) -> CachedCase:
        """Reads an entry back and checks it (one case: shards stream case by case).

        Raises:
            CacheDamaged: missing, unreadable or truncated, or a checksum mismatch (a
                changed byte, an edited header).
        """
        path = self._path(case_id)
        header, start = self._header(path)
        try:
            data = np.fromfile(path, dtype=np.uint8, offset=start)
            arrays: dict[str, np.ndarray] = {}
            for name, spec in header["arrays"].items():
                end = int(spec["offset"]) + int(spec["nbytes"])
                if end > data.size:
                    raise CacheDamaged(f"cache entry {case_id} is truncated ({name})")
                raw = data[int(spec["offset"]):end]
                arrays[name] = raw.view(np.dtype(spec["dtype"])).reshape(spec["shape"])
            checksum, affine, meta = header["checksum"], header["affine"], header["meta"]
            fingerprint = header["fingerprint"]
        except CacheDamaged:
            raise
        except (OSError, KeyError, TypeError, ValueError) as err:
            raise CacheDamaged(f"cache entry {case_id} is unreadable ({type(err).__name__})") from None
        for name in ("image", "mask"):
            array = arrays.get(name)
            if (_crc(array) if array is not None else "") != checksum.get(name):
                raise CacheDamaged(f"cache entry {case_id}: {name} checksum mismatch (a damaged file)")
        if "image" not in arrays:
            raise CacheDamaged(f"cache entry {case_id} has no image")
        if _meta_crc(affine, meta, fingerprint) != checksum.get("meta"):
            raise CacheDamaged(f"cache entry {case_id}: metadata checksum mismatch (an edited or damaged header)")
        return CachedCase(image=arrays["image"], mask=arrays.get("mask"), affine=np.asarray(affine, float),
                          meta=dict(meta))
