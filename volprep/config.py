"""Typed pipeline configuration, loaded from TOML.

A pipeline config has one table per stage of the flow. Each table becomes a frozen
dataclass that validates itself in ``__post_init__``: first every value against the TOML
types its field declares with :func:`_key` (the one place a key's type is written; a
string is never read as a boolean, a float never as an integer, NaN and infinity are not
numbers), then its range. Unknown tables, unknown keys and bad values raise
:class:`~volprep.errors.ConfigError` naming the file, the key and what is allowed. Which
settings make cached cases stale is decided by :func:`volprep.convert.cache_config_key`.

Keys (their types, defaults and meanings are in each class's docstring):

* ``[job]`` (:class:`JobConfig`): ``seed``, ``splits``, ``shard_size_mb``, ``on_error``,
  ``stratify``, ``fidelity_sample``, ``unlabelled``, ``split_file``, ``split_fold``.
* ``[read]`` (:class:`ReadConfig`): ``max_bytes``, ``non_finite``, ``allow_rgb``,
  ``affine_tolerance``.
* ``[preprocess]`` (:class:`PreprocessConfig`): ``orientation``, ``reduce``, ``factor``,
  ``spacing``, ``interpolation``, ``wavelet``, ``level``, ``mode``, ``keep``,
  ``wavelet_values``, ``target_shape``, ``crop_foreground``, ``normalize``,
  ``zscore_over``, ``p_low``, ``p_high``, ``percentile_scale``, ``ct_window``,
  ``dataset_stats``, ``dtype``.
* ``[balance]`` (:class:`BalanceConfig`): ``enabled``, ``max_copies_per_case``,
  ``max_augmented_fraction``, ``class_by``, ``subset``, ``subset_column``.
* ``[augment]``: the fields of :class:`volprep.augment.spec.Augment`, which validates them.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from volprep.augment.spec import Augment
from volprep.errors import ConfigError

REDUCE_METHODS = ("none", "downsample", "resample", "wavelet")
NORMALIZERS = ("zscore", "percentile", "ct", "none")
DTYPES = ("float16", "float32")
ON_ERROR = ("skip", "fail")
UNLABELLED = ("fail", "skip")
NON_FINITE = ("fail", "zero")
WAVELET_MODES = ("approx", "compress")
CLASS_BY = ("label", "rarest")
# The contract's [augment] defaults, used when a config has no [augment] table.
DEFAULT_AUGMENT = {"flip_axes": [0], "rotate_deg": 10.0, "scale": [0.9, 1.1], "shift_vox": 3.0}
MIN_SPACING_MM = 1e-6

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}


def parse_size(value: str | int | float, *, key: str = "size", source: str | None = None) -> int:
    """Parses a memory size such as ``"4GiB"``, ``"512MB"`` or ``1073741824`` into bytes.

    Raises:
        ConfigError: not a size, not finite, or not positive.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(source, key, f"expected a size like '4GiB', got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(source, key, f"must be a positive, finite size, got {value!r}")
        return int(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", value)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ConfigError(source, key, f"expected a size like '4GiB' or '512MB', got {value!r}")
    number = float(match.group(1))  # a long enough run of digits is inf
    if not math.isfinite(number) or int(number * _SIZE_UNITS[unit]) <= 0:
        raise ConfigError(source, key, f"must be a positive, finite size, got {value!r}")
    return int(number * _SIZE_UNITS[unit])


# --- the TOML type of every key --------------------------------------------------------

_TOML = "volprep.toml"  # the dataclass field metadata entry that holds a key's Toml
# What each TOML type reads as in a message, alone and as the items of an array or table.
# "number" is an integer or a finite float (TOML `64` is a fine shard size); no other type
# stands in for another: not a string for a boolean, a boolean for a number, a float for
# an integer, a number for a string, a table for an array.
_ONE = {"boolean": "true or false", "integer": "an integer", "number": "a finite number",
        "string": "a string", "array": "an array", "table": "a table"}
_MANY = {"boolean": "booleans", "integer": "integers", "number": "finite numbers",
         "string": "strings"}


@dataclasses.dataclass(frozen=True)
class Toml:
    """The TOML types one config key accepts (declared by :func:`_key`, checked by :func:`_check_types`).

    Attributes:
        types: the accepted types, among "boolean", "integer", "number", "string", "array",
            "table".
        items: the type of every item of an array and every value of a table.
        optional: whether the key may be absent (``None``; TOML has no null, a manifest's
            JSON has).
        hint: what a message adds to the expected types, e.g. ``"mm"``.
    """

    types: tuple[str, ...]
    items: str | None = None
    optional: bool = False
    hint: str = ""

    def expected(self) -> str:
        """The accepted types in words: ``"an integer or an array of integers"``."""
        words = [f"{_ONE[t]} of {_MANY[self.items]}" if self.items and t in ("array", "table")
                 else _ONE[t] for t in self.types]
        return " or ".join(words) + (f" ({self.hint})" if self.hint else "")


def _key(*types: str, default: Any = dataclasses.MISSING, factory: Callable[[], Any] | None = None,
         items: str | None = None, hint: str = "") -> Any:
    """A config dataclass field with its TOML types; ``default=None`` makes it optional."""
    toml = Toml(types, items=items, optional=default is None, hint=hint)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={_TOML: toml})
    return dataclasses.field(default=default, metadata={_TOML: toml})


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, datetime.datetime):
        return "date-time"
    if isinstance(value, datetime.date):
        return "date"
    if isinstance(value, datetime.time):
        return "time"
    return f"Python {type(value).__name__}"


