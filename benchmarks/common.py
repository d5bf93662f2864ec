"""Shared helpers of the benchmark scripts: timing, test data, goals, tables, JSON.

The scripts in this folder measure volprep against naive pipelines and against the read
limit of the same data. They share: the benchmark heads (``volprep.demo.write_big_heads``,
written once into a cache folder and reused), the pipeline config every conversion uses,
median timing, a :class:`Goal` that knows whether it is met, the table printer and the
machine description stored with every result file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(os.environ.get("VOLPREP_BENCH_CACHE", Path(tempfile.gettempdir()) / "volprep-bench"))

FULL_SHAPE = (256, 256, 160)
QUICK_SHAPE = (48, 48, 32)


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    return float(statistics.median(values))


def time_runs(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Wall times of ``repeats`` calls of ``fn`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def machine() -> dict[str, Any]:
    """What the figures ran on: CPU model, cores, memory, Python, load average."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": model, "cores": len(os.sched_getaffinity(0)),
                            "python": platform.python_version(), "load_avg_1m": os.getloadavg()[0]}
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover - psutil is a dependency
        pass
    return info


def heads(n: int, shape: tuple[int, int, int], seed: int = 0) -> Path:
    """A folder holding ``n`` benchmark heads of ``shape`` (written once, then reused)."""
    from volprep.demo import write_big_heads

    folder = CACHE / f"heads-{'x'.join(map(str, shape))}-s{seed}"
    missing = [i for i in range(n) if not (folder / f"head_{i:03d}.nii.gz").is_file()]
    if missing:
        # write_big_heads writes heads 0..n-1 deterministically; rewriting is harmless.
        write_big_heads(folder, n, shape, seed)
    return folder


def subset(folder: Path, n: int, name: str) -> Path:
    """A dataset folder of symlinks to the first ``n`` heads of ``folder``."""
    out = CACHE / "subsets" / f"{folder.name}-{name}-{n}"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.nii.gz"):
        old.unlink()
    for i in range(n):
        (out / f"head_{i:03d}.nii.gz").symlink_to(folder / f"head_{i:03d}.nii.gz")
    return out


def config_file(target: tuple[int, int, int], shard_mb: float = 16, factor: int = 2) -> Path:
    """The benchmark pipeline: 2x block mean, crop/pad to ``target``, z-score, float16, no balance.

    No balancing and one split, so records = cases and every case is a train record. No
    fidelity sample: its PSNR/SSIM cases cost several conversions each and, falling on
    different cases in the N and 2N runs, leave stragglers that do not cancel.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"pipeline-{'x'.join(map(str, target))}-f{factor}-{shard_mb:g}mb.toml"
    path.write_text(
        "[job]\nseed = 0\nsplits = { train = 1.0 }\nfidelity_sample = 0\n"
        f"shard_size_mb = {shard_mb}\n"
        "[preprocess]\nreduce = \"downsample\"\n"
        f"factor = {factor}\ntarget_shape = [{target[0]}, {target[1]}, {target[2]}]\n"
        "normalize = \"zscore\"\ndtype = \"float16\"\n"
        "[balance]\nenabled = false\n"
    )
    return path


@dataclasses.dataclass(frozen=True)
class Goal:
    """A goal of the form ``value >= target`` (or ``<=`` with ``at_most``)."""

    name: str
    value: float
    target: float
    at_most: bool = False

    @property
    def met(self) -> bool:
        if self.value <= 0:  # a difference of noisy timings (tiny --quick runs): no verdict
            return False
        return self.value <= self.target if self.at_most else self.value >= self.target

    def line(self) -> str:
        op = "<=" if self.at_most else ">="
        mark = "MET" if self.met else "NOT MET"
        return f"  [{mark:7s}] {self.name}: {self.value:.2f} (goal {op} {self.target:g})"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "met": self.met}


def table(title: str, rows: Sequence[tuple[str, str, str]], header: tuple[str, str, str]) -> str:
    """A plain-text table: a title, a header and three columns."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = [title, "  " + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
             "  " + "  ".join("-" * w for w in widths)]
    lines += ["  " + r[0].ljust(widths[0]) + "  " + r[1].rjust(widths[1]) + "  " + r[2].ljust(widths[2])
              for r in rows]
    return "\n".join(lines)


def write_result(name: str, data: dict[str, Any], quick: bool, out: Path | None = None) -> Path:
    """Writes ``data`` (plus the machine) to ``results/<name>.json`` (``<name>_quick.json``)."""
    path = out or RESULTS / (f"{name}_quick.json" if quick else f"{name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "quick": quick, "machine": machine(), **data}
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path
