"""The plan stage: splits, class counts and the class-balanced augmentation plan.

This module owns every decision made *before* shards are written, as pure functions of
the cases' metadata (:class:`PlanEntry`), the job seed and the ``[job]`` / ``[balance]``
config, in the nnU-Net habit of "plan, then apply": which split each case goes to
(grouped by subject, stratified by class, deterministic from the seed), which class each
case counts under, and how many offline augmented copies each *training* case gets, each
copy with its seed triple ``(job seed, case id, copy index)`` and, when a sampler is
given, its sampled parameters. The result is a :class:`Plan`, saved as a JSON file a
person can read (:func:`write_plan`, atomic) and read back (:func:`read_plan`); the shard
writer applies it without deciding anything. The same entries, config and seed give the
same plan whatever order the entries come in. Only :func:`write_plan` / :func:`read_plan`
touch files; the plan module does not import ``volprep.augment`` (the runner passes the
sampler in).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from volprep.config import BalanceConfig, JobConfig
from volprep.errors import ConfigError, DatasetError, InputError
from volprep.seeds import rng_for

log = logging.getLogger(__name__)

PLAN_VERSION = 1
BACKGROUND = 0
"""The class a segmentation case with no foreground voxels counts under."""

AugmentSampler = Callable[[np.random.Generator, str], Mapping[str, Any]]
"""``sampler(rng, case_id) -> params``: draws one copy's augmentation parameters."""

_EPS = 1e-9


@dataclasses.dataclass(frozen=True)
class PlanEntry:
    """What the plan needs to know about one case (no voxels).

    Attributes:
        case_id: the case's stable, unique id.
        subject: the grouping key; no subject is ever in two splits.
        label: the class id of a classification case, else ``None``.
        voxel_counts: for a segmentation case, ``{mask value: voxel count}``, else ``None``.
    """

    case_id: str
    subject: str
    label: int | None = None
    voxel_counts: Mapping[int, int] | None = None


# --------------------------------------------------------------------------- classes


def label_frequencies(entries: Sequence[PlanEntry]) -> dict[int, int]:
    """How many cases contain each foreground mask value (``> 0``, at least one voxel)."""
    freq: Counter[int] = Counter()
    for entry in entries:
        if entry.voxel_counts:
            freq.update({int(v) for v, n in entry.voxel_counts.items() if v > 0 and n > 0})
    return dict(sorted(freq.items()))


def class_of(entry: PlanEntry, class_by: str, label_freq: Mapping[int, int] | None) -> int | None:
    """The class a case counts under, for stratified splits and for balancing.

    ``"label"``: the case's class label; a case without one but with a mask (segmentation)
    falls back to ``"rarest"``. ``"rarest"``: among the mask values > 0 present in the case,
    the one contained in the fewest cases of the whole dataset (``label_freq``, see
    :func:`label_frequencies`; ``None`` counts every value as equally rare), ties going to
    the smaller value. A segmentation case with no foreground at all counts as class 0
    (:data:`BACKGROUND`). A classification case under ``"rarest"`` counts under its label.

    Args:
        entry: the case.
        class_by: ``"label"`` or ``"rarest"``.
        label_freq: dataset-wide ``{mask value: number of cases containing it}``.

    Returns:
        The class id, or ``None`` for a case with neither a label nor a mask.

    Raises:
        ConfigError: ``class_by`` is not ``"label"`` or ``"rarest"``.
    """
    if class_by not in ("label", "rarest"):
        raise ConfigError(None, "balance.class_by", f"{class_by!r} is not one of 'label', 'rarest'")
    if class_by == "label" and entry.label is not None:
        return int(entry.label)
    if entry.voxel_counts is None:
        return None if entry.label is None else int(entry.label)
    present = [int(v) for v, n in entry.voxel_counts.items() if v > 0 and n > 0]
    if not present:
        return BACKGROUND
    freq = label_freq or {}
    return min(present, key=lambda v: (freq.get(v, 0), v))


