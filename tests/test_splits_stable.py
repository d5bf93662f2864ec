"""Stable splits: cases keep their split when a dataset grows; the user's split wins.

The property tests build plans the way the job does (``make_plan`` with ``previous`` =
the splits of the last published plan), then check invariants that need no oracle: no
old case moves, no subject straddles splits, the new cases follow the fractions and the
strata as well as possible.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volprep.config import BalanceConfig, JobConfig
from volprep.errors import ConfigError
from volprep.plan import PlanEntry, make_plan, make_splits

JOB = JobConfig(seed=3, splits={"train": 0.8, "val": 0.2})
BALANCE = BalanceConfig(enabled=False)


def cases(n: int, start: int = 0, *, classes: int = 3, per_subject: int = 1) -> list[PlanEntry]:
    return [PlanEntry(f"case{i:04d}", f"subj{i // per_subject:04d}", i % classes) for i in range(start, start + n)]


def split_of(splits: dict[str, list[str]]) -> dict[str, str]:
    return {c: s for s, ids in splits.items() for c in ids}


def test_adding_cases_never_moves_an_old_one() -> None:
    """The reported defect: 100 cases, 10 added, rerun: 8 of 20 val cases moved to train."""
    old = make_plan(cases(100), None, JOB, BALANCE)
    before = split_of(old.splits)
    grown = make_plan(cases(110), None, JOB, BALANCE, previous=before)
    after = split_of(grown.splits)
    assert {c: after[c] for c in before} == before
    assert len(grown.splits["val"]) == 22 and len(grown.splits["train"]) == 88
    assert grown.split_origin == {"user": 0, "kept": 100, "new": 10}
    # without the previous assignment, the deal does move old cases (what the fix prevents)
    fresh = split_of(make_plan(cases(110), None, JOB, BALANCE).splits)
    assert any(fresh[c] != before[c] for c in before)


@settings(max_examples=40, deadline=None)
@given(n_old=st.integers(1, 60), n_new=st.integers(0, 30), per_subject=st.integers(1, 3),
       seed=st.integers(0, 5))
def test_growth_keeps_old_splits_and_subjects_whole(n_old: int, n_new: int, per_subject: int, seed: int) -> None:
    job = JobConfig(seed=seed, splits={"train": 0.7, "val": 0.2, "test": 0.1})
    before = split_of(make_splits(cases(n_old, per_subject=per_subject), job))
    entries = cases(n_old + n_new, per_subject=per_subject)
    after = split_of(make_splits(entries, job, fixed=before))
    assert {c: after[c] for c in before} == before
    assert set(after) == {e.case_id for e in entries}
    by_subject: dict[str, set[str]] = {}
    for e in entries:
        by_subject.setdefault(e.subject, set()).add(after[e.case_id])
    assert all(len(s) == 1 for s in by_subject.values())


def test_new_cases_go_where_the_stratified_targets_need_them() -> None:
    old = cases(50, classes=2)
    before = split_of(make_splits(old, JOB))
    entries = cases(70, classes=2)
    after = split_of(make_splits(entries, JOB, fixed=before))
    counts = Counter((e.label, after[e.case_id]) for e in entries)
    # 35 cases a class: 28 train / 7 val each, as if dealt at once
    assert counts == {(0, "train"): 28, (0, "val"): 7, (1, "train"): 28, (1, "val"): 7}


def test_a_new_case_of_an_old_subject_joins_its_split() -> None:
    entries = [PlanEntry("a1", "A", 0), PlanEntry("b1", "B", 0), PlanEntry("c1", "C", 0)]
    fixed = {"a1": "val", "b1": "train", "c1": "train"}
    more = [*entries, PlanEntry("a2", "A", 0), PlanEntry("b2", "B", 0)]
    after = split_of(make_splits(more, JOB, fixed=fixed))
    assert after["a2"] == "val" and after["b2"] == "train"


def test_the_users_split_wins_over_the_output_folders() -> None:
    entries = cases(20)
    previous = split_of(make_splits(entries, JOB))
    user = {"case0000": "val" if previous["case0000"] == "train" else "train"}
    plan = make_plan(entries, None, JOB, BALANCE, user_splits=user, previous=previous)
    assert split_of(plan.splits)["case0000"] == user["case0000"]
    assert plan.split_origin == {"user": 1, "kept": 19, "new": 0}
    assert any("moved" in n for n in plan.notes)


def test_a_user_split_the_job_does_not_have_is_refused() -> None:
    with pytest.raises(ConfigError, match="'holdout'"):
        make_plan(cases(5), None, JOB, BALANCE, user_splits={"case0001": "holdout"})


def test_a_previous_split_the_config_dropped_is_dealt_again() -> None:
    entries = cases(10)
    plan = make_plan(entries, None, JOB, BALANCE, previous={"case0001": "test"})
    assert plan.split_origin["new"] == 10
    assert any("no longer has" in n for n in plan.notes)


def test_balancing_by_case_does_not_apply_when_every_case_holds_every_label() -> None:
    """Finding 7: an atlas task where every case holds (nearly) all 116 labels."""
    labels = {v: 100 for v in range(1, 117)}
    entries = [PlanEntry(f"c{i}", f"c{i}", None, dict(labels)) for i in range(10)]
    plan = make_plan(entries, None, JOB, BalanceConfig(enabled=True))
    assert plan.copies == {}
    assert any("does not apply" in n for n in plan.notes)
    assert "does not apply" in plan.explanation[0]


def test_balancing_still_applies_to_rare_lesions() -> None:
    entries = [PlanEntry(f"c{i}", f"c{i}", None, {1: 500, **({2: 5} if i < 3 else {})}) for i in range(12)]
    plan = make_plan(entries, None, JOB, BalanceConfig(enabled=True))
    assert plan.copies
