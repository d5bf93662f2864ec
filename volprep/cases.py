"""Dataset discovery: a dataset path becomes a :class:`Dataset` of :class:`Case` records.

This module owns the first stage of the flow and looks only at names and existence, never
at file contents (the readers in :mod:`volprep.io` do that). It understands four layouts:
a Medical Segmentation Decathlon folder (``dataset.json`` with a ``training`` list), an
nnU-Net style ``imagesTr``/``labelsTr`` folder (channel suffixes ``_0000``, ``_0001``...),
a CSV/TSV manifest given directly, and a plain folder of volumes; the folder layouts also
merge an optional ``labels.csv``/``labels.tsv`` of per-case class labels and subjects.
Whole-dataset mistakes (no cases, unreadable ``dataset.json`` or CSV, duplicate case ids,
inconsistent class labels) raise :class:`~volprep.errors.DatasetError`; one case that
cannot be used (a missing file, a relative path that climbs out of the dataset folder
through ``..``, a hidden file listed explicitly) is refused into ``Dataset.problems`` so
the job reports it and goes on. Case ids are made filesystem-safe by a fixed mapping (see
:func:`safe_case_id`). The result is deterministic: listings are sorted, cases ordered by id.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from volprep.errors import DatasetError

log = logging.getLogger(__name__)

LAYOUTS = ("msd", "imagesTr", "csv", "folder")
# Files a folder discovery takes as volumes (``.img`` and ``.raw`` data files are companions).
VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".mha", ".mhd", ".hdr", ".raw")
# Extensions removed to make a case id, longest first so ``.nii.gz`` wins over ``.gz``.
ID_EXTENSIONS = (".nii.gz", ".nii", ".mha", ".mhd", ".raw", ".hdr", ".img")
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
LABEL_TABLES = ("labels.csv", "labels.tsv")
MAX_ID_LENGTH = 200
# A class id above this is far more likely a wrong column (ages, dates) than a class.
MAX_CLASS_ID = 65535

_CHANNEL = re.compile(r"^(?P<base>.+)_(?P<index>\d{4})$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_INT = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class Case:
    """One case of a dataset: what the reading stage needs to turn it into arrays."""

    case_id: str  # stable, unique, filesystem-safe
    subject: str  # grouping key for splits (defaults to case_id)
    images: tuple[Path, ...]  # one file per channel, or one 4D file
    mask: Path | None  # label volume (segmentation)
    label: int | None  # class id (classification), an index into Dataset.class_names


@dataclass(frozen=True)
class Dataset:
    """A discovered dataset: its cases, class/label names and the cases refused on the way."""

    root: Path  # the dataset folder (for a CSV: the CSV's folder), absolute
    layout: str  # one of LAYOUTS
    cases: tuple[Case, ...]  # sorted by case_id
    class_names: tuple[str, ...] | None  # classification classes; Case.label indexes into it
    label_names: dict[int, str] | None  # mask label values -> names (dataset.json "labels")
    problems: tuple[tuple[str, str, str], ...]  # (case_id or "-", path, problem)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout {self.layout!r} is not one of {LAYOUTS}")


@dataclass
class _Entry:
    """A case as listed, before its id, class label and files are checked."""

    source: str  # where it was listed, for messages: "imagesTr/x.nii.gz", "cases.csv line 4"
    case_id: str
    images: list[Path] = field(default_factory=list)
    mask: Path | None = None
    label: str | None = None  # the class label as written
    label_source: str = ""
    subject: str | None = None
    problem: tuple[str, str] | None = None  # (path, problem): the first one found wins

    def refuse(self, path: Path | str, problem: str) -> None:
        if self.problem is None:
            self.problem = (str(path), problem)


# ---------------------------------------------------------------- names and paths


def strip_extension(name: str) -> str:
    """A file name without its volume extension (``x.nii.gz`` -> ``x``; case-insensitive)."""
    lower = name.lower()
    for ext in ID_EXTENSIONS:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


def safe_case_id(text: str) -> str:
    """Maps a raw id to a filesystem-safe one, deterministically.

    Every character outside ``[A-Za-z0-9._-]`` (spaces, slashes, non-ASCII letters) becomes
    ``_``, and a leading ``.`` becomes ``_`` so no id names a hidden file. Two raw ids that
    map to the same id are then caught as duplicates, naming both sources.
    """
    mapped = _UNSAFE.sub("_", text.strip())
    return "_" + mapped[1:] if mapped.startswith(".") else mapped


def _id_from_images(names: list[str]) -> str:
    """The raw case id of a listed image or channel list.

    The nnU-Net channel suffix is removed only when several images share it
    (``x_0000``, ``x_0001`` -> ``x``): on a single file ``patient_0001`` is more often a
    case number than a channel.
    """
    stems = [strip_extension(Path(n).name) for n in names]
    matches = [_CHANNEL.match(s) for s in stems]
    if len(stems) > 1 and all(matches) and len({m.group("base") for m in matches if m}) == 1:
        return matches[0].group("base") if matches[0] else stems[0]
    return stems[0]


def _resolve(raw: str, root: Path, where: str, *, allow_absolute: bool) -> tuple[Path, str | None]:
    """A listed path made absolute, and why it is refused (``None`` when it is not).

    The ``..`` check is lexical, on the path as written: a symlink inside the dataset that
    points elsewhere is followed as an ordinary file.
    """
    text = raw.strip()
    written = Path(text)
    if written.is_absolute():
        if not allow_absolute:
            return written, f"{where}: absolute path refused: paths in dataset.json must be relative to the dataset folder"
        path = Path(os.path.normpath(written))
    else:
        norm = Path(os.path.normpath(text))
        if norm.parts and norm.parts[0] == "..":
            return root / written, f"{where}: {text!r} climbs out of the dataset folder through '..': refused"
        path = root / norm
    if path.name.startswith("."):
        return path, f"{where}: hidden file (name starts with '.', e.g. a macOS '._' resource fork): refused"
    return path, None


def _check_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file, or ``None`` (symlinks are followed)."""
    try:
        if path.is_file():
            return None
        return "not a file (a folder)" if path.is_dir() else "file not found"
    except OSError as err:  # permission denied on a parent folder, a symlink loop...
        return f"cannot access: {err.strerror or err}"


