"""TOML values for the pipeline config: the types a key may hold, and the shared checks.

A config key declares its TOML types once, on its dataclass field (:func:`key`); every
table checks every value against them first (:func:`check_types`: a string is never read
as a boolean, a float never as an integer, NaN and infinity are not numbers), then the
range checks here (:func:`triple`, :func:`choice`, :func:`at_least`) run. Memory sizes
("4GiB") are parsed by :func:`parse_size`. Every refusal is a
:class:`~volprep.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from volprep.errors import ConfigError

MIN_SPACING_MM = 1e-6

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}


def parse_size(value: str | int | float, *, key: str = "size", source: str | None = None) -> int:
    """Parses a memory size such as ``"4GiB"``, ``"512MB"`` or ``1073741824`` into bytes.

    Raises:
        ConfigError: not a size, not finite, or not positive.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(source, key, f"expected a size like '4GiB', got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(source, key, f"must be a positive, finite size, got {value!r}")
        return int(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", value)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ConfigError(source, key, f"expected a size like '4GiB' or '512MB', got {value!r}")
    number = float(match.group(1))  # a long enough run of digits is inf
    if not math.isfinite(number) or int(number * _SIZE_UNITS[unit]) <= 0:
        raise ConfigError(source, key, f"must be a positive, finite size, got {value!r}")
    return int(number * _SIZE_UNITS[unit])


# --- the TOML type of every key --------------------------------------------------------

_TOML = "volprep.toml"  # the dataclass field metadata entry that holds a key's Toml
# What each TOML type reads as in a message, alone and as the items of an array or table.
# "number" is an integer or a finite float (TOML `64` is a fine shard size); no other type
# stands in for another: not a string for a boolean, a boolean for a number, a float for
# an integer, a number for a string, a table for an array.
_ONE = {"boolean": "true or false", "integer": "an integer", "number": "a finite number",
        "string": "a string", "array": "an array", "table": "a table"}
_MANY = {"boolean": "booleans", "integer": "integers", "number": "finite numbers",
         "string": "strings"}


@dataclasses.dataclass(frozen=True)
class Toml:
    """The TOML types one config key accepts (declared by :func:`_key`, checked by :func:`_check_types`).

    Attributes:
        types: the accepted types, among "boolean", "integer", "number", "string", "array",
            "table".
        items: the type of every item of an array and every value of a table.
        optional: whether the key may be absent (``None``; TOML has no null, a manifest's
            JSON has).
        hint: what a message adds to the expected types, e.g. ``"mm"``.
    """

    types: tuple[str, ...]
    items: str | None = None
    optional: bool = False
    hint: str = ""

    def expected(self) -> str:
        """The accepted types in words: ``"an integer or an array of integers"``."""
        words = [f"{_ONE[t]} of {_MANY[self.items]}" if self.items and t in ("array", "table")
                 else _ONE[t] for t in self.types]
        return " or ".join(words) + (f" ({self.hint})" if self.hint else "")


def key(*types: str, default: Any = dataclasses.MISSING, factory: Callable[[], Any] | None = None,
         items: str | None = None, hint: str = "") -> Any:
    """A config dataclass field with its TOML types; ``default=None`` makes it optional."""
    toml = Toml(types, items=items, optional=default is None, hint=hint)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={_TOML: toml})
    return dataclasses.field(default=default, metadata={_TOML: toml})


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, datetime.datetime):
        return "date-time"
    if isinstance(value, datetime.date):
        return "date"
    if isinstance(value, datetime.time):
        return "time"
    return f"Python {type(value).__name__}"


def describe(value: Any) -> str:
    """A value as a message names it: ``the string 'false'``, ``the float nan``."""
    kind = _toml_type(value)
    if kind == "boolean":
        return f"the boolean {'true' if value else 'false'}"
    if kind == "array":
        return f"the array {list(value)!r}"
    if kind == "table":
        return f"the table {dict(value)!r}"
    if kind in ("date-time", "date", "time"):
        return f"the {kind} {value.isoformat()}"
    return f"the {kind} {value!r}"


def _fits(value: Any, toml_type: str) -> bool:
    kind = _toml_type(value)
    if toml_type == "number":
        return kind == "integer" or (kind == "float" and math.isfinite(value))
    return kind == toml_type


def _check_value(value: Any, toml: Toml, key: str) -> None:
    if value is None and toml.optional:
        return
    if not any(_fits(value, t) for t in toml.types):
        raise ConfigError(None, key, f"expected {toml.expected()}, got {describe(value)}")
    if toml.items is not None and isinstance(value, list | tuple | Mapping):
        for item in value.values() if isinstance(value, Mapping) else value:
            if not _fits(item, toml.items):
                raise ConfigError(None, key, f"expected {toml.expected()}, got {describe(value)}: "
                                             f"{describe(item)} is not {_ONE[toml.items]}")


def check_types(config: Any, table: str) -> None:
    """Checks every field of a config dataclass against the TOML types it declares.

    Raises:
        ConfigError: a value of another type, naming ``table.field``.
        TypeError: a field declared without :func:`_key` (a bug, not a user error).
    """
    for field in dataclasses.fields(config):
        toml = field.metadata.get(_TOML)
        if toml is None:
            raise TypeError(f"{type(config).__name__}.{field.name} has no TOML type: declare it with key()")
        _check_value(getattr(config, field.name), toml, f"{table}.{field.name}")


# --- range checks, run after the type checks ---------------------------------------------


def triple(value: Any, key: str, *, kind: type = int, minimum: float = 1, unit: str = "") -> tuple[Any, Any, Any]:
    """A type-checked number or list of three, as a 3-tuple of ``kind`` each >= ``minimum``."""
    items = list(value) if isinstance(value, list | tuple) else [value, value, value]
    if len(items) != 3:
        raise ConfigError(None, key, f"expected a number or a list of three, got {value!r}")
    if any(v < minimum for v in items):
        raise ConfigError(None, key, f"every value must be >= {minimum:g}{' ' + unit if unit else ''}, got {value!r}")
    return tuple(kind(v) for v in items)  # type: ignore[return-value]


def choice(value: str, key: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(None, key, f"{value!r} is not one of {', '.join(map(repr, allowed))}")


def at_least(value: float, key: str, minimum: float, what: str = "") -> None:
    if value < minimum:
        raise ConfigError(None, key, f"must be >= {minimum:g}{what}, got {value!r}")


def resolve_path(path: str, base: Path | None) -> str:
    """``path`` (``~`` expanded) made absolute against ``base`` (default: the current folder)."""
    p = Path(path).expanduser()
    if base is not None and not p.is_absolute():
        p = base / p
    return str(p.resolve())
