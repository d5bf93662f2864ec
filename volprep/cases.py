"""Dataset discovery: a dataset path becomes a :class:`Dataset` of :class:`Case` records.

This module owns the first stage of the flow: :func:`discover` picks the layout, has
:mod:`volprep.layouts` list the cases (through :mod:`volprep.tables` for every JSON and table
file), then applies the finishing checks that hold for every layout: case ids unique and
usable, class labels consistent and numbered 0..N-1 (or declared), every case of a
classification dataset labelled (or excluded on request), and every listed file a regular
file. It looks only at names, file types and the dataset's own text files, never at volume
contents (the readers in :mod:`volprep.io` do that), and never opens a FIFO or device; the
one exception is a format that reads folders (a DICOM series), which looks at the first
bytes, or the series tags, of a folder's regular files to say which cases it holds.
Whole-dataset mistakes (no cases, an unreadable dataset.json or table, duplicate case ids,
inconsistent class labels) raise :class:`~volprep.errors.DatasetError`; one case that cannot
be used (a missing file, a FIFO, a dangling link, a path climbing out through ``..``, a
hidden file listed explicitly, a missing class label) is refused into ``Dataset.problems`` so
the job reports it and goes on. Each case keeps its table row (``Case.columns``), which is
how the rest of volprep reads user columns (:func:`subset_from_column`); no other module
parses a dataset's table. Case ids are made filesystem-safe by a fixed mapping (see
:func:`safe_case_id`). The result is deterministic: listings are sorted, cases ordered by id.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from volprep.errors import DatasetError
from volprep.io.formats import folder_formats
from volprep.layouts import (
    Entry,
    Problem,
    channel_count,
    folder_entries,
    images_tr_entries,
    label_names,
    merge_labels,
    msd_entries,
    table_entries,
)
from volprep.names import (
    MAX_ID_LENGTH,
    VOLUME_EXTENSIONS,
    companion_problem,
    file_problem,
    safe_case_id,
    strip_extension,
    volume_ext,
)
from volprep.tables import (
    CLASSES_TABLE,
    INT,
    TABLE_SUFFIXES,
    DeclaredClasses,
    Table,
    classes_from_json,
    find_labels_table,
    is_regular_file,
    load_json,
    read_classes_csv,
    read_split_file,
    read_table,
    truth,
)

__all__ = ["LAYOUTS", "UNLABELLED", "Case", "Dataset", "discover", "read_split_file",
           "safe_case_id", "strip_extension", "subset_from_column"]

log = logging.getLogger(__name__)

LAYOUTS = ("msd", "imagesTr", "csv", "folder")
UNLABELLED = ("fail", "skip")  # what discover does with unlabelled cases of a classification dataset
FOLDER_IDS = ("name", "uid")  # how folder-cases (DICOM series) are named
_WHY_LABEL = "a classification dataset: every case needs a class label"
_FOLDERS = "".join(f", {fmt.TITLE} series folders" for fmt in folder_formats())


@dataclass(frozen=True)
class Case:
    """One case of a dataset: what the reading stage needs to turn it into arrays."""

    case_id: str  # stable, unique, filesystem-safe
    subject: str  # grouping key for splits (defaults to case_id)
    images: tuple[Path, ...]  # one file per channel, or one 4D file
    mask: Path | None  # label volume (segmentation)
    label: int | None  # class id (classification), an index into Dataset.class_names
    split: str | None = None  # the user's fixed split ("train", "val"...), from a split column
    columns: tuple[tuple[str, str], ...] = ()  # its row of the table: (lower-cased column, value)

    def column(self, name: str) -> str | None:
        """The case's value in table column ``name`` (any letter case); ``None`` without one."""
        key = name.strip().lower()
        return next((value for column, value in self.columns if column == key), None)


@dataclass(frozen=True)
class Dataset:
    """A discovered dataset: its cases, class/label names and the cases refused on the way."""

    root: Path  # the dataset folder (for a CSV: the CSV's folder), absolute
    layout: str  # one of LAYOUTS
    cases: tuple[Case, ...]  # sorted by case_id
    class_names: tuple[str, ...] | None  # classification classes; Case.label indexes into it
    label_names: dict[int, str] | None  # mask label values -> names (dataset.json "labels")
    problems: tuple[tuple[str, str, str], ...]  # (case_id or "-", path, problem)
    columns: tuple[str, ...] = ()  # the table's column names (lower-cased); () without a table
    table: Path | None = None  # the labels table or CSV those columns come from
    notes: tuple[str, ...] = ()  # what discovery decided that a person should read (exclusions)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout {self.layout!r} is not one of {LAYOUTS}")


