"""One description of a 3D augmentation, and the sampling of its parameters.

This module owns the *spec* half of the "one transform spec, two executors" rule, built
from the op table :data:`volprep.augment.registry.OPS`:

* :class:`Augment` is the configured distribution (the ``[augment]`` TOML table): one
  frozen dataclass field per config key the ops own (validated by the owning op, errors
  name ``augment.<key>``), plus ``seed``, the seed online augmentation falls back to.
* :func:`sample` draws one :class:`Params` for one volume. There is no global random state
  and no default: every op draws from its own generator,
  ``volprep.seeds.rng_for(job_seed, case_id, copy, op name)``, so an op added to the table
  never changes what the others draw. Only *active* ops (whose configured values can change
  a volume) are sampled.
* :class:`Params` is what was drawn: ``shape`` and ``{op name: {param: value}}``. An op
  whose parameters are the identity is left out (it would render nothing), so the JSON
  holds only what acts. It is recorded as canonical JSON (``"version": 2``) in each
  augmented record's ``augment`` feature and in ``plan.json``; :meth:`Params.from_dict`
  also reads the flat version 1 (:mod:`volprep.augment.legacy`) into the same rendering.

:mod:`volprep.augment.numpy_ops` (offline, per volume) and :mod:`volprep.augment.tf_ops`
(online, batched, stateless) run the ops of a :class:`Params` or an :class:`Augment` in
table order; tests hold the two to each other. Voxel coordinates are ``(i, j, k)`` = array
axes ``(0, 1, 2)`` of a ``[D, H, W, C]`` image; each op module documents its own conventions.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar, dataclass_transform

import numpy as np

from volprep.augment import legacy
from volprep.augment.ops.affine import (
    MAX_ROTATE_DEG,
    MAX_SHEAR,
    SHEAR_INDEX,
    affine_matrix,
    pull_passes,
    rotation_matrix,
)
from volprep.augment.ops.base import Op, Settings
from volprep.augment.registry import OPS, by_name, check_table
from volprep.errors import ConfigError
from volprep.seeds import rng_for

__all__ = [
    "MAX_ROTATE_DEG", "MAX_SHEAR", "PARAMS_VERSION", "SHEAR_INDEX", "Augment", "Params",
    "affine_matrix", "pull_passes", "rotation_matrix", "sample",
]

PARAMS_VERSION = 2  # 1: flat fields, one shared random stream; 2: {op name: params}, a stream per op

_C = TypeVar("_C", bound=type)


@dataclass_transform(frozen_default=True)
def _with_keys(ops: Sequence[Op]) -> Callable[[_C], _C]:
    """Makes a class a frozen dataclass with one field per config key of ``ops`` (first) and
    records ``ops`` as its ``OPS``; the class's own annotated fields (``seed``) come last."""
    table = check_table(ops)

    def build(cls: _C) -> _C:
        own = dict(cls.__dict__.get("__annotations__", {}))
        inherited = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        keys = [(op, key) for op in table for key in op.KEYS if key.name not in inherited]
        cls.__annotations__ = {**{key.name: "Any" for _, key in keys}, **own}
        for _, key in keys:
            setattr(cls, key.name, key.default)
        setattr(cls, "OPS", table)  # noqa: B010 (a ClassVar the class declares)
        if keys:
            lines = "\n".join(f"        {key.name}: owned by op {op.NAME!r}" for op, key in keys)
            cls.__doc__ = f"{(cls.__doc__ or '').rstrip()}\n\n    Keys from the op table:\n{lines}\n"
        return dataclasses.dataclass(frozen=True)(cls)  # type: ignore[return-value]

    return build


@_with_keys(OPS)
class Augment:
    """The distribution of a 3D augmentation (the ``[augment]`` table), frozen and hashable.

    Fields: one per config key of the op table (:data:`volprep.augment.registry.OPS`),
    documented in the op's module, each validated and normalised by its op (lists become
    tuples); and ``seed``, the seed online augmentation falls back to when the loader is given
    none (a non-negative integer or None).
    """

    seed: int | None = None
    OPS: ClassVar[tuple[Op, ...]]

    def __post_init__(self) -> None:
        for op in self.OPS:
            for key in op.KEYS:
                object.__setattr__(self, key.name, key.check(getattr(self, key.name), key.name))
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise ConfigError(None, "augment.seed", f"expected a non-negative integer, got {self.seed!r}")

    def settings(self, op: Op) -> Settings:
        """``{key: value}`` of the keys ``op`` owns: what its ``sample`` and ``active`` read."""
        return {key.name: getattr(self, key.name) for key in op.KEYS}

    def active_ops(self) -> tuple[Op, ...]:
        """The ops, in table order, whose configured values can change a volume."""
        return tuple(op for op in self.OPS if op.active(self.settings(op)))

    @property
    def is_identity(self) -> bool:
        """True when every sample leaves every volume unchanged."""
        return not self.active_ops()

    @classmethod
    def with_ops(cls, ops: Sequence[Op]) -> type[Augment]:
        """The ``Augment`` class of another op table: the keys of ops not in this class's table
        are added, and samples and executors run ``ops`` in their order. This is how
        ``Augment`` itself is built from the registry; it lets a test or an experiment try an op
        before it earns its line in :data:`~volprep.augment.registry.OPS`.

        Raises:
            ValueError: ``ops`` leaves out an op of this class's table (its keys would stay
                but go unchecked), or repeats a name or a key.
        """
        missing = sorted({op.NAME for op in cls.OPS} - {op.NAME for op in ops})
        if missing:
            raise ValueError(f"an extended op table must keep every op of {cls.__name__}; missing {missing}")
        sub = type(cls.__name__, (cls,), {"__module__": cls.__module__, "__doc__": cls.__doc__,
                                          "__qualname__": cls.__qualname__})
        return _with_keys(ops)(sub)


