"""The augmentation benchmark runs end to end in --quick mode and writes its JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_augment.py"


@pytest.mark.slow
def test_bench_augment_quick() -> None:
    import tensorflow  # noqa: F401  (a dependency: a missing one must fail, not skip)
    spec = importlib.util.spec_from_file_location("bench_augment", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick"]) == 0
    data = json.loads((BENCH.parent / "results" / "augment_quick.json").read_text())
    shape = data["shapes"][0]
    assert shape["scipy_affine_order1"]["median_ms"] > 0
    assert shape["tf_augment_batch_spatial"]["median_ms"] > 0
    assert set(data["interpolation_error_by_rotate_deg"]) == {"10", "20", "30", "45"}
