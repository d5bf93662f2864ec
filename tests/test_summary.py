"""Tests for volprep.summary: the end-of-job summary and ``volprep inspect`` text.

Manifests are literal dicts of a complete ``manifest.json``, typed with
``Manifest.from_dict`` as ``read_manifest`` does (:func:`typed` checks that a fixture
round-trips exactly, so none leans on a default).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from volprep.manifest import FORMAT_VERSION, Manifest, read_manifest
from volprep.summary import human_size, inspect_text, load_snippet, summary_text


def shard(name: str, records: int, size: int) -> dict[str, Any]:
    return {"file": name, "num_records": records, "num_bytes": size, "sha256": "ab" * 32}


DATA: dict[str, Any] = {
    "format_version": FORMAT_VERSION,
    "volprep_version": "0.1.0",
    "dataset": {"name": "Task01", "layout": "msd", "num_cases": 13, "label_names": {"0": "bg", "1": "tumour"}},
    "features": {
        "image": {"dtype": "float16", "shape": [32, 32, 32, 1], "encoding": "raw"},
        "label": {"dtype": "uint8", "shape": [32, 32, 32], "encoding": "raw"},
        "case_id": {"dtype": "string", "shape": [], "encoding": "bytes"},
        "copy": {"dtype": "int64", "shape": [], "encoding": "int64"},
        "augment": {"dtype": "string", "shape": [], "encoding": "bytes"},
        "affine": {"dtype": "float64", "shape": [4, 4], "encoding": "raw"},
    },
    "splits": {
        "train": {"num_records": 14, "num_originals": 9,
                  "shards": [shard("train-00000-of-00002.tfrecord", 7, 2_300_000),
                             shard("train-00001-of-00002.tfrecord", 7, 2_100_000)]},
        "val": {"num_records": 3, "num_originals": 3, "shards": [shard("val-00000-of-00001.tfrecord", 3, 950_000)]},
    },
    "classes": {"names": ["bg", "tumour", "cyst"], "ids": [0, 1, 2], "class_by": "label",
                "counts_before": {"bg": 5, "tumour": 3, "cyst": 1},
                "counts_after": {"bg": 5, "tumour": 5, "cyst": 4},
                "per_split": {"train": {"bg": 5, "tumour": 3, "cyst": 1}, "val": {"bg": 1, "tumour": 1, "cyst": 1}}},
    "normalization": {"method": "zscore", "dataset_stats": [{"mean": 12.5, "std": 3.25}]},
    "fidelity": {"num_cases": 12, "psnr": {"min": 35.123, "median": 40.5}, "ratio": {"min": 7.9, "median": 8.0}},
    "target_shape": [32, 32, 32],
    "notes": ["cases without a class label count under their rarest foreground label."],
    "case_notes": {"affine from pixdim (qform and sform unusable)": 2},
    "failures": [{"case": f"case_{i:02d}", "path": f"/data/imagesTr/case_{i:02d}.nii.gz", "error": "gzip stream truncated"}
                 for i in range(7)],
    "config": {"job": {"seed": 3, "splits": {"train": 0.8, "val": 0.2}, "on_error": "skip"},
               "preprocess": {"reduce": "wavelet", "target_shape": None, "stratify": True}},
    "seed": 3,
}


def typed(data: dict[str, Any]) -> Manifest:
    """``data`` as ``read_manifest`` gives it; it must be complete (round-trip exactly)."""
    manifest = Manifest.from_dict(data)
    assert manifest.to_dict() == data, "the fixture is not a complete manifest"
    return manifest


def make_manifest(**changes: Any) -> Manifest:
    """The fixture manifest with some top-level keys replaced."""
    data = copy.deepcopy(DATA)
    data.update(changes)
    return typed(data)


MANIFEST = make_manifest()


def failure(case: str, path: str, error: str) -> SimpleNamespace:
    return SimpleNamespace(case=case, path=path, error=error, line=lambda: f"case {case}: {path}: {error}")


def result(out: Path, manifest: Manifest = MANIFEST, **kw: Any) -> SimpleNamespace:
    base = dict(out_dir=out, exit_code=3, manifest=manifest,
                failures=[failure(f.case, f.path, f.error) for f in manifest.failures], cases_found=19, cases_converted=12,
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
    assert "records    image float16 [32, 32, 32, 1] raw; label uint8 [32, 32, 32] raw" in text
    assert "2 case(s): affine from pixdim (qform and sform unusable)" in text
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
    manifest = make_manifest(failures=[], fidelity=None, classes={
        "names": [], "ids": [], "class_by": "label", "counts_before": {}, "counts_after": {}, "per_split": {}})
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
    for split in DATA["splits"].values():
        for s in split["shards"]:
            assert s["file"] in text
    for name in DATA["classes"]["names"]:
        assert f"\n  {name} " in text
    assert "val originals" in text
    for f in DATA["failures"]:
        assert f"case {f['case']}: {f['path']}: {f['error']}" in text
    assert "failures: 7" in text
    assert "normalization: zscore with dataset statistics" in text
    assert "mean 12.5" in text
    assert "psnr min 35.12 dB" in text
    assert "reduce       = \"wavelet\"" in text
    assert "target_shape = (unset)" in text
    assert "splits   = { train = 0.8, val = 0.2 }" in text
    assert "14 records (9 originals + 5 augmented)" in text
    assert f"/shards (format {FORMAT_VERSION}, volprep 0.1.0)" in text
    assert "dataset: Task01 (msd layout, 13 cases)\n  label values: 0 = bg, 1 = tumour" in text
    assert ("features:\n"
            "  affine   float64  [4, 4]           raw\n"
            "  augment  string   []               bytes\n"
            "  case_id  string   []               bytes\n"
            "  copy     int64    []               int64\n"
            "  image    float16  [32, 32, 32, 1]  raw\n"
            "  label    uint8    [32, 32, 32]     raw\n") in text
    assert "  2 case(s): affine from pixdim (qform and sform unusable)" in text
    assert "target shape: [32, 32, 32]" in text and "seed: 3" in text


def test_inspect_is_deterministic_and_aligned(tmp_path: Path) -> None:
    # the same text for the manifest read back from manifest.json, as `volprep inspect` reads it
    (tmp_path / "manifest.json").write_text(json.dumps(DATA))
    assert inspect_text(MANIFEST, "/shards") == inspect_text(read_manifest(tmp_path), "/shards")
    rows = [line for line in inspect_text(MANIFEST).splitlines() if ".tfrecord" in line]
    assert len({line.index("records") for line in rows}) == 1  # the record column lines up


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (999, "999 B"), (1000, "1.0 KB"), (64_000_000, "64.0 MB"),
                                         (3.2e12, "3.2 TB")])
def test_human_size(n: float, text: str) -> None:
    assert human_size(n) == text


def atlas_manifest(n_classes: int = 725, held: dict[int, tuple[int, int, int]] | None = None) -> Manifest:
    """A manifest like an atlas job's: hundreds of sparse label ids, few of them holding records.

    ``held`` maps class id -> (train before, train after, val originals); every other class
    holds nothing.
    """
    held = {15: (2, 2, 0), 19: (1, 1, 0), 67: (1, 1, 0), 184: (1, 1, 0), 23: (0, 0, 1)} if held is None else held
    ids = [0, *range(1, 3 * n_classes, 3)][:n_classes]  # sparse: 0, 1, 4, 7, ...
    ids = sorted(set(ids) | set(held))[:n_classes]
    names = ["background" if i == 0 else f"NeuroMaps_{i}" for i in ids]
    name_of = dict(zip(ids, names, strict=True))
    return make_manifest(classes={
        "names": names, "ids": ids, "class_by": "label",
        "counts_before": {n: held.get(i, (0, 0, 0))[0] for i, n in name_of.items()},
        "counts_after": {n: held.get(i, (0, 0, 0))[1] for i, n in name_of.items()},
        "per_split": {"train": {n: held.get(i, (0, 0, 0))[0] for i, n in name_of.items()},
                      "val": {n: held.get(i, (0, 0, 0))[2] for i, n in name_of.items()}},
    })


def balance_section(text: str) -> list[str]:
    """The summary's balance lines: from the ``balance`` key to the next key."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  balance"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i][2:3].strip())
    return lines[start:end]


