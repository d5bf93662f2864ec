"""Test-only fault injection, loaded by every Python process started with this folder on
``PYTHONPATH`` (the CLI under test, its loky workers, Dask workers).

When ``VOLPREP_TEST_HOLD_CASE=<case_id>:<folder>`` is set and ``<folder>`` exists, the
process that converts ``<case_id>`` writes a file named after its pid into ``<folder>``
and sleeps (up to ``HOLD_SECONDS``) before converting it, so a test can kill exactly that
worker from outside. volprep itself knows nothing of this: the hook wraps
``volprep.convert.convert_case`` here, before anything imports it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

HOLD_ENV = "VOLPREP_TEST_HOLD_CASE"
HOLD_SECONDS = 120.0


def _install() -> None:
    value = os.environ.get(HOLD_ENV)
    if not value:
        return
    target, _, folder = value.partition(":")
    import volprep.convert as convert

    original = convert.convert_case

    def convert_case(case, *args, **kwargs):  # type: ignore[no-untyped-def]
        if case.case_id == target and folder and Path(folder).is_dir():
            Path(folder, str(os.getpid())).write_text(case.case_id)
            deadline = time.monotonic() + HOLD_SECONDS
            while time.monotonic() < deadline:
                time.sleep(0.05)
        return original(case, *args, **kwargs)

    # pickled by reference as volprep.convert.convert_case: a worker resolves it to its own
    # (equally wrapped) function
    convert_case.__module__ = original.__module__
    convert_case.__qualname__ = original.__qualname__
    convert.convert_case = convert_case


_install()
