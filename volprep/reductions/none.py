"""``reduce = "none"``: the reoriented scan itself, in float32 (lossless)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from volprep.reductions.base import GridReduction, PreprocessConfig, Reduced


class NoReduction(GridReduction):
    name = "none"

    def matches(self, cfg: PreprocessConfig) -> bool:
        return cfg.reduce == "none"

    def output_shape(self, shape: tuple[int, int, int], affine: np.ndarray,
                     cfg: PreprocessConfig) -> tuple[int, int, int]:
        return shape

    def apply(self, image: np.ndarray, mask: np.ndarray | None, affine: np.ndarray,
              cfg: PreprocessConfig, notes: list[str]) -> Reduced:
        out = np.ascontiguousarray(image, dtype=np.float32)
        small = np.ascontiguousarray(mask) if mask is not None else None
        return out, small, np.asarray(affine, dtype=np.float64)

    def cache_keys(self, cfg: PreprocessConfig) -> Mapping[str, Any]:
        return {}

    def fidelity(self, reference: np.ndarray, reference_affine: np.ndarray, out: np.ndarray,
                 out_affine: np.ndarray, cfg: PreprocessConfig) -> dict[str, Any] | None:
        return None


UNIT = NoReduction()
