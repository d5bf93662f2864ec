"""What a person is shown of a job's classes and plan: shared by the summary and the class chart.

Contract: pure functions of the typed manifest (:class:`~volprep.manifest.Manifest`, its
:class:`~volprep.manifest.ClassTable`) and of ``plan.json`` (plus :func:`read_plan`, which
reads that file as a dict). :func:`class_counts` turns the class table's parallel
``names``/``ids`` and count tables into one row a class (ids can be sparse, so a class is
never found by its list position); :func:`pick_classes` chooses the few classes worth
showing when there are hundreds (those that hold records; the rarest and the largest when
even those are too many) and :func:`hidden_text` sums up the rest in one line;
:func:`balance_not_applicable` says whether, and why, balancing by case does not apply to
the job. :mod:`volprep.summary` prints with them and :mod:`volprep.report_figures` draws
with them, so the text and the chart always show the same classes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from volprep import storage
from volprep.manifest import ClassTable, Manifest

BALANCE_NOT_APPLICABLE = "balancing by case does not apply"


@dataclasses.dataclass(frozen=True)
class ClassCount:
    """One class's records, read from the manifest's class table.

    Attributes:
        id: the class id (ids can be sparse: an atlas's label values).
        name: its name.
        before: train originals (before balancing).
        after: train records after balancing (originals plus augmented copies).
        per_split: originals in each split.
    """

    id: int
    name: str
    before: int
    after: int
    per_split: Mapping[str, int]

    @property
    def held(self) -> int:
        """Records of this class anywhere: train after balancing, or originals of any split."""
        return max(self.before, self.after, sum(self.per_split.values()))


def class_counts(classes: ClassTable) -> list[ClassCount]:
    """The manifest's classes as one row a class, in the manifest's order.

    ``names`` and ``ids`` are parallel (the count tables are keyed by name); a class is
    never found by its list position.

    Raises:
        ValueError: ``names`` and ``ids`` differ in length.
    """
    if len(classes.ids) != len(classes.names):
        raise ValueError(f"manifest classes: {len(classes.names)} names but {len(classes.ids)} ids")
    return [ClassCount(i, n, int(classes.counts_before.get(n, 0)), int(classes.counts_after.get(n, 0)),
                       {s: int(counts.get(n, 0)) for s, counts in classes.per_split.items()})
            for i, n in zip(classes.ids, classes.names, strict=True)]


@dataclasses.dataclass(frozen=True)
class ClassPick:
    """The classes a summary or chart shows, and those it leaves out."""

    shown: list[ClassCount]
    hidden: list[ClassCount]
    truncated: bool  # classes holding records were left out (then ``shown`` is rarest first)
    with_records: int  # classes that hold records


def pick_classes(counts: Sequence[ClassCount], limit: int) -> ClassPick:
    """At most ``limit`` classes worth showing: those that hold records.

    When every class that holds records fits, they are shown in the manifest's (id) order;
    otherwise the ``limit - limit // 3`` rarest and the ``limit // 3`` largest by train
    records before balancing (ties: after balancing, records anywhere, id), rarest first,
    since the rare classes are what balancing is about. Classes without records are never
    shown, only counted.
    """
    held = [c for c in counts if c.held]
    if len(held) <= limit:
        return ClassPick(held, [c for c in counts if not c.held], False, len(held))
    ranked = sorted(held, key=lambda c: (c.before, c.after, c.held, c.id))
    n_large = limit // 3
    shown = ranked[:limit - n_large] + ranked[len(ranked) - n_large:]
    chosen = {id(c) for c in shown}
    return ClassPick(shown, [c for c in counts if id(c) not in chosen], True, len(held))


def hidden_text(hidden: Sequence[ClassCount]) -> str:
    """One line for the classes left out: how many, and what they hold."""
    if not hidden:
        return ""
    empty = sum(1 for c in hidden if not c.held)
    held = [c for c in hidden if c.held]
    parts = []
    if held:
        lo, hi = min(c.before for c in held), max(c.before for c in held)
        part = f"{len(held)} with {lo if lo == hi else f'{lo}-{hi}'} train records"
        extra = sum(c.after - c.before for c in held)
        parts.append(part + (f" (+{extra} augmented)" if extra > 0 else ""))
    if empty:
        parts.append(f"{empty} with 0 records")
    text = f"+ {len(hidden)} more {'class' if len(hidden) == 1 else 'classes'}: " + ", ".join(parts)
    if len(hidden) <= 3:
        text += " (" + ", ".join(c.name for c in hidden) + ")"
    return text


def balance_not_applicable(manifest: Manifest, plan: Mapping[str, Any] | None) -> str | None:
    """Why balancing by case does not apply to a job, or ``None`` when it does.

    Said by the plan's explanation (a line beginning "Balancing by case does not apply"),
    by a manifest note containing those words, or by ``class_by = "none"`` in the plan or
    the manifest's classes.
    """
    for line in (plan or {}).get("explanation") or []:
        if str(line).lower().startswith(BALANCE_NOT_APPLICABLE):
            return str(line)
    for note in manifest.notes:
        if BALANCE_NOT_APPLICABLE in str(note).lower():
            return "Balancing by case does not apply: no augmented copies (see notes)."
    if "none" in ((plan or {}).get("class_by"), manifest.classes.class_by):
        return "Balancing by case does not apply: class_by is 'none'; no augmented copies."
    return None


def read_plan(out_dir: str | Path) -> dict[str, Any] | None:
    """A shard folder's ``plan.json``, or ``None`` when it has none.

    Raises:
        ValueError: the file is not valid JSON, or not a JSON object.
    """
    path = storage.join(storage.location(out_dir), "plan.json")
    try:
        data = json.loads(storage.read_text(path))
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data
