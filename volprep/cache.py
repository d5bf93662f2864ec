"""The cache stage: preprocessed cases in a zarr store under ``OUT/cache.zarr``.

Each case is its own zarr group, ``cache.zarr/cases/<case_id>``, holding ``image``
(float32 ``[D, H, W, C]``, reduced but not windowed nor normalised, chunked by channel,
lz4-compressed), ``mask`` when the case has a label volume, and attributes with the
case's metadata. A case is written under a temporary folder name, its ``complete``
attribute last (together with the fingerprint of its inputs and of the config that made
it, and a checksum of its content), and only then renamed into place: a case folder
under its final name is always whole, whatever moment a job is killed at.

Nothing in the cache is trusted blindly: a deleted chunk reads back as zarr's fill value,
a flipped byte as a changed voxel, an edited ``zarr.json`` as other statistics. So every
entry carries CRC-32s of its image bytes, its mask bytes and its metadata (affine
included), and every read checks them: :meth:`CaseCache.lookup` with ``verify=True``
reads the arrays back and reports a damaged or unreadable entry as :class:`Damaged`
(the job recomputes the case and says so), and :meth:`CaseCache.load` raises
:class:`CacheDamaged`. A case whose group is missing, incomplete or carries another
fingerprint is recomputed; every other case is reused. Each case lives in its own folder
so concurrent workers never write the same metadata file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import uuid
import zlib
from pathlib import Path
from typing import Any

import numpy as np

CACHE_FORMAT = 2  # 2: content checksums; grid and anchor in the metadata
TMP_PREFIX = ".tmp-"  # a case being written
OLD_PREFIX = ".old-"  # a stale case being replaced


@dataclasses.dataclass
class CachedCase:
    """A case as the cache holds it."""

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


def _crc(array: np.ndarray | None) -> str:
    if array is None:
        return ""
    return f"{zlib.crc32(np.ascontiguousarray(array).data) & 0xFFFFFFFF:08x}"


def _meta_crc(affine: Any, meta: Any, fingerprint: str) -> str:
    blob = json.dumps({"affine": affine, "meta": meta, "fingerprint": fingerprint}, sort_keys=True,
                      separators=(",", ":"))
    return f"{zlib.crc32(blob.encode()) & 0xFFFFFFFF:08x}"


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


def _remove(path: Path) -> None:
    """Removes a folder or a file (a damaged entry may be either); absent is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            path.unlink()


