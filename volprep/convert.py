"""The per-case task: read a case, check it, preprocess it and put it in the cache.

:func:`convert_case` is what a worker runs, on a local process or a Dask worker. It is a
function of its (picklable) arguments and the input files only, returns a small
:class:`CaseResult` (never the arrays), and turns every input problem into a failure
result instead of an exception, so one bad case never stops the job.

Fidelity figures (PSNR/SSIM of a lossy reduction) are part of a case's result only when
the runner asks for them (a fixed sample of cases), so the manifest's figures never
depend on which cases an earlier run happened to measure.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from volprep import io, reductions
from volprep.cache import CaseCache, Damaged, input_fingerprint
from volprep.cases import Case
from volprep.config import PipelineConfig, PreprocessConfig
from volprep.errors import InputError
from volprep.preprocess import prepare_case

# What decides the cache, besides the inputs and the reduction's own keys: reorientation,
# the foreground crop and the statistics gathered. The window, normalisation, stored dtype
# and encoding are decided when shards are written.
CACHE_PREPROCESS_KEYS = ("orientation", "reduce", "crop_foreground", "p_low", "p_high")
_WARM_CONFIG = PreprocessConfig()


@dataclasses.dataclass(frozen=True)
class CaseResult:
    """What the job needs to know about a case after its per-case task."""

    case_id: str
    ok: bool
    reused: bool = False
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: str = ""
    error: str = ""
    recomputed: str = ""  # why a cache entry that existed was not reused (damaged), else ""
    fatal: str = ""  # a problem of the job, not of the case (e.g. the disk is full): stop


def cache_config_key(config: PipelineConfig) -> str:
    """The parts of the config that change what the cache holds for a case."""
    pre = config.preprocess
    keys = {k: getattr(pre, k) for k in CACHE_PREPROCESS_KEYS}
    keys.update(reductions.for_config(pre).cache_keys(pre))
    # max_bytes only decides which cases are read at all (checked on headers every run).
    read = {k: v for k, v in config.to_dict()["read"].items() if k != "max_bytes"}
    return json.dumps({"read": read, "preprocess": keys}, sort_keys=True, default=list)


def case_inputs(case: Case, cfg: PipelineConfig) -> list[Path]:
    """Every file the case's cache entry depends on: each volume's own files and companions
    (a ``.hdr``'s ``.img``, every slice of a DICOM series; see ``io.input_files``)."""
    files: list[Path] = []
    for path in [*case.images, *([case.mask] if case.mask is not None else [])]:
        files.extend(io.input_files(path, cfg.read))
    return files


def warm_up() -> None:
    """Loads what converting a case needs (the compiled kernels for the usual input
    dtypes) in a fresh worker, before the first case arrives (see backends.warm_up)."""
    for dtype in (np.int16, np.uint8, np.float32):
        volume = np.zeros((4, 4, 4, 1), dtype=dtype, order="F")
        prepare_case(volume, np.eye(4), None, _WARM_CONFIG, fidelity_figures=False)


def convert_case(case: Case, config: PipelineConfig, cache_dir: str,
                 declared_labels: tuple[int, ...] | None, fidelity: bool = False) -> CaseResult:
    """Reads, checks, preprocesses and caches one case (or reuses its cache entry).

    Args:
        case: the case to convert.
        config: the job's config; only :func:`cache_config_key` of it keys the cache.
        cache_dir: the ``cache`` folder (a path string: the task must pickle).
        declared_labels: label values the dataset declares, checked in the mask.
        fidelity: also measure what a lossy reduction cost this case (PSNR/SSIM against
            the unreduced volume); the runner asks it of a fixed sample of cases, since
            it costs more than the conversion itself. A cached case asked for fidelity
            but cached without it is recomputed.

    Returns:
        A small :class:`CaseResult` (never arrays): ``reused`` when the cache entry was
        complete and made from the same inputs and cache-relevant config.
    """
    cache = CaseCache(Path(cache_dir))
    try:
        fingerprint = input_fingerprint(case_inputs(case, config), cache_config_key(config))
    except InputError as err:  # a header refused while listing the case's files
        return CaseResult(case.case_id, ok=False, path=err.path, error=err.problem)
    except OSError as err:
        path = err.filename or (case.images[0] if case.images else "")
        return CaseResult(case.case_id, ok=False, path=str(path), error=err.strerror or str(err))
    found = cache.lookup(case.case_id, fingerprint, verify=True)
    recomputed = f"damaged cache entry recomputed: {found.reason}" if isinstance(found, Damaged) else ""
    # A cached case reused for the fidelity sample must have been measured.
    if isinstance(found, dict) and (found.get("fidelity_measured") or not fidelity):
        return CaseResult(case.case_id, ok=True, reused=True, meta=_public_meta(found, fidelity))
    try:
        meta = _convert(case, config, cache, fingerprint, declared_labels, fidelity)
    except InputError as err:
        return CaseResult(case.case_id, ok=False, path=err.path, error=err.problem)
    except MemoryError:
        return CaseResult(case.case_id, ok=False, path=str(case.images[0]),
                          error="out of memory while converting this case")
    except OSError as err:  # the inputs were read: this is the cache's disk (full, read-only...)
        where = err.filename or cache_dir
        return CaseResult(case.case_id, ok=False, path=str(where), error=err.strerror or str(err),
                          fatal=f"{where}: cannot write the cache ({err.strerror or err})")
    return CaseResult(case.case_id, ok=True, reused=False, meta=_public_meta(meta, fidelity),
                      recomputed=recomputed)


def _public_meta(meta: dict[str, Any], fidelity: bool) -> dict[str, Any]:
    """The meta the runner sees: fidelity figures only for cases in the sample."""
    out = {k: v for k, v in meta.items() if k != "fidelity_measured"}
    if not fidelity:
        out.pop("fidelity", None)
    return out


def _convert(case: Case, config: PipelineConfig, cache: CaseCache, fingerprint: str,
             declared_labels: tuple[int, ...] | None, fidelity: bool) -> dict[str, Any]:
    volume = io.read_case_images(list(case.images), config.read)
    mask = None
    if case.mask is not None:
        mask_volume = io.read_label_volume(case.mask, config.read)
        mask = io.check_label(mask_volume, volume.header, config.read, declared_labels)
    prepared = prepare_case(volume.data, volume.header.affine, mask, config.preprocess, None,
                            fidelity_figures=fidelity, source=str(case.images[0]))
    meta = dict(prepared.meta)
    meta["notes"] = sorted({*meta.get("notes", []), *volume.header.notes})
    meta["shape"] = list(prepared.image.shape)
    meta["source"] = str(case.images[0])
    meta["fidelity_measured"] = fidelity
    if prepared.mask is not None:
        values, counts = np.unique(prepared.mask, return_counts=True)
        meta["voxel_counts"] = {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)}
        meta["mask_max"] = int(values.max())
    checksum = cache.store(case.case_id, fingerprint, prepared.image, prepared.mask, prepared.grid.affine, meta)
    return {**meta, "cache_checksum": checksum}
