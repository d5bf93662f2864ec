"""Explicit, stable seed derivation: no global random state anywhere in volprep.

Seeds are derived per element from a job seed and stable keys (a case id, a copy index),
so the same inputs give the same random draws whatever process, machine or order runs
them. Python's ``hash()`` is salted per process and is never used for this.
"""

from __future__ import annotations

import hashlib

import numpy as np


def stable_int(text: str) -> int:
    """A 63-bit non-negative integer from a string, identical in every process."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") >> 1


def rng_for(seed: int, *keys: str | int) -> np.random.Generator:
    """A numpy Generator seeded by ``(seed, *keys)``; strings are hashed with :func:`stable_int`."""
    entropy = [int(seed)] + [stable_int(k) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(entropy)


def order_key(seed: int, *keys: str | int) -> bytes:
    """A salted sort key for a record: records ordered by it are globally shuffled."""
    blob = "\x1f".join([str(seed), *map(str, keys)]).encode("utf-8")
    return hashlib.sha256(b"volprep-order\x00" + blob).digest()
