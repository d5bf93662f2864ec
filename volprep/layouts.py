"""Dataset layouts: how each kind of dataset folder lists its cases, before they are checked.

This module turns one layout into a list of :class:`Entry` (a case as listed: id, image and
mask paths, the table row it came from) plus the problems found while listing. Four layouts:
a Medical Segmentation Decathlon ``dataset.json`` (:func:`msd_entries`), an nnU-Net style
``imagesTr``/``labelsTr`` folder (:func:`images_tr_entries`), a CSV/TSV table of cases
(:func:`table_entries`) and a plain folder of volumes (:func:`folder_entries`, where a labels
table with an ``image`` column lists cases too). In the folder and ``imagesTr`` layouts, the
folders that a format reading folders takes (a DICOM series: :func:`volprep.names.folder_cases`)
are cases beside the volume files. :func:`merge_labels` joins a labels table
to the entries of the other layouts by case id. Everything named like a volume is listed,
whatever its file type: deciding whether a file can be read (a FIFO, a dangling link) is the
finishing check's job in :mod:`volprep.cases`, the same for every layout. Listings are
sorted; nothing here opens a volume.
"""

from __future__ import annotations

import collections
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from volprep.errors import DatasetError
from volprep.names import (
    CHANNEL,
    folder_cases,
    id_from_images,
    resolve,
    safe_case_id,
    sort_folder,
    strip_extension,
)
from volprep.tables import INT, Table, split_name

log = logging.getLogger(__name__)

Problem = tuple[str, str, str]  # (case id or "-", path, problem)


@dataclass
class Entry:
    """A case as listed, before its id, class label and files are checked."""

    source: str  # where it was listed, for messages: "imagesTr/<file>", "cases.csv line 4"
    case_id: str
    images: list[Path] = field(default_factory=list)
    mask: Path | None = None
    label: str | None = None  # the class label as written
    subject: str | None = None
    split: str | None = None  # the user's split, checked and lower-cased
    row: tuple[Path, int] | None = None  # (table, line) of the case's row, if it has one
    columns: tuple[tuple[str, str], ...] = ()  # that row, in the table's column order
    problem: tuple[str, str] | None = None  # (path, problem): the first one found wins

    def refuse(self, path: Path | str, problem: str) -> None:
        if self.problem is None:
            self.problem = (str(path), problem)

    @property
    def row_source(self) -> str:
        """``/data/labels.csv line 4``: where the class label was written."""
        return f"{self.row[0]} line {self.row[1]}" if self.row else self.source

    def apply_row(self, table: Table, line: int, row: dict[str, str]) -> None:
        """Takes the class label, subject, split and the whole row from a table row."""
        self.row = (table.path, line)
        self.columns = tuple((name, row.get(name, "")) for name in table.columns)
        self.label = row.get("label") or None
        self.subject = row.get("subject") or None
        self.split = split_name(row.get("split"), f"{table.path}: line {line}")


def list_volumes(folder: Path) -> tuple[list[str], list[Problem]]:
    """Names in ``folder`` that are volumes (sorted, hidden files skipped) and companion problems.

    Which names are volumes is the input formats' rule (:func:`volprep.names.sort_folder`):
    a companion (a pair's data file, a sidecar) is never listed, and a volume that lacks a
    companion it needs, or a companion without its volume, is a problem. A name is listed
    whatever it is (a FIFO, a dangling link, a folder named like a volume), so that the
    finishing check reports it instead of it vanishing.
    """
    try:
        names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    except OSError as err:
        raise DatasetError(f"{folder}: cannot list: {err.strerror or err}") from None
    volumes, refused = sort_folder(names)
    problems: list[Problem] = [(safe_case_id(strip_extension(name)), str(folder / name), why)
                               for name, why in refused]
    return volumes, problems


# ---------------------------------------------------------------- dataset.json (MSD, nnU-Net)