@dataclasses.dataclass(frozen=True)
class Params:
    """One sampled augmentation: what :func:`volprep.augment.numpy_ops.apply` renders.

    Attributes:
        shape: the spatial shape ``(D, H, W)`` the parameters were sampled for.
        ops: ``{op name: {param: value}}`` in table order, values normalised by the op's
            ``decode`` (tuples, floats); an op whose parameters are the identity is dropped.
        table: the op table that reads and renders them (not recorded: the registry's).

    Raises:
        ValueError: a shape that is not 3D, an unknown op, or parameters the op refuses.
    """

    shape: tuple[int, int, int]
    ops: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    table: tuple[Op, ...] = dataclasses.field(default=OPS, compare=False, repr=False)

    def __post_init__(self) -> None:
        shape = tuple(int(v) for v in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"Params need a 3D spatial shape, got {self.shape}")
        known = by_name(self.table)
        unknown = sorted(set(self.ops) - set(known))
        if unknown:
            raise ValueError(f"unknown augmentation op(s): {', '.join(unknown)}; known: {', '.join(known)}")
        ops: dict[str, Mapping[str, Any]] = {}
        for op in self.table:
            if op.NAME in self.ops:
                values = op.decode(self.ops[op.NAME])
                if not op.is_identity(values):
                    ops[op.NAME] = values
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "ops", ops)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles as ``(shape, ops)`` (ops are modules, which do not pickle): the registry's table only."""
        if tuple(op.NAME for op in self.table) != tuple(op.NAME for op in OPS):
            raise TypeError("only Params read by the registry's op table can be pickled; send to_json() instead")
        return (Params, (self.shape, self.ops))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (lists for tuples), what :meth:`to_json` writes."""
        out = {"version": PARAMS_VERSION, "shape": list(self.shape), "ops": self.ops}
        return json.loads(json.dumps(out, allow_nan=False))  # type: ignore[no-any-return]

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no spaces, floats in Python's shortest round-trip repr."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], table: Sequence[Op] = OPS) -> Params:
        """Inverse of :meth:`to_dict`; also reads version 1 (flat fields; the default when
        ``"version"`` is missing) into the parameters that render the same bytes."""
        version = data.get("version", 1)
        if version == 1:
            shape, ops = legacy.v1_to_ops(data)
        elif version == PARAMS_VERSION:
            unknown = sorted(set(data) - {"version", "shape", "ops"})
            if unknown or "shape" not in data or not isinstance(data.get("ops", {}), Mapping):
                raise ValueError(f"augmentation parameters of version 2 are {{version, shape, ops}}, got {sorted(data)}")
            shape, ops = data["shape"], data.get("ops", {})
        else:
            raise ValueError(f"augmentation parameters of version {version!r}, expected 1 or {PARAMS_VERSION}")
        return cls(shape=shape, ops=ops, table=tuple(table))

    @classmethod
    def from_json(cls, text: str | bytes, table: Sequence[Op] = OPS) -> Params:
        """Inverse of :meth:`to_json` (exact: floats round-trip); reads version 1 too."""
        return cls.from_dict(json.loads(text), table)


SeedKeys = Sequence[int | str]
"""``(job_seed, *keys)``, e.g. ``(job_seed, case_id, copy)``: what a copy's draws derive from."""


def sample(aug: Augment, seed: SeedKeys, shape: Sequence[int]) -> Params:
    """Draws one :class:`Params` from ``aug`` for a volume of spatial ``shape``.

    Args:
        aug: the augmentation's distribution.
        seed: ``(job_seed, *keys)``, e.g. ``(job_seed, case_id, copy)``: each active op draws
            from ``rng_for(job_seed, *keys, op name)``. Required: an augmentation never draws
            from global state or a shared generator.
        shape: the spatial shape ``(D, H, W)`` (a trailing channel axis is ignored).

    Returns:
        The sampled parameters; the same seed keys give the same parameters.

    Raises:
        TypeError: ``seed`` is not a sequence of a non-negative integer and keys.
        ValueError: ``shape`` is not 3D.
    """
    if (not isinstance(seed, list | tuple) or not seed or isinstance(seed[0], bool)
            or not isinstance(seed[0], int | np.integer) or seed[0] < 0
            or any(isinstance(k, bool) or not isinstance(k, str | int | np.integer) for k in seed)):
        raise TypeError(f"sample() needs explicit seed keys (job_seed, case_id, copy), got {seed!r}")
    shape3 = tuple(int(v) for v in shape)[:3]
    if len(shape3) != 3 or min(shape3) < 1:
        raise ValueError(f"expected a spatial shape (D, H, W), got {tuple(shape)}")
    job_seed, keys = int(seed[0]), [k if isinstance(k, str) else int(k) for k in seed[1:]]
    drawn = {op.NAME: op.sample(aug.settings(op), rng_for(job_seed, *keys, op.NAME), shape3)  # type: ignore[arg-type]
             for op in aug.active_ops()}
    return Params(shape=shape3, ops=drawn, table=type(aug).OPS)  # type: ignore[arg-type]
