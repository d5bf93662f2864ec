"""Benchmark: reading a 256-slice DICOM series, volprep against pydicom's own decode.

Writes a 256x256x256 int16 MR series (one uncompressed file a slice, shuffled names, with
rescale slope/intercept, the test corpus' writer) into a temporary folder, then times, with
medians over ``--runs`` runs (after one warm-up run, so the page cache is warm for all):

* pydicom: ``dcmread`` + ``pixel_array`` of every file (the baseline: decode only, no
  sorting, no geometry, no rescale);
* volprep ``read_header`` (every header read and checked: sorting, spacing, geometry);
* volprep ``read_volume`` (headers, checks, then pixels; rescaled to float32).

The goal: ``read_volume`` within 2x of the baseline. Voxels are asserted equal to the
baseline's (sorted and rescaled). Prints a table and writes
``benchmarks/results/dicom.json`` (``dicom_quick.json`` with ``--quick``: 32 slices of
64x64, for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import RESULTS, median, time_runs  # noqa: E402
from dicom_corpus import write_series  # noqa: E402  (the tests' series writer)

from volprep.config import ReadConfig  # noqa: E402
from volprep.io import read_header, read_volume  # noqa: E402


def median_ms(fn: Callable[[], object], runs: int) -> float:
    """Median wall ms of ``runs`` calls after one warm-up (page cache, imports)."""
    return 1000 * median(time_runs(fn, runs))


def pydicom_decode(folder: Path) -> list[np.ndarray]:
    return [pydicom.dcmread(path).pixel_array for path in sorted(folder.iterdir())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="32 slices of 64x64 (a smoke run)")
    args = parser.parse_args(argv)
    shape = (64, 64, 32) if args.quick else (256, 256, 256)
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 4000, shape).astype(np.int16)
    cfg = ReadConfig()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "series"
        write_series(folder, stored, np.diag([0.9, 0.9, 1.2, 1.0]), slope=0.5, inter=-10.0)
        volume = read_volume(folder, cfg)
        np.testing.assert_array_equal(volume.data, stored.astype(np.float32) * 0.5 - 10.0)
        figures = {
            "pydicom dcmread + pixel_array, every file": median_ms(lambda: pydicom_decode(folder), args.runs),
            "volprep read_header (headers checked)": median_ms(lambda: read_header(folder, cfg), args.runs),
            "volprep read_volume (headers + pixels)": median_ms(lambda: read_volume(folder, cfg), args.runs),
        }
    ratio = figures["volprep read_volume (headers + pixels)"] / figures["pydicom dcmread + pixel_array, every file"]
    result = {
        "series": {"shape": list(shape), "dtype": "int16", "files": shape[2], "transfer_syntax": "explicit VR little endian",
                   "rescale": "slope 0.5, intercept -10 (float32 out)"},
        "median_ms": {k: round(v, 1) for k, v in figures.items()},
        "read_volume / pydicom": round(ratio, 2),
        "goal": "read_volume within 2x of pydicom's own decode",
        "met": ratio <= 2.0,
        "runs": args.runs,
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                    "pydicom": pydicom.__version__},
    }
    for name, ms in figures.items():
        print(f"{name:48s} {ms:9.1f} ms")
    print(f"read_volume / pydicom: {ratio:.2f} (goal <= 2)")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("dicom_quick.json" if args.quick else "dicom.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
