"""Tests for how the report meets bad data and its own failures.

Data it cannot read (a missing shard, a record whose CRC fails, a record that is not a
``tf.train.Example``, an unreadable plan.json) is listed in the report as a problem and
logged; the rest of the report is still written. A failure of the report itself (a plot
that raises) leaves ``write_report`` as an exception, which the runner turns into one
warning line: never silent, never fatal to a finished job.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_report import fake_result, make_folder, phantom

from volprep.records import encode_example, frame_record
from volprep.report import decode_image, decode_mask, write_report


def test_unreadable_records_and_files_are_listed_as_problems(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "out"
    manifest = make_folder(root, channels=1, failures=0)
    good = frame_record(encode_example({"image": phantom("c07", 0, 1)[0].astype("<f2").tobytes(),
                                        "mask": phantom("c07", 0, 1)[1].tobytes(), "label": 1,
                                        "case_id": "c07", "copy": 0, "augment": ""}))
    broken = bytearray(good)
    broken[20] ^= 0xFF  # a flipped byte inside the data: the data CRC fails
    garbage = frame_record(b"\x0f\xff\x03")  # framed correctly, but not a protobuf Example
    val = root / manifest["splits"]["val"]["shards"][0]["file"]
    val.write_bytes(frame_record(encode_example({"image": b"", "case_id": "c06", "copy": 0})) + garbage + good + bytes(broken))
    (root / manifest["splits"]["train"]["shards"][1]["file"]).unlink()
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


def test_decoding_errors_name_the_feature_and_the_sizes() -> None:
    feature = {"dtype": "float16", "shape": [2, 2, 2, 1], "encoding": "raw"}
    with pytest.raises(ValueError, match="no 'image' feature"):
        decode_image({"case_id": [b"x"]}, feature)
    with pytest.raises(ValueError, match="'image' should hold one bytes value"):
        decode_image({"image": np.array([1, 2], np.int64)}, feature)
    with pytest.raises(ValueError, match=r"image has 3 bytes, the manifest's float16 \[2, 2, 2, 1\] needs 16"):
        decode_image({"image": [b"abc"]}, feature)
    mask = {"dtype": "uint8", "shape": [2, 2, 2], "encoding": "raw"}
    with pytest.raises(ValueError, match=r"mask has 1 bytes, the manifest's uint8 \[2, 2, 2\] needs 8"):
        decode_mask({"mask": [b"a"]}, mask)
    np.testing.assert_array_equal(decode_mask({"label": [bytes(range(8))]}, mask), np.arange(8).reshape(2, 2, 2))


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
