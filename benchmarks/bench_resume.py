"""Benchmark: rerun after a kill at 50% against a full run, and 1- vs 2-worker scaling.

Writes 40 heads of 256x256x160 int16 (``volprep.demo.write_big_heads``) under /tmp.
Resume (``--workers 2``, medians of ``--repeats``): a full ``volprep shards`` run into a
fresh folder, and the rerun of a job SIGKILLed once half the cases are in
``cache`` (it reuses those). Scaling: the per-volume time with start-up kept apart,
``(time(2N) - time(N)) / N`` with N = 20, for ``--workers 1`` and ``--workers 2``; their
ratio is the speed-up. N = 20 > 16 keeps the runner's fidelity sample (16 cases, measured
at ~6x the cost of a conversion) out of the difference. Prints a table and writes
``benchmarks/results/resume.json`` (``resume_quick.json`` with ``--quick``: 8 tiny heads,
one repeat). The heads are deleted after.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).resolve().parent / "results"


def _cmd(data: Path, out: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "volprep", "shards", str(data), "--out", str(out),
            "--workers", str(workers), "--quiet", "--no-report"]


def timed_job(data: Path, out: Path, workers: int) -> tuple[float, dict[str, Any]]:
    """Wall time of one ``volprep shards`` subprocess, and its timings.json."""
    start = time.perf_counter()
    proc = subprocess.run(_cmd(data, out, workers), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"volprep shards failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, json.loads((out / "timings.json").read_text())


def complete_cases(out: Path) -> int:
    """Cases under their final name in the cache (each is complete by construction)."""
    root = out / "cache" / "cases"
    return sum(1 for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else 0


def kill_at(data: Path, out: Path, workers: int, cases: int) -> int:
    """Starts a job, SIGKILLs it once ``cases`` are cached; returns how many were cached."""
    proc = subprocess.Popen(_cmd(data, out, workers), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[psutil.Process] = []
    while complete_cases(out) < cases:
        if proc.poll() is not None:
            raise RuntimeError("the job finished before it could be killed")
        with contextlib.suppress(psutil.NoSuchProcess):
            children = psutil.Process(proc.pid).children(recursive=True) or children
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    psutil.wait_procs(children, timeout=30)
    return complete_cases(out)


def _median(values: list[float], digits: int = 2) -> float:
    return round(statistics.median(values), digits) if values else 0.0


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny heads, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--part", choices=("all", "resume", "scaling"), default="all")
    parser.add_argument("--out", type=Path, help="result JSON (default: benchmarks/results/resume[_quick].json)")
    args = parser.parse_args(argv)
    from volprep.demo import write_big_heads

    repeats = 1 if args.quick else args.repeats
    n, shape = (8, (32, 32, 20)) if args.quick else (40, (256, 256, 160))
    work = Path(tempfile.mkdtemp(prefix="volprep-bench-resume-", dir="/tmp"))
    try:
        data = work / "all"
        paths = write_big_heads(data, n, shape)
        half = work / "half"
        half.mkdir()
        for path in paths[: n // 2]:
            os.link(path, half / path.name)
        full, rerun, reused, full_convert, rerun_convert = [], [], [], [], []
        for r in range(repeats if args.part in ("all", "resume") else 0):
            wall, timings = timed_job(data, work / f"full-{r}", 2)
            full.append(wall)
            full_convert.append(timings["convert"])
            out = work / f"killed-{r}"
            reused.append(kill_at(data, out, 2, n // 2))
            wall, timings = timed_job(data, out, 2)
            rerun.append(wall)
            rerun_convert.append(timings["convert"])
            shutil.rmtree(work / f"full-{r}")
            shutil.rmtree(out)
        resume: dict[str, Any] = {"cases": n, "shape": list(shape), "workers": 2, "repeats": repeats,
                  "full_s": _median(full), "rerun_after_kill_s": _median(rerun),
                  "full_convert_stage_s": _median(full_convert),
                  "rerun_convert_stage_s": _median(rerun_convert),
                  "cached_at_kill": reused, "full_runs_s": [round(x, 2) for x in full],
                  "rerun_runs_s": [round(x, 2) for x in rerun]}
        resume["rerun_over_full"] = round(resume["rerun_after_kill_s"] / resume["full_s"], 3) if full else 0.0

        n_scale = n // 2
        scaling: dict[str, Any] = {"shape": list(shape), "n": n_scale, "repeats": repeats}
        for workers in (1, 2):
            per_volume, per_volume_convert = [], []
            for r in range(repeats if args.part in ("all", "scaling") else 0):
                t_n, tim_n = timed_job(half, work / f"s-{workers}-{r}-n", workers)
                t_2n, tim_2n = timed_job(data, work / f"s-{workers}-{r}-2n", workers)
                per_volume.append((t_2n - t_n) / n_scale)
                per_volume_convert.append((tim_2n["convert"] - tim_n["convert"]) / n_scale)
                shutil.rmtree(work / f"s-{workers}-{r}-n")
                shutil.rmtree(work / f"s-{workers}-{r}-2n")
            scaling[f"workers_{workers}"] = {
                "per_volume_s": _median(per_volume, 3),
                "per_volume_convert_stage_s": _median(per_volume_convert, 3),
                "runs_per_volume_s": [round(x, 3) for x in per_volume],
            }
        w1, w2 = scaling["workers_1"], scaling["workers_2"]
        scaling["speedup"] = round(w1["per_volume_s"] / w2["per_volume_s"], 2) if w2["per_volume_s"] > 0 else None
        scaling["speedup_convert_stage"] = (round(w1["per_volume_convert_stage_s"] / w2["per_volume_convert_stage_s"], 2)
                                            if w2["per_volume_convert_stage_s"] > 0 else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"benchmark": "resume", "quick": args.quick, "resume": resume, "scaling": scaling,
              "part": args.part, "cores": len(os.sched_getaffinity(0)), "load_avg_1m_at_end": os.getloadavg()[0]}
    out_path = args.out or RESULTS / ("resume_quick.json" if args.quick else "resume.json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"resume: {n} heads {'x'.join(map(str, shape))}, --workers 2, medians of {repeats}")
    print(f"{'':>14} {'full run':>9} {'rerun after kill at 50%':>24} {'ratio':>6}")
    print(f"{'job wall s':>14} {resume['full_s']:>9.2f} {resume['rerun_after_kill_s']:>24.2f} {resume['rerun_over_full']:>6.3f}")
    print(f"{'convert stage s':>14} {resume['full_convert_stage_s']:>9.2f} {resume['rerun_convert_stage_s']:>24.2f} "
          f"{resume['rerun_convert_stage_s'] / max(resume['full_convert_stage_s'], 1e-9):>6.3f}")
    print(f"scaling: (time(2N) - time(N)) / N, N = {n // 2}, medians of {repeats}")
    print(f"{'workers':>8} {'s/volume (job)':>15} {'s/volume (convert stage)':>25}")
    for workers in (1, 2):
        row = scaling[f"workers_{workers}"]
        print(f"{workers:>8} {row['per_volume_s']:>15.3f} {row['per_volume_convert_stage_s']:>25.3f}")
    print(f"speed-up 2 vs 1 workers: {scaling['speedup']} (convert stage {scaling['speedup_convert_stage']}); written {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