def _class_names(
    ids: set[int], class_names: Sequence[str] | None, label_names: Mapping[int, str] | None
) -> dict[int, str]:
    """``{class id: name}`` for every class id seen or named, sorted by id."""
    names: dict[int, str] = {}
    if class_names is not None:
        names.update({i: str(n) for i, n in enumerate(class_names)})
    elif label_names is not None:
        names.update({int(i): str(n) for i, n in label_names.items()})
    for i in sorted(ids):
        if i not in names:
            names[i] = "background" if (i == BACKGROUND and label_names is not None) else str(i)
    if len(set(names.values())) != len(names):
        raise DatasetError(f"class names are not unique: {sorted(names.values())}")
    return dict(sorted(names.items()))


# --------------------------------------------------------------------------- splits


def _largest_remainder(total: int, fractions: Sequence[float]) -> list[int]:
    """Integer counts proportional to ``fractions`` that add up to ``total``.

    Ties in the remainder go to the earlier item, so the result is a pure function of its
    arguments.
    """
    exact = [total * f for f in fractions]
    counts = [math.floor(x + _EPS) for x in exact]
    order = sorted(range(len(exact)), key=lambda j: (-(exact[j] - counts[j]), j))
    for j in order[: total - sum(counts)]:
        counts[j] += 1
    return counts


def _controlled_round(sizes: Sequence[int], fractions: Sequence[float], columns: Sequence[int]) -> list[list[int]]:
    """Rounds the table ``sizes[i] * fractions[j]`` so rows and columns both add up.

    Each cell is its exact value rounded down or up, each row adds up to ``sizes[i]``, and
    the columns add up to ``columns`` (a largest-remainder rounding of the totals) whenever
    such a rounding exists; otherwise a column may end one over. The round-ups of a row
    are placed one at a time where the column still needs one (larger remainder first),
    moving earlier round-ups along an augmenting path when the row's columns are all full
    (bipartite matching, so the column totals are met whenever they can be).
    """
    n_rows, n_cols = len(sizes), len(fractions)
    base = [[0] * n_cols for _ in range(n_rows)]
    frac = [[0.0] * n_cols for _ in range(n_rows)]
    for i, n in enumerate(sizes):
        for j, f in enumerate(fractions):
            x = n * f
            base[i][j] = math.floor(x + _EPS)
            frac[i][j] = x - base[i][j] if x - base[i][j] > _EPS else 0.0
    need = [columns[j] - sum(base[i][j] for i in range(n_rows)) for j in range(n_cols)]
    up = [[False] * n_cols for _ in range(n_rows)]
    used = [0] * n_cols

    def augment(row: int) -> bool:
        # BFS: row takes column j; if j is full, a row rounded up in j gives it up and takes
        # another column, and so on until a column with room is reached; then flip the path.
        col_parent: dict[int, int] = {}  # column -> the row that would take it
        row_parent: dict[int, int] = {}  # row -> the column it would give up
        frontier = [row]
        while frontier:
            nxt: list[int] = []
            for r in frontier:
                for j in sorted(range(n_cols), key=lambda c: (-frac[r][c], c)):
                    if not frac[r][j] or up[r][j] or j in col_parent:
                        continue
                    col_parent[j] = r
                    if used[j] < need[j]:
                        col = j
                        while True:
                            taker = col_parent[col]
                            up[taker][col] = True
                            if taker == row:
                                break
                            col = row_parent[taker]
                            up[taker][col] = False
                        used[j] += 1
                        return True
                    for r2 in range(n_rows):
                        if up[r2][j] and r2 != row and r2 not in row_parent:
                            row_parent[r2] = j
                            nxt.append(r2)
            frontier = nxt
        return False

    order = sorted(range(n_rows), key=lambda i: (sum(1 for v in frac[i] if v), sizes[i], i))
    for i in order:
        for _ in range(sizes[i] - sum(base[i])):
            free = [j for j in range(n_cols) if frac[i][j] and not up[i][j]]
            room = [j for j in free if used[j] < need[j]]
            if room:
                j = max(room, key=lambda c: (need[c] - used[c], frac[i][c], -c))
                up[i][j] = True
                used[j] += 1
                continue
            if not augment(i):
                j = max(free, key=lambda c: (frac[i][c], -c))
                up[i][j] = True
                used[j] += 1
    return [[base[i][j] + int(up[i][j]) for j in range(n_cols)] for i in range(n_rows)]


