"""Typed pipeline configuration, loaded from TOML.

A pipeline config has one table per stage of the flow. Each table becomes a frozen
dataclass that validates itself in ``__post_init__``: first every value against the TOML
types its field declares with :func:`volprep.config_types.key` (the one place a key's type is written; a
string is never read as a boolean, a float never as an integer, NaN and infinity are not
numbers), then its range. Unknown tables, unknown keys and bad values raise
:class:`~volprep.errors.ConfigError` naming the file, the key and what is allowed. Which
settings make cached cases stale is decided by :func:`volprep.convert.cache_config_key`.

Keys (their types, defaults and meanings are in each class's docstring):

* ``[job]`` (:class:`JobConfig`): ``seed``, ``splits``, ``shard_size_mb``, ``on_error``,
  ``stratify``, ``fidelity_sample``, ``unlabelled``, ``split_file``, ``split_fold``.
* ``[read]`` (:class:`ReadConfig`): ``max_bytes``, ``non_finite``, ``allow_rgb``,
  ``affine_tolerance``, ``dicom_series``, ``dicom_case_id``.
* ``[preprocess]`` (:class:`PreprocessConfig`): ``orientation``, ``reduce``, ``factor``,
  ``spacing``, ``interpolation``, ``wavelet``, ``level``, ``mode``, ``keep``,
  ``wavelet_values``, ``target_shape``, ``crop_foreground``, ``normalize``,
  ``zscore_over``, ``p_low``, ``p_high``, ``percentile_scale``, ``ct_window``,
  ``dataset_stats``, ``dtype``, ``image_encoding``, ``mask_encoding``, ``deflate_level``,
  ``class_locations``.
* ``[balance]`` (:class:`BalanceConfig`): ``enabled``, ``max_copies_per_case``,
  ``max_augmented_fraction``, ``class_by``, ``subset``, ``subset_column``.
* ``[augment]``: the fields of :class:`volprep.augment.spec.Augment`, which validates them.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from volprep.augment.spec import Augment
from volprep.config_types import (
    MIN_SPACING_MM,
    at_least,
    check_types,
    choice,
    describe,
    key,
    parse_size,
    resolve_path,
    triple,
)
from volprep.errors import ConfigError

NORMALIZERS = ("zscore", "percentile", "ct", "none")
DTYPES = ("float16", "float32")
ON_ERROR = ("skip", "fail")
UNLABELLED = ("fail", "skip")
NON_FINITE = ("fail", "zero")
DICOM_SERIES = ("split", "refuse")
DICOM_CASE_IDS = {"folder": "name", "series_uid": "uid"}  # -> volprep.cases.discover(folder_ids=)
WAVELET_MODES = ("approx", "compress")
CLASS_BY = ("label", "rarest")
# = volprep.encodings.ARRAY_ENCODINGS (a test holds them equal; importing it would close a cycle)
PAYLOAD_ENCODINGS = ("raw", "deflate", "deflate-shuffle")
# The contract's [augment] defaults, used when a config has no [augment] table.
DEFAULT_AUGMENT = {"flip_axes": [0], "rotate_deg": 10.0, "scale": [0.9, 1.1], "shift_vox": 3.0}
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

    seed: int = key("integer", default=0)
    splits: Mapping[str, float] = key("table", items="number", hint="like { train = 0.8, val = 0.2 }",
                                       factory=lambda: {"train": 0.8, "val": 0.2})
    shard_size_mb: float = key("number", default=64.0)
    on_error: str = key("string", default="skip")
    stratify: bool = key("boolean", default=True)
    fidelity_sample: int = key("integer", default=8)
    unlabelled: str = key("string", default="fail")
    split_file: str | None = key("string", default=None, hint="a path to a splits_final.json")
    split_fold: int = key("integer", default=0)

    def __post_init__(self) -> None:
        check_types(self, "job")
        at_least(self.seed, "job.seed", 0)
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
        choice(self.on_error, "job.on_error", ON_ERROR)
        at_least(self.fidelity_sample, "job.fidelity_sample", 0, " (cases measured for PSNR/SSIM)")
        choice(self.unlabelled, "job.unlabelled", UNLABELLED)
        if self.split_file is not None:
            if not self.split_file.strip():
                raise ConfigError(None, "job.split_file", "expected a path to a splits_final.json, got ''")
            object.__setattr__(self, "split_file", resolve_path(self.split_file, None))
        at_least(self.split_fold, "job.split_fold", 0, " (folds count from 0)")


@dataclasses.dataclass(frozen=True)
class ReadConfig:
    """``[read]``: what a reader accepts before and after reading voxels.

    Attributes:
        max_bytes: refuse a volume whose header claims more: a size string (``"4GiB"``,
            ``"512MB"``) or a positive integer of bytes; stored as bytes.
        non_finite: NaN/Inf voxels ``"fail"`` the case, or are replaced by ``"zero"``.
        allow_rgb: read RGB volumes as channels.
        affine_tolerance: how far (mm) the affines of a case's images and mask may differ (>= 0).
        dicom_series: a folder holding several DICOM series: ``"split"`` it into one case a
            series, or ``"refuse"`` each of them, naming every series in the folder.
        dicom_case_id: ``"folder"`` (its name, ``_s<SeriesNumber>`` when it holds several) or
            ``"series_uid"`` (``dcm-`` + 12 hex digits hashing SeriesInstanceUID: no names).
    """

    max_bytes: int = key("string", "integer", default=4 * 1024**3, hint="a size like '4GiB', or bytes")
    non_finite: str = key("string", default="fail")
    allow_rgb: bool = key("boolean", default=False)
    affine_tolerance: float = key("number", default=1e-3, hint="mm")
    dicom_series: str = key("string", default="split")
    dicom_case_id: str = key("string", default="folder")

    def __post_init__(self) -> None:
        check_types(self, "read")
        object.__setattr__(self, "max_bytes", parse_size(self.max_bytes, key="read.max_bytes"))
        choice(self.non_finite, "read.non_finite", NON_FINITE)
        choice(self.dicom_series, "read.dicom_series", DICOM_SERIES)
        choice(self.dicom_case_id, "read.dicom_case_id", tuple(DICOM_CASE_IDS))
        at_least(self.affine_tolerance, "read.affine_tolerance", 0, " mm")


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
        image_encoding, mask_encoding: how records store images (that the reduction stores
            raw) and label volumes: ``"raw"``, ``"deflate"`` or ``"deflate-shuffle"`` (defaults:
            raw images, deflated label volumes).
        deflate_level: their zlib level 1..9; None: 1 for images, 6 for label volumes
            (measured: :data:`volprep.record_spec.DEFAULT_DEFLATE_LEVEL`).
        class_locations: voxel coordinates stored in a record of a label volume for patch
            sampling (:mod:`volprep.locations`; at most one voxel in 64); 0: none.
    """

    orientation: str = key("string", default="RAS")
    reduce: str = key("string", default="downsample")
    factor: tuple[int, int, int] = key("integer", "array", items="integer", default=(2, 2, 2),
                                        hint="one per axis")
    spacing: tuple[float, float, float] | None = key("number", "array", items="number", default=None,
                                                      hint="mm, one per axis")
    interpolation: str = key("string", default="linear")
    wavelet: str = key("string", default="db2")
    level: int = key("integer", default=2)
    mode: str = key("string", default="approx")
    keep: float = key("number", default=0.05)
    wavelet_values: str = key("string", default="int16")
    target_shape: tuple[int, int, int] | None = key("array", items="integer", default=None,
                                                     hint="[D, H, W]")
    crop_foreground: bool = key("boolean", default=False)
    normalize: str = key("string", default="zscore")
    zscore_over: str = key("string", default="foreground")
    p_low: float = key("number", default=0.5)
    p_high: float = key("number", default=99.5)
    percentile_scale: str = key("string", default="unit")
    ct_window: tuple[float, float] = key("array", items="number", default=(-1000.0, 1000.0),
                                          hint="[low, high] in HU")
    dataset_stats: bool = key("boolean", default=False)
    dtype: str = key("string", default="float16")
    image_encoding: str = key("string", default="raw")
    mask_encoding: str = key("string", default="deflate")
    deflate_level: int | None = key("integer", default=None, hint="1..9")
    class_locations: int = key("integer", default=4096, hint="coordinates a record, 0 for none")

    def __post_init__(self) -> None:
        check_types(self, "preprocess")
        if not (len(self.orientation) == 3
                and sorted(self.orientation.upper().replace("L", "R").replace("P", "A").replace("I", "S")) == ["A", "R", "S"]):
            raise ConfigError(None, "preprocess.orientation", f"expected axis codes like 'RAS' or 'LPS', got {self.orientation!r}")
        object.__setattr__(self, "orientation", self.orientation.upper())
        # The reductions' registry is the one list of names; imported here because the
        # reduction units themselves depend on the preprocess code that reads this config.
        from volprep import reductions

        choice(self.reduce, "preprocess.reduce", reductions.names())
        object.__setattr__(self, "factor", triple(self.factor, "preprocess.factor"))
        if self.spacing is not None:
            object.__setattr__(self, "spacing", triple(self.spacing, "preprocess.spacing", kind=float,
                                                        minimum=MIN_SPACING_MM, unit="mm"))
        choice(self.interpolation, "preprocess.interpolation", ("linear", "cubic"))
        choice(self.mode, "preprocess.mode", WAVELET_MODES)
        if not 1 <= self.level <= 5:
            raise ConfigError(None, "preprocess.level", f"expected an integer 1..5, got {self.level!r}")
        if not 0 < self.keep <= 1:
            raise ConfigError(None, "preprocess.keep", f"expected a fraction in (0, 1], got {self.keep!r}")
        choice(self.wavelet_values, "preprocess.wavelet_values", ("int16", "int8"))
        if self.target_shape is not None:
            object.__setattr__(self, "target_shape", triple(self.target_shape, "preprocess.target_shape"))
        choice(self.normalize, "preprocess.normalize", NORMALIZERS)
        choice(self.zscore_over, "preprocess.zscore_over", ("foreground", "all"))
        choice(self.percentile_scale, "preprocess.percentile_scale", ("unit", "zscore"))
        if not 0 <= self.p_low < self.p_high <= 100:
            raise ConfigError(None, "preprocess.p_low", f"need 0 <= p_low < p_high <= 100, got {self.p_low}, {self.p_high}")
        if len(self.ct_window) != 2 or self.ct_window[0] >= self.ct_window[1]:
            raise ConfigError(None, "preprocess.ct_window", f"expected [low, high] in HU with low < high, got {self.ct_window!r}")
        object.__setattr__(self, "ct_window", tuple(float(v) for v in self.ct_window))
        choice(self.dtype, "preprocess.dtype", DTYPES)
        choice(self.image_encoding, "preprocess.image_encoding", PAYLOAD_ENCODINGS)
        choice(self.mask_encoding, "preprocess.mask_encoding", PAYLOAD_ENCODINGS)
        if self.deflate_level is not None and not 1 <= self.deflate_level <= 9:
            raise ConfigError(None, "preprocess.deflate_level", f"expected an integer 1..9, got {self.deflate_level!r}")
        at_least(self.class_locations, "preprocess.class_locations", 0)
        reduction = reductions.for_config(self)
        reduction.check_config(self)  # what the selected reduction needs
        n = reduction.shape_multiple(self)
        own = "raw" if self.image_encoding == "raw" else reduction.image_encoding(self, (n, n, n, 1))[0]
        if own != "raw":
            raise ConfigError(None, "preprocess.image_encoding", f"reduce = {self.reduce!r} (mode {self.mode!r}) "
                              f"writes its images as {own!r}; {self.image_encoding!r} applies to raw images only")


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

    enabled: bool = key("boolean", default=True)
    max_copies_per_case: int = key("integer", default=4)
    max_augmented_fraction: float = key("number", default=0.5)
    class_by: str = key("string", default="label")
    subset: tuple[str, ...] | None = key("array", items="string", default=None, hint="case ids")
    subset_column: str | None = key("string", default=None, hint="a labels-CSV column")

    def __post_init__(self) -> None:
        check_types(self, "balance")
        at_least(self.max_copies_per_case, "balance.max_copies_per_case", 0)
        if not 0 <= self.max_augmented_fraction <= 1:
            raise ConfigError(None, "balance.max_augmented_fraction", f"expected a fraction in [0, 1], got {self.max_augmented_fraction!r}")
        choice(self.class_by, "balance.class_by", CLASS_BY)
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
            raise ConfigError(source, name, f"expected a table, got {describe(table)}")
        allowed = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(table) - allowed)
        if bad:
            raise ConfigError(source, f"{name}.{bad[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
        tables[name] = dict(table)
    split_file = tables["job"].get("split_file")
    if isinstance(split_file, str) and split_file.strip():
        tables["job"]["split_file"] = resolve_path(split_file, Path(base_dir) if base_dir is not None else None)
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
