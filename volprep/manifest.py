"""The manifest: what a shard folder holds, written last and atomically.

``manifest.json`` is the contract between the converter and every reader: the feature
spec (names, dtypes, shapes, encodings), each split's shards with record counts, bytes and
sha256, class histograms before and after balancing, normalisation statistics, fidelity
of lossy reductions, failed cases with their reasons, and the config and seed that made
it. Its content depends only on inputs, config and seed; wall-clock figures live apart in
``timings.json``. :func:`verify` checks a folder against its manifest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from volprep.errors import UsageError
from volprep.shards import atomic_write_json

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    """Writes ``manifest.json`` atomically (sorted keys: equal content, equal bytes)."""
    path = Path(out_dir) / MANIFEST
    atomic_write_json(path, manifest)
    return path


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """Reads a shard folder's manifest.

    Raises:
        UsageError: no manifest (not a volprep output folder, or a job that never finished).
    """
    path = Path(out_dir) / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{out_dir}: no {MANIFEST} (not a volprep output, or the job did not finish)") from None
    except ValueError as err:
        raise UsageError(f"{path}: not valid JSON ({err})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UsageError(f"{path}: format_version {manifest.get('format_version')!r}, this volprep reads {FORMAT_VERSION}")
    return manifest


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(out_dir: str | Path, *, parse: bool = True) -> list[str]:
    """Checks every shard against the manifest; returns one line per problem (empty: all good).

    Checks: the file exists, its size and sha256, its record count and every record's CRC,
    and (``parse``) a full parse of every record with TensorFlow against the feature spec.
    """
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    problems: list[str] = []
    from volprep.records import iter_records

    for split, info in sorted(manifest["splits"].items()):
        total = 0
        for shard in info["shards"]:
            path = out_dir / shard["file"]
            if not path.is_file():
                problems.append(f"{shard['file']}: missing")
                continue
            size = path.stat().st_size
            if size != shard["num_bytes"]:
                problems.append(f"{shard['file']}: {size} bytes, manifest says {shard['num_bytes']}")
            digest = sha256_file(path)
            if digest != shard["sha256"]:
                problems.append(f"{shard['file']}: sha256 {digest[:12]}... does not match the manifest's {shard['sha256'][:12]}...")
            try:
                count = sum(1 for _ in iter_records(path))
            except Exception as err:  # noqa: BLE001 - any corruption is reported, not raised
                problems.append(f"{shard['file']}: unreadable ({err})")
                continue
            if count != shard["num_records"]:
                problems.append(f"{shard['file']}: {count} records, manifest says {shard['num_records']}")
            total += count
            if parse:
                problems.extend(f"{shard['file']}: {p}" for p in _parse_all(path, manifest))
        if total != info["num_records"] and not problems:
            problems.append(f"split {split}: {total} records, manifest says {info['num_records']}")
    return problems


def _parse_all(path: Path, manifest: dict[str, Any]) -> list[str]:
    """Parses every record of one shard with TensorFlow; returns problems."""
    import tensorflow as tf

    from volprep.loader import decode_batch, parse_spec

    spec = parse_spec(manifest["features"])
    problems: list[str] = []
    try:
        for batch in tf.data.TFRecordDataset(str(path)).batch(16):
            decode_batch(tf.io.parse_example(batch, spec), manifest["features"])
    except (tf.errors.OpError, ValueError) as err:
        problems.append(f"parse failed: {str(err).splitlines()[0][:200]}")
    return problems
