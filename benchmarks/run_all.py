"""``make bench``: conversion, loading and augmentation against naive pipelines and the read limit.

Runs ``bench_convert`` (ms per volume: volprep with 1 and 2 workers, the isal read limit,
the tutorial converter), ``bench_load`` (volumes/s: ``volprep.load``, the TFRecord read
limit, the raw-file recipe, ``from_generator``; plus the loader tuning sweep) and the
augmentation rows of ``bench_augment`` (batched TF vs ``scipy.ndimage.affine_transform``
per volume, 128x128x80), prints one table with every goal marked met or not, and writes
``results/bench_all.json`` (and each part's own JSON). Takes about 10-15 minutes on the
2-core reference machine (the benchmark heads are written once, ~1 minute, and reused
from ``$VOLPREP_BENCH_CACHE``, default ``/tmp/volprep-bench``). ``--quick``: tiny data,
one repeat, for the test suite.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_augment  # noqa: E402
import bench_convert  # noqa: E402
import bench_load  # noqa: E402
from common import Goal, machine, write_result  # noqa: E402

AUGMENT_BATCH = 4


def augment_rows(quick: bool, runs: int) -> dict[str, Any]:
    """scipy per volume vs volprep's batched TF augmentation (spatial), ms per volume."""
    shape = (16, 16, 12) if quick else (128, 128, 80)
    res = bench_augment.bench_shape(shape, AUGMENT_BATCH, runs)
    scipy_ms = res["scipy_affine_order1"]["median_ms"]
    tf_ms = res["tf_augment_batch_spatial"]["median_ms"]
    return {"shape": list(shape), "batch": AUGMENT_BATCH, "runs": runs, "scipy_ms": scipy_ms, "tf_batched_ms": tf_ms,
            "tf_full_ms": res["tf_augment_batch_full"]["median_ms"],
            "goals": [Goal("scipy affine / batched TF augmentation (per volume)", scipy_ms / tf_ms, 5.0).to_dict()],
            "detail": res}


def markdown(conv: dict[str, Any], load: dict[str, Any], aug: dict[str, Any], info: dict[str, Any]) -> str:
    """The README table: every row, its figure and the goals it feeds."""
    c, ld = conv["rows"], load["rows"]
    goals = [Goal(**{k: v for k, v in g.items() if k != "met"}) for g in conv["goals"] + load["goals"] + aug["goals"]]
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, {info.get('memory_gib', '?')} GiB, Python {info['python']}; "
        f"load average at start {info['load_avg_1m']:.1f}.",
        "",
        "| stage | pipeline | median |",
        "| --- | --- | --- |",
        f"| convert | read limit (isal inflate only, 1 process) | {c['read_limit']['per_volume_ms']:.0f} ms/vol |",
        f"| convert | `volprep shards`, 1 worker | {c['volprep_1w']['per_volume_ms']:.0f} ms/vol |",
        f"| convert | `volprep shards`, 2 workers | {c['volprep_2w']['per_volume_ms']:.0f} ms/vol |",
        f"| convert | tutorial (get_fdata, zoom order 3, float_list Example) | {c['tutorial']['per_volume_ms']:.0f} ms/vol |",
        f"| load | read limit (TFRecordDataset, records counted) | {ld['read_limit']['volumes_per_s']:.0f} vol/s |",
        f"| load | `volprep.load` | {ld['volprep_load']['volumes_per_s']:.0f} vol/s |",
        f"| load | raw-file recipe (read_file, decode_raw) | {ld['raw_recipe']['volumes_per_s']:.0f} vol/s |",
        f"| load | from_generator (nibabel + zoom per step) | {ld['from_generator']['volumes_per_s']:.1f} vol/s |",
        f"| augment | scipy.ndimage.affine_transform, per volume | {aug['scipy_ms']:.1f} ms/vol |",
        f"| augment | volprep batched TF (batch {aug['batch']}), per volume | {aug['tf_batched_ms']:.1f} ms/vol |",
        "",
        "| goal | measured | target | met |",
        "| --- | --- | --- | --- |",
    ]
    for g in goals:
        lines.append(f"| {g.name} | {g.value:.2f} | {'<=' if g.at_most else '>='} {g.target:g} | {'yes' if g.met else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, one repeat (for the tests)")
    parser.add_argument("--n", type=int, default=24, help="conversion N (converts N and 2N cases)")
    parser.add_argument("--repeats", type=int, default=5, help="conversion repeats")
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON results (default results/)")
    args = parser.parse_args(argv)
    info = machine()
    start = time.perf_counter()

    def out(name: str) -> Path | None:
        if args.out is None:
            return None
        return args.out / (f"{name}_quick.json" if args.quick else f"{name}.json")

    n, repeats, tut = (2, 1, 1) if args.quick else (args.n, args.repeats, 3)
    conv = bench_convert.measure(args.quick, n, repeats, tut)
    conv.pop("_goals")
    print(bench_convert.report(conv), "\n", flush=True)
    write_result("convert", conv, args.quick, out("convert"))

    ln, epochs, lrep, gen = (8, 1, 1, 2) if args.quick else (2 * args.n, 4, 5, 6)
    load = bench_load.measure(args.quick, ln, epochs, lrep, gen, do_tune=True)
    tuning = load.pop("tuning")
    print(bench_load.report(load), "\n", flush=True)
    write_result("load", load, args.quick, out("load"))
    write_result("loader_tuning", {"tuning": tuning}, args.quick, out("loader_tuning"))

    aug = augment_rows(args.quick, 2 if args.quick else 5)
    print(f"Augmentation, ms per volume ({'x'.join(map(str, aug['shape']))} float32, TF batch {aug['batch']})\n"
          f"  scipy.ndimage.affine_transform (order 1)  {aug['scipy_ms']:8.1f}\n"
          f"  volprep tf_ops.augment_batch (spatial)    {aug['tf_batched_ms']:8.1f}\n"
          f"  volprep tf_ops.augment_batch (every op)   {aug['tf_full_ms']:8.1f}")
    print(Goal(**{k: v for k, v in aug["goals"][0].items() if k != "met"}).line(), "\n")

    table = markdown(conv, load, aug, info)
    all_goals = conv["goals"] + load["goals"] + aug["goals"]
    print(table)
    met = sum(g["met"] for g in all_goals)
    print(f"\n{met} of {len(all_goals)} goals met; {time.perf_counter() - start:.0f} s in all")
    path = write_result("bench_all", {"convert": conv, "load": load, "augment": {k: v for k, v in aug.items() if k != "detail"},
                                      "goals": all_goals, "markdown": table,
                                      "seconds": time.perf_counter() - start}, args.quick, out("bench_all"))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
