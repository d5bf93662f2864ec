"""``reduce = "wavelet"``, ``mode = "compress"``: full resolution, wavelet-coded records.

The cache keeps the full-resolution volume (nothing reduced, nothing padded: every
reduction's window is cut from its own grid, so this one lands exactly where "none"
does). Records store the approximation band plus the largest ``keep`` fraction of the
detail coefficients, quantised (``wavelet_values``), in the "wavelet-compress" encoding
whose layout the manifest documents; the loader reconstructs them in the graph. Target
shapes must be multiples of ``2**level``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from volprep.preprocess import fidelity, wavelet
from volprep.reductions.base import PreprocessConfig
from volprep.reductions.none import NoReduction
from volprep.reductions.wavelet_approx import check_wavelet_name


class WaveletCompress(NoReduction):
    """The cache side is "none" (inherited); the records side codes the window."""

    name = "wavelet"

    def matches(self, cfg: PreprocessConfig) -> bool:
        return cfg.reduce == "wavelet" and cfg.mode == "compress"

    def check_config(self, cfg: PreprocessConfig) -> None:
        check_wavelet_name(cfg)

    def shape_multiple(self, cfg: PreprocessConfig) -> int:
        return wavelet.shape_multiple_for(cfg.level)

    def cache_keys(self, cfg: PreprocessConfig) -> Mapping[str, Any]:
        return {"mode": cfg.mode}  # the coding (wavelet, level, keep, values) happens at write time

    def image_encoding(self, cfg: PreprocessConfig, shape: tuple[int, ...]) -> tuple[str, dict[str, Any] | None]:
        return "wavelet-compress", wavelet.layout(shape, cfg.wavelet, cfg.level, cfg.keep,  # type: ignore[arg-type]
                                                  values=cfg.wavelet_values)

    def fidelity(self, reference: np.ndarray, reference_affine: np.ndarray, out: np.ndarray,
                 out_affine: np.ndarray, cfg: PreprocessConfig) -> dict[str, Any] | None:
        """Encode/decode of the stored volume (edge-padded to the multiple)."""
        padded, _ = wavelet.pad_to_multiple(out, self.shape_multiple(cfg), mode="edge")
        padded = np.ascontiguousarray(padded, dtype=np.float32)
        spec = wavelet.layout(padded.shape, cfg.wavelet, cfg.level, cfg.keep, values=cfg.wavelet_values)  # type: ignore[arg-type]
        decoded = wavelet.decode(wavelet.encode(padded, cfg.wavelet, cfg.level, cfg.keep, values=cfg.wavelet_values), spec)
        return {
            "psnr": fidelity.psnr(padded, decoded),
            "ssim": fidelity.central_ssim(padded, decoded),
            "ssim_region": "central 64^3 block",
            "ratio": fidelity.storage_ratio(padded.size, spec["nbytes"]),
            "against": "stored full-resolution volume; decoded record",
        }


UNIT = WaveletCompress()
