"""Configs load from TOML into typed objects; errors name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from volprep.config import load_config, parse_size
from volprep.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_default_pipeline_loads() -> None:
    cfg = load_config(ROOT / "pipelines" / "default.toml")
    assert cfg.job.splits == {"train": 0.8, "val": 0.2}
    assert cfg.preprocess.factor == (2, 2, 2)
    assert cfg.preprocess.dtype == "float16"
    assert cfg.read.max_bytes == 4 * 1024**3
    aug = cfg.augmentation()
    assert tuple(aug.flip_axes) == (0,)


@pytest.mark.parametrize(
    ("toml", "key", "phrase"),
    [
        ("[job]\nsplits = { train = 0.5, val = 0.2 }\n", "job.splits", "add up to 1"),
        ("[preprocess]\nreduce = 'magic'\n", "preprocess.reduce", "'downsample'"),
        ("[preprocess]\nfactr = 2\n", "preprocess.factr", "unknown key"),
        ("[read]\nmax_bytes = 'lots'\n", "read.max_bytes", "4GiB"),
        ("[jobs]\n", "jobs", "unknown table"),
        ("[preprocess]\ntarget_shape = [96, 96]\n", "preprocess.target_shape", "three"),
        ("[preprocess]\nreduce = 'wavelet'\nwavelet = 'nope'\n", "preprocess.wavelet", "wavelet"),
        ("[augment]\nscale = 'big'\n", "augment", ""),
        ("[job]\non_error = 'ignore'\n", "job.on_error", "'skip'"),
        ("not toml at all [\n", "-", "not valid TOML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, toml: str, key: str, phrase: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert key in message
    assert phrase in message


@pytest.mark.parametrize("path", sorted((ROOT / "pipelines").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_pipeline_loads(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.source == str(path)
    cfg.augmentation()


def test_parse_size() -> None:
    assert parse_size("4GiB") == 4 * 1024**3
    assert parse_size("512MB") == 512 * 10**6
    assert parse_size(1024) == 1024
    with pytest.raises(ConfigError):
        parse_size("-3GB")
