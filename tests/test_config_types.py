"""Every config key has its TOML type: a value of any other type is refused, naming file and key.

The types each key takes are written here, from the contract (README's config reference),
not read from ``volprep.config``: the walk below covers every field of every config
dataclass, so a key added later fails these tests until it is listed here, and then fails
again unless ``volprep.config`` refuses every wrong type for it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import volprep.config as config_module
from volprep.augment.spec import Augment
from volprep.config import (
    BalanceConfig,
    JobConfig,
    PipelineConfig,
    PreprocessConfig,
    config_from_dict,
    load_config,
    parse_size,
)
from volprep.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

# The TOML types of each key. "float" keys also take integers (TOML `64` for 64.0).
NUMBER = {"integer", "float"}
LEGIT: dict[str, dict[str, set[str]]] = {
    "job": {
        "seed": {"integer"},
        "splits": {"table"},
        "shard_size_mb": NUMBER,
        "on_error": {"string"},
        "stratify": {"boolean"},
        "fidelity_sample": {"integer"},
        "unlabelled": {"string"},
        "split_file": {"string"},
        "split_fold": {"integer"},
    },
    "read": {
        "max_bytes": {"string", "integer"},  # "4GiB" or a byte count: the one key with two types
        "non_finite": {"string"},
        "allow_rgb": {"boolean"},
        "affine_tolerance": NUMBER,
        "dicom_series": {"string"},
        "dicom_case_id": {"string"},
    },
    "preprocess": {
        "orientation": {"string"},
        "reduce": {"string"},
        "factor": {"integer", "array"},
        "spacing": {*NUMBER, "array"},
        "interpolation": {"string"},
        "wavelet": {"string"},
        "level": {"integer"},
        "mode": {"string"},
        "keep": NUMBER,
        "wavelet_values": {"string"},
        "target_shape": {"array"},
        "crop_foreground": {"boolean"},
        "normalize": {"string"},
        "zscore_over": {"string"},
        "p_low": NUMBER,
        "p_high": NUMBER,
        "percentile_scale": {"string"},
        "ct_window": {"array"},
        "dataset_stats": {"boolean"},
        "dtype": {"string"},
        "image_encoding": {"string"},
        "mask_encoding": {"string"},
        "deflate_level": {"integer"},
        "class_locations": {"integer"},
    },
    "balance": {
        "enabled": {"boolean"},
        "max_copies_per_case": {"integer"},
        "max_augmented_fraction": NUMBER,
        "class_by": {"string"},
        "subset": {"array"},
        "subset_column": {"string"},
    },
    "augment": {
        "flip_axes": {"array"},
        "rot90_axes": {"array"},
        "rotate_deg": {*NUMBER, "array"},
        "scale": {"array"},
        "shear": NUMBER,
        "shift_vox": NUMBER,
        "fourier_shift_vox": NUMBER,
        "intensity_scale": {"array"},
        "intensity_shift": NUMBER,
        "gamma": {"array"},
        "noise_std": NUMBER,
        "p": NUMBER,
        "seed": {"integer"},
    },
}

# Arrays and tables: a valid container with one slot (@), and the TOML type of the slot.
ITEMS: dict[str, tuple[str, set[str]]] = {
    "job.splits": ("{ train = 0.8, val = @ }", NUMBER),
    "preprocess.factor": ("[2, @, 2]", {"integer"}),
    "preprocess.spacing": ("[1.5, @, 1.5]", NUMBER),
    "preprocess.target_shape": ("[96, @, 96]", {"integer"}),
    "preprocess.ct_window": ("[-1000, @]", NUMBER),
    "balance.subset": ('["case_a", @]', {"string"}),
    "augment.flip_axes": ("[0, @]", {"integer"}),
    "augment.rot90_axes": ("[0, @]", {"integer"}),
    "augment.rotate_deg": ("[5, 5, @]", NUMBER),
    "augment.scale": ("[0.9, @]", NUMBER),
    "augment.intensity_scale": ("[0.9, @]", NUMBER),
    "augment.gamma": ("[0.9, @]", NUMBER),
}

# TOML literals of each type: the plausible mistakes ("false" for false, 2.0 for 2, [2] for 2).
SAMPLES: dict[str, list[str]] = {
    "string": ['"false"', '"2"'],
    "integer": ["1", "0"],
    "float": ["2.0", "0.5"],
    "boolean": ["true", "false"],
    "datetime": ["1979-05-27T07:32:00Z", "1979-05-27", "07:32:00"],
    "array": ["[2]", "[]"],
    "table": ["{ a = 1 }", "{}"],
}
NON_FINITE = ["nan", "inf", "-inf"]

# The tables of a pipeline config and the dataclass that validates each one.
TABLE_CLASSES = {"job": JobConfig, "read": config_module.ReadConfig,
                 "preprocess": PreprocessConfig, "balance": BalanceConfig, "augment": Augment}


def _wrong(legit: set[str]) -> list[tuple[str, str]]:
    return [(kind, literal) for kind, literals in SAMPLES.items() if kind not in legit
            for literal in literals]


WRONG_TYPE_CASES = [
    pytest.param(table, key, literal, id=f"{table}.{key}={literal}")
    for table, keys in LEGIT.items() for key, legit in keys.items()
    for _kind, literal in _wrong(legit)
]
WRONG_ITEM_CASES = [
    pytest.param(name, template.replace("@", literal), id=f"{name}={template.replace('@', literal)}")
    for name, (template, legit) in ITEMS.items()
    for literal in [lit for _k, lit in _wrong(legit)] + (NON_FINITE if "float" in legit else [])
]
NON_FINITE_CASES = [
    pytest.param(table, key, literal, id=f"{table}.{key}={literal}")
    for table, keys in LEGIT.items() for key, legit in keys.items() if "float" in legit
    for literal in NON_FINITE
]


def refused(tmp_path: Path, text: str, key: str) -> str:
    """Loads ``text`` as a config file; asserts a ConfigError naming the file and ``key``.

    Returns the problem, the message without the file (whose name holds the test's name).
    """
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message == f"{path}: [{key}] {info.value.problem}", message
    assert info.value.key == key and info.value.source == str(path)
    return info.value.problem


def test_every_field_of_every_config_class_is_listed() -> None:
    """The walk covers every table of PipelineConfig and every field of its dataclass."""
    tables = {f.name for f in dataclasses.fields(PipelineConfig)} - {"source"}
    assert tables == set(TABLE_CLASSES) == set(LEGIT)
    for table, cls in TABLE_CLASSES.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        assert fields == set(LEGIT[table]), f"[{table}]: list the TOML types of new keys in LEGIT"


@pytest.mark.parametrize(("table", "key", "literal"), WRONG_TYPE_CASES)
def test_a_value_of_a_wrong_toml_type_is_refused(tmp_path: Path, table: str, key: str, literal: str) -> None:
    problem = refused(tmp_path, f"[{table}]\n{key} = {literal}\n", f"{table}.{key}")
    assert problem.startswith("expected"), problem


@pytest.mark.parametrize(("name", "literal"), WRONG_ITEM_CASES)
def test_an_item_of_a_wrong_toml_type_is_refused(tmp_path: Path, name: str, literal: str) -> None:
    table, key = name.split(".")
    refused(tmp_path, f"[{table}]\n{key} = {literal}\n", name)


@pytest.mark.parametrize(("table", "key", "literal"), NON_FINITE_CASES)
def test_non_finite_numbers_are_refused(tmp_path: Path, table: str, key: str, literal: str) -> None:
    problem = refused(tmp_path, f"[{table}]\n{key} = {literal}\n", f"{table}.{key}")
    assert "finite" in problem, problem


@pytest.mark.parametrize(("table", "key", "literal"), [
    ("balance", "enabled", '"false"'),
    ("preprocess", "crop_foreground", '"no"'),
    ("preprocess", "dataset_stats", '"false"'),
])
def test_a_string_is_not_a_boolean(tmp_path: Path, table: str, key: str, literal: str) -> None:
    problem = refused(tmp_path, f"[{table}]\n{key} = {literal}\n", f"{table}.{key}")
    assert problem == f"expected true or false, got the string {literal.strip(chr(34))!r}"


def test_sizes(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    for literal, size in [('"4GiB"', 4 * 1024**3), ('"512MB"', 512 * 10**6), ("1024", 1024)]:
        path.write_text(f"[read]\nmax_bytes = {literal}\n")
        assert load_config(path).read.max_bytes == size
    for literal in ["4e9", "0", "-1", '"0GiB"', '"lots"', f'"{"9" * 400}GiB"']:
        refused(tmp_path, f"[read]\nmax_bytes = {literal}\n", "read.max_bytes")
    values: list[str | float] = [float("nan"), float("inf"), "9" * 400]
    for value in values:
        with pytest.raises(ConfigError):
            parse_size(value)


def test_spacing_and_factor_limits(tmp_path: Path) -> None:
    for literal in ["0", "[1.5, 0, 1.5]", "1e-9", "-1.5"]:
        problem = refused(tmp_path, f"[preprocess]\nspacing = {literal}\n", "preprocess.spacing")
        assert "mm" in problem, problem
    for literal in ["0", "[2, 0, 2]", "2.0", "[2, 2.0, 2]", "[2, 2]"]:
        refused(tmp_path, f"[preprocess]\nfactor = {literal}\n", "preprocess.factor")


def test_new_job_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = load_config(None).job
    assert (job.unlabelled, job.split_file, job.split_fold) == ("fail", None, 0)
    folder = tmp_path / "configs"
    folder.mkdir()
    path = folder / "pipeline.toml"
    path.write_text('[job]\nunlabelled = "skip"\nsplit_file = "splits/splits_final.json"\nsplit_fold = 3\n')
    monkeypatch.chdir(tmp_path)  # relative to the config file's folder, not the current one
    job = load_config(path).job
    assert job.unlabelled == "skip"
    assert job.split_file == str((folder / "splits" / "splits_final.json").resolve())
    assert job.split_fold == 3
    absolute = tmp_path / "elsewhere.json"
    path.write_text(f'[job]\nsplit_file = "{absolute.as_posix()}"\n')
    assert load_config(path).job.split_file == str(absolute.resolve())
    assert "'fail', 'skip'" in refused(tmp_path, '[job]\nunlabelled = "ignore"\n', "job.unlabelled")
    refused(tmp_path, "[job]\nsplit_fold = -1\n", "job.split_fold")
    refused(tmp_path, '[job]\nsplit_file = ""\n', "job.split_file")


def test_to_dict_of_existing_keys_is_unchanged() -> None:
    """What manifests record: the existing keys exactly as before, the new ones at their defaults."""
    assert load_config(ROOT / "pipelines" / "default.toml").to_dict() == {
        "job": {"seed": 0, "splits": {"train": 0.8, "val": 0.2}, "shard_size_mb": 64,
                "on_error": "skip", "stratify": True, "fidelity_sample": 8,
                "unlabelled": "fail", "split_file": None, "split_fold": 0},
        "read": {"max_bytes": 4294967296, "non_finite": "fail", "allow_rgb": False,
                 "affine_tolerance": 0.001, "dicom_series": "split",
                 "dicom_case_id": "folder"},
        "preprocess": {"orientation": "RAS", "reduce": "downsample", "factor": [2, 2, 2],
                       "spacing": None, "interpolation": "linear", "wavelet": "db2", "level": 2,
                       "mode": "approx", "keep": 0.05, "wavelet_values": "int16",
                       "target_shape": None, "crop_foreground": False, "normalize": "zscore",
                       "zscore_over": "foreground", "p_low": 0.5, "p_high": 99.5,
                       "percentile_scale": "unit", "ct_window": [-1000.0, 1000.0],
                       "dataset_stats": False, "dtype": "float16", "image_encoding": "raw",
                       "mask_encoding": "deflate", "deflate_level": None,
                       "class_locations": 4096},
        "balance": {"enabled": True, "max_copies_per_case": 4, "max_augmented_fraction": 0.5,
                    "class_by": "label", "subset": None, "subset_column": None},
        "augment": {"flip_axes": [0], "rotate_deg": 10, "scale": [0.9, 1.1], "shift_vox": 3},
    }


def test_a_recorded_config_loads_back_the_same(tmp_path: Path) -> None:
    """A manifest's config (JSON: null for absent keys, lists for tuples) rebuilds the config."""
    path = tmp_path / "p.toml"
    path.write_text('[job]\nsplit_file = "s.json"\n[preprocess]\nreduce = "resample"\n'
                    "spacing = 2\ntarget_shape = [8, 8, 8]\nct_window = [-100, 200]\n"
                    '[balance]\nsubset = ["a", "b"]\n')
    for cfg in (load_config(path), load_config(ROOT / "pipelines" / "isotropic.toml")):
        again = config_from_dict(cfg.to_dict(), "manifest.json")
        assert again.to_dict() == cfg.to_dict()
        assert dataclasses.replace(again, source=cfg.source) == cfg


def test_python_callers_keep_tuples_and_overrides() -> None:
    cfg = PreprocessConfig(reduce="resample", spacing=(2.0, 2.0, 2.0), ct_window=(-5, 5))
    assert cfg.spacing == (2.0, 2.0, 2.0) and cfg.ct_window == (-5.0, 5.0)
    assert BalanceConfig(subset=("a",)).subset == ("a",)
    config = load_config(None).with_overrides(seed=7, on_error="fail")
    assert (config.job.seed, config.job.on_error) == (7, "fail")
    with pytest.raises(ConfigError, match=r"\[job.seed\]"):
        load_config(None).with_overrides(seed="7")


def test_unknown_augment_key_is_named(tmp_path: Path) -> None:
    assert "unknown key" in refused(tmp_path, "[augment]\nflip = [0]\n", "augment.flip")


def test_module_docstring_lists_every_key() -> None:
    doc = config_module.__doc__ or ""
    for table, keys in LEGIT.items():
        if table != "augment":  # [augment] is documented by volprep.augment.spec.Augment
            for key in keys:
                assert f"``{key}``" in doc, f"[{table}] {key} is missing from volprep.config's docstring"
    assert "section_fingerprint" not in doc