def subset_from_column(dataset: Dataset, column: str) -> set[str]:
    """Case ids whose value in a table column is true (``1``/``true``/``yes``/``y``, any case).

    Args:
        dataset: a discovered dataset; its table is the labels table or the CSV of cases.
        column: the column name (any letter case), e.g. ``[balance] subset_column``.

    Returns:
        Ids of usable cases marked true; a case without a row or with an empty cell is false.

    Raises:
        DatasetError: the dataset has no table, the table has no such column (naming the
            table and listing its columns), or a cell is neither true nor false.
    """
    key = column.strip().lower()
    if dataset.table is None:
        raise DatasetError(f"{dataset.root}: no table (labels.csv, labels.tsv or a CSV of cases) "
                           f"to read column {column!r} from")
    if key not in dataset.columns:
        raise DatasetError(f"{dataset.table}: no column {column!r}; columns: {', '.join(dataset.columns)}")
    chosen: set[str] = set()
    for case in dataset.cases:
        value = case.column(key)
        flag = truth(value)
        if flag is None:
            raise DatasetError(f"{dataset.table}: case {case.case_id!r}: {key} = {value!r}: "
                               "expected 1/true/yes/y or 0/false/no/n (or empty)")
        if flag:
            chosen.add(case.case_id)
    return chosen


# ---------------------------------------------------------------- finishing checks


def _class_ids(entries: list[Entry], declared: DeclaredClasses | None,
               declare_hint: str) -> tuple[tuple[str, ...] | None, dict[str, int]]:
    """Class names and label text -> class id, over every listed case (refused ones too, so
    that a missing file never shifts the ids of the others).

    Integer labels are class ids: for N distinct ids they must be 0..N-1 (a stray 65535
    would make 65,536 classes), unless the dataset declares its classes; then any declared
    id may be used and an undeclared id or name is refused.
    """
    labelled = [e for e in entries if e.label is not None]
    if not labelled:
        return None, {}
    is_int = [bool(INT.fullmatch(e.label or "")) for e in labelled]
    first = labelled[0]
    for entry, numeric in zip(labelled, is_int, strict=True):
        if numeric != is_int[0]:
            raise DatasetError(
                f"{entry.row_source}: class label {entry.label!r} does not match "
                f"{first.row_source} ({first.label!r}): labels must be all class ids (integers) or all class names"
            )
        if numeric and int(entry.label or "") < 0:
            raise DatasetError(f"{entry.row_source}: class id {entry.label} is negative")
    if declared is not None:
        by_name = {name: i for i, name in declared.names.items()}
        ids: dict[str, int] = {}
        for entry in labelled:
            text = entry.label or ""
            number = int(text) if is_int[0] else by_name.get(text)
            if number is None or number not in declared.names:
                what = f"class id {text}" if is_int[0] else f"class {text!r}"
                shown = ", ".join(f"{i}: {n}" for i, n in declared.names.items())
                raise DatasetError(f"{entry.row_source}: {what} is not declared in {declared.source} ({shown})")
            ids[text] = number
        return tuple(declared.names.get(i, str(i)) for i in range(max(declared.names) + 1)), ids
    if is_int[0]:
        ids = {e.label or "": int(e.label or "") for e in labelled}
        count = len(set(ids.values()))
        beyond = [e for e in labelled if ids[e.label or ""] >= count]
        if beyond:
            entry = min(beyond, key=lambda e: e.row or (Path(), 0))
            raise DatasetError(
                f"{entry.row_source}: class id {entry.label} is out of range: the data has {count} distinct "
                f"class ids ({', '.join(map(str, sorted(set(ids.values()))))}), which must be 0..{count - 1}; "
                f"renumber them, use class names instead of numbers, or declare the classes {declare_hint}"
            )
        return tuple(str(i) for i in range(count)), ids
    spelled: dict[str, Entry] = {}
    for entry in labelled:
        other = spelled.setdefault((entry.label or "").casefold(), entry)
        if other.label != entry.label:
            raise DatasetError(
                f"{entry.row_source}: class name {entry.label!r} differs from {other.label!r} "
                f"({other.row_source}) only in letter case: spell each class one way"
            )
    names = tuple(sorted({e.label or "" for e in labelled}))
    return names, {name: i for i, name in enumerate(names)}


