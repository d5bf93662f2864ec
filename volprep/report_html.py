"""The report's ``index.html``: one self-contained page that shows the whole report.

Contract: :func:`page_html` is a pure function of what it is given (the typed manifest, the
plan, the summary text, the figure names, the problems met while reading) apart from
checking which of the folder's files exist, so it can link them or say "(not present)".
Every value is HTML-escaped; the page needs nothing but the PNGs beside it. Problems
(records or files the report could not read) get a section of their own, before the
figures, so a report drawn from partial data says so where a person looks first.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from volprep.manifest import Manifest
from volprep.storage import Location, basename, join
from volprep.storage import exists as exists_at
from volprep.summary import human_size

REPORT_DIR = "report"
_MAX_PROBLEMS = 200  # problem lines listed at most


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1400px;
margin:1.5em auto;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.85em;border-radius:4px}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#555;margin-top:.3em}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f0f0f0}.muted{color:#777}
"""

_CAPTIONS = {
    "class_counts.png": "Left: train records per class before balancing (originals) and after "
                        "(originals plus offline augmented copies); the dashed line is the plan's "
                        "target. Right: original cases per class in each split. Only classes that "
                        "hold records are drawn, at most 30 (the rarest and the largest when there "
                        "are more); the note below the chart counts the rest.",
    "montage.png": "Axial, coronal and sagittal slices of a few originals per class, each beside its "
                   "first augmented copies: through the smallest labelled structure when a case has "
                   "few label values, through the centre of the labelled foreground when it has many "
                   "(an atlas), through the grid's middle without labels. A row shares one intensity "
                   "window; the legend names the labels covering the most pixels in these slices.",
    "histograms.png": "Voxel intensities of a sample of records as the loader returns them "
                      "(after normalisation), per split; dashed: augmented copies.",
}


def page_html(out_dir: Location, manifest: Manifest, plan: Mapping[str, Any] | None, summary: str,
              figures: Sequence[str], records_read: int, problems: Sequence[str] = (),
              report_dir: Path | None = None) -> str:
    """The page: summary, balancing explanation, problems, figures, failures, files, shards.

    Args:
        out_dir: the shard folder (links are relative to ``OUT/report/``).
        manifest: its manifest.
        plan: its plan, or ``None``.
        summary: the summary text (shown as preformatted text).
        figures: the PNG names, in display order.
        records_read: records read for the plots (said in the header).
        problems: what could not be read (one line each); the section is left out when empty.
        report_dir: the local folder the report is written in (``OUT/report`` by default; a
            local staging folder for an object-store OUT).

    Returns:
        The HTML text.
    """
    e = html.escape
    name = manifest.dataset.name or basename(out_dir)
    report_at: Location = report_dir if report_dir is not None else join(out_dir, REPORT_DIR)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>volprep report: {e(str(name))}</title><style>{_CSS}</style></head><body>",
        f"<h1>volprep report: {e(str(name))}</h1>",
        f'<p class="muted">{e(str(out_dir))} &middot; format {manifest.format_version}'
        f" &middot; volprep {e(manifest.volprep_version)} &middot; seed {manifest.seed}"
        f" &middot; {records_read} records read for the plots</p>",
        "<h2>Summary</h2>", f"<pre>{e(summary)}</pre>",
    ]
    explanation = (plan or {}).get("explanation") or []
    if explanation:
        parts.append("<h2>Balancing</h2><ul>")
        parts.extend(f"<li>{e(str(line))}</li>" for line in explanation)
        parts.append("</ul>")
    if problems:
        parts.append(f"<h2>Problems reading the folder ({len(problems)})</h2>"
                     "<p>The figures below were drawn without these records or files.</p><ul>")
        parts.extend(f"<li>{e(line)}</li>" for line in problems[:_MAX_PROBLEMS])
        if len(problems) > _MAX_PROBLEMS:
            parts.append(f"<li>... and {len(problems) - _MAX_PROBLEMS} more</li>")
        parts.append("</ul>")
    parts.append("<h2>Figures</h2>")
    for fig in figures:
        parts.append(f'<figure><img src="{e(fig)}" alt="{e(fig)}"><figcaption><b>{e(fig)}</b>: '
                     f"{e(_CAPTIONS.get(fig, ''))}</figcaption></figure>")
    failures = manifest.failures
    parts.append(f"<h2>Failures ({len(failures)})</h2>")
    if failures:
        shown = failures[:500]
        parts.append("<table><tr><th>case</th><th>path</th><th>error</th></tr>")
        parts.extend(f"<tr><td>{e(f.case)}</td><td>{e(f.path)}</td><td>{e(f.error)}</td></tr>" for f in shown)
        parts.append("</table>")
        if len(failures) > len(shown):
            parts.append(f"<p>... and {len(failures) - len(shown)} more in failures.csv.</p>")
    else:
        parts.append("<p>Every case converted.</p>")
    parts.append("<h2>Files</h2><ul>")
    for file, what in (("manifest.json", "feature spec, shards, checksums, classes, config"),
                       ("plan.json", "splits and the augmentation plan"),
                       ("failures.csv", "every failed case with its reason"),
                       ("timings.json", "wall time per stage"),
                       ("summary.txt", "this summary as text")):
        href = file if file == "summary.txt" else f"../{file}"
        exists = exists_at(join(report_at, file)) if file == "summary.txt" else exists_at(join(out_dir, file))
        mark = "" if exists else ' <span class="muted">(not present)</span>'
        parts.append(f'<li><a href="{e(href)}">{e(file)}</a>: {e(what)}{mark}</li>')
    parts.append("</ul>")
    parts.append("<h2>Shards</h2><table><tr><th>split</th><th>file</th><th>records</th><th>size</th><th>sha256</th></tr>")
    for split, info in manifest.splits.items():
        for s in info.shards:
            parts.append(f"<tr><td>{e(split)}</td><td>{e(s.file)}</td><td>{s.num_records}</td>"
                         f"<td>{e(human_size(s.num_bytes))}</td><td><code>{e(s.sha256[:16])}</code></td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"