def _volume_ext(name: str) -> str | None:
    lower = name.lower()
    return next((ext for ext in VOLUME_EXTENSIONS if lower.endswith(ext)), None)


def _list_volumes(folder: Path) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Volume file names in ``folder`` (sorted, hidden files skipped) and companion problems.

    ``.img`` files are the data of a same-name ``.hdr``; a ``.raw`` is a volume only with a
    ``.json`` sidecar, and is taken for MetaImage data when a ``.mhd`` sits beside it.
    """
    try:
        names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    except OSError as err:
        raise DatasetError(f"{folder}: cannot list: {err.strerror or err}") from None
    lower = {n.lower() for n in names}
    has_mhd = any(n.endswith(".mhd") for n in lower)
    volumes: list[str] = []
    problems: list[tuple[str, str, str]] = []
    for name in names:
        path = folder / name
        if not path.is_file():
            continue
        stem = strip_extension(name)
        if name.lower().endswith(".img") and f"{stem}.hdr".lower() not in lower:
            problems.append((safe_case_id(stem), str(path), "Analyze/NIfTI .img without its .hdr"))
            continue
        ext = _volume_ext(name)
        if ext == ".raw":
            if f"{stem}.mhd".lower() in lower:
                continue
            if f"{stem}.json".lower() not in lower:
                if not has_mhd:
                    problems.append((safe_case_id(stem), str(path), "raw volume without a .json sidecar (shape, dtype, spacing)"))
                continue
        if ext is not None:
            volumes.append(name)
    return volumes, problems


# ---------------------------------------------------------------- files: JSON and tables


def _read_text(path: Path) -> str:
    """A UTF-8 text file (a BOM tolerated), or a DatasetError naming the file."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read: {err.strerror or err}") from None


