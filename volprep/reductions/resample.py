"""``reduce = "resample"``: anti-aliased resampling to a target spacing (or shape)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from volprep.errors import ConfigError
from volprep.preprocess import resample
from volprep.reductions.base import GridReduction, PreprocessConfig, Reduced, clip_to_range


class Resample(GridReduction):
    name = "resample"

    def matches(self, cfg: PreprocessConfig) -> bool:
        return cfg.reduce == "resample"

    def check_config(self, cfg: PreprocessConfig) -> None:
        if cfg.spacing is None and cfg.target_shape is None:
            raise ConfigError(None, "preprocess.spacing", "reduce = 'resample' needs 'spacing' (mm) or 'target_shape'")

    def output_shape(self, shape: tuple[int, int, int], affine: np.ndarray,
                     cfg: PreprocessConfig) -> tuple[int, int, int]:
        return resample.resample_grid(shape, affine, cfg.spacing, cfg.target_shape)[0]

    def apply(self, image: np.ndarray, mask: np.ndarray | None, affine: np.ndarray,
              cfg: PreprocessConfig, notes: list[str]) -> Reduced:
        out_shape, zoom, offset = resample.resample_grid(image.shape, affine, cfg.spacing, cfg.target_shape)
        out = resample.resample_image(image, out_shape, zoom, offset, cfg.interpolation)
        if cfg.interpolation == "cubic":
            clip_to_range(out, image)
        small = resample.resample_labels(mask, out_shape, zoom, offset) if mask is not None else None
        return out, small, resample.grid_affine(affine, zoom, offset)

    def cache_keys(self, cfg: PreprocessConfig) -> Mapping[str, Any]:
        keys: dict[str, Any] = {"spacing": None if cfg.spacing is None else list(cfg.spacing),
                                "interpolation": cfg.interpolation}
        if cfg.spacing is None:  # the grid is the target shape itself
            keys["target_shape"] = list(cfg.target_shape) if cfg.target_shape is not None else None
        return keys


UNIT = Resample()
