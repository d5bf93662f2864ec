"""Text a person reads: the end-of-job summary and ``volprep inspect``.

:func:`summary_text` turns a :class:`~volprep.job_result.JobResult` into the few aligned lines
printed at the end of ``volprep shards`` (cases, failures, splits, balance, shards,
fidelity, time per stage, how to load the result); :func:`inspect_text` turns a typed
:class:`~volprep.manifest.Manifest` into the longer, deterministic description ``volprep inspect`` prints (no wall-clock
figures, so the same manifest always gives the same text). Both are pure functions of
their arguments apart from harmless looks at the terminal and the output folder (colour
only on a TTY; the report line only when a report exists; ``plan.json`` when no plan is
given); the same text lands in ``OUT/report/summary.txt``. The summary stays short for
any number of classes: its balance section lists at most nine classes, those that hold
records (:mod:`volprep.report_classes`), sums up the rest in one line, and says so
instead when balancing by case does not apply; ``inspect`` keeps the full class table.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from volprep import storage
from volprep.manifest import ClassTable, DatasetInfo, Manifest, SplitEntry
from volprep.report_classes import (
    balance_not_applicable,
    class_counts,
    hidden_text,
    pick_classes,
    read_plan,
)

_BOLD, _RED, _YELLOW, _GREEN, _RESET = "\033[1m", "\033[31m", "\033[33m", "\033[32m", "\033[0m"
_KEY = 10  # width of the left-hand label column


def load_snippet(out_dir: str) -> str:
    """The two lines of Python that load a shard folder.

    Args:
        out_dir: the shard folder, as the user should type it.

    Returns:
        Two lines: the import and the ``volprep.load`` call.
    """
    return f'import volprep\nds = volprep.load({_py_str(str(out_dir))}, split="train", batch_size=4)'


def _py_str(text: str) -> str:
    """A double-quoted Python string literal (what people write by hand)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def human_size(n: float) -> str:
    """Bytes as a short decimal size (``"12.3 MB"``), the unit ``shard_size_mb`` uses."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _use_color(color: bool | None) -> bool:
    if color is not None:
        return color
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return bool(getattr(sys.stdout, "isatty", lambda: False)())


def _paint(text: str, code: str, on: bool) -> str:
    return f"{code}{text}{_RESET}" if on else text


def _row(key: str, text: str) -> str:
    return f"  {key:<{_KEY}} {text}" if key else f"  {'':<{_KEY}} {text}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _shard_line(split: SplitEntry) -> str:
    sizes = [s.num_bytes for s in split.shards]
    if not sizes:
        return "no shards"
    text = f"{_plural(len(sizes), 'shard')}, {human_size(sum(sizes))}"
    if len(sizes) > 1:
        text += f" ({human_size(min(sizes))}-{human_size(max(sizes))} each)"
    return text


def _split_rows(splits: Mapping[str, SplitEntry]) -> list[str]:
    """One aligned row a split: records (originals + copies), shards and bytes."""
    names = list(splits)
    width = max((len(n) for n in names), default=0)
    counts = [str(splits[n].num_records) for n in names]
    cwidth = max((len(c) for c in counts), default=0)
    described = []
    for name, count in zip(names, counts, strict=True):
        info = splits[name]
        copies = info.num_records - info.num_originals
        what = f"{count:>{cwidth}} records"
        if copies:
            what += f" = {info.num_originals} originals + {copies} augmented"
        described.append((name, what, info))
    what_width = max((len(w) for _, w, _ in described), default=0)
    return [f"{name:<{width}}  {what:<{what_width}}  {_shard_line(info)}" for name, what, info in described]


def _class_rows(classes: ClassTable, limit: int = 9) -> list[str]:
    """The balance section: a title, then ``name  before -> after  (+copies)`` rows, aligned.

    At most ``limit`` class rows (:func:`pick_classes`) and one line for the rest.
    """
    pick = pick_classes(class_counts(classes), limit)
    if not pick.shown:
        return [f"no class holds records ({len(pick.hidden)} named)"] if pick.hidden else []
    title = "train records per class, before -> after balancing"
    if pick.truncated:
        n_large = limit // 3
        title += f" (the {limit - n_large} rarest and {n_large} largest of {pick.with_records} classes with records)"
    width = max(len(c.name) for c in pick.shown)
    bw = max(len(str(c.before)) for c in pick.shown)
    aw = max(len(str(c.after)) for c in pick.shown)
    rows = [title + ":"]
    for c in pick.shown:
        if c.after > c.before:
            extra = f"  (+{c.after - c.before} augmented)"
        elif not c.after:
            extra = "  (no train case; " + ", ".join(f"{s} {n}" for s, n in c.per_split.items() if n) + ")"
        else:
            extra = ""
        rows.append(f"{c.name:<{width}}  {c.before:>{bw}} -> {c.after:>{aw}}{extra}")
    if pick.hidden:
        rows.append(hidden_text(pick.hidden))
    return rows


def _fidelity_text(fid: Mapping[str, Any] | None) -> str | None:
    if not fid:
        return None
    units = {"psnr": " dB", "ratio": "x"}
    parts = []
    for key, value in fid.items():
        if isinstance(value, Mapping):
            unit = units.get(key, "")
            parts.append(f"{key} min {value['min']:.4g}{unit}, median {value['median']:.4g}{unit}")
    n = fid.get("num_cases")
    suffix = f" ({_plural(int(n), 'case')})" if n else ""
    return "; ".join(parts) + suffix if parts else None


def _feature_text(manifest: Manifest) -> str:
    parts = []
    for name in ("image", "label", "mask"):
        if name in manifest.features:
            f = manifest.features[name]
            parts.append(f"{name} {f.dtype} {list(f.shape)} {f.encoding}")
    return "; ".join(parts)


def _times_text(timings: Mapping[str, float]) -> str:
    if not timings:
        return "not recorded"
    parts = [f"{k} {float(v):.1f}s" for k, v in timings.items()]
    return ", ".join(parts) + f"; total {sum(float(v) for v in timings.values()):.1f}s"


def summary_text(result: Any, max_failures: int = 5, *, color: bool | None = None,
                 report: bool | None = None, plan: Mapping[str, Any] | None = None) -> str:
    """The summary printed at the end of ``volprep shards``.

    Args:
        result: a :class:`~volprep.job_result.JobResult`.
        max_failures: failure lines shown before "... and N more".
        color: ANSI colour for the status and failures; ``None``: only when stdout is a
            terminal (and ``NO_COLOR`` is unset).
        report: add the line pointing at ``OUT/report/index.html``; ``None``: when it exists.
        plan: the job's ``plan.json``, for whether balancing by case applies; ``None``: read
            it from the output folder.

    Returns:
        The summary, lines joined by ``\\n`` (no trailing newline).
    """
    on = _use_color(color)
    m: Manifest = result.manifest
    out_dir = storage.location(result.out_dir)
    failures = sorted(result.failures, key=lambda f: (str(f.case), str(f.path)))  # as in the manifest
    failed = len(failures)
    if failed:
        status = _paint(f"finished, {_plural(failed, 'case')} failed (exit status {result.exit_code})", _YELLOW, on)
    else:
        status = _paint(f"done (exit status {result.exit_code})", _GREEN, on)
    lines = [f"{_paint('volprep shards', _BOLD, on)} {out_dir}: {status}"]
    lines.append(_row("cases", f"{result.cases_found} found, {result.cases_converted} converted "
                               f"({result.cases_reused} reused from cache), {failed} failed"))
    for f in failures[:max_failures]:
        lines.append(_row("", _paint(f.line(), _RED, on)))
    if failed > max_failures:
        lines.append(_row("", f"... and {failed - max_failures} more"))
    if failed:
        lines.append(_row("", f"full list: {storage.join(out_dir, 'failures.csv')} (and the manifest's \"failures\")"))
    split_rows = _split_rows(m.splits)
    for i, row in enumerate(split_rows):
        lines.append(_row("splits" if i == 0 else "", row))
    notes = sorted(set(m.notes) | set(getattr(result, "notes", []) or []))
    if plan is None:
        try:
            plan = read_plan(out_dir)
        except ValueError as err:
            notes.append(f"plan.json not read: {err}")
    not_applicable = balance_not_applicable(m, plan)
    class_rows = _class_rows(m.classes)
    if not_applicable and class_rows:
        lines.append(_row("balance", not_applicable[0].lower() + not_applicable[1:]))
    elif class_rows:
        lines.append(_row("balance", class_rows[0]))
        lines.extend(_row("", f"  {row}") for row in class_rows[1:])
    lines.append(_row("records", _feature_text(m)))
    fid = _fidelity_text(m.fidelity)
    if fid:
        lines.append(_row("fidelity", fid))
    notes += [f"{n} case(s): {note}" for note, n in m.case_notes.items()]
    for i, note in enumerate(notes):
        lines.append(_row("notes" if i == 0 else "", note))
    lines.append(_row("time", _times_text(result.timings)))
    index = storage.join(out_dir, "report", "index.html")
    if report or (report is None and storage.exists(index)):
        lines.append(_row("report", str(index)))
    lines.append(_row("load it:", ""))
    lines.extend(f"    {line}" for line in load_snippet(str(out_dir)).splitlines())
    return "\n".join(line.rstrip() for line in lines)


def _toml_value(value: Any) -> str:
    """A config value the way it would be written in the TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "(unset)"
    if isinstance(value, str):
        return _py_str(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)