def _load_json(path: Path) -> dict[str, Any]:
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not valid JSON: line {err.lineno}, column {err.colno}: {err.msg}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object at the top, got {type(data).__name__}")
    return data


def _read_table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """A CSV/TSV file as (column names, [(line number, row)]); names are lower-cased.

    Blank rows are skipped; a row with more or fewer fields than the header is refused
    (trailing empty fields excepted), since a stray delimiter silently shifts columns.
    """
    delimiter = TABLE_SUFFIXES.get(path.suffix.lower(), ",")
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip().lower() for f in fields]
                if "" in header:
                    raise DatasetError(f"{path}: line {reader.line_num}: a column without a name in the header")
                twice = sorted({h for h in header if header.count(h) > 1})
                if twice:
                    raise DatasetError(f"{path}: line {reader.line_num}: column {twice[0]!r} appears twice in the header")
                continue
            extra = fields[len(header):]
            if len(fields) < len(header) or any(f.strip() for f in extra):
                raise DatasetError(
                    f"{path}: line {reader.line_num}: {len(fields)} fields, the header has {len(header)}"
                    + (" (is the delimiter right? .tsv files are tab-separated)" if len(fields) == 1 else "")
                )
            rows.append((reader.line_num, dict(zip(header, (f.strip() for f in fields), strict=False))))
    except csv.Error as err:
        raise DatasetError(f"{path}: line {reader.line_num}: {err}") from None
    if header is None:
        raise DatasetError(f"{path}: empty table (no header row)")
    return header, rows


# ---------------------------------------------------------------- layouts


def _msd_entries(root: Path, json_path: Path, meta: dict[str, Any]) -> list[_Entry]:
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
        entry = _Entry(source=f"{where} ({raw_images[0]})", case_id=safe_case_id(_id_from_images(raw_images)))
        for raw in raw_images:
            path, problem = _resolve(raw, root, where, allow_absolute=False)
            entry.images.append(path)
            if problem:
                entry.refuse(path, problem)
        if len(entry.images) == 1 and entry.problem is None and not entry.images[0].exists():
            # nnU-Net v1 lists "imagesTr/x.nii.gz" for the files x_0000.nii.gz, x_0001.nii.gz...
            entry.images = _channel_files(entry.images[0]) or entry.images
        if raw_mask is not None:
            entry.mask, problem = _resolve(raw_mask, root, f"{where}.label", allow_absolute=False)
            if problem:
                entry.refuse(entry.mask, problem)
        entries.append(entry)
    return entries


def _channel_files(path: Path) -> list[Path]:
    """``x_0000.ext``, ``x_0001.ext``... that exist beside the (missing) ``x.ext``, in order."""
    ext = path.name[len(strip_extension(path.name)):]
    base = strip_extension(path.name)
    found: list[Path] = []
    while (candidate := path.with_name(f"{base}_{len(found):04d}{ext}")).is_file():
        found.append(candidate)
    return found


def _label_names(meta: dict[str, Any], json_path: Path) -> dict[int, str] | None:
    """Mask values -> names from ``labels``: MSD's ``{"0": "background"}`` or nnU-Net v2's
    ``{"background": 0}``; nnU-Net region entries (``{"tumor": [1, 2]}``) name no one value."""
    labels = meta.get("labels")
    if labels is None:
        return None
    if not isinstance(labels, dict):
        raise DatasetError(f"{json_path}: [labels] expected an object like {{\"0\": \"background\", \"1\": \"tumour\"}}")
    names: dict[int, str] = {}
    for key, value in labels.items():
        if isinstance(value, str) and _INT.fullmatch(key.strip()):
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


