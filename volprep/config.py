"""Typed pipeline configuration, loaded from TOML.

A pipeline config has one table per stage of the flow (``[job]``, ``[read]``,
``[preprocess]``, ``[balance]``, ``[augment]``). Each table becomes a frozen dataclass that
validates itself in ``__post_init__``; unknown keys and bad values raise
:class:`~volprep.errors.ConfigError` naming the file, the key and what is allowed.
``section_fingerprint`` hashes only the tables a stage depends on, so the cache can tell
which cached cases a config change makes stale.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from volprep.errors import ConfigError

REDUCE_METHODS = ("none", "downsample", "resample", "wavelet")
NORMALIZERS = ("zscore", "percentile", "ct", "none")
DTYPES = ("float16", "float32")
ON_ERROR = ("skip", "fail")
NON_FINITE = ("fail", "zero")
WAVELET_MODES = ("approx", "compress")
CLASS_BY = ("label", "rarest")
# The contract's [augment] defaults, used when a config has no [augment] table.
DEFAULT_AUGMENT = {"flip_axes": [0], "rotate_deg": 10.0, "scale": [0.9, 1.1], "shift_vox": 3.0}

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}


def parse_size(value: str | int | float, *, key: str = "size", source: str | None = None) -> int:
    """Parses a memory size such as ``"4GiB"``, ``"512MB"`` or ``1073741824`` into bytes."""
    if isinstance(value, bool):
        raise ConfigError(source, key, f"expected a size like '4GiB', got {value!r}")
    if isinstance(value, int | float):
        if value <= 0:
            raise ConfigError(source, key, f"must be positive, got {value!r}")
        return int(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ConfigError(source, key, f"expected a size like '4GiB' or '512MB', got {value!r}")
    size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size <= 0:
        raise ConfigError(source, key, f"must be positive, got {value!r}")
    return size


def _triple(value: Any, key: str, *, kind: type = int, minimum: float = 1) -> tuple[Any, Any, Any]:
    """An int/float or a list of three, as a validated 3-tuple."""
    items = list(value) if isinstance(value, list | tuple) else [value, value, value]
    if len(items) != 3 or any(isinstance(v, bool) or not isinstance(v, int | float) for v in items):
        raise ConfigError(None, key, f"expected a number or a list of three, got {value!r}")
    if kind is int and any(float(v) != int(v) for v in items):
        raise ConfigError(None, key, f"expected whole numbers, got {value!r}")
    if any(v < minimum for v in items):
        raise ConfigError(None, key, f"every value must be >= {minimum}, got {value!r}")
    return tuple(kind(v) for v in items)  # type: ignore[return-value]


def _choice(value: str, key: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(None, key, f"{value!r} is not one of {', '.join(map(repr, allowed))}")


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """``[job]``: what the whole job does with its cases."""

    seed: int = 0
    splits: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {"train": 0.8, "val": 0.2}
    )
    shard_size_mb: float = 64.0
    on_error: str = "skip"
    stratify: bool = True
    fidelity_sample: int = 8

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(None, "job.seed", f"expected a non-negative integer, got {self.seed!r}")
        if not self.splits or not isinstance(self.splits, Mapping):
            raise ConfigError(None, "job.splits", "expected a table like { train = 0.8, val = 0.2 }")
        for name, frac in self.splits.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ConfigError(None, "job.splits", f"split name {name!r} must be lower-case letters, digits, _")
            if isinstance(frac, bool) or not isinstance(frac, int | float) or frac < 0:
                raise ConfigError(None, "job.splits", f"fraction of {name!r} must be >= 0, got {frac!r}")
        total = sum(self.splits.values())
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(None, "job.splits", f"fractions must add up to 1, they add up to {total:g}")
        object.__setattr__(self, "splits", {k: float(v) for k, v in self.splits.items()})
        if not isinstance(self.shard_size_mb, int | float) or self.shard_size_mb <= 0:
            raise ConfigError(None, "job.shard_size_mb", f"must be positive, got {self.shard_size_mb!r}")
        _choice(self.on_error, "job.on_error", ON_ERROR)
        if isinstance(self.fidelity_sample, bool) or not isinstance(self.fidelity_sample, int) or self.fidelity_sample < 0:
            raise ConfigError(None, "job.fidelity_sample", f"expected an integer >= 0 (cases measured for PSNR/SSIM), got {self.fidelity_sample!r}")


@dataclasses.dataclass(frozen=True)
class ReadConfig:
    """``[read]``: what a reader accepts before and after reading voxels."""

    max_bytes: int = 4 * 1024**3
    non_finite: str = "fail"
    allow_rgb: bool = False
    affine_tolerance: float = 1e-3

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_bytes", parse_size(self.max_bytes, key="read.max_bytes"))
        _choice(self.non_finite, "read.non_finite", NON_FINITE)


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """``[preprocess]``: reorient, reduce, crop/pad, normalise, store."""

    orientation: str = "RAS"
    reduce: str = "downsample"
    factor: tuple[int, int, int] = (2, 2, 2)
    spacing: tuple[float, float, float] | None = None
    interpolation: str = "linear"
    wavelet: str = "db2"
    level: int = 2
    mode: str = "approx"
    keep: float = 0.05
    wavelet_values: str = "int16"
    target_shape: tuple[int, int, int] | None = None
    crop_foreground: bool = False
    normalize: str = "zscore"
    zscore_over: str = "foreground"
    p_low: float = 0.5
    p_high: float = 99.5
    percentile_scale: str = "unit"
    ct_window: tuple[float, float] = (-1000.0, 1000.0)
    dataset_stats: bool = False
    dtype: str = "float16"

    def __post_init__(self) -> None:
        if not (isinstance(self.orientation, str) and len(self.orientation) == 3
                and sorted(self.orientation.upper().replace("L", "R").replace("P", "A").replace("I", "S")) == ["A", "R", "S"]):
            raise ConfigError(None, "preprocess.orientation", f"expected axis codes like 'RAS' or 'LPS', got {self.orientation!r}")
        object.__setattr__(self, "orientation", self.orientation.upper())
        _choice(self.reduce, "preprocess.reduce", REDUCE_METHODS)
        object.__setattr__(self, "factor", _triple(self.factor, "preprocess.factor"))
        if self.spacing is not None:
            object.__setattr__(self, "spacing", _triple(self.spacing, "preprocess.spacing", kind=float, minimum=1e-6))
        if self.reduce == "resample" and self.spacing is None and self.target_shape is None:
            raise ConfigError(None, "preprocess.spacing", "reduce = 'resample' needs 'spacing' (mm) or 'target_shape'")
        _choice(self.interpolation, "preprocess.interpolation", ("linear", "cubic"))
        _choice(self.mode, "preprocess.mode", WAVELET_MODES)
        if self.reduce == "wavelet":
            import pywt  # a config-time check of the name, one explicit list: pywt's own

            if self.wavelet not in pywt.wavelist(kind="discrete"):
                raise ConfigError(None, "preprocess.wavelet", f"{self.wavelet!r} is not a discrete wavelet pywt knows (e.g. 'haar', 'db2', 'sym4')")
        if isinstance(self.level, bool) or not isinstance(self.level, int) or not 1 <= self.level <= 5:
            raise ConfigError(None, "preprocess.level", f"expected an integer 1..5, got {self.level!r}")
        if not isinstance(self.keep, int | float) or not 0 < self.keep <= 1:
            raise ConfigError(None, "preprocess.keep", f"expected a fraction in (0, 1], got {self.keep!r}")
        _choice(self.wavelet_values, "preprocess.wavelet_values", ("int16", "int8"))
        if self.target_shape is not None:
            object.__setattr__(self, "target_shape", _triple(self.target_shape, "preprocess.target_shape"))
        _choice(self.normalize, "preprocess.normalize", NORMALIZERS)
        _choice(self.zscore_over, "preprocess.zscore_over", ("foreground", "all"))
        _choice(self.percentile_scale, "preprocess.percentile_scale", ("unit", "zscore"))
        if not 0 <= self.p_low < self.p_high <= 100:
            raise ConfigError(None, "preprocess.p_low", f"need 0 <= p_low < p_high <= 100, got {self.p_low}, {self.p_high}")
        window = tuple(float(v) for v in self.ct_window)
        if len(window) != 2 or window[0] >= window[1]:
            raise ConfigError(None, "preprocess.ct_window", f"expected [low, high] in HU with low < high, got {self.ct_window!r}")
        object.__setattr__(self, "ct_window", window)
        _choice(self.dtype, "preprocess.dtype", DTYPES)


@dataclasses.dataclass(frozen=True)
class BalanceConfig:
    """``[balance]``: the class-balanced offline augmentation plan (train split only)."""

    enabled: bool = True
    max_copies_per_case: int = 4
    max_augmented_fraction: float = 0.5
    class_by: str = "label"
    subset: tuple[str, ...] | None = None
    subset_column: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_copies_per_case, bool) or not isinstance(self.max_copies_per_case, int) or self.max_copies_per_case < 0:
            raise ConfigError(None, "balance.max_copies_per_case", f"expected an integer >= 0, got {self.max_copies_per_case!r}")
        if not isinstance(self.max_augmented_fraction, int | float) or not 0 <= self.max_augmented_fraction <= 1:
            raise ConfigError(None, "balance.max_augmented_fraction", f"expected a fraction in [0, 1], got {self.max_augmented_fraction!r}")
        _choice(self.class_by, "balance.class_by", CLASS_BY)
        if self.subset is not None:
            object.__setattr__(self, "subset", tuple(str(s) for s in self.subset))


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """A whole pipeline config; ``augment`` is the raw ``[augment]`` table (see ``augmentation``)."""

    job: JobConfig = dataclasses.field(default_factory=JobConfig)
    read: ReadConfig = dataclasses.field(default_factory=ReadConfig)
    preprocess: PreprocessConfig = dataclasses.field(default_factory=PreprocessConfig)
    balance: BalanceConfig = dataclasses.field(default_factory=BalanceConfig)
    augment: Mapping[str, Any] = dataclasses.field(default_factory=lambda: dict(DEFAULT_AUGMENT))
    source: str = "<defaults>"

    def augmentation(self, seed: int | None = None) -> Any:
        """The ``[augment]`` table as a :class:`volprep.Augment`."""
        from volprep.augment.spec import Augment

        table = dict(self.augment)
        if seed is not None:
            table["seed"] = seed
        return Augment(**table)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every setting (what the manifest records)."""
        out: dict[str, Any] = {}
        for name in ("job", "read", "preprocess", "balance"):
            out[name] = _jsonable(dataclasses.asdict(getattr(self, name)))
        out["augment"] = _jsonable(dict(self.augment))
        return out

    def with_overrides(self, **job: Any) -> PipelineConfig:
        """A copy with ``[job]`` keys replaced (CLI flags such as ``--seed``)."""
        fields = {k: v for k, v in job.items() if v is not None}
        return dataclasses.replace(self, job=dataclasses.replace(self.job, **fields))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def section_fingerprint(config: PipelineConfig, *sections: str) -> str:
    """A short hash of the named config tables, for cache keys."""
    data = config.to_dict()
    blob = json.dumps({s: data[s] for s in sections}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


_SECTIONS: dict[str, type] = {
    "job": JobConfig,
    "read": ReadConfig,
    "preprocess": PreprocessConfig,
    "balance": BalanceConfig,
}


def config_from_dict(data: Mapping[str, Any], source: str | Path = "<config>") -> PipelineConfig:
    """Builds a :class:`PipelineConfig` from a parsed TOML document.

    Raises:
        ConfigError: an unknown table or key, or a value out of range; the message names
            ``source`` and the key.
    """
    source = str(source)
    unknown = sorted(set(data) - set(_SECTIONS) - {"augment"})
    if unknown:
        raise ConfigError(source, unknown[0], f"unknown table; allowed: {', '.join(sorted([*_SECTIONS, 'augment']))}")
    parts: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, Mapping):
            raise ConfigError(source, name, "expected a table")
        allowed = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(table) - allowed)
        if bad:
            raise ConfigError(source, f"{name}.{bad[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
        try:
            parts[name] = cls(**table)
        except ConfigError as err:
            raise ConfigError(source, err.key, err.problem) from None
        except (TypeError, ValueError) as err:
            raise ConfigError(source, name, str(err)) from None
    augment = data.get("augment", DEFAULT_AUGMENT)
    if not isinstance(augment, Mapping):
        raise ConfigError(source, "augment", "expected a table")
    config = PipelineConfig(**parts, augment=dict(augment), source=source)
    try:
        config.augmentation()
    except ConfigError as err:
        raise ConfigError(source, err.key, err.problem) from None
    except (TypeError, ValueError) as err:
        raise ConfigError(source, "augment", str(err)) from None
    return config


def load_config(path: str | Path | None) -> PipelineConfig:
    """Loads and validates a pipeline TOML file; ``None`` gives the defaults."""
    if path is None:
        return config_from_dict({}, "<defaults>")
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(path, "-", "file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(path, "-", f"not valid TOML: {err}") from None
    return config_from_dict(data, path)
