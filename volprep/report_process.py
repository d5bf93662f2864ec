"""The report drawn in a process of its own, started when a ``volprep shards`` job starts.

Importing matplotlib takes ~0.5 s, a quarter of a small job, and the job's own process is
busy all along (it converts a small dataset itself, or collects the workers' results): so
the command starts a helper process first thing (:func:`start`), which imports
:mod:`volprep.report` and matplotlib on another core and waits; once the job has published
its shards, :meth:`ReportProcess.write_warned` hands it the job's result and waits while it
writes ``OUT/report/`` with :func:`volprep.report.write_report`, the very function a
``volprep report`` runs (here with ``fork=True``: the montage is drawn by a forked child
while the helper draws the charts, on the two cores the waiting job leaves). Nothing is swallowed: what fails there (an error, or the helper
itself ending) comes back as the one warning line :func:`volprep.report.write_report_warned`
prints, in ``result.warnings``, and never changes the job's result. The helper ignores
SIGINT (a terminal's Ctrl-C reaches the whole group; the job acts on it), dies with the
job (``PR_SET_PDEATHSIG``) and ends when its stdin closes unused.
"""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from volprep.worker_setup import die_with_parent

if TYPE_CHECKING:
    from volprep.job_result import JobResult

_SERVE = "import sys; sys.path.insert(0, sys.argv[1]); from volprep.report_process import serve; serve()"


class ReportProcess:
    """A started helper process; :meth:`write_warned` once, then :meth:`close`."""

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parents[1])  # this volprep, wherever it is imported from
        # Started with SIGINT blocked (the mask survives exec) until it ignores it: a Ctrl-C
        # in between would print a traceback of its imports (see worker_setup.sigint_blocked).
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", _SERVE, root], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def write_warned(self, result: JobResult) -> None:
        """Writes ``OUT/report/`` in the helper; a failure is one warning line (and in
        ``result.warnings``), as :func:`volprep.report.write_report_warned` says it."""
        start = time.perf_counter()
        try:
            answer, _ = self.proc.communicate(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
            problem = pickle.loads(answer) if answer else f"the report process ended (status {self.proc.returncode})"
        except (OSError, pickle.UnpicklingError, EOFError) as err:  # it died before reading or answering
            problem = f"the report process ended ({type(err).__name__}: {err})"
        if problem is not None:
            line = f"report not written: {problem}"
            result.warnings.append(line)
            print(f"volprep: warning: {line}", file=sys.stderr, flush=True)
        result.timings["report"] = round(time.perf_counter() - start, 3)

    def close(self) -> None:
        """Ends the helper if it still runs (the job failed or was interrupted)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


def start() -> ReportProcess:
    """Starts the helper process (it imports the report's modules at once, then waits)."""
    return ReportProcess()


def serve() -> None:
    """The helper: reads a pickled ``JobResult`` on stdin, writes its report, and answers on
    stdout with ``None`` or the problem (``"TypeName: first line"``), pickled."""
    import logging
    import os

    die_with_parent(os.getppid())  # SIGINT ignored (then unblocked), SIGKILL when the job dies
    logging.basicConfig(level=logging.WARNING, format="volprep: %(message)s")
    try:  # all of it now, while the job runs
        from volprep.report import describe_failure, write_report
        from volprep.report_figures import warm_up

        warm_up()
    except Exception as err:  # noqa: BLE001 - said when the report is asked for
        failed: Exception | None = err
    else:
        failed = None
    data = sys.stdin.buffer.read()
    if not data:  # the job ended without asking
        return
    if failed is not None:
        problem: str | None = f"{type(failed).__name__}: {failed}"
    else:
        try:
            result = pickle.loads(data)
            write_report(result.out_dir, result, fork=hasattr(os, "fork"))  # no threads here
            problem = None
        except Exception as err:  # noqa: BLE001 - sent back, then said as one warning line
            problem = describe_failure(err)
    sys.stdout.buffer.write(pickle.dumps(problem))
    sys.stdout.buffer.flush()
