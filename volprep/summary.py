"""Text a person reads: the end-of-job summary and ``volprep inspect``.

Both are pure functions of a :class:`~volprep.runner.JobResult` or a manifest, so the
same text lands on the terminal, in ``OUT/report/summary.txt`` and in the README.
"""

from __future__ import annotations

from typing import Any


def load_snippet(out_dir: str) -> str:
    """The two lines of Python that load a shard folder."""
    return f'import volprep\nds = volprep.load("{out_dir}", split="train", batch_size=4)'


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def summary_text(result: Any, max_failures: int = 5) -> str:
    """The summary printed at the end of ``volprep shards``."""
    m = result.manifest
    lines = [f"volprep: {result.out_dir}"]
    failed = len(result.failures)
    lines.append(
        f"  cases     {result.cases_found} found, {result.cases_converted} converted "
        f"({result.cases_reused} reused from cache), {failed} failed"
    )
    for f in result.failures[:max_failures]:
        lines.append(f"    {f.line()}")
    if failed > max_failures:
        lines.append(f"    ... and {failed - max_failures} more")
    if failed:
        lines.append(f"    full list: {result.out_dir / 'failures.csv'}")
    for split, info in m["splits"].items():
        sizes = [s["num_bytes"] for s in info["shards"]]
        lines.append(
            f"  {split:<9} {info['num_records']} records ({info.get('num_originals', '?')} originals) "
            f"in {len(sizes)} shard(s), {_size(sum(sizes))}"
        )
    classes = m.get("classes", {})
    if classes.get("counts_before"):
        before, after = classes["counts_before"], classes["counts_after"]
        per_class = ", ".join(
            f"{name} {before.get(name, 0)}->{after.get(name, 0)}" for name in classes["names"]
            if name in before or name in after
        )
        lines.append(f"  balance   train counts before->after: {per_class}")
    image = m["features"]["image"]
    lines.append(f"  image     {image['dtype']} {image['shape']} ({image['encoding']})")
    fid = m.get("fidelity")
    if fid:
        parts = [f"{k} min {v['min']:.3g} median {v['median']:.3g}" for k, v in fid.items() if isinstance(v, dict)]
        lines.append(f"  fidelity  {'; '.join(parts)}")
    for note in sorted(set(m.get("notes", []))):
        lines.append(f"  note      {note}")
    times = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    lines.append(f"  time      {times}")
    lines.append("  load it:")
    lines.extend(f"    {line}" for line in load_snippet(str(result.out_dir)).splitlines())
    return "\n".join(lines)


def inspect_text(manifest: dict[str, Any], out_dir: str = "") -> str:
    """``volprep inspect``: the manifest in a form a person reads."""
    m = manifest
    lines = [f"volprep shards {out_dir} (format {m['format_version']}, volprep {m.get('volprep_version', '?')})"]
    ds = m.get("dataset", {})
    if ds:
        lines.append(f"dataset: {ds.get('name')} ({ds.get('layout')}, {ds.get('num_cases')} cases)")
    lines.append("features:")
    for name, feat in sorted(m["features"].items()):
        lines.append(f"  {name:<8} {feat['dtype']:<8} {str(feat['shape']):<20} {feat['encoding']}")
    lines.append("splits:")
    for split, info in m["splits"].items():
        total = sum(s["num_bytes"] for s in info["shards"])
        lines.append(f"  {split}: {info['num_records']} records, {len(info['shards'])} shard(s), {_size(total)}")
        for s in info["shards"]:
            lines.append(f"    {s['file']}  {s['num_records']:>6} records  {_size(s['num_bytes']):>9}  sha256 {s['sha256'][:16]}")
    classes = m.get("classes", {})
    if classes.get("names"):
        lines.append("classes (train): name, before, after")
        for name in classes["names"]:
            lines.append(f"  {name:<16} {classes['counts_before'].get(name, 0):>6} {classes['counts_after'].get(name, 0):>6}")
    fid = m.get("fidelity")
    if fid:
        lines.append("fidelity (what the loader returns vs the unreduced volume):")
        for key, v in fid.items():
            if isinstance(v, dict):
                lines.append(f"  {key:<6} min {v['min']:.4g}  median {v['median']:.4g}")
    norm = m.get("normalization")
    if norm:
        lines.append(f"normalization: {norm.get('method')}{' (dataset statistics)' if norm.get('dataset_stats') else ''}")
    failures = m.get("failures", [])
    lines.append(f"failures: {len(failures)}")
    for f in failures:
        lines.append(f"  case {f['case']}: {f['path']}: {f['error']}")
    lines.append(f"seed: {m.get('seed')}")
    lines.append("config:")
    for section, table in m.get("config", {}).items():
        items = ", ".join(f"{k}={v}" for k, v in table.items())
        lines.append(f"  [{section}] {items}")
    return "\n".join(lines)