def msd_entries(root: Path, json_path: Path, meta: dict[str, Any]) -> list[Entry]:
    """The cases of dataset.json ``training``: ``{"image": path or [paths], "label": path}``."""
    training = meta["training"]
    if not isinstance(training, list):
        raise DatasetError(f"{json_path}: [training] expected a list of {{\"image\": ..., \"label\": ...}}, got {type(training).__name__}")
    entries = []
    for i, item in enumerate(training):
        key = f"training[{i}]"
        item = {"image": item} if isinstance(item, str) else item
        if not isinstance(item, dict) or "image" not in item:
            raise DatasetError(f"{json_path}: [{key}] expected an object with an 'image' key")
        raw_images = item["image"] if isinstance(item["image"], list) else [item["image"]]
        if not raw_images or not all(isinstance(p, str) and p.strip() for p in raw_images):
            raise DatasetError(f"{json_path}: [{key}.image] expected a path or a list of paths")
        raw_mask = item.get("label")
        if raw_mask is not None and not (isinstance(raw_mask, str) and raw_mask.strip()):
            raise DatasetError(f"{json_path}: [{key}.label] expected a path to the label volume")
        where = f"dataset.json {key}"
        entry = Entry(source=f"{where} ({raw_images[0]})", case_id=safe_case_id(id_from_images(raw_images)))
        for raw in raw_images:
            path, problem = resolve(raw, root, where, allow_absolute=False)
            entry.images.append(path)
            if problem:
                entry.refuse(path, problem)
        if len(entry.images) == 1 and entry.problem is None and not os.path.lexists(entry.images[0]):
            # nnU-Net v1 lists "imagesTr/x.<ext>" for the files x_0000.<ext>, x_0001.<ext>...
            entry.images = _channel_files(entry.images[0]) or entry.images
        if raw_mask is not None:
            entry.mask, problem = resolve(raw_mask, root, f"{where}.label", allow_absolute=False)
            if problem:
                entry.refuse(entry.mask, problem)
        entries.append(entry)
    return entries


def _channel_files(path: Path) -> list[Path]:
    """``x_0000.ext``, ``x_0001.ext``... that exist beside the (missing) ``x.ext``, in order."""
    ext = path.name[len(strip_extension(path.name)):]
    base = strip_extension(path.name)
    found: list[Path] = []
    while os.path.lexists(candidate := path.with_name(f"{base}_{len(found):04d}{ext}")):
        found.append(candidate)
    return found


def label_names(meta: dict[str, Any], json_path: Path) -> dict[int, str] | None:
    """Mask values -> names from ``labels``: MSD's ``{"0": "background"}`` or nnU-Net v2's
    ``{"background": 0}``; nnU-Net region entries (``{"tumor": [1, 2]}``) name no one value."""
    labels = meta.get("labels")
    if labels is None:
        return None
    if not isinstance(labels, dict):
        raise DatasetError(f"{json_path}: [labels] expected an object like {{\"0\": \"background\", \"1\": \"tumour\"}}")
    names: dict[int, str] = {}
    for key, value in labels.items():
        if isinstance(value, str) and INT.fullmatch(key.strip()):
            number, name = int(key), value
        elif isinstance(value, int) and not isinstance(value, bool):
            number, name = value, key
        elif isinstance(value, list):
            log.info("%s: labels.%s is a region (several values); not a per-value name", json_path, key)
            continue
        else:
            raise DatasetError(f"{json_path}: [labels.{key}] expected a value -> name pair, got {value!r}")
        if number < 0 or number in names:
            raise DatasetError(f"{json_path}: [labels.{key}] label value {number} is negative or named twice")
        names[number] = name
    return dict(sorted(names.items()))


def channel_count(meta: dict[str, Any] | None) -> int | None:
    """Channels declared by dataset.json (nnU-Net v2 ``channel_names``, v1/MSD ``modality``)."""
    for key in ("channel_names", "modality"):
        value = (meta or {}).get(key)
        if isinstance(value, dict) and value:
            return len(value)
    return None