def test_summary_collapses_hundreds_of_empty_classes(tmp_path: Path) -> None:
    text = summary_text(result(tmp_path, atlas_manifest()), color=False)
    section = balance_section(text)
    assert len(section) <= 12, "\n".join(section)
    for name in ("NeuroMaps_15 ", "NeuroMaps_19 ", "NeuroMaps_67 ", "NeuroMaps_184 ", "NeuroMaps_23 "):
        assert any(name in line for line in section), name  # every class that holds records
    assert "NeuroMaps_4 " not in text  # an empty class is counted, not listed
    assert not any(line.rstrip().endswith("0 -> 0") for line in section)  # no bare empty rows
    more = [line for line in section if "more classes" in line]
    assert len(more) == 1 and "+ 720 more classes" in more[0] and "720 with 0 records" in more[0]
    assert "val" in next(line for line in section if "NeuroMaps_23 " in line)  # held outside train only


def test_summary_with_many_classes_holding_records_lists_the_rarest_and_largest(tmp_path: Path) -> None:
    held = {i: (i % 40 + 1, i % 40 + 1 + (i % 3), 1) for i in range(1, 120)}  # 119 classes with records
    text = summary_text(result(tmp_path, atlas_manifest(200, held)), color=False)
    section = balance_section(text)
    assert len(section) <= 12, "\n".join(section)
    rows = [line for line in section[1:] if "->" in line]
    counts = [int(line.split("->")[0].split()[-1]) for line in rows]
    assert counts == sorted(counts)  # rarest first
    assert counts[0] == 1 and counts[-1] == 40  # the rarest and the largest are both there
    more = next(line for line in section if "more classes" in line)
    assert f"+ {200 - len(rows)} more classes" in more
    assert "with 0 records" in more and "train records" in more


