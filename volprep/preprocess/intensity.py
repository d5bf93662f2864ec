"""Per-channel intensity statistics, their pooling over a dataset, and normalisation.

This module owns what ``normalize`` means. Statistics are gathered per case when it is
preprocessed (``channel_stats``) and stored with it, so normalisation runs at shard
writing time without re-reading any input, from per-case or pooled dataset statistics.

Foreground rule (one rule everywhere, ``foreground_mask``): a voxel is foreground when it
exceeds ``floor + 0.05 * (p99 - floor)`` of its channel, where ``floor`` is the channel's
0.5th percentile and p99 its 99th (both over all voxels), i.e. it stands clear of the
background floor (zero-filled MRI background with its noise, CT air). The floor is a
percentile, not the minimum, so a few outliers below the background (the ringing a
wavelet approximation leaves at sharp edges, down to -64 on a T1 whose background is 0)
cannot drag the threshold under the background noise. The same floor is what padding
fills with (``channel_stats``'s ``floor``). A (near-)constant channel has no foreground.
Percentiles ``p_low``/``p_high`` are taken over the foreground (over all voxels when
there is none).

Normalisers: "zscore" maps ``(x - mean) / std`` with the foreground statistics
(``zscore_over = "foreground"``) or the all-voxel ones, applied to *every* voxel (as
nnU-Net does without a mask: background keeps its z-scored value, not 0, so the volume
stays continuous under later augmentation). "percentile" clips to ``[p_low, p_high]`` then
scales to [0, 1] ("unit") or z-scores with the foreground mean/std ("zscore").
"ct" clips to ``ct_window`` (HU) and scales to [0, 1]. "none" only casts. A zero spread
(std 0, ``p_low == p_high``) divides by 1, so constant volumes never give NaN or inf.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from volprep import kernels
from volprep.config import PreprocessConfig

FOREGROUND_FRACTION = 0.05
FLOOR_PERCENTILE = 0.5
_EPS = 1e-8
# Percentiles (a sort, ~15 ms on a 128x128x80 volume) are taken on every 2nd voxel along
# each axis of volumes larger than this: 1/8 of the voxels, within a fraction of a percent
# of the full figure on smooth MRI/CT data. Means and deviations always use every voxel.
PERCENTILE_SUBSAMPLE_ABOVE = 1 << 20


def _percentile_sample(channel: np.ndarray) -> np.ndarray:
    if channel.size > PERCENTILE_SUBSAMPLE_ABOVE and channel.ndim == 3:
        return channel[::2, ::2, ::2]
    return channel


def background_floor(channel: np.ndarray) -> tuple[float, float]:
    """``(floor, p99)`` of one channel: its 0.5th and 99th percentiles (module docstring)."""
    lo, hi = np.percentile(_percentile_sample(np.asarray(channel)), [FLOOR_PERCENTILE, 99.0])
    return float(lo), float(hi)


def foreground_threshold(channel: np.ndarray) -> float:
    """The intensity above which a voxel counts as foreground (see the module docstring)."""
    lo, hi = background_floor(channel)
    return lo + FOREGROUND_FRACTION * (hi - lo)


def foreground_mask(channel: np.ndarray) -> np.ndarray:
    """Boolean foreground of one channel by the module's rule (see the module docstring)."""
    values = np.asarray(channel)
    return values > foreground_threshold(values)


def channel_stats(image: np.ndarray, p_low: float, p_high: float) -> list[dict[str, Any]]:
    """Statistics of each channel of a ``[D, H, W, C]`` image, JSON-able.

    One compiled pass a channel (:func:`volprep.kernels.moments`) after the background
    floor: means and deviations use every voxel (float64 sums); percentiles use the
    subsample of large volumes (see ``PERCENTILE_SUBSAMPLE_ABOVE``).

    Args:
        image: the preprocessed (not normalised) image.
        p_low: lower percentile (0-100), taken over the foreground.
        p_high: upper percentile.

    Returns:
        Per channel: ``n`` (voxels), ``mean``, ``std``, ``min``, ``max`` (all voxels),
        ``fg_mean``, ``fg_std``, ``fg_fraction`` (foreground voxels), ``floor`` (the
        background level padding fills with), ``p_low``, ``p_high``.
    """
    stats = []
    for c in range(image.shape[-1]):
        channel = np.asarray(image[..., c], dtype=np.float32)
        floor, p99 = background_floor(channel)
        threshold = floor + FOREGROUND_FRACTION * (p99 - floor)
        m = kernels.moments(channel, pivot=(floor + p99) / 2, threshold=threshold)
        fg_n = int(m["fg_n"])
        sample = _percentile_sample(channel)
        sample_fg = sample[sample > threshold]
        lo, hi = np.percentile(sample_fg if sample_fg.size else sample, [p_low, p_high])
        stats.append({
            "n": int(m["n"]),
            "mean": float(m["mean"]),
            "std": float(m["std"]),
            "min": float(m["min"]),
            "max": float(m["max"]),
            "fg_mean": float(m["fg_mean"] if fg_n else m["mean"]),
            "fg_std": float(m["fg_std"] if fg_n else m["std"]),
            "fg_fraction": float(fg_n / channel.size),
            "floor": floor,
            "p_low": float(lo),
            "p_high": float(hi),
        })
    return stats