# ---------------------------------------------------------------- imagesTr / labelsTr


def images_tr_entries(root: Path, declared_channels: int | None,
                      naming: str = "name") -> tuple[list[Entry], list[Problem]]:
    """Pairs ``imagesTr/*`` (volume files, and folder-cases such as DICOM series folders)
    with ``labelsTr/*`` by name.

    Files are read as nnU-Net channels (``x_0000``, ``x_0001`` -> case ``x``) when every image
    name carries a ``_NNNN`` suffix and no label is named after a full image name; otherwise
    each image file is one case (MSD naming, the same file name in both folders).
    """
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    image_names, problems = list_volumes(images_dir)
    label_by_stem: dict[str, str] = {}
    if labels_dir.is_dir():
        label_files, label_problems = list_volumes(labels_dir)
        problems += label_problems
        for name in label_files:
            stem = strip_extension(name)
            if stem in label_by_stem:
                raise DatasetError(f"{root}: duplicate case id {stem!r}: labelsTr/{label_by_stem[stem]} and labelsTr/{name}")
            label_by_stem[stem] = name
    listed = sorted([(strip_extension(n), n) for n in image_names] + folder_cases(images_dir, own=False, naming=naming),
                    key=lambda pair: pair[1])
    stems = [stem for stem, _ in listed]
    channels = bool(stems) and all(CHANNEL.match(s) for s in stems) and not any(s in label_by_stem for s in stems)
    groups: dict[str, dict[int, str]] = collections.defaultdict(dict)
    for stem, name in listed:
        match = CHANNEL.match(stem)
        base, index = (match.group("base"), int(match.group("index"))) if channels and match else (stem, 0)
        if index in groups[base]:
            raise DatasetError(f"{root}: duplicate case id {base!r}: imagesTr/{groups[base][index]} and imagesTr/{name}")
        groups[base][index] = name
    counts = collections.Counter(len(g) for g in groups.values())
    expected = declared_channels or max(counts, key=lambda n: (counts[n], n), default=1)
    entries = []
    for base in sorted(groups):
        files = [groups[base][i] for i in sorted(groups[base])]
        entry = Entry(source=f"imagesTr/{files[0]}", case_id=safe_case_id(base), images=[images_dir / f for f in files])
        if channels and sorted(groups[base]) != list(range(len(files))):
            entry.refuse(images_dir / files[0], f"channels {', '.join(f'_{i:04d}' for i in sorted(groups[base]))}: expected _0000 to _{len(files) - 1:04d} without gaps")
        elif channels and len(files) != expected:
            entry.refuse(images_dir / files[0], f"{len(files)} channel files, the dataset has {expected}")
        if labels_dir.is_dir():
            if base in label_by_stem:
                entry.mask = labels_dir / label_by_stem[base]
            else:
                entry.refuse(labels_dir / base, "no label volume of this name in labelsTr")
        entries.append(entry)
    for stem in sorted(set(label_by_stem) - set(groups)):
        problems.append((safe_case_id(stem), str(labels_dir / label_by_stem[stem]), "label volume in labelsTr without an image in imagesTr"))
    return entries, problems


# ---------------------------------------------------------------- tables and folders


def _row_entry(table: Table, line: int, row: dict[str, str], root: Path) -> Entry:
    """One row of a table with an ``image`` column (``;`` between channels) as an entry."""
    where = f"{table.path.name} line {line}"
    raw_images = [p.strip() for p in row["image"].split(";") if p.strip()]
    raw_id = row.get("case_id", "") or (id_from_images(raw_images) if raw_images else "")
    entry = Entry(source=where, case_id=safe_case_id(raw_id))
    entry.apply_row(table, line, row)
    if not raw_images:
        entry.refuse(table.path, f"line {line}: empty 'image'")
    for raw in raw_images:
        path, problem = resolve(raw, root, where, allow_absolute=True)
        entry.images.append(path)
        if problem:
            entry.refuse(path, problem)
    if row.get("mask"):
        entry.mask, problem = resolve(row["mask"], root, f"{where} (mask)", allow_absolute=True)
        if problem:
            entry.refuse(entry.mask, problem)
    return entry