def _channel_count(meta: dict[str, Any] | None) -> int | None:
    """Channels declared by dataset.json (nnU-Net v2 ``channel_names``, v1/MSD ``modality``)."""
    for key in ("channel_names", "modality"):
        value = (meta or {}).get(key)
        if isinstance(value, dict) and value:
            return len(value)
    return None


def _images_tr_entries(root: Path, declared_channels: int | None) -> tuple[list[_Entry], list[tuple[str, str, str]]]:
    """Pairs ``imagesTr/*`` with ``labelsTr/*`` by file name.

    Files are read as nnU-Net channels (``x_0000``, ``x_0001`` -> case ``x``) when every image
    name carries a ``_NNNN`` suffix and no label is named after a full image name; otherwise
    each image file is one case (MSD naming, ``x.nii.gz`` in both folders).
    """
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    image_names, problems = _list_volumes(images_dir)
    label_by_stem: dict[str, str] = {}
    if labels_dir.is_dir():
        label_names, label_problems = _list_volumes(labels_dir)
        problems += label_problems
        for name in label_names:
            stem = strip_extension(name)
            if stem in label_by_stem:
                raise DatasetError(f"{root}: duplicate case id {stem!r}: labelsTr/{label_by_stem[stem]} and labelsTr/{name}")
            label_by_stem[stem] = name
    stems = [strip_extension(n) for n in image_names]
    channels = bool(stems) and all(_CHANNEL.match(s) for s in stems) and not any(s in label_by_stem for s in stems)
    groups: dict[str, dict[int, str]] = collections.defaultdict(dict)
    for name, stem in zip(image_names, stems, strict=True):
        match = _CHANNEL.match(stem)
        base, index = (match.group("base"), int(match.group("index"))) if channels and match else (stem, 0)
        if index in groups[base]:
            raise DatasetError(f"{root}: duplicate case id {base!r}: imagesTr/{groups[base][index]} and imagesTr/{name}")
        groups[base][index] = name
    counts = collections.Counter(len(g) for g in groups.values())
    expected = declared_channels or max(counts, key=lambda n: (counts[n], n), default=1)
    entries = []
    for base in sorted(groups):
        files = [groups[base][i] for i in sorted(groups[base])]
        entry = _Entry(source=f"imagesTr/{files[0]}", case_id=safe_case_id(base), images=[images_dir / f for f in files])
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


def _csv_entries(table: Path) -> list[_Entry]:
    root = table.parent
    header, rows = _read_table(table)
    if "image" not in header:
        hint = " (a labels table? pass the folder of volumes that holds it)" if "case_id" in header else ""
        raise DatasetError(f"{table}: no 'image' column; columns: {', '.join(header)}{hint}")
    entries = []
    for line, row in rows:
        where = f"{table.name} line {line}"
        raw_images = [p.strip() for p in row["image"].split(";") if p.strip()]
        raw_id = row.get("case_id", "") or (_id_from_images(raw_images) if raw_images else "")
        entry = _Entry(source=where, case_id=safe_case_id(raw_id), subject=row.get("subject") or None,
                       label=row.get("label") or None, label_source=where)
        if not raw_images:
            entry.refuse(table, f"line {line}: empty 'image'")
        for raw in raw_images:
            path, problem = _resolve(raw, root, where, allow_absolute=True)
            entry.images.append(path)
            if problem:
                entry.refuse(path, problem)
        if row.get("mask"):
            entry.mask, problem = _resolve(row["mask"], root, f"{where} (mask)", allow_absolute=True)
            if problem:
                entry.refuse(entry.mask, problem)
        entries.append(entry)
    return entries


def _folder_entries(root: Path) -> tuple[list[_Entry], list[tuple[str, str, str]]]:
    names, problems = _list_volumes(root)
    entries = [
        _Entry(source=name, case_id=safe_case_id(strip_extension(name)), images=[root / name])
        for name in names
    ]
    return entries, problems


