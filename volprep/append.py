"""Append, not rewrite: a grown dataset adds a generation of shards beside the published ones.

When OUT already holds a manifest that records its cases' fingerprints, a rerun with the
same config and seed compares the cases it converted with those (:func:`decide`):

- nothing new, nothing removed or changed: every published shard is kept, none written
  (an append of nothing: the plan keeps the copies already written);
- new cases, none removed or changed: an *append*. The published shards stay as they are (names, bytes, sha256
  and modification times unchanged, still listed by the manifest); the new cases' records
  (originals and planned copies, globally shuffled among themselves) go into new shards
  whose tag hashes the generation number too, so their names never collide with the old
  ones; the manifest lists every generation (each shard entry has its ``generation``);
- a case gone, or a case whose record inputs changed (cache checksums, statistics, grid,
  class label): refused, one line a case, exit status 2, until ``--rebuild`` asks for
  today's full rewrite (a new generation 0 of every split). Never silently.

A config or seed that differs from the manifest's, an older manifest without fingerprints,
or ``--rebuild`` gives the full rewrite. New cases that would change the record spec (a
planned target shape is pinned to the published one, but dataset statistics or new label
values are not) are refused the same way.

Balancing across generations (:func:`extend_copies`): old cases keep exactly the copies
they have (their records are written); the new train cases' copies are planned from the
updated class counts of the whole train split (originals of every generation plus the
copies already written) toward the same target as a fresh plan (the majority class's
originals), at most ``max_copies_per_case`` a new case, and within what is left of the
``max_augmented_fraction`` budget of the grown split. Old copies are never removed, so a
class that only gained originals can end above the target; ``--rebuild`` replans all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from volprep import storage
from volprep.balance import append_copies, copy_seed
from volprep.config import BalanceConfig
from volprep.errors import UsageError
from volprep.plan import _jsonable
from volprep.shards import ShardInfo

REBUILD_HINT = "pass --rebuild to rewrite every shard"


def record_inputs(metas: Mapping[str, Mapping[str, Any]]) -> dict[str, list[Any]]:
    """``{case id: what of its cached case decides its records}`` (hashed into shard tags).

    Its arrays' checksums and the write-time meta (not, say, whether its fidelity was measured).
    """
    out = {}
    for k, meta in metas.items():
        checksum = meta.get("cache_checksum") or {}
        out[k] = [checksum.get("image"), checksum.get("mask"), meta.get("stats"), meta.get("grid"), meta.get("anchor")]
    return out


def _digest(value: Any) -> str:
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def fingerprints(inputs: Mapping[str, Any], labels: Mapping[str, int | None]) -> dict[str, str]:
    """``{case id: 16 hex digits}`` hashing a case's record inputs and its class label."""
    return {k: _digest([inputs[k], labels.get(k)]) for k in sorted(inputs)}


def spec_key(content_key: Mapping[str, Any]) -> str:
    """16 hex digits naming a record spec's content (:meth:`RecordSpec.content_key`)."""
    return _digest(content_key)


@dataclasses.dataclass(frozen=True)
class Previous:
    """What the published output says about itself (read leniently: any damage means none)."""

    cases: dict[str, str]  # case id -> fingerprint
    spec: str
    config: dict[str, Any]
    seed: int
    target_shape: tuple[int, int, int]
    shards: dict[str, list[dict[str, Any]]]  # split -> its manifest shard entries
    copies: dict[str, list[dict[str, Any]]]  # case id -> its copies in plan.json
    splits: dict[str, str]  # case id -> its split in plan.json

    @property
    def next_generation(self) -> int:
        return 1 + max((int(s.get("generation", 0)) for ss in self.shards.values() for s in ss), default=0)


def read_previous(out_dir: storage.Location) -> Previous | None:
    """The published manifest's fingerprints, spec, config and shards; ``None`` without them."""
    try:
        manifest = json.loads(storage.read_text(storage.join(out_dir, "manifest.json")))
        plan = json.loads(storage.read_text(storage.join(out_dir, "plan.json")))
        cases = manifest["cases"]
        if not isinstance(cases, dict) or not manifest.get("record_spec"):
            return None
        d, h, w = (int(n) for n in manifest["target_shape"])
        return Previous(cases={str(k): str(v) for k, v in cases.items()}, spec=str(manifest["record_spec"]),
                        config=dict(manifest["config"]), seed=int(manifest["seed"]),
                        target_shape=(d, h, w),
                        shards={str(s): [dict(e) for e in info["shards"]] for s, info in manifest["splits"].items()},
                        copies={str(k): list(v) for k, v in plan.get("copies", {}).items()},
                        splits={str(c): str(s) for s, ids in plan["splits"].items() for c in ids})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


@dataclasses.dataclass(frozen=True)
class Decision:
    """``mode``: ``"fresh"`` (a full rewrite) or ``"append"`` (keep the published shards; ``new``
    may be empty, then nothing is written)."""

    mode: str
    previous: Previous | None = None
    new: frozenset[str] = frozenset()
    why: str = ""