def dataset_statistics(per_case_stats: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Pools per-case channel statistics into dataset statistics (same keys).

    Means and standard deviations are pooled exactly, weighted by voxel counts (``n``
    for all voxels, ``n * fg_fraction`` for the foreground; a case without foreground
    counts its all-voxel moments, as ``channel_stats`` does); ``min``/``max`` are the
    extremes; ``p_low``/``p_high`` are medians of the per-case percentiles (exact pooled
    percentiles would need every voxel).

    Raises:
        ValueError: no cases, or cases with different channel counts.
    """
    if not per_case_stats:
        raise ValueError("dataset_statistics needs at least one case")
    channels = {len(case) for case in per_case_stats}
    if len(channels) != 1:
        raise ValueError(f"cases have different channel counts: {sorted(channels)}")
    pooled = []
    for c in range(channels.pop()):
        rows = [case[c] for case in per_case_stats]
        n = np.asarray([r["n"] for r in rows], dtype=np.float64)
        fg_n = n * np.asarray([r["fg_fraction"] for r in rows])
        fg_w = np.where(fg_n > 0, fg_n, n)  # matches channel_stats' fallback

        def pool(weights: np.ndarray, mean_key: str, std_key: str, _rows: list[dict[str, Any]] = rows) -> tuple[float, float]:
            means = np.asarray([r[mean_key] for r in _rows])
            stds = np.asarray([r[std_key] for r in _rows])
            total = weights.sum()
            mean = float((weights * means).sum() / total)
            var = float((weights * (stds**2 + means**2)).sum() / total - mean**2)
            return mean, float(np.sqrt(max(var, 0.0)))

        mean, std = pool(n, "mean", "std")
        fg_mean, fg_std = pool(fg_w, "fg_mean", "fg_std")
        pooled.append({
            "n": int(n.sum()),
            "mean": mean,
            "std": std,
            "min": float(min(r["min"] for r in rows)),
            "max": float(max(r["max"] for r in rows)),
            "fg_mean": fg_mean,
            "fg_std": fg_std,
            "fg_fraction": float(fg_n.sum() / n.sum()),
            "p_low": float(np.median([r["p_low"] for r in rows])),
            "p_high": float(np.median([r["p_high"] for r in rows])),
        })
    return pooled


def _spread(value: float) -> float:
    return value if value > _EPS else 1.0


def normalization_params(
    stats: list[dict[str, Any]], cfg: PreprocessConfig, dataset_stats: list[dict[str, Any]] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every normaliser as ``(clip(x, lo, hi) - sub) / div`` per channel: ``(lo, hi, sub, div)``.

    float32 ``[C]`` each (``lo``/``hi`` are -inf/inf where nothing is clipped), from the
    per-case statistics (``Prepared.meta["stats"]``) or pooled ``dataset_stats``.

    Raises:
        ValueError: an unknown normaliser (config validation makes it unreachable).
    """
    use = dataset_stats if dataset_stats is not None else stats
    lo: list[float] = []
    hi: list[float] = []
    sub: list[float] = []
    div: list[float] = []
    inf = float("inf")
    for st in use:
        if cfg.normalize == "zscore":
            mean, std = (st["fg_mean"], st["fg_std"]) if cfg.zscore_over == "foreground" else (st["mean"], st["std"])
            row = (-inf, inf, mean, _spread(std))
        elif cfg.normalize == "percentile":
            p_lo, p_hi = st["p_low"], st["p_high"]
            if cfg.percentile_scale == "unit":
                row = (p_lo, p_hi, p_lo, _spread(p_hi - p_lo))
            else:
                row = (p_lo, p_hi, st["fg_mean"], _spread(st["fg_std"]))
        elif cfg.normalize == "ct":
            w_lo, w_hi = cfg.ct_window
            row = (w_lo, w_hi, w_lo, w_hi - w_lo)
        elif cfg.normalize == "none":
            row = (-inf, inf, 0.0, 1.0)
        else:
            raise ValueError(f"unknown normaliser {cfg.normalize!r}")
        for values, v in zip((lo, hi, sub, div), row, strict=True):
            values.append(v)
    return tuple(np.asarray(v, dtype=np.float32) for v in (lo, hi, sub, div))  # type: ignore[return-value]


def normalize(
    image: np.ndarray,
    stats: list[dict[str, Any]],
    cfg: PreprocessConfig,
    dataset_stats: list[dict[str, Any]] | None = None,
) -> np.ndarray:
    """Normalises a ``[D, H, W, C]`` image per channel as ``cfg.normalize`` says.

    Args:
        image: the prepared image (``Prepared.image``), any float dtype.
        stats: its per-channel statistics (``Prepared.meta["stats"]``).
        cfg: the preprocess config (``normalize``, ``zscore_over``, ``percentile_scale``,
            ``ct_window``).
        dataset_stats: pooled statistics that replace ``stats`` when given.

    Returns:
        float32 array of ``image``'s shape, finite wherever ``image`` is:
        ``(clip(x, lo, hi) - sub) / div`` in float32 (:func:`normalization_params`).

    Raises:
        ValueError: the statistics do not match the image's channels.
    """
    use = dataset_stats if dataset_stats is not None else stats
    if len(use) != image.shape[-1]:
        raise ValueError(f"{len(use)} channel statistics for an image with {image.shape[-1]} channels")
    lo, hi, sub, div = normalization_params(stats, cfg, dataset_stats)
    out = np.asarray(image, dtype=np.float32)
    if np.isfinite(lo).any() or np.isfinite(hi).any():
        out = np.clip(out, lo, hi)
    return (out - sub) / div
