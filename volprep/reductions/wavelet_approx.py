"""``reduce = "wavelet"``, ``mode = "approx"``: keep the approximation band (a 2^level reduction).

The volume is edge-padded to a multiple of ``2**level``, decomposed with pywavelets and
only the approximation band kept, clipped to the input's range (the filter rings at sharp
edges). Its voxels sit where the wavelet's equivalent low-pass filter is centred
(``wavelet.approx_phase``), which the output affine carries. Labels take the majority of
``2**level`` blocks that start where that filter is centred, to within half a voxel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from volprep.errors import ConfigError
from volprep.preprocess import downsample, wavelet
from volprep.reductions.base import GridReduction, PreprocessConfig, Reduced, clip_to_range


def check_wavelet_name(cfg: PreprocessConfig) -> None:
    """The wavelet must be one pywavelets knows (checked when the config is read)."""
    import pywt

    if cfg.wavelet not in pywt.wavelist(kind="discrete"):
        raise ConfigError(None, "preprocess.wavelet",
                          f"{cfg.wavelet!r} is not a discrete wavelet pywt knows (e.g. 'haar', 'db2', 'sym4')")


def _round_up(shape: tuple[int, ...], multiple: int) -> tuple[int, int, int]:
    out = tuple(-(-int(n) // multiple) * multiple for n in shape[:3])
    return out[0], out[1], out[2]


def _shifted_blocks(mask: np.ndarray, start: tuple[int, int, int]) -> np.ndarray:
    """``mask`` re-indexed so block 0 starts at input voxel ``start`` (edges clamped)."""
    index = [np.clip(np.arange(n) + s, 0, n - 1) for n, s in zip(mask.shape, start, strict=True)]
    return mask[np.ix_(*index)]


class WaveletApprox(GridReduction):
    name = "wavelet"

    def matches(self, cfg: PreprocessConfig) -> bool:
        return cfg.reduce == "wavelet" and cfg.mode == "approx"

    def check_config(self, cfg: PreprocessConfig) -> None:
        check_wavelet_name(cfg)

    def output_shape(self, shape: tuple[int, int, int], affine: np.ndarray,
                     cfg: PreprocessConfig) -> tuple[int, int, int]:
        step = wavelet.shape_multiple_for(cfg.level)
        padded = _round_up(shape, step)
        return padded[0] // step, padded[1] // step, padded[2] // step

    def apply(self, image: np.ndarray, mask: np.ndarray | None, affine: np.ndarray,
              cfg: PreprocessConfig, notes: list[str]) -> Reduced:
        step = wavelet.shape_multiple_for(cfg.level)
        padded, pad = wavelet.pad_to_multiple(image, step, mode="edge")
        if any(after for _, after in pad):
            notes.append(f"padded by {[p[1] for p in pad]} voxels (edge values) to multiples of {step}")
        out = clip_to_range(wavelet.approximation(padded, cfg.wavelet, cfg.level), image)
        phase = wavelet.approx_phase(cfg.wavelet, cfg.level)
        grid = np.eye(4)
        for axis in range(3):
            grid[axis, axis] = step
            grid[axis, 3] = phase
        small = None
        if mask is not None:
            start = round(phase - (step - 1) / 2)
            padded_mask, _ = wavelet.pad_to_multiple(mask, step, mode="constant")
            shifted = _shifted_blocks(padded_mask, (start, start, start)) if start else padded_mask
            small = downsample.block_majority(shifted, (step, step, step))
            notes.append(f"labels: majority over blocks starting at voxel {start}, wavelet centre {phase:.3f}")
        return out, small, np.asarray(affine, dtype=np.float64) @ grid

    def cache_keys(self, cfg: PreprocessConfig) -> Mapping[str, Any]:
        return {"wavelet": cfg.wavelet, "level": cfg.level, "mode": cfg.mode}


UNIT = WaveletApprox()
