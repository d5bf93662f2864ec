"""The class-balanced augmentation plan: how many offline copies each train case gets.

Pure functions of the train split's cases, the class each counts under and the
``[balance]`` config (:func:`plan_copies`), plus the seed of each copy
(``(job seed, case id, copy index)``, :func:`copy_rng`) and the plain-text explanation
of the decision that opens ``plan.json`` (:func:`explain`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

import numpy as np

from volprep.classes import PlanEntry, sorted_unique
from volprep.config import BalanceConfig
from volprep.seeds import rng_for


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
class ClassBudget:
    count: int       # train originals of the class
    eligible: int    # of them, cases that may get copies (the subset)
    wanted: int      # copies to reach the target, capped per case
    granted: int     # after the global cap


def balance_budgets(
    counts: Mapping[int, int], eligible: Mapping[int, int], balance: BalanceConfig
) -> tuple[int, dict[int, ClassBudget], int | None]:
    """``(target, {class: budget}, global budget)`` of :func:`plan_copies`."""
    target = max(counts.values(), default=0)
    wanted = {
        c: min(target - n, eligible.get(c, 0) * balance.max_copies_per_case) for c, n in counts.items()
    }
    budget = copy_budget(sum(counts.values()), balance.max_augmented_fraction)
    granted = _cap(wanted, budget, counts)
    return target, {
        c: ClassBudget(counts[c], eligible.get(c, 0), wanted[c], granted[c]) for c in sorted(counts)
    }, budget


def _cap(wanted: Mapping[int, int], budget: int | None, counts: Mapping[int, int]) -> dict[int, int]:
    """``wanted`` scaled down to ``budget`` in all (``None``: no cap)."""
    total = sum(wanted.values())
    granted = dict(wanted)
    if budget is not None and total > budget:
        # Proportional to what each class wants, the leftover units by largest remainder,
        # ties to the rarer class (fewer originals), then the smaller class id.
        granted = {c: budget * w // total for c, w in wanted.items()}
        order = sorted(wanted, key=lambda c: (-((budget * wanted[c]) % total), counts.get(c, 0), c))
        for c in order[: budget - sum(granted.values())]:
            granted[c] += 1
    return granted


def append_copies(originals: Mapping[int, int], written: Mapping[int, int], new_cases: Mapping[int, Sequence[str]],
                  balance: BalanceConfig) -> dict[str, int]:
    """Copies for a new generation's train cases, the old copies kept (:mod:`volprep.append`).

    The target is a fresh plan's: the majority class's train originals (every generation).
    Class ``c`` wants ``target - originals[c] - written[c]`` copies (never fewer than 0), at
    most ``max_copies_per_case`` per new eligible case; all copies together (written +
    new) stay within :func:`copy_budget` of the grown split, shared as in :func:`plan_copies`.

    Args:
        originals: ``{class: train originals}``, old and new cases together.
        written: ``{class: copies already in published shards}``.
        new_cases: ``{class: the new train case ids that may get copies}``.
        balance: the ``[balance]`` config.

    Returns:
        ``{case id: copies}`` for the new cases of ``new_cases``.
    """
    if not balance.enabled:
        return {c: 0 for ids in new_cases.values() for c in ids}
    target = max(originals.values(), default=0)
    wanted = {c: max(0, min(target - originals.get(c, 0) - written.get(c, 0), len(ids) * balance.max_copies_per_case))
              for c, ids in new_cases.items()}
    budget = copy_budget(sum(originals.values()), balance.max_augmented_fraction)
    if budget is not None:
        budget = max(0, budget - sum(written.values()))
    granted = _cap(wanted, budget, originals)
    out: dict[str, int] = {}
    for cls, ids in new_cases.items():
        ordered = sorted(ids)
        for k, case_id in enumerate(ordered):
            out[case_id] = granted[cls] // len(ordered) + (1 if k < granted[cls] % len(ordered) else 0)
    return out


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
    entries = sorted_unique(train_entries)
    copies = {e.case_id: 0 for e in entries}
    if not balance.enabled or not entries:
        return copies
    by_class: dict[int, list[str]] = {}
    for e in entries:
        cls = classes.get(e.case_id)
        if cls is not None:
            by_class.setdefault(cls, []).append(e.case_id)
    pool = {c: [i for i in ids if subset is None or i in subset] for c, ids in by_class.items()}
    _, budgets, _ = balance_budgets(
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


def explain(
    train_split: str,
    balance: BalanceConfig,
    names: Mapping[int, str],
    budgets: Mapping[int, ClassBudget],
    target: int,
    budget: int | None,
    originals: int,
) -> list[str]:
    """The balancing decision in a few lines of plain text (the top of ``plan.json``)."""
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
