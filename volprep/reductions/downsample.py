"""``reduce = "downsample"``: integer-factor block mean (images), block majority (labels)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from volprep.preprocess import downsample
from volprep.reductions.base import GridReduction, PreprocessConfig, Reduced


class Downsample(GridReduction):
    name = "downsample"

    def matches(self, cfg: PreprocessConfig) -> bool:
        return cfg.reduce == "downsample"

    def output_shape(self, shape: tuple[int, int, int], affine: np.ndarray,
                     cfg: PreprocessConfig) -> tuple[int, int, int]:
        return downsample.downsampled_shape(shape, cfg.factor)

    def apply(self, image: np.ndarray, mask: np.ndarray | None, affine: np.ndarray,
              cfg: PreprocessConfig, notes: list[str]) -> Reduced:
        eff = downsample.effective_factors(image.shape, cfg.factor)
        if eff != cfg.factor:
            notes.append(f"downsample factor {cfg.factor} reduced to {eff} on short axes")
        out = downsample.block_mean(image, eff)
        small = downsample.block_majority(mask, eff) if mask is not None else None
        return out, small, downsample.block_affine(affine, eff)

    def cache_keys(self, cfg: PreprocessConfig) -> Mapping[str, Any]:
        return {"factor": list(cfg.factor)}


UNIT = Downsample()
