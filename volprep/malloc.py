"""The C allocator's settings for the loader's multi-MB tensors (glibc only).

Figures: ``benchmarks/results/loader_tuning.json`` ("allocator"; fresh processes on the
2-core reference machine).
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

log = logging.getLogger(__name__)

# allocator (same file, fresh processes): glibc serves the multi-MB tensors allocated and
# freed every step with fresh mmaps, each costing page faults. Keeping them on the heap (mmap
# threshold 32 MiB, glibc's most; trim threshold 1 GiB), arenas capped at the usable cores:
# off 332 volumes/s (user 2.41 + system 1.90 CPU ms a volume), on 483 (2.49 + 0.56), on
# without the arena cap 409 (2.57 + 0.73).
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 1 << 30
# Arenas: glibc gives threads up to 8 arenas a core, each its own heap; tf.data's threads
# spread the tensors over them, so a fresh process faults in new memory for epochs (epochs
# 2-3: 233-336 faults, 1.0 system ms a volume uncapped; 61-88, 0.35-0.52 ms capped at 2).
# None caps at the usable cores (at least 2); 0 leaves glibc's default.
MAX_ARENAS: int | None = None
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc mallopt parameter numbers


def tune_allocator() -> bool:
    """Keeps multi-MB allocations on glibc's heap, in few arenas (see above).

    Process-wide; a no-op (returning False) where the C library is not glibc. :func:`load`
    calls it every time (TensorFlow's ``from_generator`` sets the trim threshold back to
    128 KiB for the whole process: "Memory patch applied" in its log) unless
    ``tune_malloc=False``. The cost: up to :data:`TRIM_THRESHOLD_BYTES` of freed memory
    stays with each arena for reuse.

    Returns:
        True when the settings are in effect.
    """
    mallopt = _mallopt()
    if mallopt is None:
        return False
    arenas = max_arenas()
    ok = all(mallopt(param, value) for param, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
        *(((_M_ARENA_MAX, arenas),) if arenas else ())))
    log.debug("malloc: mmap threshold %d MiB, trim threshold %d MiB, arenas %s: %s", MMAP_THRESHOLD_BYTES >> 20,
              TRIM_THRESHOLD_BYTES >> 20, arenas or "glibc's default", ok)
    return ok


def max_arenas() -> int:
    """The arena cap: :data:`MAX_ARENAS`, or the usable cores (at least 2) when it is None."""
    if MAX_ARENAS is not None:
        return MAX_ARENAS
    return max(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2))


@functools.cache
def _mallopt() -> Any:
    """glibc's ``mallopt``, or None (looked up once: ``find_library`` runs ``ldconfig``)."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
