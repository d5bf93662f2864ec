"""The user's text files that describe a dataset: JSON, CSV/TSV tables, classes and splits.

This module is the one place volprep reads a table or a JSON file of the dataset (the job
runner asks :mod:`volprep.cases` for a table's columns, never re-reads the file). It owns
the parsing rules: UTF-8 with or without a byte-order mark; column names stripped and
lower-cased; values stripped; a row with the wrong number of fields refused; a file that is
not a regular file (a FIFO, a device) refused before it is opened. It reads four kinds of
file: a table of cases or labels (:func:`read_table`), declared classes (``classes.csv`` or
dataset.json ``classes``: :func:`read_classes_csv`, :func:`classes_from_json`), split names
(:func:`split_name`) and nnU-Net split files (:func:`read_split_file`). Every mistake is a
:class:`~volprep.errors.DatasetError` naming the file and the line, key or fold.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from volprep.errors import DatasetError
from volprep.names import file_problem, safe_case_id

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
LABEL_TABLES = ("labels.csv", "labels.tsv")
CLASSES_TABLE = "classes.csv"
# Declared class ids above this are refused: class_names has one entry per id up to the
# largest, and a stray 65535 would make a 65,536-entry manifest.
MAX_CLASS_ID = 9999
TRUE_VALUES = frozenset({"1", "true", "yes", "y"})
FALSE_VALUES = frozenset({"", "0", "false", "no", "n"})

INT = re.compile(r"[+-]?\d+")
_SPLIT_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Table:
    """A parsed CSV/TSV file: column names (lower-cased) and rows with their line numbers."""

    path: Path
    columns: tuple[str, ...]
    rows: tuple[tuple[int, dict[str, str]], ...]  # (line number, {column: stripped value})


@dataclass(frozen=True)
class DeclaredClasses:
    """Class ids -> names as a dataset declares them, and where (for messages)."""

    names: dict[int, str]
    source: str  # "/data/classes.csv" or "/data/dataset.json [classes]"


# ---------------------------------------------------------------- files


def is_regular_file(path: Path) -> bool:
    """True for a regular file (symlinks followed), False when nothing is there.

    Raises:
        DatasetError: something is there that is not a regular file (a FIFO, a dangling
            link, a folder): silently ignoring a ``labels.csv`` would lose every class label.
    """
    if not os.path.lexists(path):
        return False
    why = file_problem(path)
    if why is not None:
        raise DatasetError(f"{path}: {why}")
    return True


def read_text(path: Path) -> str:
    """A UTF-8 text file (a BOM tolerated), or a DatasetError naming the file."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # never open a FIFO: it would block
            raise DatasetError(f"{path}: {file_problem(path)}")
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except FileNotFoundError:
        raise DatasetError(f"{path}: {file_problem(path)}") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read: {err.strerror or err}") from None


def parse_json(path: Path) -> Any:
    """A JSON file's content, or a DatasetError naming the file, line and column."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not valid JSON: line {err.lineno}, column {err.colno}: {err.msg}") from None


def load_json(path: Path) -> dict[str, Any]:
    """A JSON file holding an object (dataset.json)."""
    data = parse_json(path)
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object at the top, got {type(data).__name__}")
    return data


def read_table(path: Path) -> Table:
    """A CSV/TSV file (tab-separated for ``.tsv``/``.tab``); column names are lower-cased.

    Blank rows are skipped; a row with more or fewer fields than the header is refused
    (trailing empty fields excepted), since a stray delimiter silently shifts columns.
    """
    delimiter = TABLE_SUFFIXES.get(path.suffix.lower(), ",")
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter, strict=True)
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
    return Table(path=path, columns=tuple(header), rows=tuple(rows))


def find_labels_table(root: Path) -> Table | None:
    """The folder's ``labels.csv`` or ``labels.tsv`` (not both), read; ``None`` without one."""
    tables = [root / name for name in LABEL_TABLES if is_regular_file(root / name)]
    if len(tables) > 1:
        raise DatasetError(f"{root}: both {tables[0].name} and {tables[1].name}: keep one")
    return read_table(tables[0]) if tables else None


def truth(value: str | None) -> bool | None:
    """A table cell as a yes/no flag: 1/true/yes/y, 0/false/no/n/empty; ``None`` if neither."""
    text = (value or "").strip().lower()
    return True if text in TRUE_VALUES else False if text in FALSE_VALUES else None


def split_name(value: str | None, where: str) -> str | None:
    """A user's split name lower-cased (``None`` when empty), or a DatasetError at ``where``."""
    text = (value or "").strip().lower()
    if not text:
        return None
    if not _SPLIT_NAME.fullmatch(text):
        raise DatasetError(f"{where}: split {(value or '').strip()!r}: expected a name like 'train', 'val' or "
                           "'test' (a letter, then letters, digits or '_')")
    return text


# ---------------------------------------------------------------- declared classes