def _describe(value: Any) -> str:
    """A value as a message names it: ``the string 'false'``, ``the float nan``."""
    kind = _toml_type(value)
    if kind == "boolean":
        return f"the boolean {'true' if value else 'false'}"
    if kind == "array":
        return f"the array {list(value)!r}"
    if kind == "table":
        return f"the table {dict(value)!r}"
    if kind in ("date-time", "date", "time"):
        return f"the {kind} {value.isoformat()}"
    return f"the {kind} {value!r}"


def _fits(value: Any, toml_type: str) -> bool:
    kind = _toml_type(value)
    if toml_type == "number":
        return kind == "integer" or (kind == "float" and math.isfinite(value))
    return kind == toml_type


def _check_value(value: Any, toml: Toml, key: str) -> None:
    if value is None and toml.optional:
        return
    if not any(_fits(value, t) for t in toml.types):
        raise ConfigError(None, key, f"expected {toml.expected()}, got {_describe(value)}")
    if toml.items is not None and isinstance(value, list | tuple | Mapping):
        for item in value.values() if isinstance(value, Mapping) else value:
            if not _fits(item, toml.items):
                raise ConfigError(None, key, f"expected {toml.expected()}, got {_describe(value)}: "
                                             f"{_describe(item)} is not {_ONE[toml.items]}")


def _check_types(config: Any, table: str) -> None:
    """Checks every field of a config dataclass against the TOML types it declares.

    Raises:
        ConfigError: a value of another type, naming ``table.field``.
        TypeError: a field declared without :func:`_key` (a bug, not a user error).
    """
    for field in dataclasses.fields(config):
        toml = field.metadata.get(_TOML)
        if toml is None:
            raise TypeError(f"{type(config).__name__}.{field.name} has no TOML type: declare it with _key()")
        _check_value(getattr(config, field.name), toml, f"{table}.{field.name}")


# --- range checks, run after the type checks ---------------------------------------------


