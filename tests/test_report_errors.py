"""Tests for how the report meets bad data and its own failures.

Data it cannot read (a missing shard, a record whose CRC fails, a record that is not a
``tf.train.Example``, a record the manifest's schema cannot decode, an unreadable
plan.json) is listed in the report as a problem and logged; the rest of the report is still
written. A manifest the schema refuses is a usage error, before anything is drawn. A failure of the report itself (a plot
that raises) leaves ``write_report`` as an exception, which the runner turns into one
warning line: never silent, never fatal to a finished job.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_report import fake_result, make_folder, record, rewrite

from volprep.errors import UsageError
from volprep.records import encode_example, frame_record
from volprep.report import write_report


def test_unreadable_records_and_files_are_listed_as_problems(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "out"
    manifest = make_folder(root, channels=1, failures=0)
    good = record("c07", 0, 1)
    broken = bytearray(good)
    broken[20] ^= 0xFF  # a flipped byte inside the data: the data CRC fails
    garbage = frame_record(b"\x0f\xff\x03")  # framed correctly, but not a protobuf Example
    val = root / manifest.splits["val"].shards[0].file
    val.write_bytes(frame_record(encode_example({"image": b"", "case_id": "c06", "copy": 0})) + garbage + good + bytes(broken))
    (root / manifest.splits["train"].shards[1].file).unlink()
    (root / "plan.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="volprep"):
        index = write_report(root, fake_result(root, manifest))
    page = index.read_text()
    problems = page[page.index("<h2>Problems"):]
    assert "record 1" in problems and "not a tf.train.Example" in problems  # the garbage record
    assert "CRC" in problems  # the broken one (the rest of that shard is skipped, and said so)
    assert "train-00001-of-00002.tfrecord" in problems and "missing" in problems
    assert "plan.json" in problems and "not valid JSON" in problems
    assert "c06" in problems and "bytes" in problems  # a montage record that does not decode
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings  # one line, pointing at the list
    assert "5 problem(s)" in warnings[0] and str(index) in warnings[0]
    for name in ("class_counts.png", "montage.png", "histograms.png", "summary.txt"):
        assert (root / "report" / name).stat().st_size > 0


def test_a_clean_folder_has_no_problems_section(tmp_path: Path) -> None:
    root = tmp_path / "out"
    manifest = make_folder(root, channels=1, failures=0)
    page = write_report(root, fake_result(root, manifest), hist_records=1).read_text()
    assert "<h2>Problems" not in page


def test_records_the_schema_cannot_decode_are_problems_naming_the_feature(tmp_path: Path) -> None:
    root = tmp_path / "out"
    manifest = make_folder(root, channels=1, with_plan=False, failures=0)
    (root / manifest.splits["val"].shards[0].file).write_bytes(
        record("c06", 0, 1, image=b"abc") + record("c07", 0, 1, image=np.array([1, 2], np.int64))
        + record("c06", 1, 1, image=None) + record("c08", 0, 1, mask=b"a"))
    # without a plan the montage takes the first originals of each class: their label is read
    (root / manifest.splits["train"].shards[1].file).write_bytes(
        record("c00", 0, 1, label=7) + record("c01", 0, 1, case_id=None) + record("c05", 0, 1, affine=b""))
    page = html.unescape(write_report(root, fake_result(root, manifest)).read_text())
    problems = page[page.index("<h2>Problems"):page.index("<h2>Figures")]
    train = manifest.splits["train"].shards[1].file
    for line in ("c06 copy 0 (val): feature 'image' has 3 bytes, the manifest's float16 [16, 20, 24, 1] needs 15360",
                 "c07 copy 0 (val): feature 'image' should hold one bytes value, the record has ndarray",
                 "c06 copy 1 (val): record has no 'image' feature",
                 "c08 copy 0 (val): feature 'mask' has 1 bytes, the manifest's uint8 [16, 20, 24] needs 7680",
                 f"{train}: record 0: label 7 is not one of the manifest's class ids",
                 f"{train}: record 1: record has no 'case_id' feature",
                 "c05 copy 0 (train): feature 'affine' has 0 bytes, the manifest's float64 [4, 4] needs 128"):
        assert f"<li>{line}</li>" in problems, line
    assert problems.count("<li>") == 7


def test_a_manifest_the_schema_refuses_is_a_usage_error(tmp_path: Path) -> None:
    root = tmp_path / "out"
    data = make_folder(root, channels=1, failures=0).to_dict()
    data["features"]["image"]["encoding"] = "jpeg"
    (root / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(UsageError, match="feature 'image': unknown encoding 'jpeg'"):
        write_report(root)
    assert not (root / "report").exists()
    data["features"]["image"]["encoding"] = "raw"
    rewrite(root, data)
    assert write_report(root).is_file()


def test_a_failing_plot_is_raised_and_the_runner_prints_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import volprep.report
    from volprep.report import write_report_warned

    root = tmp_path / "out"
    manifest = make_folder(root, channels=1, failures=0)

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the histogram broke\nsecond line")

    monkeypatch.setattr(volprep.report, "plot_histograms", boom)
    with pytest.raises(RuntimeError, match="the histogram broke"):
        write_report(root, fake_result(root, manifest))
    result = SimpleNamespace(**vars(fake_result(root, manifest)), warnings=[])
    write_report_warned(result)  # type: ignore[arg-type]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["volprep: warning: report not written: RuntimeError: the histogram broke"]
    assert result.warnings == ["report not written: RuntimeError: the histogram broke"]
