"""Reductions as units behind one interface (:class:`~volprep.reductions.base.Reduction`),
found through one table.

``REDUCTIONS`` lists them; :func:`for_config` picks the one a ``[preprocess]`` table
selects (``reduce``, and ``mode`` for wavelets); :func:`names` is what ``reduce`` may be.
Adding a reduction is one new module here and one line in ``UNIT_MODULES``: the config
check, the header survey, preprocessing, the cache key, the record encoding and the
fidelity figures all go through the unit.
"""

from __future__ import annotations

import importlib

from volprep.reductions.base import PreprocessConfig, Reduction

# One line a reduction: the module whose ``UNIT`` it is (first match wins in for_config).
UNIT_MODULES: tuple[str, ...] = (
    "volprep.reductions.none",
    "volprep.reductions.downsample",
    "volprep.reductions.resample",
    "volprep.reductions.wavelet_approx",
    "volprep.reductions.wavelet_compress",
)
REDUCTIONS: tuple[Reduction, ...] = tuple(importlib.import_module(name).UNIT for name in UNIT_MODULES)


def names(table: tuple[Reduction, ...] = REDUCTIONS) -> tuple[str, ...]:
    """The values ``[preprocess] reduce`` may take, in table order."""
    return tuple(dict.fromkeys(unit.name for unit in table))


def for_config(cfg: PreprocessConfig, table: tuple[Reduction, ...] = REDUCTIONS) -> Reduction:
    """The unit ``cfg`` selects.

    Raises:
        ValueError: none matches (the config check names the allowed values first).
    """
    for unit in table:
        if unit.matches(cfg):
            return unit
    raise ValueError(f"no reduction matches reduce = {cfg.reduce!r} (mode {cfg.mode!r})")


__all__ = ["REDUCTIONS", "Reduction", "for_config", "names"]