class CaseCache:
    """A folder of per-case zarr groups."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.cases = self.root / "cases"

    def _group_path(self, case_id: str) -> Path:
        return self.cases / case_id

    def lookup(self, case_id: str, fingerprint: str | None, *,
               verify: bool = False) -> dict[str, Any] | Damaged | None:
        """The cached case's metadata if it is complete and made from ``fingerprint``.

        ``fingerprint=None`` accepts any complete entry (readers such as the report).
        With ``verify``, the arrays are read back and every checksum compared: a damaged
        or unreadable entry gives :class:`Damaged` instead of its metadata.

        Returns:
            The metadata; :class:`Damaged`; or None when there is no usable entry (none,
            incomplete, or made from other inputs or config).
        """
        path = self._group_path(case_id)
        if not path.exists():
            return None
        try:
            attrs = json.loads((path / "zarr.json").read_text())["attributes"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            return Damaged(f"unreadable metadata ({type(err).__name__})")
        if not isinstance(attrs, dict) or attrs.get("complete") is not True:
            return None
        if fingerprint is not None and attrs.get("fingerprint") != fingerprint:
            return None
        if attrs.get("format") != CACHE_FORMAT:
            return None
        if verify:
            try:
                self.load(case_id)
            except CacheDamaged as err:
                return Damaged(str(err))
        meta: dict[str, Any] = dict(attrs["meta"])
        meta["cache_checksum"] = attrs.get("checksum")
        return meta

    def store(self, case_id: str, fingerprint: str, image: np.ndarray, mask: np.ndarray | None,
              affine: np.ndarray, meta: dict[str, Any]) -> dict[str, str]:
        """Writes a case: temporary folder, ``complete`` mark last, rename into place.

        Returns the entry's checksums. A stale entry under the final name is moved aside
        first and deleted after the rename. If another writer renamed the same case into place meanwhile (a rerun
        racing a Dask task of a killed job), its entry is kept: both are made from the
        same inputs.
        """
        import zarr
        from zarr.codecs import BloscCodec

        final = self._group_path(case_id)
        tag = f"{case_id}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp = self.cases / f"{TMP_PREFIX}{tag}"
        self.cases.mkdir(parents=True, exist_ok=True)
        try:
            group = zarr.open_group(str(tmp), mode="w")
            codec = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
            group.create_array("image", data=np.ascontiguousarray(image, np.float32),
                               chunks=(*image.shape[:3], 1), compressors=codec)
            if mask is not None:
                group.create_array("mask", data=np.ascontiguousarray(mask), chunks=mask.shape,
                                   compressors=codec)
            affine_list = np.asarray(affine, float).tolist()
            meta = json.loads(json.dumps(meta))  # what reads back, so its checksum matches
            checksum = {"image": _crc(np.ascontiguousarray(image, np.float32)), "mask": _crc(mask),
                        "meta": _meta_crc(affine_list, meta, fingerprint)}
            group.attrs.update({"affine": affine_list, "meta": meta})
            group.attrs.update({"fingerprint": fingerprint, "format": CACHE_FORMAT, "checksum": checksum,
                                "complete": True})
            old = self.cases / f"{OLD_PREFIX}{tag}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(final, old)
            with contextlib.suppress(OSError):  # ENOTEMPTY/EEXIST: another writer got there first
                os.rename(tmp, final)
            _remove(old)
        finally:
            _remove(tmp)
        return checksum

    def sweep(self) -> int:
        """Removes temporary folders a killed job left behind; returns how many.

        Call it only while no job writes to this cache (the runner holds the output lock).
        """
        if not self.cases.is_dir():
            return 0
        stale = [p for p in self.cases.iterdir() if p.name.startswith((TMP_PREFIX, OLD_PREFIX))]
        for path in stale:
            _remove(path)
        return len(stale)

    def load(self, case_id: str) -> CachedCase:
        """Reads a complete case back and checks it (one case: shards stream case by case).

        Raises:
            CacheDamaged: missing, incomplete or unreadable, or a checksum mismatch (a
                deleted chunk, a changed byte, edited metadata).
        """
        import zarr

        path = self._group_path(case_id)
        try:
            group = zarr.open_group(str(path), mode="r")
            attrs: dict[str, Any] = dict(group.attrs)
            if attrs.get("complete") is not True:
                raise CacheDamaged(f"cache entry {case_id} is incomplete")
            image = np.asarray(zarr.open_array(str(path / "image"), mode="r")[...])
            mask = np.asarray(zarr.open_array(str(path / "mask"), mode="r")[...]) if "mask" in group else None
            checksum = attrs["checksum"]
            affine = attrs["affine"]
            meta = attrs["meta"]
            fingerprint = attrs["fingerprint"]
        except CacheDamaged:
            raise
        except Exception as err:  # noqa: BLE001 - zarr/blosc/json raise many kinds on damaged files
            detail = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            raise CacheDamaged(f"cache entry {case_id} is unreadable ({type(err).__name__}: {detail})") from None
        for name, array in (("image", image), ("mask", mask)):
            if _crc(array) != checksum.get(name):
                raise CacheDamaged(f"cache entry {case_id}: {name} checksum mismatch (a damaged or missing chunk)")
        if _meta_crc(affine, meta, fingerprint) != checksum.get("meta"):
            raise CacheDamaged(f"cache entry {case_id}: metadata checksum mismatch (edited or damaged zarr.json)")
        return CachedCase(image=image, mask=mask, affine=np.asarray(affine, float), meta=dict(meta))
