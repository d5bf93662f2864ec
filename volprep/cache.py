"""The cache stage: preprocessed cases in a zarr store under ``OUT/cache.zarr``.

Each case is its own zarr group, ``cache.zarr/cases/<case_id>``, holding ``image``
(float32 ``[D, H, W, C]``, reduced but not cropped/padded nor normalised, chunked by
channel, lz4-compressed), ``mask`` when the case has a label volume, and attributes with
the case's metadata. A case is written under a temporary folder name, its ``complete``
attribute last (together with the fingerprint of its inputs and of the config that made
it), and only then renamed into place: a case folder under its final name is always
whole, whatever moment a job is killed at. A case whose group is missing, incomplete or
carries another fingerprint is recomputed, every other case is reused. Each case lives
in its own folder so concurrent workers never write the same metadata file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

CACHE_FORMAT = 1
TMP_PREFIX = ".tmp-"  # a case being written
OLD_PREFIX = ".old-"  # a stale case being replaced


@dataclasses.dataclass
class CachedCase:
    """A case as the cache holds it."""

    image: np.ndarray
    mask: np.ndarray | None
    affine: np.ndarray
    meta: dict[str, Any]


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


class CaseCache:
    """A folder of per-case zarr groups."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.cases = self.root / "cases"

    def _group_path(self, case_id: str) -> Path:
        return self.cases / case_id

    def lookup(self, case_id: str, fingerprint: str | None) -> dict[str, Any] | None:
        """The cached case's metadata if it is complete and made from ``fingerprint``.

        ``fingerprint=None`` accepts any complete entry (readers such as the report).
        """
        meta_file = self._group_path(case_id) / "zarr.json"
        try:
            attrs = json.loads(meta_file.read_text())["attributes"]
        except (OSError, ValueError, KeyError):
            return None
        if attrs.get("complete") is not True:
            return None
        if fingerprint is not None and attrs.get("fingerprint") != fingerprint:
            return None
        meta: dict[str, Any] = attrs["meta"]
        return meta

    def store(self, case_id: str, fingerprint: str, image: np.ndarray, mask: np.ndarray | None,
              affine: np.ndarray, meta: dict[str, Any]) -> None:
        """Writes a case: temporary folder, ``complete`` mark last, rename into place.

        A stale entry under the final name is moved aside first and deleted after the
        rename. If another writer renamed the same case into place meanwhile (a rerun
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
            group.attrs.update({"affine": np.asarray(affine, float).tolist(), "meta": meta})
            group.attrs.update({"fingerprint": fingerprint, "complete": True})
            old = self.cases / f"{OLD_PREFIX}{tag}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(final, old)
            with contextlib.suppress(OSError):  # ENOTEMPTY/EEXIST: another writer got there first
                os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def sweep(self) -> int:
        """Removes temporary folders a killed job left behind; returns how many.

        Call it only while no job writes to this cache (the runner holds the output lock).
        """
        if not self.cases.is_dir():
            return 0
        stale = [p for p in self.cases.iterdir() if p.name.startswith((TMP_PREFIX, OLD_PREFIX))]
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
        return len(stale)

    def load(self, case_id: str) -> CachedCase:
        """Reads a complete case back (one case: the shard writer streams case by case)."""
        import zarr

        path = self._group_path(case_id)
        group = zarr.open_group(str(path), mode="r")
        attrs: dict[str, Any] = dict(group.attrs)
        if attrs.get("complete") is not True:
            raise RuntimeError(f"cache entry {case_id} is incomplete")
        image = zarr.open_array(str(path / "image"), mode="r")[...]
        mask = zarr.open_array(str(path / "mask"), mode="r")[...] if "mask" in group else None
        return CachedCase(
            image=np.asarray(image),
            mask=None if mask is None else np.asarray(mask),
            affine=np.asarray(attrs["affine"], float),
            meta=dict(attrs["meta"]),
        )

    def case_ids(self) -> list[str]:
        """Every case with a folder under its final name in the cache."""
        if not self.cases.is_dir():
            return []
        return sorted(p.name for p in self.cases.iterdir() if p.is_dir() and not p.name.startswith("."))
