"""Benchmark: conversion time per volume, volprep against the read limit and a tutorial converter.

Inputs are benchmark heads (``volprep.demo.write_big_heads``: 256x256x160 int16 ``.nii.gz``),
reduced 2x to float16 128x128x80. Rows, all in ms per volume:

* ``volprep 1 worker`` / ``volprep 2 workers``: the real ``volprep shards`` in a subprocess
  (pipeline: block mean 2x, crop/pad to 128x128x80, z-score, float16, no balancing, so
  records = cases). Start-up (Python, imports, process pool, manifest) is kept apart:
  the median over repeats of ``(T(2N) - T(N)) / N`` (each pair run back to back), T
  from the job's own stage times (the process
  wall time gives ``wall_per_volume_ms``). The pipeline sets ``fidelity_sample = 0``
  (see ``common.config_file``): the fidelity measurement is not conversion.
* ``read limit (isal)``: only decompressing each input (file read + isal gzip inflate),
  one process, the fastest isal entry point.
* ``tutorial converter``: one process, nibabel ``get_fdata``, ``scipy.ndimage.zoom``
  order 3, z-score, one ``tf.train.Example`` with a ``float_list``, one TFRecord file.

Goals (2-core machine): volprep 1 worker <= 1.5x the read limit; >= 10x faster than the
tutorial; 2 workers >= 1.7x faster than 1. Writes ``results/convert.json``.
``--quick``: tiny heads, N = 2, one repeat (for the test suite).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    CACHE,
    FULL_SHAPE,
    QUICK_SHAPE,
    Goal,
    config_file,
    heads,
    median,
    subset,
    table,
    write_result,
)


def run_volprep(data: Path, out: Path, config: Path, workers: int) -> tuple[float, float]:
    """One real ``volprep shards`` run in a fresh process (fresh output folder).

    Returns:
        ``(wall seconds of the process, seconds of the job's own stages)``: the stages
        (``OUT/timings.json``: discover, headers, convert, plan, write) leave out only the
        interpreter start-up and imports, so they carry less noise on a busy machine.
    """
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "volprep", "shards", str(data), "--out", str(out), "--config", str(config),
           "--workers", str(workers), "--quiet", "--no-report"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"volprep shards failed ({proc.returncode}): {proc.stderr[-2000:]}")
    stages = json.loads((out / "timings.json").read_text())
    return elapsed, float(sum(stages.values()))


def volprep_rows(folder: Path, n: int, config: Path, repeats: int) -> dict[str, Any]:
    """Per-volume time of ``volprep shards`` (1 and 2 workers), start-up removed by differencing.

    Runs alternate (N, 2N; 1 and 2 workers) so a busy spell on the machine spreads over
    all rows. Per volume = ``median over repeats of (T(2N) - T(N)) / N``, each repeat's
    pair run back to back, from the job's stage times (``per_volume_ms``) and from the
    process wall time (``wall_per_volume_ms``).
    """
    small, big = subset(folder, n, "a"), subset(folder, 2 * n, "b")
    runs: dict[int, dict[str, list[float]]] = {w: {"n": [], "2n": [], "n_wall": [], "2n_wall": []} for w in (1, 2)}
    for _ in range(repeats):
        for workers in (1, 2):
            out = CACHE / f"out-convert-w{workers}"
            for key, data in (("n", small), ("2n", big)):
                wall, stages = run_volprep(data, out, config, workers)
                runs[workers][key].append(stages)
                runs[workers][f"{key}_wall"].append(wall)
    rows = {}
    for workers, r in runs.items():
        # Paired: each repeat's N and 2N runs ran back to back, under the same load.
        per = median([b - a for a, b in zip(r["n"], r["2n"], strict=True)]) / n
        wall = median([b - a for a, b in zip(r["n_wall"], r["2n_wall"], strict=True)]) / n
        rows[f"volprep_{workers}w"] = {
            "workers": workers, "n": n, "t_n_stages_s": r["n"], "t_2n_stages_s": r["2n"],
            "t_n_wall_s": r["n_wall"], "t_2n_wall_s": r["2n_wall"],
            "per_volume_ms": per * 1e3, "wall_per_volume_ms": wall * 1e3,
            "startup_s": median(r["n_wall"]) - n * per,
        }
    return rows


def read_limit(paths: list[Path], repeats: int) -> dict[str, Any]:
    """ms per volume of only reading and inflating the inputs with isal (one process)."""
    from isal import igzip, isal_zlib

    def sized(p: Path) -> bytes:
        # The gzip trailer's ISIZE gives the output size: one allocation, no regrowing.
        data = p.read_bytes()
        return isal_zlib.decompress(data, wbits=31, bufsize=int.from_bytes(data[-4:], "little") or 1)

    engines = {
        "isal igzip.decompress": lambda p: igzip.decompress(p.read_bytes()),
        "isal_zlib.decompress": lambda p: isal_zlib.decompress(p.read_bytes(), wbits=31),
        "isal_zlib.decompress, sized buffer": sized,
    }
    out: dict[str, Any] = {}
    for name, fn in engines.items():
        fn(paths[0])
        times = []
        for _ in range(repeats):
            for p in paths:
                start = time.perf_counter()
                fn(p)
                times.append(time.perf_counter() - start)
        out[name] = median(times) * 1e3
    best = min(out, key=out.__getitem__)
    return {"engines_ms": out, "engine": best, "per_volume_ms": out[best]}


def tutorial_converter(paths: list[Path], out_file: Path) -> dict[str, Any]:
    """The converter tutorials show: get_fdata, zoom order 3, z-score, a float_list Example."""
    import nibabel as nib
    import scipy.ndimage

    start = time.perf_counter()
    import tensorflow as tf

    import_s = time.perf_counter() - start
    times = []
    with tf.io.TFRecordWriter(str(out_file)) as writer:
        for p in paths:
            start = time.perf_counter()
            img = nib.load(str(p)).get_fdata()
            img = scipy.ndimage.zoom(img, 0.5, order=3)
            img = (img - img.mean()) / img.std()
            example = tf.train.Example(features=tf.train.Features(feature={
                "image": tf.train.Feature(float_list=tf.train.FloatList(value=img.ravel())),
                "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=img.shape)),
            }))
            writer.write(example.SerializeToString())
            times.append(time.perf_counter() - start)
    return {"per_volume_ms": median(times) * 1e3, "times_s": times, "tf_import_s": import_s,
            "bytes_per_volume": out_file.stat().st_size / len(paths)}


def measure(quick: bool, n: int, repeats: int, tutorial_n: int) -> dict[str, Any]:
    """All conversion rows and goals (see the module docstring)."""
    shape = QUICK_SHAPE if quick else FULL_SHAPE
    target = (shape[0] // 2, shape[1] // 2, shape[2] // 2)
    folder = heads(2 * n, shape)
    config = config_file(target)
    paths = sorted(folder.glob("head_*.nii.gz"))[: 2 * n]
    rows: dict[str, Any] = {"read_limit": read_limit(paths, repeats)}
    rows.update(volprep_rows(folder, n, config, repeats))
    tut_out = CACHE / "tutorial.tfrecord"
    rows["tutorial"] = tutorial_converter(paths[:tutorial_n], tut_out)
    tut_out.unlink(missing_ok=True)
    one, two = rows["volprep_1w"]["per_volume_ms"], rows["volprep_2w"]["per_volume_ms"]
    goals = [
        Goal("volprep 1 worker / read limit", one / rows["read_limit"]["per_volume_ms"], 1.5, at_most=True),
        Goal("tutorial converter / volprep 1 worker", rows["tutorial"]["per_volume_ms"] / one, 10.0),
        Goal("volprep 1 worker / 2 workers", one / two, 1.7),
    ]
    return {"shape": list(shape), "target_shape": list(target), "n": n, "repeats": repeats,
            "rows": rows, "goals": [g.to_dict() for g in goals], "_goals": goals}


def report(result: dict[str, Any]) -> str:
    """The conversion table and its goals."""
    r = result["rows"]
    rows = [
        ("read limit (isal inflate, 1 process)", f"{r['read_limit']['per_volume_ms']:.1f}", r["read_limit"]["engine"]),
        ("volprep shards, 1 worker", f"{r['volprep_1w']['per_volume_ms']:.1f}", f"wall-based {r['volprep_1w']['wall_per_volume_ms']:.0f}; start-up {r['volprep_1w']['startup_s']:.1f} s"),
        ("volprep shards, 2 workers", f"{r['volprep_2w']['per_volume_ms']:.1f}", f"wall-based {r['volprep_2w']['wall_per_volume_ms']:.0f}; start-up {r['volprep_2w']['startup_s']:.1f} s"),
        ("tutorial (get_fdata, zoom 3, float_list)", f"{r['tutorial']['per_volume_ms']:.1f}", f"{len(r['tutorial']['times_s'])} volumes"),
    ]
    shape = "x".join(map(str, result["shape"]))
    target = "x".join(map(str, result["target_shape"]))
    text = table(f"Conversion, ms per volume ({shape} int16 .nii.gz -> {target} float16; "
                 f"N={result['n']}, median of {result['repeats']})", rows, ("pipeline", "ms/vol", "note"))
    return text + "\n" + "\n".join(Goal(**{k: v for k, v in g.items() if k != "met"}).line() for g in result["goals"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny heads, N=2, one repeat (for tests)")
    parser.add_argument("--n", type=int, default=16, help="N (runs convert N and 2N cases); >= 16 for full runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tutorial", type=int, default=3, help="volumes through the tutorial converter")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    n, repeats, tut = (2, 1, 1) if args.quick else (args.n, args.repeats, args.tutorial)
    result = measure(args.quick, n, repeats, tut)
    result.pop("_goals")
    print(report(result))
    path = write_result("convert", result, args.quick, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