def _merge_labels(root: Path, entries: list[_Entry], problems: list[tuple[str, str, str]]) -> None:
    """Merges ``labels.csv``/``labels.tsv`` (``case_id`` or ``image``, ``label``, ``subject``)."""
    tables = [root / name for name in LABEL_TABLES if (root / name).is_file()]
    if len(tables) > 1:
        raise DatasetError(f"{root}: both {tables[0].name} and {tables[1].name}: keep one")
    if not tables:
        return
    table = tables[0]
    header, rows = _read_table(table)
    if "case_id" not in header and "image" not in header:
        raise DatasetError(f"{table}: needs a 'case_id' (or 'image') column; columns: {', '.join(header)}")
    by_id = {e.case_id: e for e in entries}
    seen: dict[str, int] = {}
    for line, row in rows:
        raw_id = row.get("case_id") or strip_extension(Path(row.get("image", "")).name)
        case_id = safe_case_id(raw_id)
        if not case_id:
            raise DatasetError(f"{table}: line {line}: no case_id")
        if case_id in seen:
            raise DatasetError(f"{table}: duplicate case id {case_id!r}: line {seen[case_id]} and line {line}")
        seen[case_id] = line
        entry = by_id.get(case_id)
        if entry is None:
            problems.append((case_id, str(table), f"line {line}: listed in {table.name}, but the dataset has no such case"))
            continue
        entry.label = row.get("label") or None
        entry.label_source = f"{table.name} line {line}"
        entry.subject = row.get("subject") or None
    unlabelled = sum(e.case_id not in seen for e in entries)
    if unlabelled:
        log.warning("%s: %d of %d cases have no row (no class label)", table, unlabelled, len(entries))


# ---------------------------------------------------------------- class labels, checks


def _class_ids(entries: list[_Entry], origin: Path) -> tuple[tuple[str, ...] | None, dict[str, int]]:
    """Class names and label text -> class id, over every listed case (refused ones too, so
    that a missing file never shifts the ids of the others)."""
    labelled = [e for e in entries if e.label is not None]
    if not labelled:
        return None, {}
    is_int = [bool(_INT.fullmatch(e.label or "")) for e in labelled]
    first = labelled[0]
    for entry, numeric in zip(labelled, is_int, strict=True):
        if numeric != is_int[0]:
            raise DatasetError(
                f"{origin}: {entry.label_source}: class label {entry.label!r} does not match "
                f"{first.label_source} ({first.label!r}): labels must be all class ids (integers) or all class names"
            )
        if numeric and not 0 <= int(entry.label or "") <= MAX_CLASS_ID:
            raise DatasetError(f"{origin}: {entry.label_source}: class id {entry.label} is outside 0..{MAX_CLASS_ID}")
    if is_int[0]:
        ids = {e.label or "": int(e.label or "") for e in labelled}
        return tuple(str(i) for i in range(max(ids.values()) + 1)), ids
    spelled: dict[str, _Entry] = {}
    for entry in labelled:
        other = spelled.setdefault((entry.label or "").casefold(), entry)
        if other.label != entry.label:
            raise DatasetError(
                f"{origin}: {entry.label_source}: class name {entry.label!r} differs from {other.label!r} "
                f"({other.label_source}) only in letter case: spell each class one way"
            )
    names = tuple(sorted({e.label or "" for e in labelled}))
    return names, {name: i for i, name in enumerate(names)}


def _check_ids(entries: list[_Entry], origin: Path) -> None:
    """Refuses unusable ids; duplicates (also ids equal but for letter case, which collide on
    case-insensitive file systems) are a DatasetError naming both sources."""
    seen: dict[str, _Entry] = {}
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