def decide(previous: Previous | None, now: Mapping[str, str], config: Mapping[str, Any], seed: int,
           *, rebuild: bool) -> Decision:
    """Whether this job appends, rewrites or refuses (see the module docstring).

    Raises:
        UsageError: cases removed or changed since the published manifest, without
            ``rebuild``; the message's first line says to pass ``--rebuild``, then one
            line a case.
    """
    if rebuild:
        return Decision("fresh", why="--rebuild: every shard rewritten")
    if previous is None:
        return Decision("fresh")
    same_config = _digest(dict(config)) == _digest(previous.config) and seed == previous.seed
    if not same_config:
        return Decision("fresh", why="the config or seed differs from the published one: every shard rewritten")
    lines = [f"case {c}: in the published shards, not converted now (removed, or it failed)"
             for c in sorted(set(previous.cases) - set(now))]
    lines += [f"case {c}: its input changed since its shards were written"
              for c in sorted(set(previous.cases) & set(now)) if previous.cases[c] != now[c]]
    if lines:
        raise UsageError("\n".join([f"refusing to append to the published shards: {len(lines)} case(s) "
                                    f"removed or changed ({REBUILD_HINT}):", *lines]))
    new = frozenset(set(now) - set(previous.cases))
    return Decision("append", previous, new)


def check_spec(decision: Decision, key: str) -> None:
    """Refuses an append whose new records would not match the published spec."""
    if decision.mode == "append" and decision.previous is not None and decision.previous.spec != key:
        if not decision.new:
            raise UsageError(f"the record spec differs from the published shards' with the same cases: {REBUILD_HINT}")
        raise UsageError(f"the {len(decision.new)} new case(s) change the record spec (dataset statistics, "
                         f"label values or dtypes) of the published shards: {REBUILD_HINT}")


Sampler = Callable[[int, str, int], Mapping[str, Any]]


def extend_copies(plan: Any, decision: Decision, balance: BalanceConfig, subset: set[str] | None,
                  sampler: Sampler, train_split: str = "train") -> list[str]:
    """Replaces a fresh plan's copies by the append rule (module docstring); returns explanation lines.

    Mutates ``plan.copies`` and ``plan.counts_after`` in place.

    Raises:
        UsageError: a published case would change split (the user's split file or column
            now says another): its records are in the other split's shards.
    """
    if decision.previous is None:
        raise ValueError("extend_copies: not an append")
    moved = sorted(c for s, ids in plan.splits.items() for c in ids
                   if c in decision.previous.splits and decision.previous.splits[c] != s)
    if moved:
        raise UsageError(f"{len(moved)} published case(s) would change split (e.g. {moved[0]!r}, as the user's "
                         f"split now says): {REBUILD_HINT}")
    old = decision.previous.copies
    train = plan.splits.get(train_split, [])
    kept = {c: list(old.get(c, [])) for c in train if c not in decision.new and old.get(c)}
    originals: dict[int, int] = {}
    old_copies: dict[int, int] = {}
    pool: dict[int, list[str]] = {}
    for c in train:
        cls = plan.case_class.get(c)
        if cls is None:
            continue
        originals[cls] = originals.get(cls, 0) + 1
        old_copies[cls] = old_copies.get(cls, 0) + len(kept.get(c, []))
        if c in decision.new and (subset is None or c in subset):
            pool.setdefault(cls, []).append(c)
    counts = append_copies(originals, old_copies, pool, balance) if plan.target > 0 else {}
    copies = dict(kept)
    for case_id, n in counts.items():
        if n:
            copies[case_id] = [{"copy": k, "seed": copy_seed(plan.seed, case_id, k),
                                "params": _jsonable(dict(sampler(plan.seed, case_id, k)))} for k in range(1, n + 1)]
    plan.copies = dict(sorted(copies.items()))
    after = dict(plan.counts_before)
    for case_id, items in plan.copies.items():
        cls = plan.case_class.get(case_id)
        if cls is not None:
            name = plan.class_name(cls)
            after[name] = after.get(name, 0) + len(items)
    plan.counts_after = after
    if not decision.new:
        return []
    return [f"Appended generation {decision.previous.next_generation}: {len(decision.new)} new case(s); "
            f"the {sum(len(v) for v in kept.values())} copies already written are kept, and the new "
            f"{train_split} cases get {sum(counts.values())} copies planned from the updated class counts "
            "(originals of every generation + copies written) toward the same target, within the "
            "remaining max_augmented_fraction budget."]


def carried_counts(plan: Any, decision: Decision, train_split: str = "train") -> dict[int, int]:
    """Train records per class id in the published shards an append keeps (originals + copies)."""
    counts: dict[int, int] = {}
    if decision.mode != "append":
        return counts
    for c in plan.splits.get(train_split, []):
        cls = plan.case_class.get(c)
        if c not in decision.new and cls is not None:
            counts[int(cls)] = counts.get(int(cls), 0) + 1 + len(plan.copies.get(c, []))
    return counts


def kept_shards(out_dir: storage.Location, decision: Decision, split: str) -> list[ShardInfo]:
    """The published shards of a split that an append keeps, as the manifest lists them.

    Raises:
        UsageError: one is missing or not of its listed size (``volprep verify`` checks the
            rest); a rewrite is then the way to repair the folder.
    """
    if decision.mode != "append" or decision.previous is None:
        return []
    kept = [ShardInfo(str(e["file"]), int(e["num_records"]), int(e["num_bytes"]), str(e["sha256"]), {},
                      int(e.get("generation", 0))) for e in decision.previous.shards.get(split, [])]
    for info in kept:
        try:
            size = storage.size(storage.join(out_dir, info.file))
        except OSError:
            size = -1
        if size != info.num_bytes:
            raise UsageError(f"{info.file}: a published shard is missing or damaged: {REBUILD_HINT}")
    return kept