def _stratum_key(cls: int | None) -> str | int:
    return "none" if cls is None else cls


def make_splits(
    entries: Sequence[PlanEntry],
    job: JobConfig,
    classes: Mapping[str, int | None] | None = None,
) -> dict[str, list[str]]:
    """Splits the cases into ``job.splits``, grouped by subject, stratified by class.

    Every subject lands in exactly one split. With ``job.stratify`` the subjects are
    grouped into strata by class (a subject's class is the most common class among its
    cases, ties going to the class of its first case by id); without it there is one
    stratum. The number of cases each stratum gives each split is its size times the
    split's fraction, rounded so that every stratum adds up to its size and every split
    to the largest-remainder rounding of ``len(entries) * fraction`` (so a class of one or
    two cases still goes where the split totals need it). Each stratum's subjects are then
    shuffled by ``rng_for(job.seed, "split", class)`` (``"none"`` for unlabelled cases,
    ``"all"`` without stratification), the larger subjects first, and each is dealt to
    the split that is furthest below its target. A split with fraction 0 stays empty.

    Args:
        entries: the cases, in any order.
        job: the ``[job]`` config (``seed``, ``splits``, ``stratify``).
        classes: ``{case id: class}``; by default :func:`class_of` with ``"label"``.

    Returns:
        ``{split name: sorted case ids}`` with every split of ``job.splits``, in its order.

    Raises:
        DatasetError: two entries share a case id.
    """
    entries = _sorted_unique(entries)
    if classes is None:
        freq = label_frequencies(entries)
        classes = {e.case_id: class_of(e, "label", freq) for e in entries}
    names = list(job.splits)
    fractions = [float(job.splits[n]) for n in names]
    out: dict[str, list[str]] = {n: [] for n in names}
    if not entries:
        return out

    subjects: dict[str, list[str]] = {}
    for e in entries:
        subjects.setdefault(e.subject, []).append(e.case_id)
    strata: dict[str | int, list[str]] = {}
    for subject, ids in sorted(subjects.items()):
        if job.stratify:
            votes = Counter(classes.get(i) for i in ids)
            top = max(votes.values())
            cls = next(classes.get(i) for i in ids if votes[classes.get(i)] == top)
            key = _stratum_key(cls)
        else:
            key = "all"
        strata.setdefault(key, []).append(subject)
    keys = sorted(strata, key=lambda k: (isinstance(k, str), str(k) if isinstance(k, str) else k))
    sizes = [sum(len(subjects[s]) for s in strata[k]) for k in keys]
    totals = _largest_remainder(len(entries), fractions)
    targets = _controlled_round(sizes, fractions, totals)

    assigned_total = [0] * len(names)
    open_splits = [j for j, f in enumerate(fractions) if f > 0]
    for row, key in enumerate(keys):
        rng = rng_for(job.seed, "split", key)
        order = [strata[key][i] for i in rng.permutation(len(strata[key]))]
        order.sort(key=lambda s: -len(subjects[s]))  # stable: the shuffle breaks ties
        assigned = [0] * len(names)
        for subject in order:
            j = max(
                open_splits,
                key=lambda c: (targets[row][c] - assigned[c], totals[c] - assigned_total[c], fractions[c], -c),
            )
            out[names[j]].extend(subjects[subject])
            assigned[j] += len(subjects[subject])
            assigned_total[j] += len(subjects[subject])
    return {n: sorted(ids) for n, ids in out.items()}


