"""Benchmark: loading throughput (volumes/s after TensorFlow is imported), and loader tuning.

Shards are made once by the real ``volprep shards`` from the benchmark heads (256x256x160
int16 -> 128x128x80 float16, 16 MB shards) and reused. Rows, volumes/s, batch 4, median of
``--repeats`` timed runs of ``--epochs`` epochs each, after one warm-up epoch:

* ``volprep.load``: the loader with its defaults (shuffled, parsed, decoded, float32);
* ``read limit``: a plain ``TFRecordDataset`` over the same shards, records counted
  (``Dataset.reduce``), nothing parsed; the faster of sequential and parallel reads;
* ``raw-file recipe``: the same volumes as float16 ``.raw`` files, ``read_file`` ->
  ``decode_raw`` -> ``reshape`` -> float32, batch, prefetch;
* ``from_generator``: nibabel ``get_fdata`` of the ``.nii.gz`` heads, ``scipy.ndimage.zoom``
  0.5 (order 1) and z-score per step, batch, prefetch.

Goals: ``volprep.load`` >= 0.7x the read limit and >= 20x ``from_generator``.
``--tune`` also sweeps the loader's knobs (cycle length, block length, parse per record
vs per batch, private thread pool, prefetch depth) and writes ``results/loader_tuning.json``.
Writes ``results/load.json``; ``--quick`` uses tiny heads and one repeat (for the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
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

BATCH = 4


def make_shards(quick: bool, n: int) -> Path:
    """A shard folder of ``n`` records from the benchmark heads (made once, then reused)."""
    shape = QUICK_SHAPE if quick else FULL_SHAPE
    target = (shape[0] // 2, shape[1] // 2, shape[2] // 2)
    out = CACHE / f"shards-{'x'.join(map(str, shape))}-n{n}"
    if (out / "manifest.json").is_file():
        return out
    data = subset(heads(n, shape), n, "load")
    config = config_file(target, shard_mb=1 if quick else 16)
    cmd = [sys.executable, "-m", "volprep", "shards", str(data), "--out", str(out), "--config", str(config),
           "--quiet", "--no-report"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if proc.returncode != 0:
        raise RuntimeError(f"volprep shards failed: {proc.stderr[-2000:]}")
    return out


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sys_s() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def rate(make: Callable[[], Any], volumes: int, epochs: int, repeats: int, count: bool = False) -> dict[str, Any]:
    """Volumes/s of iterating a dataset ``epochs`` times; median over ``repeats`` runs.

    ``make()`` builds the dataset once; one warm-up epoch is not timed. ``count`` iterates
    with ``Dataset.reduce`` (no Python per element: the read limit); otherwise a Python
    loop over batches, as a training loop sees them. Also reports the process CPU time
    per volume (all threads), which other processes on a busy machine disturb less.
    """
    ds = make()

    def epoch() -> None:
        if count:
            ds.reduce(0, lambda n, _: n + 1).numpy()
        else:
            for _ in ds:
                pass

    epoch()
    runs, cpu, system = [], [], []
    for _ in range(repeats):
        start, cpu_start, sys_start = time.perf_counter(), _cpu_s(), _sys_s()
        for _ in range(epochs):
            epoch()
        runs.append(volumes * epochs / (time.perf_counter() - start))
        cpu.append((_cpu_s() - cpu_start) / (volumes * epochs) * 1e3)
        system.append((_sys_s() - sys_start) / (volumes * epochs) * 1e3)
    return {"volumes_per_s": median(runs), "cpu_ms_per_volume": median(cpu),
            "system_ms_per_volume": median(system), "runs": runs}


def shard_files(out: Path) -> tuple[list[str], Any]:
    from volprep.manifest import read_manifest

    manifest = read_manifest(out)
    return [str(out / f) for f in manifest.splits["train"].files], manifest


def read_limit(files: list[str], volumes: int, epochs: int, repeats: int) -> dict[str, Any]:
    """A plain TFRecordDataset, records counted, nothing parsed: sequential and parallel."""
    import tensorflow as tf

    from volprep.loader import READ_BUFFER_BYTES

    seq = rate(lambda: tf.data.TFRecordDataset(files, buffer_size=READ_BUFFER_BYTES), volumes, epochs, repeats, count=True)
    par = rate(lambda: tf.data.TFRecordDataset(files, buffer_size=READ_BUFFER_BYTES, num_parallel_reads=len(files)),
               volumes, epochs, repeats, count=True)
    best = max((seq, par), key=lambda r: r["volumes_per_s"])
    return {"sequential": seq, "parallel": par, "volumes_per_s": best["volumes_per_s"],
            "cpu_ms_per_volume": best["cpu_ms_per_volume"]}


def raw_recipe(out: Path, manifest: Any, volumes: int, epochs: int, repeats: int) -> dict[str, Any]:
    """The raw-file recipe over the same volumes written as float16 ``.raw`` files."""
    import numpy as np
    import tensorflow as tf

    import volprep

    shape = list(manifest.features["image"].shape)
    folder = out.parent / f"{out.name}-raw"
    if len(list(folder.glob("*.raw"))) != volumes:
        folder.mkdir(exist_ok=True)
        ds = volprep.load(out, batch_size=1, shuffle=False, deterministic=True)
        for i, element in enumerate(ds):
            image = element[0] if isinstance(element, tuple) else element
            (folder / f"vol_{i:04d}.raw").write_bytes(image.numpy()[0].astype(np.float16).tobytes())
    files = sorted(str(p) for p in folder.glob("*.raw"))

    def make() -> Any:
        def read(path: Any) -> Any:
            flat = tf.io.decode_raw(tf.io.read_file(path), tf.float16)
            return tf.cast(tf.reshape(flat, shape), tf.float32)

        ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=0)
        return ds.map(read, num_parallel_calls=tf.data.AUTOTUNE).batch(BATCH).prefetch(tf.data.AUTOTUNE)

    return rate(make, volumes, epochs, repeats)


def from_generator(paths: list[Path], repeats: int) -> dict[str, Any]:
    """``Dataset.from_generator`` over nibabel-loaded heads with a zoom per step."""
    import nibabel as nib
    import numpy as np
    import scipy.ndimage
    import tensorflow as tf

    shape = nib.load(str(paths[0])).shape
    out_shape = tuple(int(round(n * 0.5)) for n in shape)

    def gen() -> Any:
        for p in paths:
            img = nib.load(str(p)).get_fdata(dtype=np.float32)
            img = scipy.ndimage.zoom(img, 0.5, order=1)
            img = (img - img.mean()) / img.std()
            yield img[..., None]

    def make() -> Any:
        sig = tf.TensorSpec((*out_shape, 1), tf.float32)
        return tf.data.Dataset.from_generator(gen, output_signature=sig).batch(BATCH).prefetch(tf.data.AUTOTUNE)

    return rate(make, len(paths), 1, repeats)


def tune(out: Path, volumes: int, epochs: int, repeats: int) -> dict[str, Any]:
    """Sweeps the loader's knobs one at a time around the defaults.

    Every variant's dataset is built and warmed up first; then each repeat times every
    variant once, in turn, so a busy spell on the machine (other processes) falls on all
    variants alike. Reports the median volumes/s and process CPU ms per volume.
    """
    import tensorflow as tf

    import volprep
    from volprep import loader as loader_module
    from volprep.schema_tf import decode_batch, parse_spec

    sweeps: dict[str, dict[str, dict[str, Any]]] = {
        "cycle_length": {str(c): {"cycle_length": c} for c in (1, 2, 4, 8)},
        "block_length": {str(b): {"block_length": b} for b in (1, 4)},
        "threads": {("shared" if t == 0 else str(t)): {"threads": t} for t in (0, 2, 4)},
        "prefetch": {("autotune" if p == -1 else str(p)): {"prefetch": p} for p in (1, 2, -1)},
        "shuffle_buffer": {str(b): {"shuffle_buffer": b} for b in (0, 8, 16, 32)},
        "read_buffer": {f"{b >> 10} KiB": {"read_buffer": b} for b in (256 << 10, 1 << 20, 8 << 20)},
    }
    files, manifest = shard_files(out)
    features = manifest.features
    spec = parse_spec(features, ["image"])

    def per_record() -> Any:
        ds = tf.data.Dataset.from_tensor_slices(files).interleave(
            lambda f: tf.data.TFRecordDataset(f, buffer_size=loader_module.READ_BUFFER_BYTES),
            cycle_length=4, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)

        def parse(s: Any) -> Any:
            return tf.cast(decode_batch(tf.io.parse_example(s[None], spec), features)["image"][0], tf.float32)

        return ds.shuffle(8, seed=0).map(parse, num_parallel_calls=tf.data.AUTOTUNE).batch(BATCH).prefetch(2)

    datasets: dict[tuple[str, str], Any] = {}
    default_buffer = loader_module.READ_BUFFER_BYTES
    try:
        for knob, variants in sweeps.items():
            for name, kw in variants.items():
                kw = dict(kw)
                loader_module.READ_BUFFER_BYTES = kw.pop("read_buffer", default_buffer)  # read at build time
                datasets[(knob, name)] = volprep.load(out, batch_size=BATCH, seed=0, **kw)
        loader_module.READ_BUFFER_BYTES = default_buffer
        datasets[("parse", "per_record")] = per_record()
    finally:
        loader_module.READ_BUFFER_BYTES = default_buffer
    datasets[("parse", "per_batch (volprep.load)")] = volprep.load(out, batch_size=BATCH, seed=0)
    for ds in datasets.values():
        for _ in ds:
            pass
    speed: dict[tuple[str, str], list[float]] = {k: [] for k in datasets}
    cpu: dict[tuple[str, str], list[float]] = {k: [] for k in datasets}
    for _ in range(repeats):
        for key, ds in datasets.items():
            start, cpu_start = time.perf_counter(), _cpu_s()
            for _ in range(epochs):
                for _ in ds:
                    pass
            speed[key].append(volumes * epochs / (time.perf_counter() - start))
            cpu[key].append((_cpu_s() - cpu_start) / (volumes * epochs) * 1e3)
    results: dict[str, Any] = {"batch_size": BATCH, "records": volumes, "epochs": epochs, "repeats": repeats,
                               "cpu_ms_per_volume": {}}
    for (knob, name) in datasets:
        results.setdefault(knob, {})[name] = median(speed[(knob, name)])
        results["cpu_ms_per_volume"].setdefault(knob, {})[name] = median(cpu[(knob, name)])
    return results


def allocator_effect(out: Path, volumes: int, epochs: int, repeats: int) -> dict[str, Any]:
    """volprep.load with and without :func:`volprep.loader.tune_allocator`, each in a fresh process."""
    result = {}
    for mode in ("off", "on"):
        cmd = [sys.executable, __file__, "--probe-allocator", mode, "--shards", str(out),
               "--epochs", str(epochs), "--repeats", str(repeats)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if proc.returncode != 0:
            raise RuntimeError(f"allocator probe failed: {proc.stderr[-2000:]}")
        result[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _probe_allocator(out: Path, mode: str, epochs: int, repeats: int) -> dict[str, Any]:
    import volprep

    volumes = shard_files(out)[1].splits["train"].num_records
    r = rate(lambda: volprep.load(out, batch_size=BATCH, seed=0, tune_malloc=mode == "on"), volumes, epochs, repeats)
    return {"volumes_per_s": r["volumes_per_s"], "cpu_ms_per_volume": r["cpu_ms_per_volume"],
            "user_ms_per_volume": r["cpu_ms_per_volume"] - r["system_ms_per_volume"],
            "system_ms_per_volume": r["system_ms_per_volume"]}


def measure(quick: bool, n: int, epochs: int, repeats: int, gen_n: int, do_tune: bool) -> dict[str, Any]:
    """All loading rows and goals (see the module docstring)."""
    import tensorflow as tf

    import volprep

    out = make_shards(quick, n)
    files, manifest = shard_files(out)
    volumes = manifest.splits["train"].num_records
    record_mb = sum(s.num_bytes for s in manifest.splits["train"].shards) / volumes / 1e6
    rows: dict[str, Any] = {
        "volprep_load": rate(lambda: volprep.load(out, batch_size=BATCH, seed=0), volumes, epochs, repeats),
        "read_limit": read_limit(files, volumes, epochs, repeats),
        "raw_recipe": raw_recipe(out, manifest, volumes, epochs, repeats),
        "from_generator": from_generator(sorted(heads(n, QUICK_SHAPE if quick else FULL_SHAPE).glob("head_*.nii.gz"))[:gen_n],
                                         max(1, repeats // 2)),
    }
    vp = rows["volprep_load"]["volumes_per_s"]
    goals = [
        Goal("volprep.load / TFRecord read limit", vp / rows["read_limit"]["volumes_per_s"], 0.7),
        Goal("volprep.load / from_generator", vp / rows["from_generator"]["volumes_per_s"], 20.0),
    ]
    result: dict[str, Any] = {
        "shards": str(out), "records": volumes, "record_mb": record_mb, "batch_size": BATCH,
        "image": manifest.features["image"].to_dict(), "epochs": epochs, "repeats": repeats,
        "tf_version": tf.__version__, "rows": rows, "goals": [g.to_dict() for g in goals],
    }
    if do_tune:
        result["tuning"] = tune(out, volumes, epochs, repeats)
        result["tuning"]["allocator"] = allocator_effect(out, volumes, epochs, repeats)
    return result


def report(result: dict[str, Any]) -> str:
    """The loading table and its goals."""
    r, mb = result["rows"], result["record_mb"]
    names = {"read_limit": "read limit (TFRecordDataset, counted)", "volprep_load": "volprep.load (defaults)",
             "raw_recipe": "raw-file recipe (read_file, decode_raw)",
             "from_generator": "from_generator (nibabel + zoom per step)"}
    rows = []
    for key, name in names.items():
        v = r[key]["volumes_per_s"]
        note = f"{v * mb:.0f} MB/s" if key != "from_generator" else "from .nii.gz"
        note += f", {r[key]['cpu_ms_per_volume']:.2f} CPU-ms/vol"
        rows.append((name, f"{v:.1f}", note))
    shape = "x".join(map(str, result["image"]["shape"][:3]))
    text = table(f"Loading, volumes/s ({shape} {result['image']['dtype']} records, {result['records']} records, "
                 f"batch {result['batch_size']}, median of {result['repeats']})", rows, ("loader", "vol/s", "note"))
    return text + "\n" + "\n".join(Goal(**{k: v for k, v in g.items() if k != "met"}).line() for g in result["goals"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny heads, one repeat (for tests)")
    parser.add_argument("--n", type=int, default=32, help="records in the shards")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--generator", type=int, default=6, help="volumes through from_generator")
    parser.add_argument("--tune", action="store_true", help="also sweep the loader knobs (loader_tuning.json)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--probe-allocator", choices=("off", "on"), help=argparse.SUPPRESS)
    parser.add_argument("--shards", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe_allocator:
        print(json.dumps(_probe_allocator(args.shards, args.probe_allocator, args.epochs, args.repeats)))
        return 0
    if args.quick:
        n, epochs, repeats, gen_n = 8, 1, 1, 2
    else:
        n, epochs, repeats, gen_n = args.n, args.epochs, args.repeats, args.generator
    result = measure(args.quick, n, epochs, repeats, gen_n, args.tune)
    print(report(result))
    if "tuning" in result:
        tuning = result.pop("tuning")
        print("loader tuning: volumes/s (CPU ms per volume)")
        for knob, values in tuning.items():
            if knob == "allocator":
                print("  allocator      " + ", ".join(f"tune_malloc {k}: {v['volumes_per_s']:.0f} (user {v['user_ms_per_volume']:.2f}"
                                                      f" + system {v['system_ms_per_volume']:.2f})" for k, v in values.items()))
            elif isinstance(values, dict) and knob != "cpu_ms_per_volume":
                cpu = tuning["cpu_ms_per_volume"][knob]
                print(f"  {knob:14s} " + ", ".join(f"{k}: {v:.0f} ({cpu[k]:.2f})" for k, v in values.items()))
        path = write_result("loader_tuning", {"tuning": tuning}, args.quick,
                            None if args.out is None else args.out.with_name("loader_tuning.json"))
        print(f"wrote {path}")
    path = write_result("load", result, args.quick, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
