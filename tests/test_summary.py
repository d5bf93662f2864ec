"""Tests for volprep.summary: the end-of-job summary and ``volprep inspect`` text."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from volprep.summary import human_size, inspect_text, load_snippet, summary_text


def shard(name: str, records: int, size: int) -> dict[str, Any]:
    return {"file": name, "num_records": records, "num_bytes": size, "sha256": "ab" * 32}


MANIFEST: dict[str, Any] = {
    "format_version": 1,
    "volprep_version": "0.1.0",
    "dataset": {"name": "Task01", "layout": "msd", "num_cases": 13, "label_names": {"0": "bg", "1": "tumour"}},
    "features": {
        "image": {"dtype": "float16", "shape": [32, 32, 32, 1], "encoding": "raw"},
        "label": {"dtype": "uint8", "shape": [32, 32, 32], "encoding": "raw"},
        "case_id": {"dtype": "string", "shape": [], "encoding": "bytes"},
        "copy": {"dtype": "int64", "shape": [], "encoding": "int64"},
        "augment": {"dtype": "string", "shape": [], "encoding": "bytes"},
    },
    "splits": {
        "train": {"num_records": 14, "num_originals": 9,
                  "shards": [shard("train-00000-of-00002.tfrecord", 7, 2_300_000),
                             shard("train-00001-of-00002.tfrecord", 7, 2_100_000)]},
        "val": {"num_records": 3, "num_originals": 3, "shards": [shard("val-00000-of-00001.tfrecord", 3, 950_000)]},
    },
    "classes": {"names": ["bg", "tumour", "cyst"],
                "counts_before": {"bg": 5, "tumour": 3, "cyst": 1},
                "counts_after": {"bg": 5, "tumour": 5, "cyst": 4},
                "per_split": {"train": {"bg": 5, "tumour": 3, "cyst": 1}, "val": {"bg": 1, "tumour": 1, "cyst": 1}}},
    "normalization": {"method": "zscore", "dataset_stats": [{"mean": 12.5, "std": 3.25}]},
    "fidelity": {"num_cases": 12, "psnr": {"min": 35.123, "median": 40.5}, "ratio": {"min": 7.9, "median": 8.0}},
    "target_shape": [32, 32, 32],
    "notes": ["cases without a class label count under their rarest foreground label."],
    "failures": [{"case": f"case_{i:02d}", "path": f"/data/imagesTr/case_{i:02d}.nii.gz", "error": "gzip stream truncated"}
                 for i in range(7)],
    "config": {"job": {"seed": 3, "splits": {"train": 0.8, "val": 0.2}, "on_error": "skip"},
               "preprocess": {"reduce": "wavelet", "target_shape": None, "stratify": True}},
    "seed": 3,
}


def failure(f: dict[str, str]) -> SimpleNamespace:
    return SimpleNamespace(**f, line=lambda: f"case {f['case']}: {f['path']}: {f['error']}")


def result(out: Path, manifest: dict[str, Any] = MANIFEST, **kw: Any) -> SimpleNamespace:
    base = dict(out_dir=out, exit_code=3, manifest=manifest,
                failures=[failure(f) for f in manifest["failures"]], cases_found=19, cases_converted=12,
                cases_reused=5, timings={"discover": 0.04, "convert": 12.25, "write": 3.5}, notes=[])
    base.update(kw)
    return SimpleNamespace(**base)


def test_summary_has_counts_failures_and_where_the_rest_are(tmp_path: Path) -> None:
    text = summary_text(result(tmp_path), max_failures=3, color=False)
    assert "19 found, 12 converted (5 reused from cache), 7 failed" in text
    assert "case case_00: /data/imagesTr/case_00.nii.gz: gzip stream truncated" in text
    assert "case_02" in text and "case_03" not in text
    assert "... and 4 more" in text
    assert str(tmp_path / "failures.csv") in text
    assert "exit status 3" in text


def test_summary_has_splits_balance_shards_fidelity_time_and_load(tmp_path: Path) -> None:
    text = summary_text(result(tmp_path), color=False)
    assert "14 records = 9 originals + 5 augmented" in text
    assert "2 shards, 4.4 MB (2.1 MB-2.3 MB each)" in text
    assert "1 shard, 950.0 KB" in text
    assert "tumour  3 -> 5  (+2 augmented)" in text
    assert "cyst    1 -> 4  (+3 augmented)" in text
    assert "bg      5 -> 5\n" in text
    assert "psnr min 35.12 dB, median 40.5 dB" in text
    assert "convert 12.2s" in text or "convert 12.3s" in text
    assert "total 15.8s" in text
    assert text.endswith(load_snippet(str(tmp_path)).splitlines()[1])
    assert "import volprep" in text
    assert "\033[" not in text


def test_summary_colour_and_report_line(tmp_path: Path) -> None:
    assert "\033[" in summary_text(result(tmp_path), color=True)
    assert "index.html" not in summary_text(result(tmp_path), color=False)
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "index.html").write_text("<html></html>")
    assert str(tmp_path / "report" / "index.html") in summary_text(result(tmp_path), color=False)


def test_summary_of_a_clean_job_without_classes(tmp_path: Path) -> None:
    manifest = copy.deepcopy(MANIFEST)
    manifest.update(failures=[], fidelity=None, classes={"names": [], "counts_before": {}, "counts_after": {}})
    text = summary_text(result(tmp_path, manifest, failures=[], exit_code=0), color=False)
    assert "0 failed" in text and "failures.csv" not in text
    assert "balance" not in text and "fidelity" not in text
    assert "done (exit status 0)" in text


def test_load_snippet_is_two_lines_of_python(tmp_path: Path) -> None:
    snippet = load_snippet('/data/my "odd" shards')
    assert len(snippet.splitlines()) == 2
    compile(snippet, "<snippet>", "exec")  # valid Python even with quotes in the path
    assert '"/data/my \\"odd\\" shards"' in snippet


def test_inspect_lists_every_shard_class_failure_and_config() -> None:
    text = inspect_text(MANIFEST, "/shards")
    for split in MANIFEST["splits"].values():
        for s in split["shards"]:
            assert s["file"] in text
    for name in MANIFEST["classes"]["names"]:
        assert f"\n  {name} " in text
    assert "val originals" in text
    for f in MANIFEST["failures"]:
        assert f"case {f['case']}: {f['path']}: {f['error']}" in text
    assert "failures: 7" in text
    assert "normalization: zscore with dataset statistics" in text
    assert "mean 12.5" in text
    assert "psnr min 35.12 dB" in text
    assert "reduce       = \"wavelet\"" in text
    assert "target_shape = (unset)" in text
    assert "splits   = { train = 0.8, val = 0.2 }" in text
    assert "14 records (9 originals + 5 augmented)" in text


def test_inspect_is_deterministic_and_aligned() -> None:
    assert inspect_text(MANIFEST, "/shards") == inspect_text(copy.deepcopy(MANIFEST), "/shards")
    rows = [line for line in inspect_text(MANIFEST).splitlines() if ".tfrecord" in line]
    assert len({line.index("records") for line in rows}) == 1  # the record column lines up


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (999, "999 B"), (1000, "1.0 KB"), (64_000_000, "64.0 MB"),
                                         (3.2e12, "3.2 TB")])
def test_human_size(n: float, text: str) -> None:
    assert human_size(n) == text
