"""The report on real anatomy (tests/realdata.py): an atlas with ~660 sparse labels out of
725 named, and AAL, where every case holds nearly every label.

What matters here is what a person sees after a job: a short balance section, a class
chart of at most ``MAX_BARS`` classes, a montage through the middle of the brain, and a
report that takes seconds, not a minute.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_summary import balance_section

from volprep.cli import main
from volprep.manifest import read_manifest
from volprep.report import write_report
from volprep.report_figures import MAX_BARS, class_counts_figure

pytestmark = pytest.mark.slow


def run(task: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["shards", str(task), "--out", str(out), "--workers", "1"]) == 0
    return capsys.readouterr().out


def test_atlas_report_is_short_and_fast(realdata: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "atlas"
    text = run(realdata / "atlas", out, capsys)
    section = balance_section(text)
    assert len(section) <= 12 and any("more classes" in line for line in section), "\n".join(section)
    manifest = read_manifest(out)
    assert len(manifest.classes.names) > 700
    start = time.perf_counter()
    write_report(out)
    assert time.perf_counter() - start < 5  # 31-48 s before
    fig = class_counts_figure(manifest, json.loads((out / "plan.json").read_text()))
    assert 0 < len(fig.axes[0].get_xticklabels()) <= MAX_BARS
    page = (out / "report" / "index.html").read_text()
    assert "<h2>Problems" not in page


def test_aal_summary_and_chart_say_balancing_does_not_apply(
        realdata: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "aal"
    section = balance_section(run(realdata / "aal", out, capsys))
    assert "does not apply" in section[0] and not any("->" in line for line in section)
    fig = class_counts_figure(read_manifest(out), json.loads((out / "plan.json").read_text()))
    assert "does not apply" in "\n".join([fig.axes[0].get_title(), *(t.get_text() for t in fig.texts)])
