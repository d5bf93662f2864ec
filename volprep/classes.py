"""Which class a case counts under: class labels, rarest mask labels, class names.

Pure functions over :class:`PlanEntry` records (no voxels, no files). A classification
case counts under its class label; a segmentation case (a label volume, no class label)
under its rarest foreground label (the mask value > 0 that the fewest cases of the
dataset contain). Class *ids* identify classes everywhere; names are only for people:
:func:`class_names` maps every id that occurs or is declared to a unique name. Ids may be
sparse (an atlas with labels 1..1605): nothing may index a list of names by an id.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence

from volprep.errors import ConfigError, DatasetError

BACKGROUND = 0
"""The class a segmentation case with no foreground voxels counts under."""


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


def class_names(
    ids: set[int], declared: Sequence[str] | None, label_names: Mapping[int, str] | None
) -> dict[int, str]:
    """``{class id: name}`` for every class id seen or named, sorted by id.

    Args:
        ids: class ids that occur.
        declared: names of a classification dataset's classes (index = id), or None.
        label_names: ``{mask value: name}`` of a segmentation dataset, or None.

    Raises:
        DatasetError: two ids share a name.
    """
    names: dict[int, str] = {}
    if declared is not None:
        names.update({i: str(n) for i, n in enumerate(declared)})
    elif label_names is not None:
        names.update({int(i): str(n) for i, n in label_names.items()})
    for i in sorted(ids):
        if i not in names:
            names[i] = "background" if (i == BACKGROUND and label_names is not None) else str(i)
    if len(set(names.values())) != len(names):
        raise DatasetError(f"class names are not unique: {sorted(names.values())}")
    return dict(sorted(names.items()))


def sorted_unique(entries: Sequence[PlanEntry]) -> list[PlanEntry]:
    ordered = sorted(entries, key=lambda e: e.case_id)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a.case_id == b.case_id:
            raise DatasetError(f"case id {a.case_id!r} appears twice; case ids must be unique")
    return ordered
