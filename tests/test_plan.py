"""Tests of volprep.plan: splits, class choice, the balancing plan and plan.json."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volprep.config import BalanceConfig, JobConfig
from volprep.errors import ConfigError, DatasetError
from volprep.plan import (
    BACKGROUND,
    Plan,
    PlanEntry,
    class_of,
    copy_budget,
    copy_rng,
    label_frequencies,
    make_plan,
    make_splits,
    plan_copies,
    plan_json,
)


def classified(counts: list[int], *, per_subject: int = 1) -> list[PlanEntry]:
    """Cases with class ``c`` repeated ``counts[c]`` times, ``per_subject`` cases a subject."""
    entries = []
    for cls, n in enumerate(counts):
        for i in range(n):
            entries.append(PlanEntry(f"c{cls}_{i:03d}", f"s{cls}_{i // per_subject:03d}", cls))
    return entries


def job(seed: int = 0, **splits: float) -> JobConfig:
    return JobConfig(seed=seed, splits=splits or {"train": 0.8, "val": 0.2})


def sampler(job_seed: int, case_id: str, copy: int) -> dict[str, object]:
    rng = copy_rng(job_seed, case_id, copy)
    return {"angle": rng.uniform(-10, 10), "flip": bool(rng.integers(2)), "shift": rng.integers(-3, 4, 3)}


# ------------------------------------------------------------------ splits


def test_splits_are_deterministic_for_a_seed_and_differ_for_another() -> None:
    entries = classified([30, 20])
    a = make_splits(entries, job(seed=7))
    assert make_splits(list(reversed(entries)), job(seed=7)) == a  # input order does not matter
    b = make_splits(entries, job(seed=8))
    assert a != b
    assert sorted(a["train"] + a["val"]) == sorted(e.case_id for e in entries)
    assert all(ids == sorted(ids) for ids in a.values())


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 4), min_size=1, max_size=25),
    n_classes=st.integers(1, 4),
    seed=st.integers(0, 2**31),
    fractions=st.sampled_from([(0.8, 0.2), (0.7, 0.15, 0.15), (0.5, 0.5, 0.0), (1.0,)]),
)
def test_splits_are_grouped_by_subject(sizes: list[int], n_classes: int, seed: int,
                                       fractions: tuple[float, ...]) -> None:
    rng = np.random.default_rng(seed)
    entries = [
        PlanEntry(f"s{s}_c{k}", f"s{s}", int(rng.integers(n_classes)))
        for s, n in enumerate(sizes) for k in range(n)
    ]
    names = ["train", "val", "test"][: len(fractions)]
    splits = make_splits(entries, job(seed, **dict(zip(names, fractions, strict=True))))
    assert list(splits) == names
    all_ids = [i for ids in splits.values() for i in ids]
    assert sorted(all_ids) == sorted(e.case_id for e in entries)  # each case exactly once
    subject = {e.case_id: e.subject for e in entries}
    owner: dict[str, str] = {}
    for name, ids in splits.items():
        for i in ids:
            assert owner.setdefault(subject[i], name) == name, f"subject {subject[i]} in two splits"
    for name, frac in zip(names, fractions, strict=True):
        if frac == 0:
            assert splits[name] == []


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 40), min_size=1, max_size=5),
    seed=st.integers(0, 2**31),
    fractions=st.sampled_from([(0.8, 0.2), (0.7, 0.2, 0.1), (0.6, 0.4, 0.0), (0.34, 0.33, 0.33)]),
)
def test_stratified_counts_are_within_one_case_of_target(counts: list[int], seed: int,
                                                         fractions: tuple[float, ...]) -> None:
    entries = classified(counts)
    names = ["train", "val", "test"][: len(fractions)]
    splits = make_splits(entries, job(seed, **dict(zip(names, fractions, strict=True))))
    cls = {e.case_id: e.label for e in entries}
    total = sum(counts)
    assert sum(len(v) for v in splits.values()) == total
    for name, frac in zip(names, fractions, strict=True):
        assert abs(len(splits[name]) - total * frac) < 1  # the split totals add up (largest remainder)
        per_class = Counter(cls[i] for i in splits[name])
        for c, n in enumerate(counts):
            assert abs(per_class[c] - n * frac) < 1, (name, c, per_class[c], n * frac)


def test_three_splits_and_an_empty_split() -> None:
    entries = classified([10, 7, 3])
    splits = make_splits(entries, job(3, train=0.7, val=0.3, test=0.0))
    assert list(splits) == ["train", "val", "test"]
    assert splits["test"] == []
    assert (len(splits["train"]), len(splits["val"])) == (14, 6)


def test_tiny_classes_still_reach_small_splits() -> None:
    # Three classes of 3: each class alone would round 2.7/0.3 to 3/0 and val would stay
    # empty; the split totals (8.1/0.9 -> 8/1) make one class give val a case.
    splits = make_splits(classified([3, 3, 3]), job(0, train=0.9, val=0.1))
    assert (len(splits["train"]), len(splits["val"])) == (8, 1)
    one = make_splits(classified([20, 1]), job(0))
    assert sum("c1_" in i for i in one["train"] + one["val"]) == 1


def test_unstratified_splits_ignore_classes() -> None:
    entries = classified([50, 50])
    config = JobConfig(seed=1, splits={"train": 0.5, "val": 0.5}, stratify=False)
    splits = make_splits(entries, config)
    assert len(splits["train"]) == 50
    assert make_splits(entries, config) == splits


def test_duplicate_case_ids_are_refused() -> None:
    with pytest.raises(DatasetError, match="c0_000"):
        make_splits([PlanEntry("c0_000", "a", 0), PlanEntry("c0_000", "b", 1)], job())


# ------------------------------------------------------------------ classes


def seg(case_id: str, *values: int) -> PlanEntry:
    return PlanEntry(case_id, case_id, None, {0: 1000, **{v: 10 for v in values}})


def test_rarest_class_is_the_least_frequent_present_label() -> None:
    entries = [seg("a", 1, 2), seg("b", 1), seg("c", 1, 2, 3), seg("d", 3), seg("e")]
    freq = label_frequencies(entries)
    assert freq == {1: 3, 2: 2, 3: 2}
    assert class_of(entries[0], "rarest", freq) == 2
    assert class_of(entries[1], "rarest", freq) == 1
    assert class_of(entries[2], "rarest", freq) == 2  # 2 and 3 tie at 2 cases: the smaller value
    assert class_of(entries[3], "rarest", freq) == 3
    assert class_of(entries[4], "rarest", freq) == BACKGROUND  # no foreground
    zero_voxels = PlanEntry("z", "z", None, {0: 5, 4: 0})
    assert class_of(zero_voxels, "rarest", freq) == BACKGROUND  # a value with no voxels is absent


def test_class_by_label_uses_the_label_and_falls_back_to_rarest_for_masks() -> None:
    assert class_of(PlanEntry("a", "a", 2), "label", None) == 2
    assert class_of(PlanEntry("a", "a", 2), "rarest", {}) == 2  # classification under 'rarest'
    assert class_of(seg("b", 1, 3), "label", {1: 5, 3: 1}) == 3
    assert class_of(PlanEntry("c", "c"), "label", None) is None
    with pytest.raises(ConfigError):
        class_of(PlanEntry("a", "a", 1), "majority", None)


def test_segmentation_plan_falls_back_to_rarest_and_names_labels() -> None:
    entries = [seg(f"a{i}", 1) for i in range(8)] + [seg(f"b{i}", 1, 2) for i in range(2)] + [seg("e0")]
    plan = make_plan(entries, None, job(), BalanceConfig(max_copies_per_case=10),
                     label_names={0: "background", 1: "liver", 2: "tumour"})
    assert plan.class_by == "rarest"
    assert any("rarest" in n for n in plan.notes)
    assert plan.classes == ["background", "liver", "tumour"]
    assert plan.case_class["b0"] == 2 and plan.case_class["a0"] == 1 and plan.case_class["e0"] == 0


# ------------------------------------------------------------------ balance


def test_balance_is_reached_on_an_imbalanced_set() -> None:
    entries = classified([60, 30, 10])
    plan = make_plan(entries, ("a", "b", "c"), job(1), BalanceConfig(max_copies_per_case=10))
    assert plan.counts_before == {"a": 48, "b": 24, "c": 8}
    after = plan.counts_after.values()
    assert max(after) / min(after) <= 1.3
    assert plan.target == 48
    assert any("48" in line for line in plan.explanation)


def test_only_train_cases_get_copies() -> None:
    plan = make_plan(classified([60, 30, 10]), None, job(2, train=0.6, val=0.2, test=0.2),
                     BalanceConfig(max_copies_per_case=10, max_augmented_fraction=1.0))
    assert plan.copies
    assert set(plan.copies) <= set(plan.splits["train"])
    assert plan.per_split_counts["val"] == {"0": 12, "1": 6, "2": 2}


def test_counts_after_are_counts_before_plus_copies() -> None:
    plan = make_plan(classified([40, 17, 5]), None, job(4), BalanceConfig(max_copies_per_case=3))
    added: Counter[str] = Counter()
    for case_id, copies in plan.copies.items():
        name = plan.class_name(plan.case_class[case_id])
        assert name is not None
        added[name] += len(copies)
    for name in plan.classes:
        assert plan.counts_after[name] == plan.counts_before[name] + added[name]


def test_per_case_cap_is_respected() -> None:
    train = classified([50, 5])
    classes = {e.case_id: e.label for e in train}
    copies = plan_copies(train, classes, BalanceConfig(max_copies_per_case=2, max_augmented_fraction=1.0), None)
    assert max(copies.values()) == 2
    assert sum(copies.values()) == 10  # 5 minority cases x 2: capped below the 45 needed
    assert all(copies[e.case_id] == 0 for e in train if e.label == 0)


@pytest.mark.parametrize(("fraction", "originals", "budget"),
                         [(0.5, 100, 100), (0.2, 100, 25), (0.0, 100, 0), (1.0, 100, None), (0.3, 10, 4)])
def test_copy_budget_keeps_the_augmented_share_at_most_the_fraction(
        fraction: float, originals: int, budget: int | None) -> None:
    assert copy_budget(originals, fraction) == budget
    if budget is not None:
        assert budget / (originals + budget) <= fraction + 1e-12
        assert (budget + 1) / (originals + budget + 1) > fraction


def test_global_cap_is_shared_in_proportion_to_need() -> None:
    train = classified([60, 30, 10])
    classes = {e.case_id: e.label for e in train}
    balance = BalanceConfig(max_copies_per_case=100, max_augmented_fraction=0.2)  # budget 25
    copies = plan_copies(train, classes, balance, None)
    per_class: Counter[int | None] = Counter()
    for case_id, n in copies.items():
        per_class[classes[case_id]] += n
    total = sum(per_class.values())
    assert total == 25 and total / (100 + total) <= 0.2
    # needs 30 and 50 of 80: shares 9.375 and 15.625 -> 9 and 16 (largest remainder)
    assert (per_class[1], per_class[2]) == (9, 16)


def test_copies_go_round_robin_in_sorted_order() -> None:
    train = classified([10, 4])
    classes = {e.case_id: e.label for e in train}
    copies = plan_copies(train, classes, BalanceConfig(max_copies_per_case=5, max_augmented_fraction=1.0), None)
    assert [copies[f"c1_{i:03d}"] for i in range(4)] == [2, 2, 1, 1]


def test_subset_limits_which_cases_get_copies() -> None:
    entries = classified([60, 30, 10])
    subset = {"c2_000", "c2_001", "c1_005", "not-a-case"}
    plan = make_plan(entries, None, job(5), BalanceConfig(max_copies_per_case=50, max_augmented_fraction=1.0),
                     subset=subset)
    assert plan.copies and set(plan.copies) <= subset
    assert any("not-a-case" in n for n in plan.notes)
    from_config = make_plan(entries, None, job(5), BalanceConfig(max_copies_per_case=50, subset=("c2_000",)))
    assert set(from_config.copies) <= {"c2_000"}
    with pytest.raises(ConfigError, match="subset_column"):
        make_plan(entries, None, job(5), BalanceConfig(subset_column="augment"))


def test_disabled_balance_gives_no_copies() -> None:
    plan = make_plan(classified([60, 10]), None, job(), BalanceConfig(enabled=False))
    assert plan.copies == {}
    assert plan.counts_after == plan.counts_before
    assert "off" in plan.explanation[0]


# ------------------------------------------------------------------ copies and their seeds


def test_copy_seeds_differ_and_are_stable() -> None:
    entries = classified([30, 6])
    balance = BalanceConfig(max_copies_per_case=4)
    plan = make_plan(entries, None, job(9), balance, augment_sampler=sampler)
    again = make_plan(list(reversed(entries)), None, job(9), balance, augment_sampler=sampler)
    assert plan.to_dict() == again.to_dict()
    records = [r for copies in plan.copies.values() for r in copies]
    assert all(r["seed"][0] == 9 for r in records)
    assert len({tuple(r["seed"]) for r in records}) == len(records)
    assert len({json.dumps(r["params"], sort_keys=True) for r in records}) == len(records)
    case_id, copies = next(iter(plan.copies.items()))
    assert [r["copy"] for r in copies] == list(range(1, len(copies) + 1))
    assert copies[0]["seed"] == [9, case_id, 1]
    # the params are what the seed triple replays
    replay = sampler(9, case_id, 1)
    assert copies[0]["params"]["angle"] == replay["angle"]
    other_seed = make_plan(entries, None, job(10), balance, augment_sampler=sampler)
    assert other_seed.to_dict()["copies"] != plan.to_dict()["copies"]


# ------------------------------------------------------------------ plan.json


def test_plan_json_round_trip(tmp_path: Path) -> None:
    plan = make_plan(classified([25, 8], per_subject=2), ("healthy", "sick"), job(3),
                     BalanceConfig(max_copies_per_case=3), augment_sampler=sampler)
    text = plan_json(plan)
    assert Plan.from_dict(json.loads(text)) == Plan.from_dict(plan.to_dict())
    assert Plan.from_dict(json.loads(text)).to_dict() == plan.to_dict()
    assert next(iter(json.loads(text))) == "explanation"  # first, for a person
    assert text.startswith('{\n "explanation"')
    rest = json.loads(text)
    del rest["explanation"]
    assert list(rest) == sorted(rest)


def test_what_is_not_a_plan_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing key"):
        Plan.from_dict({"seed": 1})
    plan = make_plan(classified([3, 2]), None, job(1), BalanceConfig())
    with pytest.raises(ValueError, match="version"):
        Plan.from_dict({**plan.to_dict(), "version": 99})


def test_previous_splits_reads_any_plan_version_and_forgives_a_broken_file(tmp_path: Path) -> None:
    from volprep.plan import previous_splits

    (tmp_path / "old.json").write_text(json.dumps({"version": 1, "splits": {"train": ["a", "b"], "val": ["c"]}}))
    assert previous_splits(tmp_path / "old.json") == {"a": "train", "b": "train", "c": "val"}
    (tmp_path / "bad.json").write_text("{not json")
    assert previous_splits(tmp_path / "bad.json") == {}
    assert previous_splits(tmp_path / "missing.json") == {}
