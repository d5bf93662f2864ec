"""The ``volprep`` command line: a thin layer over the API.

``main(argv) -> int`` parses arguments and calls one API function a command; every error
a user can act on becomes one line on stderr and an exit status (0 ok, 1 the job failed,
2 bad usage or config, 3 finished with failed cases; ``verify``: 1 on a mismatch).

SIGINT and SIGTERM, however many and whenever they come, end a command with one line
(``volprep: interrupted (SIGINT)``), its worker processes killed and status 130 or 143
(:mod:`volprep.interrupts`).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

from volprep import __version__, backends, report_process
from volprep.errors import ConfigError, DatasetError, JobError, UsageError, VolprepError
from volprep.interrupts import Interrupted, Trap, as_interrupted, exit_now, interrupted_line

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="volprep", description="Preprocess 3D medical volumes into sharded TFRecords.")
    p.add_argument("--version", action="version", version=f"volprep {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("shards", help="convert a dataset into sharded TFRecords")
    s.add_argument("data", help="dataset folder (MSD, imagesTr/labelsTr, volumes + labels.csv) or a CSV/TSV file; "
                   "a local path or a URL (s3://, gs://)")
    s.add_argument("--out", required=True, help="output folder, or an object-store URL (s3://bucket/prefix, gs://...)")
    s.add_argument("--cache", metavar="DIR", help="local folder of the conversion cache (default: OUT/cache; "
                   "for a URL OUT, ~/.cache/volprep/<hash of OUT>)")
    s.add_argument("--config", help="pipeline TOML (default: built-in defaults)")
    s.add_argument("--workers", type=int, help="local worker processes (default: all cores; none, converting in this "
                   "process, for a dataset under 32 MiB on disk)")
    s.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://10.0.0.5:8786")
    s.add_argument("--seed", type=int, help="overrides [job] seed")
    s.add_argument("--on-error", choices=("skip", "fail"), help="overrides [job] on_error")
    s.add_argument("--memory-limit", help="memory the cases in flight may use together, e.g. 8GiB")
    s.add_argument("--quiet", action="store_true", help="no progress output")
    s.add_argument("--no-report", action="store_true", help="skip the PNG/HTML report")
    s.add_argument("--rebuild", action="store_true", help="rewrite every shard, even where new cases could be "
                   "appended (needed when cases were removed or changed since the published shards)")

    v = sub.add_parser("verify", help="check shards against the manifest (sha256, counts, full parse)")
    v.add_argument("out")
    v.add_argument("--no-parse", action="store_true", help="skip the TensorFlow parse of every record")

    i = sub.add_parser("inspect", help="a human summary of a shard folder's manifest")
    i.add_argument("out")

    b = sub.add_parser("bench", help="measure what volprep.load delivers on this machine")
    b.add_argument("out")
    b.add_argument("--split", default="train")
    b.add_argument("--batch-size", type=int, default=4)
    b.add_argument("--batches", type=int, default=20, help="batches to time (after warm-up)")
    b.add_argument("--step-ms", type=float, help="your model's step time: would training wait on input?")
    b.add_argument("--model", action="store_true", help="time a reference 3D CNN step on the same batches")

    d = sub.add_parser("demo", help="write the built-in demo dataset (MSD layout)")
    d.add_argument("dir")
    d.add_argument("--cases", type=int, default=30)
    d.add_argument("--seed", type=int, default=0)

    r = sub.add_parser("report", help="(re)write OUT/report/ (PNG plots and index.html)")
    r.add_argument("out")

    pr = sub.add_parser("prepare", help="apply a job's preprocessing to new scans (model inputs + scan info)")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="scan files (one file a scan)")
    pr.add_argument("--like", required=True, metavar="OUT", help="the shard folder whose job to apply")
    pr.add_argument("--save", required=True, metavar="DIR", help="writes DIR/<name>.npy (the input) and DIR/<name>.json (its info)")
    pr.add_argument("--dtype", choices=("float32", "record"), default="float32",
                    help="float32 (what the loader feeds a model) or the records' own dtype")

    iv = sub.add_parser("invert", help="map a prediction on the record grid back to its scan, as NIfTI")
    iv.add_argument("prediction", metavar="PRED", help=".npy: labels [D, H, W] or probabilities [D, H, W, K]")
    iv.add_argument("--info", required=True, metavar="INFO.json", help="the scan info `volprep prepare` wrote")
    iv.add_argument("--save", required=True, metavar="FILE", help="the NIfTI file to write (compressed when its name ends in .gz)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs a volprep command; returns its exit status.

    Without ``argv`` (the ``volprep`` program, ``python -m volprep``) it owns the process:
    after an interrupt the signals stay ignored until it exits, and a watchdog ends it
    with the right status if that takes too long; once a command has finished, a late
    signal is ignored while the process exits, and it exits without the interpreter's
    teardown (:func:`_end_program`). With ``argv`` (tests, callers in Python) it returns
    with its signal handlers restored.
    """
    program = argv is None
    trap = Trap(program=program)
    try:
        with trap:
            logging.basicConfig(level=logging.WARNING, format="volprep: %(message)s")
            if program:
                backends.quiet_tracker_reports()
            status = _run(argv)
            backends.shutdown()  # the workers end with the command, not at interpreter exit
            if program:
                trap.ignore_from_now()
        if program:
            _end_program(status)
        return status
    except KeyboardInterrupt as err:  # the trap's Interrupted, or a Ctrl-C that came before it
        return _interrupted(trap, as_interrupted(err), program)