def _sorted_unique(entries: Sequence[PlanEntry]) -> list[PlanEntry]:
    ordered = sorted(entries, key=lambda e: e.case_id)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a.case_id == b.case_id:
            raise DatasetError(f"case id {a.case_id!r} appears twice; case ids must be unique")
    return ordered


# --------------------------------------------------------------------------- balance


def copy_budget(originals: int, max_augmented_fraction: float) -> int | None:
    """The most copies the train split may hold: ``copies / (originals + copies) <= fraction``.

    ``max_augmented_fraction`` is the largest share of augmented copies among the train
    split's records (0.5: at most as many copies as originals). Returns ``None`` for 1
    (no global cap). Exact (rational) arithmetic, so 0.2 of 100 originals allows 25.
    """
    f = Fraction(max_augmented_fraction).limit_denominator(10**6)
    if f >= 1:
        return None
    return math.floor(f * originals / (1 - f))


@dataclasses.dataclass(frozen=True)
class _ClassBudget:
    count: int       # train originals of the class
    eligible: int    # of them, cases that may get copies (the subset)
    wanted: int      # copies to reach the target, capped per case
    granted: int     # after the global cap


def _balance_budgets(
    counts: Mapping[int, int], eligible: Mapping[int, int], balance: BalanceConfig
) -> tuple[int, dict[int, _ClassBudget], int | None]:
    """``(target, {class: budget}, global budget)`` of :func:`plan_copies`."""
    target = max(counts.values(), default=0)
    wanted = {
        c: min(target - n, eligible.get(c, 0) * balance.max_copies_per_case) for c, n in counts.items()
    }
    budget = copy_budget(sum(counts.values()), balance.max_augmented_fraction)
    total = sum(wanted.values())
    granted = dict(wanted)
    if budget is not None and total > budget:
        # Proportional to what each class wants, the leftover units by largest remainder,
        # ties to the rarer class (fewer originals), then the smaller class id.
        granted = {c: budget * w // total for c, w in wanted.items()}
        order = sorted(wanted, key=lambda c: (-((budget * wanted[c]) % total), counts[c], c))
        for c in order[: budget - sum(granted.values())]:
            granted[c] += 1
    return target, {
        c: _ClassBudget(counts[c], eligible.get(c, 0), wanted[c], granted[c]) for c in sorted(counts)
    }, budget


def plan_copies(
    train_entries: Sequence[PlanEntry],
    classes: Mapping[str, int | None],
    balance: BalanceConfig,
    subset: set[str] | None = None,
) -> dict[str, int]:
    """How many augmented copies each training case gets, to balance the classes.

    The target is the majority class's count of train originals. Each other class wants
    ``target - count`` copies, at most ``balance.max_copies_per_case`` per eligible case
    (eligible: every case of the class, or only those in ``subset`` when it is given).
    The train split as a whole may hold at most ``copies / (originals + copies) <=
    balance.max_augmented_fraction`` (:func:`copy_budget`); when that binds, the budget
    goes to the classes in proportion to what they want (leftover units to the rarer
    class first). A class's copies are dealt round-robin over its eligible cases in
    sorted id order. Cases without a class get none. Pure and deterministic.

    Args:
        train_entries: the train split's cases (originals).
        classes: ``{case id: class}`` (see :func:`class_of`).
        balance: the ``[balance]`` config; ``enabled = false`` gives no copies.
        subset: the only case ids that may get copies, or ``None`` for all.

    Returns:
        ``{case id: copies}`` for every train case (0 for most).
    """
    entries = _sorted_unique(train_entries)
    copies = {e.case_id: 0 for e in entries}
    if not balance.enabled or not entries:
        return copies
    by_class: dict[int, list[str]] = {}
    for e in entries:
        cls = classes.get(e.case_id)
        if cls is not None:
            by_class.setdefault(cls, []).append(e.case_id)
    pool = {c: [i for i in ids if subset is None or i in subset] for c, ids in by_class.items()}
    _, budgets, _ = _balance_budgets(
        {c: len(ids) for c, ids in by_class.items()}, {c: len(ids) for c, ids in pool.items()}, balance
    )
    for cls, b in budgets.items():
        ids = pool[cls]
        for k, case_id in enumerate(ids):
            copies[case_id] = b.granted // len(ids) + (1 if k < b.granted % len(ids) else 0)
    return copies


def copy_seed(job_seed: int, case_id: str, copy: int) -> list[int | str]:
    """The seed triple of a copy as the plan records it: ``[job seed, case id, copy]``."""
    return [int(job_seed), str(case_id), int(copy)]


def copy_rng(job_seed: int, case_id: str, copy: int) -> np.random.Generator:
    """The generator a copy's augmentation parameters are drawn from (copy >= 1)."""
    return rng_for(job_seed, case_id, copy)


# --------------------------------------------------------------------------- the plan


@dataclasses.dataclass
class Plan:
    """The saved plan: everything the shard writer needs to know, and why.

    Attributes:
        seed: the job seed.
        splits: ``{split: sorted case ids}`` (originals; copies are train-only).
        classes: class names, in class-id order (parallel to ``class_ids``).
        class_ids: the class ids the names belong to.
        case_class: ``{case id: class id or None}`` (the class each case counts under).
        class_by: ``"label"`` or ``"rarest"``, as actually used.
        target: the per-class record count balancing aims at (the majority's).
        counts_before: ``{class name: train originals}``.
        counts_after: ``{class name: train originals + copies}``.
        per_split_counts: ``{split: {class name: originals}}``.
        copies: ``{case id: [{"copy": k, "seed": [job seed, case id, k], "params": {...} | None}]}``
            for train cases with at least one copy; ``k`` counts from 1 (0 is the original).
        notes: remarks a person should see (fallbacks, caps that bound, ignored ids).
        explanation: the balancing decision in a few lines of text, first in ``plan.json``.
    """

    seed: int
    splits: dict[str, list[str]]
    classes: list[str]
    class_ids: list[int]
    case_class: dict[str, int | None]
    class_by: str
    target: int
    counts_before: dict[str, int]
    counts_after: dict[str, int]
    per_split_counts: dict[str, dict[str, int]]
    copies: dict[str, list[dict[str, Any]]]
    notes: list[str]
    explanation: list[str] = dataclasses.field(default_factory=list)
    version: int = PLAN_VERSION

    def class_name(self, class_id: int | None) -> str | None:
        """The name of a class id (``None`` for ``None``)."""
        if class_id is None:
            return None
        return self.classes[self.class_ids.index(class_id)]

    def num_copies(self, case_id: str) -> int:
        """How many augmented copies a case gets (0 outside the train split)."""
        return len(self.copies.get(case_id, []))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the plan (``from_dict`` inverts it)."""
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """Builds a plan from :meth:`to_dict` output.

        Raises:
            ValueError: a key is missing or the version is unknown.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.default is dataclasses.MISSING and f.name not in data)
        if missing:
            raise ValueError(f"not a volprep plan: missing key {missing[0]!r}")
        if data.get("version", PLAN_VERSION) != PLAN_VERSION:
            raise ValueError(f"plan version {data.get('version')!r} is not {PLAN_VERSION}")
        kwargs = {k: v for k, v in data.items() if k in fields}
        kwargs["case_class"] = {k: (None if v is None else int(v)) for k, v in data["case_class"].items()}
        kwargs["class_ids"] = [int(v) for v in data["class_ids"]]
        return cls(**kwargs)