def _table(rows: Sequence[Sequence[str]], right: Sequence[bool], indent: str = "  ") -> list[str]:
    """Aligned columns; ``right[i]`` right-aligns column i."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        (indent + "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True))).rstrip()
        for row in rows
    ]


def inspect_text(manifest: Manifest, out_dir: str = "") -> str:
    """``volprep inspect``: the manifest in a form a person reads.

    Lists the features, every split and every shard (records, bytes, sha256 prefix),
    class counts (train before/after balancing and originals per split), the
    normalisation, fidelity of lossy reductions, notes, every failure and the config.
    Deterministic: the same manifest gives the same text.

    Args:
        manifest: the folder's manifest (:func:`volprep.manifest.read_manifest`).
        out_dir: the folder it came from, shown in the title.

    Returns:
        The text, lines joined by ``\\n``.
    """
    m = manifest
    title = f"volprep shards {out_dir}".rstrip()
    lines = [f"{title} (format {m.format_version}, volprep {m.volprep_version})"]
    lines += _dataset_lines(m.dataset)

    lines.append("")
    lines.append("features:")
    rows = [[name, f.dtype, str(list(f.shape)), f.encoding] for name, f in sorted(m.features.items())]
    lines.extend(_table(rows, [False, False, False, False]))

    lines.append("")
    lines.append("splits:")
    lines += _shard_lines(m.splits)
    lines += _class_table(m.classes)

    lines.append("")
    norm = m.normalization
    if norm:
        stats = norm.get("dataset_stats")
        lines.append(f"normalization: {norm.get('method')}" + (" with dataset statistics" if stats else " per case"))
        for c, s in enumerate(stats or []):
            if isinstance(s, Mapping):
                lines.append(f"  channel {c}: " + ", ".join(f"{k} {float(v):.4g}" for k, v in sorted(s.items())))
    fid = _fidelity_text(m.fidelity)
    lines.append(f"fidelity: {fid}" if fid else "fidelity: not recorded (no lossy reduction measured)")
    if m.target_shape:
        lines.append(f"target shape: {list(m.target_shape)}")
    notes = [*m.notes, *(f"{n} case(s): {note}" for note, n in m.case_notes.items())]
    if notes:
        lines.append("notes:")
        lines.extend(f"  {n}" for n in notes)

    lines.append("")
    lines.append(f"failures: {len(m.failures)}")
    lines.extend(f"  case {f.case}: {f.path}: {f.error}" for f in m.failures)

    lines.append("")
    lines.append(f"seed: {m.seed}")
    lines.append("config:")
    for section, table in m.config.items():
        lines.append(f"  [{section}]")
        if isinstance(table, Mapping):
            width = max((len(str(k)) for k in table), default=0)
            lines.extend(f"    {k:<{width}} = {_toml_value(v)}" for k, v in table.items())
    return "\n".join(lines)


def _dataset_lines(ds: DatasetInfo) -> list[str]:
    """The dataset line and its label values (nothing for a manifest without a dataset)."""
    if not (ds.name or ds.layout or ds.num_cases or ds.label_names):
        return []
    lines = [f"dataset: {ds.name} ({ds.layout} layout, {ds.num_cases} cases)"]
    if ds.label_names:
        def value(item: tuple[str, str]) -> int:
            return int(item[0]) if item[0].lstrip("-").isdigit() else 0

        lines.append("  label values: " + ", ".join(f"{k} = {v}" for k, v in sorted(ds.label_names.items(), key=value)))
    return lines


def _shard_lines(splits: Mapping[str, SplitEntry]) -> list[str]:
    """Each split's records and shards, then one aligned row a shard (aligned across splits)."""
    shard_rows = {split: [[s.file, f"{s.num_records} records", human_size(s.num_bytes), f"sha256 {s.sha256[:16]}"]
                          for s in info.shards]
                  for split, info in splits.items()}
    aligned = iter(_table([r for rows in shard_rows.values() for r in rows], [False, True, True, False], "    "))
    lines = []
    for split, info in splits.items():
        extra = ""
        if info.num_records != info.num_originals:
            extra = f" ({info.num_originals} originals + {info.num_records - info.num_originals} augmented)"
        lines.append(f"  {split}: {info.num_records} records{extra}, {_shard_line(info)}")
        lines.extend(next(aligned) for _ in shard_rows[split])
    return lines


def _class_table(classes: ClassTable) -> list[str]:
    """Every class (the long form): train before/after balancing and originals per split."""
    if not classes.names:
        return []
    split_names = list(classes.per_split)
    header = ["class", "train before", "train after", *[f"{s} originals" for s in split_names]]
    rows = [header]
    for n in classes.names:
        rows.append([n, str(classes.counts_before.get(n, 0)), str(classes.counts_after.get(n, 0)),
                     *[str(classes.per_split[s].get(n, 0)) for s in split_names]])
    return ["", "classes:", *_table(rows, [False] + [True] * (len(header) - 1))]
