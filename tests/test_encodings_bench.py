"""benchmarks/bench_storage.py runs end to end in its --quick form (so it cannot rot).

Not timed: the figures of a --quick run mean little. What is checked is what does not
depend on the machine: every encoding has its row, the decoders gave back the arrays
(the script asserts it), and the byte counts (deterministic) show label volumes at least
10x smaller deflated on the real tissue task.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_storage_quick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLPREP_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("common", "bench_storage"):
        sys.modules.pop(name, None)
    spec = importlib.util.spec_from_file_location("bench_storage", BENCH / "bench_storage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        out = tmp_path / "storage.json"
        assert module.main(["--quick", "--out", str(out)]) == 0
    finally:
        for name in ("common", "bench_storage"):
            sys.modules.pop(name, None)
    result = json.loads(out.read_text())
    rows = {(r["feature"], r["encoding"], r["level"]): r for r in result["payloads"]}
    assert set(rows) == {("image", "raw", None), ("image", "deflate", 6), ("image", "deflate-shuffle", 6),
                         ("mask", "raw", None), ("mask", "deflate", 6), ("mask", "rle16", None)}
    assert rows["mask", "deflate", 6]["ratio"] >= 10
    assert all(r["decode_ms_per_batch"] > 0 and r["bytes_per_record"] > 0 for r in rows.values())
    jobs = {r["job"]: r for r in result["jobs"]}
    assert set(jobs) == set(module.JOBS)
    assert jobs["mask-deflate"]["shard_bytes_per_case"] < jobs["raw"]["shard_bytes_per_case"]
    assert jobs["mask-deflate"]["features"]["label"]["encoding"] == "deflate"
