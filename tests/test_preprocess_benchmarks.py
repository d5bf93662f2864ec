"""The preprocess benchmarks run end to end in their --quick form and write their JSON."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_wavelet_curve_quick(tmp_path: Path) -> None:
    out = tmp_path / "curve.json"
    assert _load("bench_wavelet_curve").main(["--quick", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 20 and out.with_suffix(".png").stat().st_size > 0
    # More kept coefficients: more bytes and higher PSNR.
    l2 = [r for r in rows if r["level"] == 2 and r["values"] == "int16"]
    assert [r["bytes"] for r in l2] == sorted(r["bytes"] for r in l2)
    assert [r["psnr_db"] for r in l2] == sorted(r["psnr_db"] for r in l2)


@pytest.mark.slow
def test_reduce_quick(tmp_path: Path) -> None:
    out = tmp_path / "reduce.json"
    assert _load("bench_reduce").main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["median_ms"] and result["tf_decode"]["tf_volumes_per_s"] > 0
