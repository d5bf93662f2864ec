"""The cache stage: preprocessed cases in a zarr store under ``OUT/cache.zarr``.

Each case is its own zarr group, ``cache.zarr/cases/<case_id>``, holding ``image``
(float32 ``[D, H, W, C]``, reduced but not cropped/padded nor normalised), ``mask`` when the
case has a label volume, and attributes with the case's metadata. The group's
``complete`` attribute is written last, together with the fingerprint of the inputs and
of the config that made it; a case whose group is missing, incomplete (a killed job) or
carries another fingerprint is recomputed, every other case is reused. Each case lives
in its own folder so concurrent workers never write the same metadata file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

CACHE_FORMAT = 1


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

    def lookup(self, case_id: str, fingerprint: str) -> dict[str, Any] | None:
        """The cached case's metadata if it is complete and made from ``fingerprint``."""
        meta_file = self._group_path(case_id) / "zarr.json"
        try:
            attrs = json.loads(meta_file.read_text())["attributes"]
        except (OSError, ValueError, KeyError):
            return None
        if attrs.get("complete") is not True or attrs.get("fingerprint") != fingerprint:
            return None
        meta: dict[str, Any] = attrs["meta"]
        return meta

    def store(self, case_id: str, fingerprint: str, image: np.ndarray, mask: np.ndarray | None,
              affine: np.ndarray, meta: dict[str, Any]) -> None:
        """Writes a case; the ``complete`` mark goes last, so a killed write is never reused."""
        import zarr
        from zarr.codecs import BloscCodec

        path = self._group_path(case_id)
        if path.exists():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(str(path), mode="w")
        codec = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
        group.create_array("image", data=np.ascontiguousarray(image, np.float32),
                           chunks=(*image.shape[:3], 1), compressors=codec)
        if mask is not None:
            group.create_array("mask", data=np.ascontiguousarray(mask), chunks=mask.shape,
                               compressors=codec)
        group.attrs.update({"affine": np.asarray(affine, float).tolist(), "meta": meta})
        group.attrs.update({"fingerprint": fingerprint, "complete": True})

    def load(self, case_id: str) -> CachedCase:
        """Reads a complete case back."""
        import zarr

        group = zarr.open_group(str(self._group_path(case_id)), mode="r")
        attrs = dict(group.attrs)
        if attrs.get("complete") is not True:
            raise RuntimeError(f"cache entry {case_id} is incomplete")
        mask = group["mask"][...] if "mask" in group else None
        return CachedCase(
            image=np.asarray(group["image"][...]),
            mask=None if mask is None else np.asarray(mask),
            affine=np.asarray(attrs["affine"], float),
            meta=attrs["meta"],
        )

    def case_ids(self) -> list[str]:
        """Every case with a folder in the cache (complete or not)."""
        if not self.cases.is_dir():
            return []
        return sorted(p.name for p in self.cases.iterdir() if p.is_dir())