def _finish(root: Path, layout: str, origin: Path, entries: list[_Entry],
            problems: list[tuple[str, str, str]], label_names: dict[int, str] | None,
            looked_for: str) -> Dataset:
    if not entries and not problems:
        raise DatasetError(f"{origin}: no volumes found (looked for {looked_for})")
    _check_ids(entries, origin)
    class_names, class_ids = _class_ids(entries, origin)
    cases = []
    for entry in entries:
        for path in [*entry.images, *([entry.mask] if entry.mask else [])]:
            if entry.problem is None and (why := _check_file(path)):
                entry.refuse(path, why)
        if entry.problem is not None:
            problems.append((entry.case_id or "-", *entry.problem))
            continue
        cases.append(Case(
            case_id=entry.case_id,
            subject=safe_case_id(entry.subject) if entry.subject else entry.case_id,
            images=tuple(entry.images),
            mask=entry.mask,
            label=class_ids[entry.label] if entry.label is not None else None,
        ))
    if not cases:
        shown = "; ".join(f"{c}: {p}: {why}" for c, p, why in problems[:3])
        raise DatasetError(f"{origin}: none of the {len(problems)} listed cases can be used: {shown}")
    log.info("%s: %d cases (%s layout), %d refused", origin, len(cases), layout, len(problems))
    return Dataset(root=root, layout=layout, cases=tuple(sorted(cases, key=lambda c: c.case_id)),
                   class_names=class_names, label_names=label_names, problems=tuple(problems))


def discover(path: str | os.PathLike[str]) -> Dataset:
    """Finds the cases of a dataset.

    Args:
        path: a dataset folder (``dataset.json``; ``imagesTr/`` + ``labelsTr/``; or volumes,
            optionally with ``labels.csv``/``labels.tsv``), or a ``.csv``/``.tsv`` manifest
            with an ``image`` column (``;`` between channels) and optional ``label``,
            ``mask``, ``subject``, ``case_id`` columns.

    Returns:
        The dataset: cases sorted by id, class names, mask label names, and the cases
        refused at discovery (``problems``) for the job to report as failures.

    Raises:
        DatasetError: the path does not exist; a dataset.json or table that cannot be
            parsed (naming the file and line or key); duplicate case ids (naming both
            sources); class labels mixing ids and names (naming the row); no usable case.
    """
    given = Path(path)
    full = Path(os.path.abspath(given))
    if not full.exists():
        raise DatasetError(f"{given}: no such file or folder")
    if full.is_file():
        if full.suffix.lower() not in TABLE_SUFFIXES:
            raise DatasetError(f"{given}: not a dataset folder or a .csv/.tsv table of cases")
        return _finish(full.parent, "csv", full, _csv_entries(full), [], None, f"rows in {full.name}")
    json_path = full / "dataset.json"
    meta = _load_json(json_path) if json_path.is_file() else None
    label_names = _label_names(meta, json_path) if meta is not None else None
    problems: list[tuple[str, str, str]] = []
    if meta is not None and "training" in meta:
        layout, entries = "msd", _msd_entries(full, json_path, meta)
        looked_for = f"entries in {json_path.name} [training]"
    elif (full / "imagesTr").is_dir():
        layout, looked_for = "imagesTr", f"volumes in imagesTr/: {', '.join(VOLUME_EXTENSIONS)}"
        entries, problems = _images_tr_entries(full, _channel_count(meta))
    elif meta is not None:
        raise DatasetError(f"{json_path}: [training] missing, and there is no imagesTr/ folder")
    else:
        layout, looked_for = "folder", ", ".join(VOLUME_EXTENSIONS)
        entries, problems = _folder_entries(full)
        if not entries and not problems:
            nested = sum(1 for p in full.rglob("*") if not p.name.startswith(".") and _volume_ext(p.name))
            if nested:
                looked_for += f"; {nested} found in subfolders: the folder layout is not recursive, list them in a CSV"
    if entries:
        _merge_labels(full, entries, problems)
    return _finish(full, layout, full, entries, problems, label_names, looked_for)