def _check_ids(entries: list[Entry], origin: Path) -> None:
    """Refuses unusable ids; duplicates (also ids equal but for letter case, which collide on
    case-insensitive file systems) are a DatasetError naming both sources."""
    seen: dict[str, Entry] = {}
    for entry in entries:
        if not entry.case_id:
            entry.refuse(entry.images[0] if entry.images else origin, f"{entry.source}: no case id")
            continue
        if len(entry.case_id) > MAX_ID_LENGTH:
            entry.refuse(entry.images[0] if entry.images else origin, f"case id longer than {MAX_ID_LENGTH} characters")
            continue
        other = seen.setdefault(entry.case_id.casefold(), entry)
        if other is not entry:
            what = (f"duplicate case id {entry.case_id!r}" if other.case_id == entry.case_id else
                    f"case ids {other.case_id!r} and {entry.case_id!r} differ only in letter case")
            raise DatasetError(f"{origin}: {what}: {other.source} and {entry.source}")


def _unlabelled(entries: list[Entry], table: Table | None, policy: str) -> tuple[list[Entry], list[str]]:
    """In a classification dataset (some case has a class label), refuses (``fail``) or
    excludes (``skip``) the cases without one; returns the entries kept and the notes."""
    if table is None or not any(e.label is not None for e in entries):
        return entries, []
    no_row = [e for e in entries if e.label is None and e.row is None]
    no_label = [e for e in entries if e.label is None and e.row is not None]
    if policy == "fail":
        for entry in no_row:
            entry.refuse(table.path, f"no row in {table.path.name} ({_WHY_LABEL})")
        for entry in no_label:
            path, line = entry.row or (table.path, 0)
            entry.refuse(path, f"no class label in {path.name} line {line} ({_WHY_LABEL})")
        return entries, []
    notes = [f"{len(group)} case(s) without {what} in {table.path.name} excluded ([job] unlabelled = \"skip\")"
             for group, what in ((no_row, "a row"), (no_label, "a class label")) if group]
    return [e for e in entries if e.label is not None], notes


def _file_check(entry: Entry) -> None:
    """Refuses the entry when one of its files (or a companion file) is not a regular file."""
    for path in [*entry.images, *([entry.mask] if entry.mask else [])]:
        if entry.problem is not None:
            return
        why = file_problem(path)
        if why:
            entry.refuse(path, why)
        elif companion := companion_problem(path):
            entry.refuse(*companion)


def _declared_classes(meta_classes: DeclaredClasses | None, folder: Path, table: Path | None) -> DeclaredClasses | None:
    """The dataset's declared classes: dataset.json ``classes`` or ``classes.csv`` (one)."""
    path = folder / CLASSES_TABLE
    if path == table or not is_regular_file(path):
        return meta_classes
    if meta_classes is not None:
        raise DatasetError(f"{folder}: classes declared twice, in {meta_classes.source} and {path}: keep one")
    return read_classes_csv(path)


def _finish(root: Path, layout: str, origin: Path, entries: list[Entry], problems: list[Problem],
            label_names_: dict[int, str] | None, looked_for: str, table: Table | None,
            declared: DeclaredClasses | None, unlabelled: str) -> Dataset:
    if not entries and not problems:
        raise DatasetError(f"{origin}: no volumes found (looked for {looked_for})")
    _check_ids(entries, origin)
    beside = f"in {CLASSES_TABLE} beside {table.path.name if table else 'the table'} (columns id,name)"
    hint = f"in dataset.json \"classes\" or {beside}" if layout in ("msd", "imagesTr") else beside
    class_names, class_ids = _class_ids(entries, declared, hint)
    entries, notes = _unlabelled(entries, table, unlabelled)
    if declared is not None and class_names is None:
        notes.append(f"classes are declared in {declared.source}, but no case has a class label")
    cases = []
    for entry in entries:
        _file_check(entry)
        if entry.problem is not None:
            problems.append((entry.case_id or "-", *entry.problem))
            continue
        cases.append(Case(
            case_id=entry.case_id,
            subject=safe_case_id(entry.subject) if entry.subject else entry.case_id,
            images=tuple(entry.images),
            mask=entry.mask,
            label=class_ids[entry.label] if entry.label is not None else None,
            split=entry.split,
            columns=entry.columns,
        ))
    if not cases:
        shown = "; ".join(f"{c}: {p}: {why}" for c, p, why in problems[:3])
        raise DatasetError(f"{origin}: none of the {len(problems)} listed cases can be used: {shown}")
    log.info("%s: %d cases (%s layout), %d refused", origin, len(cases), layout, len(problems))
    return Dataset(root=root, layout=layout, cases=tuple(sorted(cases, key=lambda c: c.case_id)),
                   class_names=class_names, label_names=label_names_, problems=tuple(problems),
                   columns=table.columns if table else (), table=table.path if table else None,
                   notes=tuple(notes))


