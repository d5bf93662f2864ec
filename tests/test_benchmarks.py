"""The loader/conversion benchmarks run end to end in their --quick form (so they cannot rot).

Not timed: the figures of a --quick run on tiny heads mean nothing; the tests check that
every script runs, prints a table with every goal marked, and writes its JSON.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModuleType]:
    """The benchmark modules, with their data cache in a temporary folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("VOLPREP_BENCH_CACHE", str(tmp_path_factory.mktemp("bench-cache")))
    mp.syspath_prepend(str(BENCH))
    for name in ("common", "bench_convert", "bench_load", "bench_augment", "run_all"):
        sys.modules.pop(name, None)
    modules = {}
    for name in ("common", "bench_convert", "bench_load", "run_all"):
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        modules[name] = module
    yield modules
    mp.undo()
    for name in ("common", "bench_convert", "bench_load", "bench_augment", "run_all"):
        sys.modules.pop(name, None)


def _goal_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "[MET" in line or "[NOT MET]" in line]


def test_convert_quick(bench: dict[str, ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "convert.json"
    assert bench["bench_convert"].main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert set(rows) == {"read_limit", "volprep_1w", "volprep_2w", "tutorial"}
    assert rows["read_limit"]["per_volume_ms"] > 0 and rows["tutorial"]["per_volume_ms"] > 0
    assert len(rows["volprep_1w"]["t_n_stages_s"]) == 1
    assert [g["name"] for g in result["goals"]] == [
        "volprep 1 worker / read limit", "tutorial converter / volprep 1 worker", "volprep 1 worker / 2 workers"]
    assert len(_goal_lines(capsys.readouterr().out)) == 3


def test_load_quick(bench: dict[str, ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "load.json"
    assert bench["bench_load"].main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["records"] == 8
    rows = result["rows"]
    for row in ("volprep_load", "volprep_load_float16", "read_limit", "raw_recipe", "from_generator"):
        assert rows[row]["volumes_per_s"] > 0
    assert rows["volprep_load"]["cpu_ms_per_volume"] > 0
    assert set(rows["read_limit"]["variants"]) == {"sequential, tf_default_buffer", "parallel, tf_default_buffer",
                                                  "sequential, loader_buffer", "parallel, loader_buffer"}
    fresh = rows["fresh"]
    for mode in ("load", "load_shuffle", "load_float16", "read"):
        assert fresh[mode]["volumes_per_s"] > 0
        assert len(fresh[mode]["epochs"][0]) == 3  # epoch 1 untimed, 2-3 timed
    first = fresh["first_batch"]
    assert 0 < first["next_s"] < first["first_batch_s"]
    assert [g["name"] for g in result["goals"]] == [
        "volprep.load / TFRecord read limit (float32 output)", "volprep.load / TFRecord read limit (float16 output)",
        "volprep.load / from_generator"]
    assert all(isinstance(g["met"], bool) for g in result["goals"])
    text = capsys.readouterr().out
    assert len(_goal_lines(text)) == 3
    assert "first batch" in text and "fresh process" in text


def test_run_all_quick_marks_every_goal(bench: dict[str, ModuleType], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert bench["run_all"].main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench_all_quick.json").read_text())
    assert len(result["goals"]) == 7  # convert 3, load 3, augment 1
    text = capsys.readouterr().out
    assert len(_goal_lines(text)) == 7
    assert "| goal | measured | target | met |" in text
    assert result["markdown"].count("\n| ") >= 16
    for name in ("convert", "load", "loader_tuning"):
        assert (tmp_path / f"{name}_quick.json").is_file()
    tuning = json.loads((tmp_path / "loader_tuning_quick.json").read_text())["tuning"]
    assert set(tuning["reads"]) == {"direct", "streamed"}
    assert set(tuning["cycle_length (streamed)"]) == {"1", "2", "4", "8"}
    assert set(tuning["prefetch"]) == {"1", "2", "autotune"}
    assert set(tuning["allocator"]) == {"off", "on", "on, arenas uncapped"}
    assert set(tuning["dtype"]) == {"float32", "float16"}
    assert set(tuning["parse"]) == {"per_record", "per_batch", "parse_example_dataset",
                                   "per_batch (volprep.load direct=False)"}


def test_goal_verdicts(bench: dict[str, ModuleType]) -> None:
    goal = bench["common"].Goal
    assert goal("x", 1.2, 1.5, at_most=True).met and not goal("x", 1.6, 1.5, at_most=True).met
    assert goal("x", 20.0, 10.0).met and not goal("x", 9.9, 10.0).met
    assert not goal("x", -3.0, 1.5, at_most=True).met  # a negative difference is noise, not a win
