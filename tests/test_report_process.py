"""Tests for volprep.report_process: the report drawn by a helper process started with the job.

What it writes is :func:`volprep.report.write_report`'s (tested in test_report*.py); here:
the helper writes the same report for a job's result, and whatever goes wrong there comes
back as the one warning line the in-process route prints, never swallowed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_report import make_folder

from volprep.job_result import Failure, JobResult
from volprep.report import FIGURES, write_report, write_report_warned
from volprep.report_process import start


def result_for(out: Path) -> JobResult:
    manifest = make_folder(out)
    failures = [Failure(f.case, f.path, f.error) for f in manifest.failures]
    return JobResult(out, 3, manifest, failures, 11, 9, 4, {"convert": 2.5, "write": 1.25}, [])


def test_the_helper_writes_the_report_of_a_job(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    result = result_for(out)
    helper = start()
    try:
        helper.write_warned(result)
    finally:
        helper.close()
    assert result.warnings == [] and result.timings["report"] > 0
    for name in (*FIGURES, "summary.txt", "index.html"):
        assert (out / "report" / name).stat().st_size > 0, name
    assert "9 converted (4 reused from cache), 2 failed" in (out / "report" / "summary.txt").read_text()
    assert "warning" not in capfd.readouterr().err


def test_a_failure_in_the_helper_is_the_same_warning_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    result = result_for(out)
    (out / "report").write_text("a file where the report folder goes")
    write_report_warned(result)  # the in-process route, for the expected line
    expected = result.warnings.pop()
    assert expected.startswith("report not written: FileExistsError")
    helper = start()
    try:
        helper.write_warned(result)
    finally:
        helper.close()
    assert result.warnings == [expected]
    assert capfd.readouterr().err.count(f"volprep: warning: {expected}") == 2
    assert result.exit_code == 3  # the job's result is unchanged


def test_a_helper_that_died_is_a_warning_and_an_unused_one_ends(tmp_path: Path) -> None:
    result = result_for(tmp_path / "out")
    helper = start()
    helper.proc.kill()
    helper.proc.wait()
    helper.write_warned(result)
    helper.close()
    assert len(result.warnings) == 1 and "the report process ended" in result.warnings[0]
    unused = start()
    unused.close()  # the job failed: no report asked for
    assert unused.proc.returncode is not None


def test_the_montage_drawn_in_a_forked_process_is_the_same_and_its_failure_raised(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import volprep.report

    out = tmp_path / "out"
    make_folder(out)
    write_report(out)
    alone = {name: (out / "report" / name).read_bytes() for name in FIGURES}
    write_report(out, fork=True)
    assert {name: (out / "report" / name).read_bytes() for name in FIGURES} == alone

    def broken(*args: object) -> None:
        raise ValueError("no montage today")

    monkeypatch.setattr(volprep.report, "plot_montage", broken)
    with pytest.raises(RuntimeError, match=r"^montage.png: ValueError: no montage today$"):
        write_report(out, fork=True)
    assert (out / "report" / "histograms.png").is_file()  # the rest was drawn meanwhile
