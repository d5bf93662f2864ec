"""Benchmark: reading a 256x256x160 int16 .nii.gz, stock nibabel vs volprep's isal path.

Writes a realistic volume (a smooth head-like phantom plus noise, so it compresses like
an MRI: ~13 MB for 21 MB of voxels), then times, with medians over ``--runs`` runs:
``nibabel get_fdata()`` (float64, what most code calls), ``np.asanyarray(img.dataobj)``
(native dtype), volprep ``read_volume``, and the decompression floors (Python zlib and
isal inflating the file into memory). Voxels are asserted identical. Prints a table and
writes JSON to ``benchmarks/results/bench_gzip.json`` (``bench_gzip_quick.json`` with
``--quick``, a tiny volume for tests).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import isal_zlib

from volprep.config import ReadConfig
from volprep.io import read_volume

RESULTS = Path(__file__).resolve().parent / "results"


def phantom(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A smooth ellipsoidal 'head' with a brighter core, plus Gaussian noise, as int16."""
    rng = np.random.default_rng([seed])
    i, j, k = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape],
                          indexing="ij")
    r2 = i**2 / 0.6 + j**2 / 0.8 + k**2 / 0.7
    head = 300.0 * (r2 < 1) + 700.0 * np.exp(-3 * (i**2 + j**2 + k**2))
    return (head + rng.normal(0, 20, shape)).astype(np.int16)


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm the page cache and imports
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny volume, for tests")
    parser.add_argument("--runs", type=int, default=None, help="runs per method (>= 5)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = parser.parse_args(argv)
    shape = (32, 32, 20) if args.quick else (256, 256, 160)
    runs = max(5, args.runs or (5 if args.quick else 9))
    out = args.out or RESULTS / ("bench_gzip_quick.json" if args.quick else "bench_gzip.json")
    cfg = ReadConfig()
    data = phantom(shape)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "phantom.nii.gz"
        nib.save(nib.Nifti1Image(data, np.eye(4)), path)
        blob = path.read_bytes()
        mine = read_volume(path, cfg).data
        if not (mine.dtype == data.dtype and np.array_equal(mine, data)):
            raise SystemExit("volprep read_volume returned different voxels")
        if not np.array_equal(np.asanyarray(nib.load(path).dataobj), mine):
            raise SystemExit("nibabel and volprep disagree")
        methods: dict[str, Callable[[], object]] = {
            "nibabel get_fdata (float64)": lambda: nib.load(path).get_fdata(),
            "nibabel asanyarray(dataobj)": lambda: np.asanyarray(nib.load(path).dataobj),
            "volprep read_volume": lambda: read_volume(path, cfg),
            "floor: zlib.decompress": lambda: zlib.decompress(blob, 31),
            "floor: isal decompress": lambda: isal_zlib.decompress(blob, wbits=31),
        }
        medians = {name: median_ms(fn, runs) for name, fn in methods.items()}
    megabytes = data.nbytes / 1e6
    baseline = medians["nibabel asanyarray(dataobj)"]
    print(f"{shape} int16, {megabytes:.1f} MB voxels, {len(blob) / 1e6:.1f} MB gzip, "
          f"median of {runs} runs")
    print(f"{'method':32} {'ms':>8} {'MB/s':>8} {'vs nibabel':>11}")
    for name, ms in medians.items():
        print(f"{name:32} {ms:8.1f} {megabytes / ms * 1000:8.0f} {baseline / ms:10.2f}x")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "bench_gzip", "quick": args.quick, "shape": list(shape),
        "dtype": "int16", "voxel_bytes": int(data.nbytes), "gzip_bytes": len(blob),
        "runs": runs, "median_ms": {k: round(v, 2) for k, v in medians.items()},
        "speedup_vs_nibabel_dataobj": round(baseline / medians["volprep read_volume"], 2),
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
    }, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