def table_entries(table: Table) -> list[Entry]:
    """The cases of a CSV/TSV given as the dataset: one a row, paths relative to its folder."""
    if "image" not in table.columns:
        hint = " (a labels table? pass the folder of volumes that holds it)" if "case_id" in table.columns else ""
        raise DatasetError(f"{table.path}: no 'image' column; columns: {', '.join(table.columns)}{hint}")
    return [_row_entry(table, line, row, table.path.parent) for line, row in table.rows]


def folder_entries(root: Path, table: Table | None, naming: str = "name") -> tuple[list[Entry], list[Problem]]:
    """The volumes of ``root`` (not recursive) and its folder-cases (its subfolders, and its
    own files, that a format reading folders takes), with its labels table merged or
    listing cases.

    A labels table with an ``image`` column lists cases, by the rules of a CSV of cases
    (paths relative to the folder, ``..`` and hidden files refused), so its images may sit in
    subfolders (``images/<file>``). A volume of the folder itself that a row lists is that
    row's case (the row's ``case_id`` wins); one that no row lists stays a case without a
    row, as without an ``image`` column; one whose id is also the id of a listed image
    elsewhere is an ambiguous duplicate (a DatasetError naming both). A row with an empty
    ``image`` but a ``case_id`` is merged by id, like a table without an ``image`` column.
    """
    names, problems = list_volumes(root)
    own = [Entry(source=name, case_id=safe_case_id(strip_extension(name)), images=[root / name]) for name in names]
    own += [Entry(source=path, case_id=safe_case_id(raw), images=[root / path])
            for raw, path in folder_cases(root, own=True, naming=naming)]
    if table is None:
        return own, problems
    if "image" not in table.columns:
        if own:
            merge_labels(table, own, problems)
        return own, problems
    listed = [_row_entry(table, line, row, root) for line, row in table.rows if row["image"]]
    by_id = tuple((line, row) for line, row in table.rows if not row["image"])
    files = {path for entry in listed for path in entry.images}
    entries = [e for e in own if e.images[0] not in files] + listed
    if by_id:
        merge_labels(Table(table.path, table.columns, by_id), entries, problems)
    return entries, problems


def merge_labels(table: Table, entries: list[Entry], problems: list[Problem]) -> None:
    """Joins a labels table (``case_id`` or ``image``; ``label``, ``subject``, ``split``, any
    other columns) to ``entries`` by case id; a row naming no case is a problem."""
    if "case_id" not in table.columns and "image" not in table.columns:
        raise DatasetError(f"{table.path}: needs a 'case_id' (or 'image') column; columns: {', '.join(table.columns)}")
    by_id = {e.case_id: e for e in entries}
    seen: dict[str, int] = {}
    for line, row in table.rows:
        raw_images = [p for p in row.get("image", "").split(";") if p.strip()]
        raw_id = row.get("case_id") or (id_from_images(raw_images) if raw_images else "")
        case_id = safe_case_id(raw_id)
        if not case_id:
            raise DatasetError(f"{table.path}: line {line}: no case_id")
        entry = by_id.get(case_id)
        first = seen.get(case_id) or (entry.row[1] if entry is not None and entry.row else None)
        if first is not None:
            raise DatasetError(f"{table.path}: duplicate case id {case_id!r}: line {first} and line {line}")
        seen[case_id] = line
        if entry is None:
            problems.append((case_id, str(table.path), f"line {line}: listed in {table.path.name}, but the dataset has no such case"))
            continue
        entry.apply_row(table, line, row)
