"""What every reduction provides, and the pieces several share.

A reduction turns a case's reoriented voxels (any memory order) into the smaller (or
differently sampled) array the cache keeps, and says exactly where it put them: the
output grid's affine. Image and mask go through the same reduction (labels by nearest
or majority rules, never interpolated). A unit also knows its shape from a header alone
(to estimate memory before reading), the multiple a target shape must be, how its
records are encoded, which config keys change what it caches, and how to measure what
it lost (PSNR/SSIM, on a fixed sample of cases).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from volprep.preprocess import fidelity, resample


class PreprocessConfig(Protocol):
    """The ``[preprocess]`` settings reductions read (``volprep.config.PreprocessConfig``
    has them; reductions do not import the config module, which looks names up here)."""

    @property
    def reduce(self) -> str: ...

    @property
    def mode(self) -> str: ...

    @property
    def factor(self) -> tuple[int, int, int]: ...

    @property
    def spacing(self) -> tuple[float, float, float] | None: ...

    @property
    def target_shape(self) -> tuple[int, int, int] | None: ...

    @property
    def interpolation(self) -> str: ...

    @property
    def wavelet(self) -> str: ...

    @property
    def level(self) -> int: ...

    @property
    def keep(self) -> float: ...

    @property
    def wavelet_values(self) -> str: ...

    @property
    def dtype(self) -> str: ...


Reduced = tuple[np.ndarray, "np.ndarray | None", np.ndarray]
"""``(image float32 C-contiguous [D, H, W, C], mask or None, 4x4 affine of the output grid)``."""


class Reduction(Protocol):
    """One reduction (``[preprocess] reduce``; a name may have several modes)."""

    name: str  # the config value of ``reduce``

    def matches(self, cfg: PreprocessConfig) -> bool:
        """Whether this unit is the one ``cfg`` selects."""

    def check_config(self, cfg: PreprocessConfig) -> None:
        """Raises ConfigError for settings this reduction cannot use."""

    def output_shape(self, shape: tuple[int, int, int], affine: np.ndarray,
                     cfg: PreprocessConfig) -> tuple[int, int, int]:
        """The spatial shape :meth:`apply` makes of a reoriented grid (from a header)."""

    def apply(self, image: np.ndarray, mask: np.ndarray | None, affine: np.ndarray,
              cfg: PreprocessConfig, notes: list[str]) -> Reduced:
        """Reduces reoriented views; appends remarks a person should see to ``notes``."""

    def shape_multiple(self, cfg: PreprocessConfig) -> int:
        """Target shapes must be multiples of this."""

    def cache_keys(self, cfg: PreprocessConfig) -> Mapping[str, Any]:
        """The settings that change what the cache holds for a case (beyond the common ones)."""

    def image_encoding(self, cfg: PreprocessConfig, shape: tuple[int, ...]) -> tuple[str, dict[str, Any] | None]:
        """``(encoding, layout)`` of the records' ``image`` of ``shape`` ``[D, H, W, C]``."""

    def fidelity(self, reference: np.ndarray, reference_affine: np.ndarray, out: np.ndarray,
                 out_affine: np.ndarray, cfg: PreprocessConfig) -> dict[str, Any] | None:
        """What the reduction lost on this case (PSNR/SSIM), or None for a lossless one."""


class GridReduction:
    """Shared behaviour of reductions that resample onto a coarser grid, stored raw."""

    name = ""

    def check_config(self, cfg: PreprocessConfig) -> None:
        return None

    def shape_multiple(self, cfg: PreprocessConfig) -> int:
        return 1

    def image_encoding(self, cfg: PreprocessConfig, shape: tuple[int, ...]) -> tuple[str, dict[str, Any] | None]:
        return "raw", None

    def fidelity(self, reference: np.ndarray, reference_affine: np.ndarray, out: np.ndarray,
                 out_affine: np.ndarray, cfg: PreprocessConfig) -> dict[str, Any] | None:
        """The reduced volume upsampled back linearly, against the unreduced one."""
        shape_before = tuple(int(n) for n in reference.shape[:3])
        back = resample.upsample_to(out, out_affine, shape_before, reference_affine)  # type: ignore[arg-type]
        stored = math.prod(out.shape[:3]) * out.shape[3] * np.dtype(cfg.dtype).itemsize
        return {
            "psnr": fidelity.psnr(reference, back),
            "ssim": fidelity.central_ssim(reference, back),
            "ssim_region": "central 64^3 block",
            "ratio": fidelity.storage_ratio(math.prod(shape_before) * out.shape[3], stored),
            "against": "unreduced reoriented volume; reduced volume upsampled back linearly",
        }


def clip_to_range(out: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Clips each channel of a reduced image to its input's range, in place.

    Filters with negative lobes (wavelets, cubic splines) ring at sharp edges: a T1 whose
    background is 0 comes out with voxels down to -64 next to the skull. Values no input
    voxel had are artefacts, and they would drag the background floor (hence the
    foreground and the z-score) down; block means and linear interpolation never leave
    the input's range, so after this no reduction does.
    """
    for c in range(out.shape[-1]):
        channel = image[..., c]
        np.clip(out[..., c], np.float32(channel.min()), np.float32(channel.max()), out=out[..., c])
    return out
