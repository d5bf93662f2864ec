"""Benchmark: peak memory of a whole ``volprep shards`` process tree, 8 vs 96 cases.

Memory must be bounded by the work in flight (workers x one volume's working set), not
by the dataset size. This script writes 256x256x160 int16 heads
(``volprep.demo.write_big_heads``) into a temporary folder under /tmp, runs the real
command line on the first 8 and on all 96 (``--workers 2``), and samples the resident
set size of the main process and of all its descendants every 50 ms from a separate
thread (psutil). The two peaks should be close; the main process alone should not grow
with the dataset either (it holds small per-case metadata, never the arrays). Prints a
table and writes ``benchmarks/results/memory.json`` (``memory_quick.json`` with
``--quick``: 4 vs 12 heads of 64x64x40). The heads (~1.2 GB for 96) are deleted after.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).resolve().parent / "results"
MIB = 2**20


class TreeSampler(threading.Thread):
    """Samples the RSS of a process and all its descendants; keeps the peaks."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_tree = 0
        self.peak_main = 0
        self.peak_procs = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                main = self.root.memory_info().rss
                procs = self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            total = main
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += proc.memory_info().rss
            self.peak_tree = max(self.peak_tree, total)
            self.peak_main = max(self.peak_main, main)
            self.peak_procs = max(self.peak_procs, 1 + len(procs))
            self.samples += 1
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def measured_job(data: Path, out: Path, workers: int, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Runs ``volprep shards`` in a subprocess under a :class:`TreeSampler`."""
    cmd = [sys.executable, "-m", "volprep", "shards", str(data), "--out", str(out),
           "--workers", str(workers), "--quiet", "--no-report", *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.stop()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"volprep shards failed ({proc.returncode}): {stderr[-2000:]}")
    timings = json.loads((out / "timings.json").read_text())
    return {"wall_s": round(wall, 2), "peak_tree_mib": round(sampler.peak_tree / MIB, 1),
            "peak_main_mib": round(sampler.peak_main / MIB, 1), "peak_processes": sampler.peak_procs,
            "samples": sampler.samples, "timings": timings}


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (4 vs 12 heads of 64x64x40)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="result JSON (default: benchmarks/results/memory[_quick].json)")
    args = parser.parse_args(argv)
    from volprep import io
    from volprep.config import ReadConfig
    from volprep.demo import write_big_heads

    shape = (64, 64, 40) if args.quick else (256, 256, 160)
    small_n, big_n = (4, 12) if args.quick else (8, 96)
    work = Path(tempfile.mkdtemp(prefix="volprep-bench-memory-", dir="/tmp"))
    try:
        big = work / "big"
        start = time.perf_counter()
        paths = write_big_heads(big, big_n, shape)
        generate_s = time.perf_counter() - start
        small = work / "small"
        small.mkdir()
        for path in paths[:small_n]:
            os.link(path, small / path.name)
        per_case = io.estimate_working_bytes(io.read_header(paths[0], ReadConfig()))
        rows = []
        for n, data in ((small_n, small), (big_n, big)):
            row = {"cases": n, **measured_job(data, work / f"out-{n}", args.workers)}
            rows.append(row)
            shutil.rmtree(work / f"out-{n}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "memory", "quick": args.quick, "shape": list(shape), "dtype": "int16",
        "workers": args.workers, "sample_interval_s": 0.05, "generate_s": round(generate_s, 1),
        "estimated_working_set_per_case_mib": round(per_case / MIB, 1),
        "bound_workers_x_working_set_mib": round(args.workers * per_case / MIB, 1),
        "rows": rows, "peak_ratio_big_over_small": round(rows[1]["peak_tree_mib"] / rows[0]["peak_tree_mib"], 3),
        "machine": {"cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                    "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)},
    }
    out = args.out or RESULTS / ("memory_quick.json" if args.quick else "memory.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"peak memory of the process tree, {shape[0]}x{shape[1]}x{shape[2]} int16, --workers {args.workers}")
    print(f"{'cases':>6} {'peak tree MiB':>14} {'peak main MiB':>14} {'processes':>10} {'wall s':>8} {'convert s':>10}")
    for row in rows:
        print(f"{row['cases']:>6} {row['peak_tree_mib']:>14.1f} {row['peak_main_mib']:>14.1f} "
              f"{row['peak_processes']:>10} {row['wall_s']:>8.1f} {row['timings']['convert']:>10.1f}")
    print(f"working set estimate per case {result['estimated_working_set_per_case_mib']} MiB; "
          f"big/small peak ratio {result['peak_ratio_big_over_small']}; written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