def _declared(pairs: list[tuple[str, Any, Any]], source: str) -> DeclaredClasses:
    """Checks (where, id, name) triples: ids integers 0..MAX_CLASS_ID, ids and names unique."""
    names: dict[int, str] = {}
    where_name: dict[str, str] = {}
    for where, raw_id, raw_name in pairs:
        text = str(raw_id).strip()
        if isinstance(raw_id, bool) or not INT.fullmatch(text):
            raise DatasetError(f"{where}: class id {raw_id!r} is not an integer")
        class_id = int(text)
        if not 0 <= class_id <= MAX_CLASS_ID:
            raise DatasetError(f"{where}: class id {class_id} is {'negative' if class_id < 0 else f'above {MAX_CLASS_ID}'}")
        if not isinstance(raw_name, str) or not raw_name.strip():
            raise DatasetError(f"{where}: empty class name for id {class_id} (expected a non-empty string)")
        name = raw_name.strip()
        if class_id in names:
            raise DatasetError(f"{where}: class id {class_id} declared twice")
        if name.casefold() in where_name:
            raise DatasetError(f"{where}: class name {name!r} declared twice (also {where_name[name.casefold()]})")
        names[class_id] = name
        where_name[name.casefold()] = where
    if not names:
        raise DatasetError(f"{source}: declares no class")
    return DeclaredClasses(names=dict(sorted(names.items())), source=source)


def classes_from_json(meta: dict[str, Any], json_path: Path) -> DeclaredClasses | None:
    """dataset.json ``classes``: ``{"0": "normal", "1": "tumour"}``, ids as strings."""
    classes = meta.get("classes")
    if classes is None:
        return None
    if not isinstance(classes, dict):
        raise DatasetError(f"{json_path}: [classes] expected an object like {{\"0\": \"normal\", \"1\": \"tumour\"}}")
    return _declared([(f"{json_path}: [classes.{key}]", key, value) for key, value in classes.items()],
                     f"{json_path} [classes]")


def read_classes_csv(path: Path) -> DeclaredClasses:
    """A ``classes.csv`` (columns ``id,name``) declaring class ids and names."""
    table = read_table(path)
    if "id" not in table.columns or "name" not in table.columns:
        raise DatasetError(f"{path}: needs columns 'id' and 'name'; columns: {', '.join(table.columns)}")
    return _declared([(f"{path}: line {line}", row["id"], row["name"]) for line, row in table.rows], str(path))


# ---------------------------------------------------------------- split files


def read_split_file(path: str | os.PathLike[str], fold: int = 0) -> dict[str, str]:
    """Reads a user's fixed split: an nnU-Net ``splits_final.json`` or a single split object.

    Args:
        path: a JSON list of folds, each ``{"train": [ids], "val": [ids]}`` (nnU-Net), or one
            object ``{"train": [...], "val": [...], "test": [...]}`` (any split names
            matching ``[a-z][a-z0-9_]*``).
        fold: which fold of a list to use (0 for a single object).

    Returns:
        ``{case id: split name}``, ids mapped by :func:`~volprep.names.safe_case_id` so they
        match discovery's.

    Raises:
        DatasetError: a missing or unreadable file, bad JSON, a fold out of range, a split
            that is not a list of ids, or an id in two splits; naming the file (and fold, id).
    """
    file = Path(path)
    data = parse_json(file)
    if isinstance(data, dict):
        if fold != 0:
            raise DatasetError(f"{file}: fold {fold}: the file holds one split (an object), not a list of folds: use fold 0")
        where, splits = f"{file}", data
    elif isinstance(data, list):
        if not data:
            raise DatasetError(f"{file}: an empty list of folds")
        if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < len(data):
            raise DatasetError(f"{file}: fold {fold} is out of range: the file has {len(data)} folds (0..{len(data) - 1})")
        where, splits = f"{file}: fold {fold}", data[fold]
        if not isinstance(splits, dict):
            raise DatasetError(f"{where}: expected an object like {{\"train\": [...], \"val\": [...]}}, got {type(splits).__name__}")
    else:
        raise DatasetError(f"{file}: expected a list of folds or one object of splits, got {type(data).__name__}")
    found: dict[str, str] = {}
    for name, members in splits.items():
        if not _SPLIT_NAME.fullmatch(name):
            raise DatasetError(f"{where}: split {name!r}: expected a name like 'train', 'val' or 'test' "
                               "(lower case: a letter, then letters, digits or '_')")
        if not isinstance(members, list) or not all(isinstance(m, str) and m.strip() for m in members):
            raise DatasetError(f"{where}: {name!r} expected a list of case ids (strings)")
        for raw in members:
            case_id = safe_case_id(raw)
            other = found.setdefault(case_id, name)
            if other != name:
                raise DatasetError(f"{where}: case {case_id!r} is in both {other!r} and {name!r}")
    return found
