"""``prepare``: a job's preprocessing applied to a new scan, giving the model's input.

The job is read from its shard folder (``manifest.json``: the config that made the
records, the target shape, the normalisation with its dataset statistics, the image
feature's dtype and encoding). The scan goes through the same code the converter and
the shard writer run, nothing re-implemented: the readers and their checks
(:func:`volprep.io.read_header`, :func:`volprep.io.read_case_images`: ``max_bytes``,
``non_finite``, ``allow_rgb``; then the job survey's channel-count rule against the
manifest's image shape), :func:`volprep.preprocess.prepare_case` (reorient, reduce,
foreground crop, statistics), :func:`volprep.preprocess.window_case` with the writer's
fill rule (each channel's background floor), :func:`volprep.preprocess.normalize` with
the per-case or the manifest's dataset statistics, and the image feature's own encoding
(:mod:`volprep.schema`) to round it to the stored dtype (or code and decode it for
wavelet-compressed records). So for a training case's image the result equals that case's
record image bit for bit.

One difference from the job, by nature: there is no label volume, so with
``crop_foreground`` the foreground box comes from the image alone (the job also counts
labelled voxels); on data whose labels lie on imaged tissue the box is the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from nibabel.orientations import aff2axcodes

from volprep import io, reductions
from volprep.config import PipelineConfig, config_from_dict
from volprep.errors import HeaderError, UsageError
from volprep.geometry import Grid
from volprep.inference.info import ScanInfo, write_info
from volprep.manifest import MANIFEST, Manifest, read_manifest
from volprep.names import strip_extension
from volprep.preprocess import normalize, prepare_case, window_case

ImagePaths = str | Path | Sequence[str | Path]


def job_config(like: str | Path, manifest: Manifest) -> PipelineConfig:
    """The job's config, rebuilt from the manifest (errors name the manifest)."""
    return config_from_dict(manifest.config, f"{Path(like) / MANIFEST} (config)")


def _paths(image: ImagePaths) -> list[Path]:
    paths = [Path(image)] if isinstance(image, str | Path) else [Path(p) for p in image]
    if not paths:
        raise UsageError("prepare needs at least one image file")
    return paths


def prepare(image: ImagePaths, like: str | Path, *, dtype: Any = "float32") -> tuple[np.ndarray, ScanInfo]:
    """The model input for a new scan, made exactly as the job made its records.

    Args:
        image: the scan: one file (3D, or 4D with channels last), or one 3D file a channel
            in the job's channel order.
        like: the shard folder (``volprep shards --out``) whose job to apply.
        dtype: the returned array's dtype: ``"float32"`` (what the loader feeds a model),
            or None for the record's own (the manifest's image dtype; float32 after a
            wavelet decode).

    Returns:
        ``(x, info)``: ``x`` is ``[D, H, W, C]`` on the record grid (the job's target
        shape), C-contiguous; ``info`` (:class:`ScanInfo`, JSON-able) is what
        :func:`volprep.invert` needs to map a prediction on ``x``'s grid back to the scan.

    Raises:
        UsageError: ``like`` holds no complete manifest (or a config this volprep refuses).
        HeaderError, DataError: the scan is refused as the job would refuse it, with the
            job's one-line message (``<path>: <problem>``): a header claiming more than
            ``read.max_bytes``, RGB without ``read.allow_rgb``, NaN/Inf voxels with
            ``read.non_finite = "fail"``, another channel count than the job's, an
            unreadable file.
    """
    paths = _paths(image)
    manifest = read_manifest(like)
    config = job_config(like, manifest)
    pre = config.preprocess
    feature = manifest.features["image"]
    channels = int(feature.shape[-1])
    headers = [io.read_header(p, config.read) for p in paths]  # as the job's header survey
    found = headers[0].shape[3] if len(headers[0].shape) == 4 else len(headers)
    if found != channels:  # the survey's rule and message, against the job's channel count
        raise HeaderError(paths[0], f"has {found} channel(s), the dataset has {channels}")
    volume = io.read_case_images(paths, config.read)
    prepared = prepare_case(volume.data, volume.header.affine, None, pre, None,
                            fidelity_figures=False, source=str(paths[0]))
    stats = prepared.meta["stats"]
    target = (int(manifest.target_shape[0]), int(manifest.target_shape[1]), int(manifest.target_shape[2]))
    window, _, grid = window_case(prepared.image, None, prepared.grid, prepared.anchor, target,
                                  fill=[st["floor"] for st in stats])
    pooled = manifest.normalization.get("dataset_stats")
    normalised = normalize(window, stats, pre, list(pooled) if pooled else None)
    stored = feature.decode([feature.encode(normalised)])  # the stored dtype's rounding (or coding)
    x = np.array(stored, dtype=dtype if dtype is not None else stored.dtype, order="C")
    scan = prepared.meta["scan_grid"]
    info = ScanInfo(
        like=str(like), scan_paths=tuple(str(p) for p in paths),
        scan=Grid.from_dict(scan), scan_orientation="".join(str(c) for c in aff2axcodes(np.asarray(scan["affine"]))),
        record=grid, orientation=pre.orientation, channels=channels,
        reduction={"reduce": prepared.meta["reduce"], **reductions.for_config(pre).cache_keys(pre)},
    )
    return x, info


def output_stem(path: str | Path) -> str:
    """A scan's name without its volume suffix: ``case_07.nii.gz`` -> ``case_07`` (the
    formats' own suffixes, as discovery strips them for case ids)."""
    return strip_extension(Path(path).name)


def prepare_to(image: ImagePaths, like: str | Path, folder: str | Path, *,
               dtype: Any = "float32") -> tuple[Path, Path, np.ndarray]:
    """:func:`prepare`, then writes ``folder/<name>.npy`` (the input) and ``<name>.json`` (its info).

    ``<name>`` is the (first) image file's name without its volume suffix.

    Returns:
        ``(npy path, info path, x)``.
    """
    x, info = prepare(image, like, dtype=dtype)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = output_stem(_paths(image)[0])
    array_path = folder / f"{stem}.npy"
    np.save(array_path, x, allow_pickle=False)
    return array_path, write_info(info, folder / f"{stem}.json"), x
