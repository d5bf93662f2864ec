"""Progress for long stages: a bar on a terminal, periodic plain lines in batch logs.

``--quiet`` silences both. Lines go to stderr so stdout stays clean for the summary.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO


class Progress:
    """Counts the tasks of one stage; a tqdm bar on a TTY, a line every ``interval`` s otherwise."""

    def __init__(self, total: int, desc: str, *, quiet: bool = False, stream: TextIO | None = None,
                 interval: float = 10.0) -> None:
        self.total, self.desc, self.quiet = total, desc, quiet
        self.stream = stream or sys.stderr
        self.interval = interval
        self.done = 0
        self.start = time.monotonic()
        self._last_line = self.start
        self._bar = None
        if not quiet and self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="case" if "case" in desc else "it",
                             file=self.stream, dynamic_ncols=True, leave=True)

    def update(self, n: int = 1, status: str | None = None) -> None:
        """Counts ``n`` finished tasks; ``status`` is shown beside the bar."""
        self.done += n
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(n)
            if status:
                self._bar.set_postfix_str(status, refresh=False)
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval or self.done == self.total:
            self._last_line = now
            rate = self.done / max(now - self.start, 1e-9)
            print(f"{self.desc}: {self.done}/{self.total} ({rate:.1f}/s)", file=self.stream, flush=True)

    def write(self, line: str) -> None:
        """Prints a line without breaking the bar (failures, notes)."""
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