def _triple(value: Any, key: str, *, kind: type = int, minimum: float = 1, unit: str = "") -> tuple[Any, Any, Any]:
    """A type-checked number or list of three, as a 3-tuple of ``kind`` each >= ``minimum``."""
    items = list(value) if isinstance(value, list | tuple) else [value, value, value]
    if len(items) != 3:
        raise ConfigError(None, key, f"expected a number or a list of three, got {value!r}")
    if any(v < minimum for v in items):
        raise ConfigError(None, key, f"every value must be >= {minimum:g}{' ' + unit if unit else ''}, got {value!r}")
    return tuple(kind(v) for v in items)  # type: ignore[return-value]


def _choice(value: str, key: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(None, key, f"{value!r} is not one of {', '.join(map(repr, allowed))}")


def _at_least(value: float, key: str, minimum: float, what: str = "") -> None:
    if value < minimum:
        raise ConfigError(None, key, f"must be >= {minimum:g}{what}, got {value!r}")


def _resolve(path: str, base: Path | None) -> str:
    """``path`` (``~`` expanded) made absolute against ``base`` (default: the current folder)."""
    p = Path(path).expanduser()
    if base is not None and not p.is_absolute():
        p = base / p
    return str(p.resolve())


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """``[job]``: what the whole job does with its cases.

    Attributes:
        seed: seeds splits, record order and augmentation (integer >= 0).
        splits: split name -> fraction of the cases, adding up to 1.
        shard_size_mb: target shard size in MB (> 0).
        on_error: a case that fails: ``"skip"`` it and report it (exit 3) or ``"fail"`` the job.
        stratify: stratify the splits by class.
        fidelity_sample: cases measured for the manifest's PSNR/SSIM of a lossy reduction (0: none).
        unlabelled: in a classification dataset whose labels table covers only some cases, a
            case without a class label ``"fail"``\\ s as a case, or is left out of the job with
            a note (``"skip"``).
        split_file: a fixed split assignment (an nnU-Net ``splits_final.json``: a list of folds
            ``{"train": [...], "val": [...]}``); a relative path is resolved against the config
            file's folder (against the current folder when built in Python) and stored
            absolute; the file is read, and its existence checked, when the job plans its
            splits. None: the splits are planned from ``splits``.
        split_fold: the fold of ``split_file`` to use (integer >= 0).
    """

    seed: int = _key("integer", default=0)
    splits: Mapping[str, float] = _key("table", items="number", hint="like { train = 0.8, val = 0.2 }",
                                       factory=lambda: {"train": 0.8, "val": 0.2})
    shard_size_mb: float = _key("number", default=64.0)
    on_error: str = _key("string", default="skip")
    stratify: bool = _key("boolean", default=True)
    fidelity_sample: int = _key("integer", default=8)
    unlabelled: str = _key("string", default="fail")
    split_file: str | None = _key("string", default=None, hint="a path to a splits_final.json")
    split_fold: int = _key("integer", default=0)

    def __post_init__(self) -> None:
        _check_types(self, "job")
        _at_least(self.seed, "job.seed", 0)
        if not self.splits:
            raise ConfigError(None, "job.splits", "expected a table like { train = 0.8, val = 0.2 }")
        for name, frac in self.splits.items():
            if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ConfigError(None, "job.splits", f"split name {name!r} must be lower-case letters, digits, _")
            if frac < 0:
                raise ConfigError(None, "job.splits", f"fraction of {name!r} must be >= 0, got {frac!r}")
        total = sum(self.splits.values())
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(None, "job.splits", f"fractions must add up to 1, they add up to {total:g}")
        object.__setattr__(self, "splits", {k: float(v) for k, v in self.splits.items()})
        if self.shard_size_mb <= 0:
            raise ConfigError(None, "job.shard_size_mb", f"must be positive, got {self.shard_size_mb!r}")
        _choice(self.on_error, "job.on_error", ON_ERROR)
        _at_least(self.fidelity_sample, "job.fidelity_sample", 0, " (cases measured for PSNR/SSIM)")
        _choice(self.unlabelled, "job.unlabelled", UNLABELLED)
        if self.split_file is not None:
            if not self.split_file.strip():
                raise ConfigError(None, "job.split_file", "expected a path to a splits_final.json, got ''")
            object.__setattr__(self, "split_file", _resolve(self.split_file, None))
        _at_least(self.split_fold, "job.split_fold", 0, " (folds count from 0)")


@dataclasses.dataclass(frozen=True)
class ReadConfig:
    """``[read]``: what a reader accepts before and after reading voxels.

    Attributes:
        max_bytes: refuse a volume whose header claims more: a size string (``"4GiB"``,
            ``"512MB"``) or a positive integer of bytes; stored as bytes.
        non_finite: NaN/Inf voxels ``"fail"`` the case, or are replaced by ``"zero"``.
        allow_rgb: read RGB volumes as channels.
        affine_tolerance: how far (mm) the affines of a case's images and mask may differ (>= 0).
    """

    max_bytes: int = _key("string", "integer", default=4 * 1024**3, hint="a size like '4GiB', or bytes")
    non_finite: str = _key("string", default="fail")
    allow_rgb: bool = _key("boolean", default=False)
    affine_tolerance: float = _key("number", default=1e-3, hint="mm")

    def __post_init__(self) -> None:
        _check_types(self, "read")
        object.__setattr__(self, "max_bytes", parse_size(self.max_bytes, key="read.max_bytes"))
        _choice(self.non_finite, "read.non_finite", NON_FINITE)
        _at_least(self.affine_tolerance, "read.affine_tolerance", 0, " mm")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """``[preprocess]``: reorient, reduce, crop/pad, normalise, store.

    Attributes:
        orientation: canonical voxel orientation, axis codes like ``"RAS"`` or ``"LPS"``.
        reduce: ``"none"``, ``"downsample"``, ``"resample"`` or ``"wavelet"``.
        factor: downsample factor: an integer >= 1, or one per axis.
        spacing: resample: target spacing in mm (> 0), one value or one per axis.
        interpolation: resample: ``"linear"`` or ``"cubic"`` (labels: always nearest).
        wavelet, level, mode, keep: wavelet reduction: a pywt discrete wavelet, levels 1..5,
            ``"approx"`` (the approximation band) or ``"compress"`` (approximation and the
            largest ``keep`` fraction, in (0, 1], of the details).
        wavelet_values: compress: quantised detail values, ``"int16"`` or ``"int8"``.
        target_shape: crop/pad after reduction, three integers >= 1; None: planned from the data.
        crop_foreground: crop to the nonzero bounding box first.
        normalize: ``"zscore"``, ``"percentile"``, ``"ct"`` or ``"none"``.
        zscore_over: z-score statistics over the ``"foreground"`` or ``"all"`` voxels.
        p_low, p_high, percentile_scale: percentile clip (0 <= p_low < p_high <= 100), then
            ``"unit"`` [0, 1] or ``"zscore"``.
        ct_window: CT window ``[low, high]`` in HU, low < high.
        dataset_stats: normalise with dataset-level statistics (a pass over the cache).
        dtype: stored dtype, ``"float16"`` or ``"float32"``.
    """

    orientation: str = _key("string", default="RAS")
    reduce: str = _key("string", default="downsample")
    factor: tuple[int, int, int] = _key("integer", "array", items="integer", default=(2, 2, 2),
                                        hint="one per axis")
    spacing: tuple[float, float, float] | None = _key("number", "array", items="number", default=None,
                                                      hint="mm, one per axis")
    interpolation: str = _key("string", default="linear")
    wavelet: str = _key("string", default="db2")
    level: int = _key("integer", default=2)
    mode: str = _key("string", default="approx")
    keep: float = _key("number", default=0.05)
    wavelet_values: str = _key("string", default="int16")
    target_shape: tuple[int, int, int] | None = _key("array", items="integer", default=None,
                                                     hint="[D, H, W]")
    crop_foreground: bool = _key("boolean", default=False)
    normalize: str = _key("string", default="zscore")
    zscore_over: str = _key("string", default="foreground")
    p_low: float = _key("number", default=0.5)
    p_high: float = _key("number", default=99.5)
    percentile_scale: str = _key("string", default="unit")
    ct_window: tuple[float, float] = _key("array", items="number", default=(-1000.0, 1000.0),
                                          hint="[low, high] in HU")
    dataset_stats: bool = _key("boolean", default=False)
    dtype: str = _key("string", default="float16")

    def __post_init__(self) -> None:
        _check_types(self, "preprocess")
        if not (len(self.orientation) == 3
                and sorted(self.orientation.upper().replace("L", "R").replace("P", "A").replace("I", "S")) == ["A", "R", "S"]):
            raise ConfigError(None, "preprocess.orientation", f"expected axis codes like 'RAS' or 'LPS', got {self.orientation!r}")
        object.__setattr__(self, "orientation", self.orientation.upper())
        _choice(self.reduce, "preprocess.reduce", REDUCE_METHODS)
        object.__setattr__(self, "factor", _triple(self.factor, "preprocess.factor"))
        if self.spacing is not None:
            object.__setattr__(self, "spacing", _triple(self.spacing, "preprocess.spacing", kind=float,
                                                        minimum=MIN_SPACING_MM, unit="mm"))
        if self.reduce == "resample" and self.spacing is None and self.target_shape is None:
            raise ConfigError(None, "preprocess.spacing", "reduce = 'resample' needs 'spacing' (mm) or 'target_shape'")
        _choice(self.interpolation, "preprocess.interpolation", ("linear", "cubic"))
        _choice(self.mode, "preprocess.mode", WAVELET_MODES)
        if self.reduce == "wavelet":
            import pywt  # a config-time check of the name, one explicit list: pywt's own

            if self.wavelet not in pywt.wavelist(kind="discrete"):
                raise ConfigError(None, "preprocess.wavelet", f"{self.wavelet!r} is not a discrete wavelet pywt knows (e.g. 'haar', 'db2', 'sym4')")
        if not 1 <= self.level <= 5:
            raise ConfigError(None, "preprocess.level", f"expected an integer 1..5, got {self.level!r}")
        if not 0 < self.keep <= 1:
            raise ConfigError(None, "preprocess.keep", f"expected a fraction in (0, 1], got {self.keep!r}")
        _choice(self.wavelet_values, "preprocess.wavelet_values", ("int16", "int8"))
        if self.target_shape is not None:
            object.__setattr__(self, "target_shape", _triple(self.target_shape, "preprocess.target_shape"))
        _choice(self.normalize, "preprocess.normalize", NORMALIZERS)
        _choice(self.zscore_over, "preprocess.zscore_over", ("foreground", "all"))
        _choice(self.percentile_scale, "preprocess.percentile_scale", ("unit", "zscore"))
        if not 0 <= self.p_low < self.p_high <= 100:
            raise ConfigError(None, "preprocess.p_low", f"need 0 <= p_low < p_high <= 100, got {self.p_low}, {self.p_high}")
        if len(self.ct_window) != 2 or self.ct_window[0] >= self.ct_window[1]:
            raise ConfigError(None, "preprocess.ct_window", f"expected [low, high] in HU with low < high, got {self.ct_window!r}")
        object.__setattr__(self, "ct_window", tuple(float(v) for v in self.ct_window))
        _choice(self.dtype, "preprocess.dtype", DTYPES)


@dataclasses.dataclass(frozen=True)
class BalanceConfig:
    """``[balance]``: the class-balanced offline augmentation plan (train split only).

    Attributes:
        enabled: plan augmented copies of under-represented classes.
        max_copies_per_case: the most copies of one case (integer >= 0).
        max_augmented_fraction: copies / (originals + copies) in the train split stays <= this.
        class_by: count a case under its class ``"label"``, or its ``"rarest"`` mask label.
        subset: only these case ids get copies; None: every case may.
        subset_column: only the cases true in this column of the labels CSV get copies.
    """

    enabled: bool = _key("boolean", default=True)
    max_copies_per_case: int = _key("integer", default=4)
    max_augmented_fraction: float = _key("number", default=0.5)
    class_by: str = _key("string", default="label")
    subset: tuple[str, ...] | None = _key("array", items="string", default=None, hint="case ids")
    subset_column: str | None = _key("string", default=None, hint="a labels-CSV column")

    def __post_init__(self) -> None:
        _check_types(self, "balance")
        _at_least(self.max_copies_per_case, "balance.max_copies_per_case", 0)
        if not 0 <= self.max_augmented_fraction <= 1:
            raise ConfigError(None, "balance.max_augmented_fraction", f"expected a fraction in [0, 1], got {self.max_augmented_fraction!r}")
        _choice(self.class_by, "balance.class_by", CLASS_BY)
        if self.subset is not None:
            object.__setattr__(self, "subset", tuple(self.subset))


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """A whole pipeline config; ``augment`` is the raw ``[augment]`` table (see ``augmentation``)."""

    job: JobConfig = dataclasses.field(default_factory=JobConfig)
    read: ReadConfig = dataclasses.field(default_factory=ReadConfig)
    preprocess: PreprocessConfig = dataclasses.field(default_factory=PreprocessConfig)
    balance: BalanceConfig = dataclasses.field(default_factory=BalanceConfig)
    augment: Mapping[str, Any] = dataclasses.field(default_factory=lambda: dict(DEFAULT_AUGMENT))
    source: str = "<defaults>"

    def augmentation(self, seed: int | None = None) -> Augment:
        """The ``[augment]`` table as a :class:`volprep.Augment`."""
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


_SECTIONS: dict[str, type] = {
    "job": JobConfig,
    "read": ReadConfig,
    "preprocess": PreprocessConfig,
    "balance": BalanceConfig,
    "augment": Augment,
}


def config_from_dict(data: Mapping[str, Any], source: str | Path = "<config>",
                     base_dir: str | Path | None = None) -> PipelineConfig:
    """Builds a :class:`PipelineConfig` from a parsed TOML document.

    Args:
        data: the parsed document (or a manifest's recorded ``config``).
        source: the file named in error messages.
        base_dir: the folder relative paths (``job.split_file``) are resolved against;
            :func:`load_config` passes the config file's folder. None: the current folder.

    Raises:
        ConfigError: an unknown table or key, a value of the wrong TOML type, or a value out
            of range; the message names ``source`` and the key.
    """
    source = str(source)
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(source, unknown[0], f"unknown table; allowed: {', '.join(sorted(_SECTIONS))}")
    tables: dict[str, dict[str, Any]] = {}
    for name, cls in _SECTIONS.items():
        table = data.get(name, DEFAULT_AUGMENT if name == "augment" else {})
        if not isinstance(table, Mapping):
            raise ConfigError(source, name, f"expected a table, got {_describe(table)}")
        allowed = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(table) - allowed)
        if bad:
            raise ConfigError(source, f"{name}.{bad[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
        tables[name] = dict(table)
    split_file = tables["job"].get("split_file")
    if isinstance(split_file, str) and split_file.strip():
        tables["job"]["split_file"] = _resolve(split_file, Path(base_dir) if base_dir is not None else None)
    try:
        config = PipelineConfig(
            job=JobConfig(**tables["job"]),
            read=ReadConfig(**tables["read"]),
            preprocess=PreprocessConfig(**tables["preprocess"]),
            balance=BalanceConfig(**tables["balance"]),
            augment=tables["augment"],
            source=source,
        )
        config.augmentation()
    except ConfigError as err:
        raise ConfigError(source, err.key, err.problem) from None
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
    return config_from_dict(data, path, base_dir=path.parent)