def make_plan(
    entries: Sequence[PlanEntry],
    class_names: Sequence[str] | None,
    job: JobConfig,
    balance: BalanceConfig,
    subset: set[str] | None = None,
    augment_sampler: AugmentSampler | None = None,
    *,
    label_names: Mapping[int, str] | None = None,
    train_split: str = "train",
) -> Plan:
    """Plans a job: splits, the class of every case, class counts and the copies.

    Args:
        entries: every case that converted, in any order.
        class_names: names of the class ids of a classification dataset (index = id), or
            ``None`` (names are ``str(id)``, or from ``label_names``).
        job: the ``[job]`` config.
        balance: the ``[balance]`` config.
        subset: case ids that may get copies (the runner resolves
            ``balance.subset_column`` into this); default ``balance.subset``.
        augment_sampler: ``sampler(rng, case_id) -> params`` to record every copy's
            parameters; ``None`` records only the seeds.
        label_names: ``{mask value: name}`` of a segmentation dataset.
        train_split: the split that is balanced (no other split gets copies).

    Returns:
        The :class:`Plan`.

    Raises:
        DatasetError: duplicate case ids, or class names that are not unique.
        ConfigError: ``balance.subset_column`` is set but no resolved ``subset`` was given.
    """
    entries = _sorted_unique(entries)
    notes: list[str] = []
    freq = label_frequencies(entries)
    class_by = balance.class_by
    if class_by == "label" and entries and all(e.label is None and e.voxel_counts is not None for e in entries):
        class_by = "rarest"
        notes.append("class_by = 'label' but the cases have masks and no class labels: "
                     "each case counts under its rarest foreground label ('rarest').")
    elif class_by == "label" and any(e.label is None and e.voxel_counts is not None for e in entries):
        notes.append("cases without a class label count under their rarest foreground label.")
    if class_by == "rarest" and any(e.voxel_counts is not None for e in entries):
        notes.append(f"'rarest': among a case's mask values > 0, the one the fewest cases contain "
                     f"(ties: the smaller value); a case with no foreground counts as class {BACKGROUND}.")
    case_class = {e.case_id: class_of(e, class_by, freq) for e in entries}
    unlabelled = sorted(i for i, c in case_class.items() if c is None)
    if unlabelled:
        notes.append(f"{len(unlabelled)} case(s) have no class (e.g. {unlabelled[0]!r}): "
                     "split, but neither counted nor balanced.")
    names = _class_names({c for c in case_class.values() if c is not None}, class_names, label_names)

    splits = make_splits(entries, job, case_class)
    per_split = {
        s: _count_names([case_class[i] for i in ids], names) for s, ids in splits.items()
    }

    if subset is None and balance.subset_column is not None:
        raise ConfigError(None, "balance.subset_column",
                          "is set, but the runner passed no resolved subset of case ids to the plan")
    if subset is None and balance.subset is not None:
        subset = set(balance.subset)
    if subset is not None:
        unknown = sorted(set(subset) - set(case_class))
        if unknown:
            notes.append(f"{len(unknown)} subset id(s) are not cases of this job, ignored (e.g. {unknown[0]!r}).")

    by_id = {e.case_id: e for e in entries}
    train_ids = splits.get(train_split, [])
    if train_split not in splits:
        notes.append(f"no split named {train_split!r}: no augmented copies.")
    n_copies = plan_copies([by_id[i] for i in train_ids], case_class, balance, subset)
    copies: dict[str, list[dict[str, Any]]] = {}
    for case_id, n in n_copies.items():
        if n:
            copies[case_id] = [_copy_record(job.seed, case_id, k, augment_sampler) for k in range(1, n + 1)]

    before = _count_names([case_class[i] for i in train_ids], names)
    after = dict(before)
    for case_id, n in n_copies.items():
        cls = case_class[case_id]
        if cls is not None:
            after[names[cls]] += n

    train_counts: Counter[int] = Counter()
    eligible: Counter[int] = Counter()
    for i in train_ids:
        cls = case_class[i]
        if cls is not None:
            train_counts[cls] += 1
            eligible[cls] += subset is None or i in subset
    target, budgets, budget = _balance_budgets(dict(train_counts), dict(eligible), balance)
    missing = [name for c, name in names.items() if train_counts.get(c, 0) == 0]
    if missing and balance.enabled and train_ids:
        notes.append(f"class(es) {', '.join(map(repr, missing))} have no {train_split} case: nothing to augment.")
    explanation = _explain(train_split, balance, names, budgets, target, budget, len(train_ids))
    return Plan(
        seed=job.seed,
        splits=splits,
        classes=list(names.values()),
        class_ids=list(names),
        case_class=case_class,
        class_by=class_by,
        target=target if balance.enabled else 0,
        counts_before=before,
        counts_after=after,
        per_split_counts=per_split,
        copies=copies,
        notes=notes,
        explanation=explanation,
    )


