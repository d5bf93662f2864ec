"""The table of augmentation ops: which ops exist, and the order they run in.

:data:`OPS` is the one place an op is listed. :class:`volprep.augment.spec.Augment` gets one
config field per key the listed ops own, :func:`volprep.augment.spec.sample` draws each
active op's parameters from its own stream, :class:`~volprep.augment.spec.Params` records
them per op name, and both executors (:mod:`~volprep.augment.numpy_ops`,
:mod:`~volprep.augment.tf_ops`) run the ops in this order. Adding an op is one module under
:mod:`volprep.augment.ops` and one line here; because every op draws from a stream of its
own (seeded by its name), the new op leaves every other op's parameters unchanged.

Order of application (fixed since version 1 of the parameters): flips, quarter turns, the
affine, the Fourier shift, intensity scale/shift, gamma, noise.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from volprep.augment.ops.base import Op

# One line an op: its module (each module is an op: see volprep.augment.ops.base.Op).
OP_MODULES: tuple[str, ...] = (
    "volprep.augment.ops.flip",
    "volprep.augment.ops.rot90",
    "volprep.augment.ops.affine",
    "volprep.augment.ops.fourier_shift",
    "volprep.augment.ops.intensity",
    "volprep.augment.ops.gamma",
    "volprep.augment.ops.noise",
)
OPS: tuple[Op, ...] = tuple(importlib.import_module(name) for name in OP_MODULES)  # type: ignore[misc]

RESERVED_KEYS = frozenset({"seed"})
"""``[augment]`` keys that belong to :class:`~volprep.augment.spec.Augment` itself."""


def check_table(ops: Sequence[Op]) -> tuple[Op, ...]:
    """``ops`` as a tuple, refused if two ops share a name or a config key.

    Raises:
        ValueError: a duplicate op name, a key owned twice, or a reserved key.
    """
    names: set[str] = set()
    keys: set[str] = set(RESERVED_KEYS)
    for op in ops:
        if op.NAME in names:
            raise ValueError(f"augmentation op {op.NAME!r} is listed twice")
        names.add(op.NAME)
        for key in op.KEYS:
            if key.name in keys:
                raise ValueError(f"augmentation op {op.NAME!r}: config key {key.name!r} is already taken")
            keys.add(key.name)
    return tuple(ops)


def by_name(ops: Sequence[Op]) -> dict[str, Op]:
    """``{op name: op}`` of a table."""
    return {op.NAME: op for op in ops}
