"""Version 1 of the recorded augmentation parameters: read, never written.

Records and plans written before augmentation ops became registry units hold a flat JSON
object, ``{"version": 1, "shape", "flips", "rot90_k", "rot90_axes", "matrix",
"translation", "fourier_shift", "intensity_scale", "intensity_shift", "gamma", "noise_std",
"noise_seed"}`` (a missing field took its default; an object without ``"version"`` is this
version). :func:`v1_to_ops` maps it onto the per-op entries of version 2, keeping exactly the
stages the version-1 renderer ran (it skipped a stage whose values were the identity, as
:class:`~volprep.augment.spec.Params` drops an op entry that is the identity), so a
version-1 ``augment`` string renders to the same bytes with today's executors. This schema
is frozen: new ops never appear here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FIELDS_V1: dict[str, Any] = {
    "shape": None,
    "flips": [],
    "rot90_k": 0,
    "rot90_axes": None,
    "matrix": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    "translation": [0.0, 0.0, 0.0],
    "fourier_shift": [0.0, 0.0, 0.0],
    "intensity_scale": 1.0,
    "intensity_shift": 0.0,
    "gamma": 1.0,
    "noise_std": 0.0,
    "noise_seed": 0,
}


def v1_to_ops(data: Mapping[str, Any]) -> tuple[Any, dict[str, dict[str, Any]]]:
    """``(shape, {op name: parameters})`` of a version-1 object (its ``"version"`` aside).

    Raises:
        ValueError: an unknown field or a missing shape.
    """
    unknown = sorted(set(data) - set(FIELDS_V1) - {"version"})
    if unknown:
        raise ValueError(f"unknown augmentation parameter(s): {', '.join(unknown)}")
    if data.get("shape") is None:
        raise ValueError("augmentation parameters of version 1 need a shape")
    v = {**FIELDS_V1, **data}
    ops: dict[str, dict[str, Any]] = {}
    ops["flip"] = {"axes": list(v["flips"])}
    if v["rot90_axes"] is not None:  # version 1 ignored a quarter turn without a plane
        ops["rot90"] = {"k": v["rot90_k"], "axes": list(v["rot90_axes"])}
    ops["affine"] = {"matrix": v["matrix"], "translation": v["translation"]}
    ops["fourier_shift"] = {"shift": v["fourier_shift"]}
    ops["intensity"] = {"scale": v["intensity_scale"], "shift": v["intensity_shift"]}
    ops["gamma"] = {"gamma": v["gamma"]}
    ops["noise"] = {"std": v["noise_std"], "seed": v["noise_seed"]}
    return v["shape"], ops