def _run(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(_COMMANDS[args.command](args))
    except BrokenPipeError:  # `volprep inspect OUT | head`: the reader left, nothing to say
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (ConfigError, UsageError, DatasetError) as err:
        print(f"volprep: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except JobError as err:
        print(f"volprep: job failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    except VolprepError as err:
        print(f"volprep: error: {err}", file=sys.stderr)
        return EXIT_FAILED


def _end_program(status: int) -> NoReturn:
    """Ends the finished program: the atexit handlers run (logging's flush, multiprocessing's
    finalizers), stdout and stderr are flushed, and the interpreter's teardown is skipped:
    freeing the modules of numba, LLVM and matplotlib one object at a time took ~0.4 s
    after every command, and a finished command needs nothing of it."""
    atexit._run_exitfuncs()  # what sys.exit would run; os._exit runs none of it
    exit_now(status)


def _interrupted(trap: Trap, err: Interrupted, program: bool) -> int:
    """Stops the workers, says so in one line, and ends the command with 128 + the signal."""
    stopped = backends.stop()
    if not trap.claim_exit():  # the watchdog is ending the process right now
        threading.Event().wait()
    print(interrupted_line(err), file=sys.stderr)
    if program and not stopped:
        # A pool did not shut down in time: interpreter shutdown would wait for it. Its
        # workers die with this process (PR_SET_PDEATHSIG).
        exit_now(err.exit_status)
    if not program:
        trap.restore()
    # The program exits normally (finalizers release the pool's semaphores), the signals
    # still ignored; the watchdog ends it if that blocks.
    return err.exit_status


def _shards(args: argparse.Namespace) -> int:
    # First thing: the report's process imports matplotlib while this one imports the stages
    # and runs the job (volprep.report_process).
    report = None if args.no_report else report_process.start()
    try:
        return _job(args, report)
    finally:
        if report is not None:
            report.close()


def _job(args: argparse.Namespace, report: report_process.ReportProcess | None) -> int:
    from volprep.config import load_config, parse_size
    from volprep.runner import run_job
    from volprep.summary import summary_text

    config = load_config(args.config).with_overrides(seed=args.seed, on_error=args.on_error)
    memory = parse_size(args.memory_limit, key="--memory-limit", source="command line") if args.memory_limit else None
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    workers = args.workers
    if workers is not None and not args.scheduler:  # a Dask cluster has its own worker count
        workers, reason = backends.worker_count(workers, backends.usable_cores())
        if reason is not None:
            print(f"volprep: --workers {args.workers} capped to {workers} ({reason})", file=sys.stderr)
    if args.cache is not None and "://" in args.cache:
        raise UsageError(f"--cache {args.cache}: the cache must be a local folder (it is read at random, a case at a time)")
    result = run_job(args.data, args.out, config, workers=workers, scheduler=args.scheduler,
                     memory_limit=memory, quiet=args.quiet, cache_dir=args.cache, rebuild=args.rebuild)
    if report is not None:
        report.write_warned(result)
    print(summary_text(result))
    return result.exit_code


@contextlib.contextmanager
def _tensorflow_quietly() -> Iterator[None]:
    """Runs the block with stderr (fd 2) pointed at /dev/null, for TensorFlow's sake.

    TensorFlow prints start-up and per-op lines (absl's pre-init notice, oneDNN, CUDA
    probing, dataset defaults) straight to fd 2, whatever TF_CPP_MIN_LOG_LEVEL says
    (2.21); on a command's stderr, where its one-line results go, they are noise. Only the
    commands do this, never the library; Python's own output is flushed first and a
    traceback of an error escaping the block is printed after fd 2 is restored.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _verify(args: argparse.Namespace) -> int:
    from volprep.verify import verify

    with _tensorflow_quietly():
        problems = verify(args.out, parse=not args.no_parse)
    for line in problems:
        print(f"volprep verify: {line}", file=sys.stderr)
    if problems:
        return EXIT_FAILED
    print(f"volprep verify: {args.out}: all shards match the manifest")
    return EXIT_OK


def _inspect(args: argparse.Namespace) -> int:
    from volprep.manifest import read_manifest
    from volprep.summary import inspect_text

    print(inspect_text(read_manifest(args.out), args.out))
    return EXIT_OK


def _bench(args: argparse.Namespace) -> int:
    from volprep.bench import bench_text, measure_loader

    with _tensorflow_quietly():
        figures = measure_loader(args.out, split=args.split, batch_size=args.batch_size,
                                 batches=args.batches, model=args.model)
    print(bench_text(figures, step_ms=args.step_ms))
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from volprep.demo import write_demo

    path = write_demo(Path(args.dir), n_cases=args.cases, seed=args.seed)
    print(f"volprep demo: wrote {args.cases} cases to {path}")
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from volprep.report import write_report

    path = write_report(args.out)
    print(f"volprep report: {path}")
    return EXIT_OK


def _prepare(args: argparse.Namespace) -> int:
    from volprep.errors import InputError
    from volprep.inference import output_stem, prepare_to

    stems = [output_stem(image) for image in args.images]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise UsageError(f"several scans would be saved as {twice[0]!r} in {args.save}: prepare them one at a time")
    failed = 0
    for image in args.images:
        try:
            array_path, info_path, x = prepare_to(image, args.like, args.save,
                                                  dtype="float32" if args.dtype == "float32" else None)
        except InputError as err:  # this scan is refused; the others go on
            print(f"volprep: error: {err}", file=sys.stderr)
            failed += 1
            continue
        print(f"volprep prepare: {image} -> {array_path} {list(x.shape)} {x.dtype}, {info_path}")
    return EXIT_FAILED if failed else EXIT_OK


def _invert(args: argparse.Namespace) -> int:
    from volprep.inference import invert_file

    path, out = invert_file(args.prediction, args.info, args.save)
    kind = "probabilities" if out.ndim == 4 else "labels"
    print(f"volprep invert: {args.prediction} -> {path} ({kind} {list(out.shape)} on the scan's grid)")
    return EXIT_OK


_COMMANDS = {
    "shards": _shards,
    "verify": _verify,
    "inspect": _inspect,
    "bench": _bench,
    "demo": _demo,
    "report": _report,
    "prepare": _prepare,
    "invert": _invert,
}