def discover(path: str | os.PathLike[str], *, unlabelled: str = "fail",
             folder_ids: str = "name") -> Dataset:
    """Finds the cases of a dataset.

    Args:
        path: a dataset folder (``dataset.json``; ``imagesTr/`` + ``labelsTr/``; or volumes,
            optionally with ``labels.csv``/``labels.tsv``, whose ``image`` column may list
            volumes in subfolders), or a ``.csv``/``.tsv`` table of cases with an ``image``
            column (``;`` between channels) and optional ``label``, ``mask``, ``subject``,
            ``case_id``, ``split`` and any other columns. Classes may be declared in
            dataset.json ``classes`` or a ``classes.csv`` (``id,name``) beside the table.
        unlabelled: in a classification dataset (some case has a class label), what to do
            with a case that has none: ``"fail"`` refuses it into ``problems``; ``"skip"``
            leaves it out and says so in ``notes``.
        folder_ids: how cases that are folders (DICOM series) are named: ``"name"`` after
            the folder (and a series tag when it holds several), ``"uid"`` after the data
            (a hash of the SeriesInstanceUID), for exports whose folders carry a patient's
            name (``[read] dicom_case_id``).

    Returns:
        The dataset: cases sorted by id, class names, mask label names, the table's columns,
        the cases refused at discovery (``problems``) for the job to report as failures,
        and ``notes`` on cases left out on purpose.

    Raises:
        DatasetError: the path does not exist or is not a regular file or folder; a
            dataset.json or table that cannot be parsed (naming the file and line or key);
            duplicate case ids (naming both sources); class labels mixing ids and names,
            class ids outside 0..N-1 or undeclared (naming the row); no usable case.
        ValueError: ``unlabelled`` is not one of :data:`UNLABELLED`, or ``folder_ids`` not
            one of :data:`FOLDER_IDS`.
    """
    if unlabelled not in UNLABELLED:
        raise ValueError(f"unlabelled must be one of {UNLABELLED}, got {unlabelled!r}")
    if folder_ids not in FOLDER_IDS:
        raise ValueError(f"folder_ids must be one of {FOLDER_IDS}, got {folder_ids!r}")
    given = Path(path)
    full = Path(os.path.abspath(given))
    if not os.path.lexists(full):
        raise DatasetError(f"{given}: no such file or folder")
    if not full.is_dir():
        if why := file_problem(full):
            raise DatasetError(f"{given}: {why}")
        if full.suffix.lower() not in TABLE_SUFFIXES:
            raise DatasetError(f"{given}: not a dataset folder or a .csv/.tsv table of cases")
        cases_table = read_table(full)
        declared = _declared_classes(None, full.parent, full)
        return _finish(full.parent, "csv", full, table_entries(cases_table), [], None, f"rows in {full.name}",
                       cases_table, declared, unlabelled)
    json_path = full / "dataset.json"
    meta = load_json(json_path) if is_regular_file(json_path) else None
    names = label_names(meta, json_path) if meta is not None else None
    table = find_labels_table(full)
    declared = _declared_classes(classes_from_json(meta, json_path) if meta else None, full,
                                 table.path if table else None)
    problems: list[Problem] = []
    if meta is not None and "training" in meta:
        layout, entries = "msd", msd_entries(full, json_path, meta)
        looked_for = f"entries in {json_path.name} [training]"
    elif (full / "imagesTr").is_dir():
        layout, looked_for = "imagesTr", f"volumes in imagesTr/: {', '.join(VOLUME_EXTENSIONS)}{_FOLDERS}"
        entries, problems = images_tr_entries(full, channel_count(meta), folder_ids)
    elif meta is not None:
        raise DatasetError(f"{json_path}: [training] missing, and there is no imagesTr/ folder")
    else:
        layout, looked_for = "folder", ", ".join(VOLUME_EXTENSIONS) + _FOLDERS
        entries, problems = folder_entries(full, table, folder_ids)
        if not entries and not problems:
            nested = sum(1 for p in full.rglob("*") if not p.name.startswith(".") and volume_ext(p.name))
            if nested:
                looked_for += (f"; {nested} found in subfolders: the folder layout is not recursive, list them "
                               f"in labels.csv (an 'image' column, paths relative to the folder) or in a CSV")
        return _finish(full, layout, full, entries, problems, names, looked_for, table, declared, unlabelled)
    if entries and table is not None:
        merge_labels(table, entries, problems)
    return _finish(full, layout, full, entries, problems, names, looked_for, table, declared, unlabelled)