def _count_names(classes: Sequence[int | None], names: Mapping[int, str]) -> dict[str, int]:
    counts = Counter(c for c in classes if c is not None)
    return {name: counts.get(c, 0) for c, name in names.items()}


def _copy_record(job_seed: int, case_id: str, k: int, sampler: AugmentSampler | None) -> dict[str, Any]:
    params = None
    if sampler is not None:
        params = _jsonable(dict(sampler(copy_rng(job_seed, case_id, k), case_id)))
        try:
            json.dumps(params, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise TypeError(f"augment sampler returned parameters that are not JSON-able for "
                            f"case {case_id!r} copy {k}: {err}") from None
    return {"copy": k, "seed": copy_seed(job_seed, case_id, k), "params": params}


def _explain(
    train_split: str,
    balance: BalanceConfig,
    names: Mapping[int, str],
    budgets: Mapping[int, _ClassBudget],
    target: int,
    budget: int | None,
    originals: int,
) -> list[str]:
    if not balance.enabled:
        return [f"Balancing is off ([balance] enabled = false): the {train_split} split holds originals only."]
    if not budgets:
        return [f"The {train_split} split has no classified cases: no augmented copies."]
    majority = [names[c] for c, b in budgets.items() if b.count == target]
    granted = sum(b.granted for b in budgets.values())
    cap = "no global cap" if budget is None else (
        f"at most {budget} copies in all (copies / ({originals} originals + copies) <= "
        f"max_augmented_fraction {balance.max_augmented_fraction:g})")
    lines = [
        f"Target: {target} {train_split} records per class, the count of the majority class "
        f"{', '.join(map(repr, majority))}; each other class gets augmented copies of its "
        f"{train_split} cases to approach it, at most {balance.max_copies_per_case} per case, "
        f"{cap}. {granted} copies in all; other splits hold originals only."
    ]
    for c, b in budgets.items():
        if b.count == target:
            continue
        why = f"needs {target - b.count}"
        if b.wanted < target - b.count:
            why += f", {b.eligible} eligible case(s) x {balance.max_copies_per_case} allow {b.wanted}"
        if b.granted < b.wanted:
            why += f", its share of the global cap is {b.granted}"
        lines.append(f"{names[c]!r}: {b.count} originals + {b.granted} copies = "
                     f"{b.count + b.granted} ({why}).")
    return lines


def _jsonable(value: Any) -> Any:
    """Plain JSON types from numpy scalars/arrays, tuples and int keys."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


def plan_json(plan: Plan) -> str:
    """The text of ``plan.json``: the explanation first, then every key sorted, indent 1."""
    data = plan.to_dict()
    explanation = data.pop("explanation")
    return json.dumps({"explanation": explanation, **_sorted_keys(data)}, indent=1,
                      ensure_ascii=False, allow_nan=False) + "\n"


def write_plan(path: str | Path, plan: Plan) -> Path:
    """Writes ``plan.json`` atomically (temporary file, fsync, rename into place).

    Returns:
        The path written.
    """
    path = Path(path)
    text = plan_json(plan).encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        log.debug("could not fsync %s", path.parent)
    finally:
        os.close(dir_fd)
    return path


def read_plan(path: str | Path) -> Plan:
    """Reads a plan written by :func:`write_plan`.

    Raises:
        InputError: the file is missing, not JSON, or not a volprep plan.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "no plan file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise InputError(path, "not a volprep plan: expected a JSON object")
    try:
        return Plan.from_dict(data)
    except (ValueError, TypeError, KeyError) as err:
        raise InputError(path, str(err)) from None