def test_summary_of_few_classes_lists_every_one_in_id_order(tmp_path: Path) -> None:
    section = balance_section(summary_text(result(tmp_path), color=False))
    assert [line.split()[0] for line in section[1:]] == ["bg", "tumour", "cyst"]


def test_summary_says_when_balancing_by_case_does_not_apply(tmp_path: Path) -> None:
    held = {i: (8 if i == 1 else 0, 8 if i == 1 else 0, 2 if i == 1 else 0) for i in range(117)}
    manifest = atlas_manifest(117, held)
    explanation = ("Balancing by case does not apply: every case holds (nearly) every label (117 classes); "
                   "the train split holds originals only.")
    (tmp_path / "plan.json").write_text(json.dumps({"explanation": [explanation], "class_by": "rarest"}))
    section = balance_section(summary_text(result(tmp_path, manifest), color=False))
    assert "does not apply" in section[0] and "every case holds (nearly) every label" in section[0]
    assert not any("->" in line for line in section)
    # the manifest's note says it too, without a plan.json (and the summary takes a plan argument)
    manifest = dataclasses.replace(manifest, notes=(
        "every case holds (nearly) every label, so each case counts under a label (nearly) "
        "all cases share: balancing by case does not apply to this dataset (no augmented copies)",))
    section = balance_section(summary_text(result(tmp_path, manifest), color=False, plan={}))
    assert "does not apply" in section[0] and not any("->" in line for line in section)
    # and a plan that balances gives the rows
    section = balance_section(summary_text(result(tmp_path), color=False, plan={"explanation": ["Target: 5"]}))
    assert any("->" in line for line in section)


def test_inspect_keeps_the_full_class_table_and_stays_fast() -> None:
    manifest = atlas_manifest()
    start = time.perf_counter()
    text = inspect_text(manifest, "/shards")
    assert time.perf_counter() - start < 0.5
    assert sum(1 for line in text.splitlines() if line.startswith("  NeuroMaps_")) == 724  # the long form
