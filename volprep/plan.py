"""The plan stage: splits, class counts and the class-balanced augmentation plan.

This module owns every decision made *before* shards are written, in the nnU-Net habit
of "plan, then apply": which split each case goes to (:mod:`volprep.splits`: grouped by
subject, stratified by class, stable once made), which class each case counts under
(:mod:`volprep.classes`), and how many offline augmented copies each *training* case gets
(:mod:`volprep.balance`), each copy with its seed triple ``(job seed, case id, copy
index)`` and, when a sampler is given, its sampled parameters. The result is a
:class:`Plan`, saved as a JSON file a person can read (:func:`plan_json`; the job writes it
atomically, just before the manifest); the shard writer applies it without deciding
anything.
The same entries, config, seed and fixed splits give the same plan whatever order the
entries come in. Only :func:`previous_splits` touches a file; the plan module does not import ``volprep.augment`` (the runner passes the
sampler in).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from volprep import storage
from volprep.balance import (
    balance_budgets,
    copy_budget,
    copy_rng,
    copy_seed,
    explain,
    plan_copies,
)
from volprep.classes import (
    BACKGROUND,
    PlanEntry,
    class_names,
    class_of,
    label_frequencies,
    sorted_unique,
)
from volprep.config import BalanceConfig, JobConfig
from volprep.errors import ConfigError
from volprep.splits import make_splits

__all__ = [
    "BACKGROUND", "Plan", "PlanEntry", "class_of", "copy_budget", "copy_rng", "label_frequencies",
    "make_plan", "make_splits", "plan_copies", "plan_json", "previous_splits",
]

log = logging.getLogger(__name__)

PLAN_VERSION = 3  # 2: split_origin; 3: augmentation params v2 (a random stream per op)

AugmentSampler = Callable[[int, str, int], Mapping[str, Any]]
"""``sampler(job_seed, case_id, copy) -> params``: draws one copy's augmentation parameters
from its seed triple (each op from its own stream derived from the triple)."""

COMMON_LABEL_SHARE = 0.9
"""A mask label that at least this share of the cases contain is "common": when every case
counts under a common label, balancing by case cannot change the label proportions."""


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
        split_origin: how many cases got their split from where: ``user`` (a split file or
            column), ``kept`` (the split they had in the output folder), ``new`` (dealt now).
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
    split_origin: dict[str, int] = dataclasses.field(default_factory=dict)
    version: int = PLAN_VERSION

    def class_name(self, class_id: int | None) -> str | None:
        """The name of a class id (``None`` for ``None``)."""
        if class_id is None:
            return None
        return self.classes[self.class_ids.index(class_id)]

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
    class_names_: Sequence[str] | None,
    job: JobConfig,
    balance: BalanceConfig,
    subset: set[str] | None = None,
    augment_sampler: AugmentSampler | None = None,
    *,
    label_names: Mapping[int, str] | None = None,
    train_split: str = "train",
    user_splits: Mapping[str, str] | None = None,
    previous: Mapping[str, str] | None = None,
) -> Plan:
    """Plans a job: splits, the class of every case, class counts and the copies.

    Args:
        entries: every case that converted, in any order.
        class_names_: names of the class ids of a classification dataset (index = id), or
            ``None`` (names are ``str(id)``, or from ``label_names``).
        job: the ``[job]`` config.
        balance: the ``[balance]`` config.
        subset: case ids that may get copies (the runner resolves
            ``balance.subset_column`` into this); default ``balance.subset``.
        augment_sampler: ``sampler(job_seed, case_id, copy) -> params`` to record every copy's
            parameters; ``None`` records only the seeds.
        label_names: ``{mask value: name}`` of a segmentation dataset.
        train_split: the split that is balanced (no other split gets copies).
        user_splits: ``{case id: split}`` the user fixed (a split file or column); wins.
        previous: ``{case id: split}`` from the output folder's published plan; kept.

    Returns:
        The :class:`Plan`.

    Raises:
        DatasetError: duplicate case ids, or class names that are not unique.
        ConfigError: ``balance.subset_column`` is set but no resolved ``subset`` was given,
            or a user's split names a split the job does not have.
    """
    entries = sorted_unique(entries)
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
    names = class_names({c for c in case_class.values() if c is not None}, class_names_, label_names)

    by_case = not _labels_everywhere(entries, case_class, freq)
    if not by_case:
        notes.append("every case holds (nearly) every label, so each case counts under a label "
                     "(nearly) all cases share: balancing by case does not apply to this dataset "
                     "(no augmented copies); sample patches with class weights instead.")

    fixed, origin = _fixed_splits(entries, job, user_splits or {}, previous or {}, notes)
    splits = make_splits(entries, job, case_class, fixed)
    per_split = {
        s: _count_names([case_class[i] for i in ids], names) for s, ids in splits.items()
    }
    origin["new"] = len(entries) - origin["user"] - origin["kept"]

    if subset is None and balance.subset_column is not None:
        raise ConfigError(None, "balance.subset_column",
                          "is set, but the runner passed no resolved subset of case ids to the plan")
    if subset is None and balance.subset is not None:
        subset = set(balance.subset)
    if subset is not None:
        unknown = sorted(set(subset) - set(case_class))
        if unknown:
            notes.append(f"{len(unknown)} subset id(s) are not cases of this job, ignored (e.g. {unknown[0]!r}).")

    effective = balance if by_case else dataclasses.replace(balance, enabled=False)
    by_id = {e.case_id: e for e in entries}
    train_ids = splits.get(train_split, [])
    if train_split not in splits:
        notes.append(f"no split named {train_split!r}: no augmented copies.")
    n_copies = plan_copies([by_id[i] for i in train_ids], case_class, effective, subset)
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
    target, budgets, budget = balance_budgets(dict(train_counts), dict(eligible), effective)
    missing = [name for c, name in names.items() if train_counts.get(c, 0) == 0]
    if missing and effective.enabled and train_ids and len(missing) <= 10:
        notes.append(f"class(es) {', '.join(map(repr, missing))} have no {train_split} case: nothing to augment.")
    elif missing and effective.enabled and train_ids:
        notes.append(f"{len(missing)} classes have no {train_split} case (e.g. {missing[0]!r}): nothing to augment.")
    if by_case:
        explanation = explain(train_split, balance, names, budgets, target, budget, len(train_ids))
    else:
        explanation = [f"Balancing by case does not apply: every case holds (nearly) every label "
                       f"({len(names)} classes); the {train_split} split holds originals only."]
    return Plan(
        seed=job.seed,
        splits=splits,
        classes=list(names.values()),
        class_ids=list(names),
        case_class=case_class,
        class_by=class_by,
        target=target if effective.enabled else 0,
        counts_before=before,
        counts_after=after,
        per_split_counts=per_split,
        copies=copies,
        notes=notes,
        explanation=explanation,
        split_origin=origin,
    )


def _labels_everywhere(entries: Sequence[PlanEntry], case_class: Mapping[str, int | None],
                       freq: Mapping[int, int]) -> bool:
    """Whether every segmentation case counts under a label (nearly) all cases contain.

    Then per-case balancing is meaningless: copying any case copies (nearly) every label.
    Classification datasets (class labels) and datasets of fewer than 3 cases never are.
    """
    seg = [e for e in entries if e.label is None and e.voxel_counts is not None]
    if len(seg) < 3 or len(seg) != len(entries):
        return False
    common = {v for v, n in freq.items() if n >= COMMON_LABEL_SHARE * len(entries)}
    return all(case_class[e.case_id] in common for e in seg)


def _fixed_splits(entries: Sequence[PlanEntry], job: JobConfig, user: Mapping[str, str],
                  previous: Mapping[str, str], notes: list[str]) -> tuple[dict[str, str], dict[str, int]]:
    """The assignments :func:`make_splits` must keep: the user's, then the output folder's."""
    ids = {e.case_id for e in entries}
    bad = sorted({s for c, s in user.items() if c in ids and s not in job.splits})
    if bad:
        raise ConfigError(None, "job.splits", f"the user's split assigns cases to {bad[0]!r}, which is not "
                          f"one of the job's splits ({', '.join(job.splits)})")
    fixed = {c: s for c, s in user.items() if c in ids}
    kept = {c: s for c, s in previous.items() if c in ids and c not in fixed and s in job.splits}
    dropped = sum(1 for c, s in previous.items() if c in ids and c not in fixed and s not in job.splits)
    moved = sum(1 for c, s in previous.items() if c in fixed and fixed[c] != s)
    if dropped:
        notes.append(f"{dropped} case(s) had a split the config no longer has: dealt again.")
    if moved:
        notes.append(f"{moved} case(s) moved to the split the user's split file gives them.")
    unknown = sorted(set(user) - ids)
    if unknown:
        notes.append(f"{len(unknown)} case id(s) of the user's split are not cases of this job (e.g. {unknown[0]!r}).")
    return {**kept, **fixed}, {"user": len(fixed), "kept": len(kept)}


def _count_names(classes: Sequence[int | None], names: Mapping[int, str]) -> dict[str, int]:
    counts = Counter(c for c in classes if c is not None)
    return {name: counts.get(c, 0) for c, name in names.items()}


def _copy_record(job_seed: int, case_id: str, k: int, sampler: AugmentSampler | None) -> dict[str, Any]:
    params = None
    if sampler is not None:
        params = _jsonable(dict(sampler(job_seed, case_id, k)))
        try:
            json.dumps(params, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise TypeError(f"augment sampler returned parameters that are not JSON-able for "
                            f"case {case_id!r} copy {k}: {err}") from None
    return {"copy": k, "seed": copy_seed(job_seed, case_id, k), "params": params}


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


def previous_splits(path: storage.Location) -> dict[str, str]:
    """``{case id: split}`` of a published ``plan.json`` (any plan version); ``{}`` without one.

    Only the splits are read, so a plan written by an older volprep still keeps its cases'
    splits. An unreadable file counts as none (the job then deals every case afresh, and
    says so in its notes).
    """
    try:
        data = json.loads(storage.read_text(path))
        splits = data["splits"]
        return {str(c): str(s) for s, ids in splits.items() for c in ids}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
