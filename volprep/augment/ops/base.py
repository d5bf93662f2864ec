"""What an augmentation op is: the :class:`Op` protocol, its config :class:`Key`, and helpers.

An op is one unit of augmentation (a flip, an affine, gamma, ...), usually one module of
:mod:`volprep.augment.ops` whose module-level names satisfy :class:`Op` (a class instance
does as well). It owns:

* ``NAME``: stable forever. It names the op's entry in the recorded parameters
  (:class:`volprep.augment.spec.Params`) and seeds the op's own random streams: numpy draws
  from ``rng_for(job_seed, case_id, copy, NAME)``, TensorFlow from the step seed folded in
  with :func:`stable_id` ``(NAME)``. So adding, removing or reordering ops never changes what
  another op draws.
* ``KEYS``: the ``[augment]`` config keys it owns, each with a default and a check that
  normalises the value (lists become tuples) or raises ``ConfigError`` naming
  ``augment.<key>``. :class:`volprep.augment.spec.Augment` gets one field per key.
* ``active(cfg)``: whether the configured values (``cfg``: ``{key: value}`` for the op's own
  keys) can change a volume at all; an inactive op is neither sampled nor run.
* ``sample(cfg, rng, shape)``: the op's parameters (a JSON-able dict of plain Python values)
  from its own ``numpy.random.Generator``; ``decode(values)`` is the inverse of JSON (lists
  back to tuples; unknown or missing names raise ``ValueError``) and ``is_identity(params)``
  says when they change nothing (such entries are not recorded).
* ``apply(params, image, mask)``: the deterministic numpy twin: ``image`` ``[D, H, W, C]``
  float32, ``mask`` ``[D, H, W]`` or None, returned in the same form.
* ``tf_sample(cfg, seed, batch, shape)``: the same distribution for a whole batch, drawn
  with stateless TF ops from the op's own ``seed`` (a ``[2]`` tensor); ``tf_params(values,
  shape)`` stacks numpy-sampled parameters (``None`` for an example the op leaves alone)
  into the same form; ``tf_apply(batch_params, images, masks, jit_compile)`` renders them on
  ``[B, D, H, W, C]`` images and ``[B, D, H, W]`` masks. The batch parameters are a dict of
  tensors and static Python values (a plane, a flag) only the op itself reads.

Ops run in the order of the registry (:mod:`volprep.augment.registry`). TensorFlow is
imported inside the TF functions only: the numpy path (converter workers) never loads it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from volprep.errors import ConfigError
from volprep.seeds import stable_int

Settings = Mapping[str, Any]
"""An op's configured values: ``{key: normalised value}`` for the keys it owns."""
Values = dict[str, Any]
"""An op's sampled parameters for one volume: ``{param: plain JSON-able value}``."""


@dataclasses.dataclass(frozen=True)
class Key:
    """One ``[augment]`` config key: its name, its default and the check that normalises it.

    ``check(value, key)`` returns the normalised value (hashable: tuples, floats) or raises
    :class:`volprep.errors.ConfigError` naming ``augment.<key>``.
    """

    name: str
    default: Any
    check: Callable[[Any, str], Any]


class Op(Protocol):
    """One augmentation op (see the module docstring for the contract of each member)."""

    @property
    def NAME(self) -> str: ...  # read-only: an op module defines it as a constant

    @property
    def KEYS(self) -> tuple[Key, ...]: ...

    def active(self, cfg: Settings) -> bool: ...

    def sample(self, cfg: Settings, rng: np.random.Generator, shape: tuple[int, int, int]) -> Values: ...

    def decode(self, values: Mapping[str, Any]) -> Values: ...

    def is_identity(self, params: Mapping[str, Any]) -> bool: ...

    def apply(self, params: Mapping[str, Any], image: np.ndarray,
              mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]: ...

    def tf_sample(self, cfg: Settings, seed: Any, batch: Any, shape: tuple[int, int, int]) -> dict[str, Any]: ...

    def tf_params(self, values: Sequence[Mapping[str, Any] | None], shape: tuple[int, int, int]) -> dict[str, Any]: ...

    def tf_apply(self, params: Mapping[str, Any], images: Any, masks: Any,
                 jit_compile: bool) -> tuple[Any, Any]: ...


def stable_id(name: str) -> int:
    """The 31-bit id an op's TF seed is folded in with: a stable hash of its name."""
    return stable_int(name) % 2**31


# ---------------------------------------------------------------- config checks


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def number(value: Any, key: str, *, minimum: float | None = None, maximum: float | None = None) -> float:
    """A finite number within ``[minimum, maximum]``, as a float."""
    if not _is_number(value):
        raise ConfigError(None, f"augment.{key}", f"expected a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(None, f"augment.{key}", f"must be >= {minimum:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(None, f"augment.{key}", f"must be <= {maximum:g}, got {value!r}")
    return float(value)


def non_negative(value: Any, key: str) -> float:
    """A finite number >= 0."""
    return number(value, key, minimum=0)


def value_range(value: Any, key: str, *, positive: bool) -> tuple[float, float]:
    """``[low, high]`` with ``low <= high`` (both > 0 when ``positive``), as a tuple of floats."""
    items = list(value) if isinstance(value, list | tuple) else None
    if items is None or len(items) != 2 or not all(_is_number(v) for v in items):
        raise ConfigError(None, f"augment.{key}", f"expected [low, high], got {value!r}")
    low, high = float(items[0]), float(items[1])
    if low > high:
        raise ConfigError(None, f"augment.{key}", f"need low <= high, got {value!r}")
    if positive and low <= 0:
        raise ConfigError(None, f"augment.{key}", f"values must be > 0, got {value!r}")
    return low, high


def axis(value: Any, key: str) -> int:
    """A spatial axis 0, 1 or 2."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2:
        raise ConfigError(None, f"augment.{key}", f"axes are spatial axes 0, 1 or 2, got {value!r}")
    return int(value)


# ---------------------------------------------------------------- recorded parameters


def decode_fields(op: str, values: Mapping[str, Any], fields: Mapping[str, Callable[[Any], Any]]) -> Values:
    """``values`` with exactly the names of ``fields``, each converted by its function.

    Raises:
        ValueError: a name missing, unknown, or a value that does not convert.
    """
    if not isinstance(values, Mapping):
        raise ValueError(f"augmentation op {op!r}: expected an object of parameters, got {values!r}")
    missing = sorted(set(fields) - set(values))
    unknown = sorted(set(values) - set(fields))
    if missing or unknown:
        raise ValueError(f"augmentation op {op!r}: unknown parameter(s) {unknown}, missing {missing}")
    try:
        return {name: convert(values[name]) for name, convert in fields.items()}
    except (TypeError, ValueError) as err:
        raise ValueError(f"augmentation op {op!r}: bad parameter value: {err}") from None


def floats(value: Any) -> tuple[float, ...]:
    """A sequence of numbers as a tuple of floats."""
    return tuple(float(v) for v in value)


def ints(value: Any) -> tuple[int, ...]:
    """A sequence of integers as a tuple of ints."""
    return tuple(int(v) for v in value)
