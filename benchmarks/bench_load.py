"""Benchmark: loading throughput (volumes/s after TensorFlow is imported), and loader tuning.

Shards are made once by the real ``volprep shards`` from the benchmark heads (256x256x160
int16 -> 128x128x80 float16, 16 MB shards) and reused. Rows, volumes/s, batch 4, median of
``--repeats`` timed runs of ``--epochs`` epochs each, after two warm-up epochs; the
in-process rows are timed in turn within each repeat, so a busy spell on the machine falls
on all of them alike:

* ``volprep.load``: the loader with its defaults (shuffled, decoded, float32; local
  shards are read directly: :mod:`volprep.loader_direct`);
* ``volprep.load dtype=float16``: the same, yielding the stored float16 (no cast);
* ``volprep.load direct=False`` (float32 and float16): the streamed path that URLs take
  (``TFRecordDataset``, ``parse_example``, ``decode_raw``), for comparison;
* ``read limit``: a plain ``TFRecordDataset`` over the same shards, records counted
  (``Dataset.reduce``), nothing parsed; the fastest of sequential and parallel reads with
  TF's default read buffer and with the loader's;
* ``read floor``: what reading the shards costs at least on this machine: every record
  ``os.preadv``-ed and its CRC32C computed in hardware, one thread per core, nothing
  decoded (direct reads add one copy into the batch; information, not a goal);
* ``raw-file recipe``: the same volumes as float16 ``.raw`` files, ``read_file`` ->
  ``decode_raw`` -> ``reshape`` -> float32, batch, prefetch;
* ``from_generator``: nibabel ``get_fdata`` of the ``.nii.gz`` heads, ``scipy.ndimage.zoom``
  0.5 (order 1) and z-score per step, batch, prefetch.

Fresh-process rows, as a user meets the loader (each run a new Python process; epoch 1
untimed, epochs 2-3 timed; median over ``--repeats`` processes): ``volprep.load(OUT,
batch_size=4, shuffle=False)``, the same with ``shuffle=True`` and with ``dtype="float16"``,
and a plain ``tf.data.TFRecordDataset(files)`` counted (TF's defaults: no volprep allocator
tuning, sequential reads). The ``shuffle=True`` process also times the first batch:
``import volprep``, ``import tensorflow``, ``volprep.load(OUT, batch_size=4)`` and
``next(iter(ds))``. Each fresh row also records its minor page faults and system CPU per
volume per epoch (a heap still growing shows there).

Goals: ``volprep.load`` >= 0.7x the read limit with float32 and with float16 output, and
>= 20x ``from_generator``. ``--tune`` also sweeps the loader's knobs (cycle length, block
length, parse per record / per batch / ``parse_example_dataset``, output dtype, read
buffer, private thread pool, prefetch depth, tf.data options) and writes
``results/loader_tuning.json``. Writes ``results/load.json``; ``--quick`` uses tiny heads
and one repeat, and runs the fresh-process rows in one process (for the tests).
"""

from __future__ import annotations

import argparse
import functools
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


def _epoch_fn(ds: Any, count: bool) -> Callable[[], None]:
    """One pass over ``ds``: ``Dataset.reduce`` (no Python per element: the read limit) or a
    Python loop over batches, as a training loop sees them."""
    if count:
        return lambda: ds.reduce(0, lambda n, _: n + 1).numpy()

    def loop() -> None:
        for _ in ds:
            pass

    return loop


def rates(makers: dict[str, Callable[[], Any]], volumes: int, epochs: int, repeats: int,
          count: frozenset[str] = frozenset(), warmup: int = 2) -> dict[str, dict[str, Any]]:
    """Volumes/s of iterating each dataset ``epochs`` times; median over ``repeats`` runs.

    Every dataset is built and warmed up (``warmup`` untimed epochs) first; then each repeat
    times every dataset once, in turn, so a busy spell on a shared machine falls on all of
    them alike. Names in ``count`` are iterated with ``Dataset.reduce``. Also reports the
    process CPU time per volume (all threads), which other processes disturb less.
    """
    epoch_fns = {name: _epoch_fn(make(), name in count) for name, make in makers.items()}
    for fn in epoch_fns.values():
        for _ in range(warmup):
            fn()
    runs: dict[str, list[float]] = {name: [] for name in makers}
    cpu: dict[str, list[float]] = {name: [] for name in makers}
    system: dict[str, list[float]] = {name: [] for name in makers}
    for _ in range(repeats):
        for name, fn in epoch_fns.items():
            start, cpu_start, sys_start = time.perf_counter(), _cpu_s(), _sys_s()
            for _ in range(epochs):
                fn()
            runs[name].append(volumes * epochs / (time.perf_counter() - start))
            cpu[name].append((_cpu_s() - cpu_start) / (volumes * epochs) * 1e3)
            system[name].append((_sys_s() - sys_start) / (volumes * epochs) * 1e3)
    return {name: {"volumes_per_s": median(runs[name]), "cpu_ms_per_volume": median(cpu[name]),
                   "system_ms_per_volume": median(system[name]), "runs": runs[name]} for name in makers}


def rate(make: Callable[[], Any], volumes: int, epochs: int, repeats: int, count: bool = False) -> dict[str, Any]:
    """:func:`rates` of one dataset (one warm-up epoch)."""
    return rates({"x": make}, volumes, epochs, repeats, frozenset({"x"}) if count else frozenset(), warmup=1)["x"]


def shard_files(out: Path) -> tuple[list[str], Any]:
    from volprep.manifest import read_manifest

    manifest = read_manifest(out)
    return [str(out / f) for f in manifest.splits["train"].files], manifest


def read_limit_makers(files: list[str]) -> dict[str, Callable[[], Any]]:
    """Plain TFRecordDatasets, nothing parsed: sequential and parallel reads, with TF's
    default read buffer (256 KiB) and with the loader's (:data:`volprep.loader.READ_BUFFER_BYTES`)."""
    import tensorflow as tf

    from volprep.loader import READ_BUFFER_BYTES

    def reader(buffer: int | None, parallel: bool) -> Callable[[], Any]:
        return lambda: tf.data.TFRecordDataset(files, buffer_size=buffer, num_parallel_reads=len(files) if parallel else None)

    makers: dict[str, Callable[[], Any]] = {}
    for buffer_name, buffer in (("tf_default_buffer", None), ("loader_buffer", READ_BUFFER_BYTES)):
        makers[f"sequential, {buffer_name}"] = reader(buffer, False)
        makers[f"parallel, {buffer_name}"] = reader(buffer, True)
    return makers


def best_read(variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The read limit row: the fastest variant (by median), with every variant kept."""
    best = max(variants, key=lambda k: variants[k]["volumes_per_s"])
    return {"best": best, "variants": variants, **{k: variants[best][k] for k in
                                                     ("volumes_per_s", "cpu_ms_per_volume", "system_ms_per_volume", "runs")}}


def read_limit(files: list[str], volumes: int, epochs: int, repeats: int) -> dict[str, Any]:
    """The read limit alone (see :func:`read_limit_makers`)."""
    makers = read_limit_makers(files)
    return best_read(rates(makers, volumes, epochs, repeats, frozenset(makers)))


def read_floor(files: list[str], volumes: int, epochs: int, repeats: int) -> dict[str, Any]:
    """The floor of reading these shards on this machine: every record ``os.preadv``-ed into
    a reused buffer and its CRC32C computed (hardware), nothing decoded or copied again; one
    thread per core, files dealt round-robin. Direct reads add one copy into the batch."""
    import concurrent.futures
    import struct

    import crc32c

    threads = max(1, min(len(files), len(os.sched_getaffinity(0))))

    def read(names: list[str]) -> int:
        buf, head, tail, n = bytearray(1 << 20), bytearray(12), bytearray(4), 0
        for name in names:
            fd = os.open(name, os.O_RDONLY)
            try:
                pos, size = 0, os.fstat(fd).st_size
                while pos < size:
                    os.preadv(fd, [head], pos)
                    length = struct.unpack_from("<Q", head)[0]
                    if len(buf) < length:
                        buf = bytearray(length)
                    data = memoryview(buf)[:length]
                    os.preadv(fd, [data, tail], pos + 12)
                    crc32c.crc32c(data)
                    pos += 16 + length
                    n += 1
            finally:
                os.close(fd)
        return n

    runs, cpu = [], []
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            start, cpu_start = time.perf_counter(), _cpu_s()
            for _ in range(epochs):
                assert sum(pool.map(read, [files[i::threads] for i in range(threads)])) == volumes
            runs.append(volumes * epochs / (time.perf_counter() - start))
            cpu.append((_cpu_s() - cpu_start) / (volumes * epochs) * 1e3)
    return {"volumes_per_s": median(runs), "cpu_ms_per_volume": median(cpu), "threads": threads, "runs": runs}


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


FRESH_MODES = {
    "load": "volprep.load(OUT, batch_size=4, shuffle=False)",
    "load_shuffle": "volprep.load(OUT, batch_size=4) (shuffle=True)",
    "load_float16": "volprep.load(OUT, batch_size=4, shuffle=False, dtype='float16')",
    "read": "tf.data.TFRecordDataset(files), counted",
}
FRESH_EPOCHS = 3  # epoch 1 untimed, epochs 2-3 timed


def _probe_fresh(out: Path, mode: str, epochs: int) -> dict[str, Any]:
    """One fresh process as a user meets the loader (run through ``--probe-fresh``).

    Times epochs 2..``epochs`` (epoch 1 is where TensorFlow traces and the pipeline starts);
    ``load_shuffle`` also times the first batch: ``import volprep``, ``import tensorflow``
    (``volprep.load`` would import it), ``volprep.load`` and ``next(iter(ds))``.
    """
    start = time.perf_counter()
    import volprep

    after_volprep = time.perf_counter()
    import tensorflow as tf

    after_tf = time.perf_counter()
    files, manifest = shard_files(out)
    volumes = manifest.splits["train"].num_records
    first: dict[str, float] = {}
    if mode == "read":
        ds = tf.data.TFRecordDataset(files)
        first_epoch = _epoch_fn(ds, count=True)
    else:
        options: dict[str, Any] = {} if mode == "load_shuffle" else {"shuffle": False}  # load_shuffle: defaults
        if mode == "load_float16":
            options["dtype"] = "float16"
        before_load = time.perf_counter()
        ds = volprep.load(out, batch_size=BATCH, **options)
        after_load = time.perf_counter()
        it = iter(ds)
        next(it)
        done = time.perf_counter()
        if mode == "load_shuffle":
            first = {"first_batch_s": done - start, "import_volprep_s": after_volprep - start,
                     "import_tensorflow_s": after_tf - after_volprep, "load_s": after_load - before_load,
                     "next_s": done - after_load}

        def first_epoch() -> None:  # the rest of epoch 1, from the iterator that gave the first batch
            for _ in it:
                pass

    per_epoch = []
    for epoch in range(epochs):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        t = time.perf_counter()
        if epoch == 0:
            first_epoch()
        else:
            _epoch_fn(ds, mode == "read")()
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime + after.ru_stime) - (usage.ru_utime + usage.ru_stime)
        per_epoch.append({"volumes_per_s": volumes / wall, "cpu_ms_per_volume": cpu / volumes * 1e3,
                          "system_ms_per_volume": (after.ru_stime - usage.ru_stime) / volumes * 1e3,
                          "faults_per_volume": (after.ru_minflt - usage.ru_minflt) / volumes, "seconds": wall})
    timed = per_epoch[1:]
    seconds = sum(e["seconds"] for e in timed)
    return {"mode": mode, "volumes_per_s": volumes * len(timed) / seconds,
            "cpu_ms_per_volume": sum(e["cpu_ms_per_volume"] for e in timed) / len(timed),
            "system_ms_per_volume": sum(e["system_ms_per_volume"] for e in timed) / len(timed),
            "faults_per_volume": sum(e["faults_per_volume"] for e in timed) / len(timed),
            "epochs": per_epoch, **first}


def fresh_rows(out: Path, repeats: int, epochs: int = FRESH_EPOCHS, one_process: bool = False) -> dict[str, Any]:
    """Every :data:`FRESH_MODES` row in fresh processes, ``repeats`` times in turn.

    ``one_process`` runs the modes one after another in a single process, only the first
    of them fresh: the ``--quick`` test run, whose figures mean nothing and which only has
    to be quick (one TensorFlow start-up instead of four).
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

    def probe(modes: list[str]) -> list[dict[str, Any]]:
        cmd = [sys.executable, __file__, "--probe-fresh", ",".join(modes), "--shards", str(out), "--epochs", str(epochs)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"fresh-process probe failed: {done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in FRESH_MODES}
    for _ in range(repeats):
        # load_shuffle first, so that the one process times a real first batch
        results = (probe(["load_shuffle", *(m for m in FRESH_MODES if m != "load_shuffle")]) if one_process
                   else [probe([mode])[0] for mode in FRESH_MODES])
        for r in results:
            runs[r["mode"]].append(r)
    rows: dict[str, Any] = {}
    for mode, rs in runs.items():
        rows[mode] = {"what": FRESH_MODES[mode], **{k: median([r[k] for r in rs]) for k in
                      ("volumes_per_s", "cpu_ms_per_volume", "system_ms_per_volume", "faults_per_volume")},
                      "runs": [r["volumes_per_s"] for r in rs], "epochs": [r["epochs"] for r in rs]}
    first = runs["load_shuffle"]
    rows["first_batch"] = {k: median([r[k] for r in first]) for k in
                           ("first_batch_s", "import_volprep_s", "import_tensorflow_s", "load_s", "next_s")}
    rows["first_batch"]["runs"] = [r["first_batch_s"] for r in first]
    return rows


def _replica(files: list[str], features: Any, parse: str) -> Any:
    """The loader's pipeline rebuilt by hand with another parse stage (for :func:`tune`)."""
    import tensorflow as tf

    from volprep import loader as loader_module
    from volprep.schema_tf import decode_batch, parse_spec

    spec = parse_spec(features, ["image"])
    autotune = tf.data.AUTOTUNE
    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=0).interleave(
        lambda f: tf.data.TFRecordDataset(f, buffer_size=loader_module.READ_BUFFER_BYTES),
        cycle_length=loader_module.DEFAULT_CYCLE_LENGTH, num_parallel_calls=autotune, deterministic=False)
    ds = ds.shuffle(loader_module.MIN_SHUFFLE_BUFFER, seed=0)

    def image(parsed: Any) -> Any:
        return tf.cast(decode_batch(parsed, features)["image"], tf.float32)

    if parse == "per_record":
        ds = ds.map(lambda s: image(tf.io.parse_example(s[None], spec))[0], num_parallel_calls=autotune,
                    deterministic=False).batch(BATCH)
    elif parse == "per_batch":
        ds = ds.batch(BATCH).map(lambda s: image(tf.io.parse_example(s, spec)), num_parallel_calls=autotune,
                                 deterministic=False)
    else:  # parse_example_dataset: tf.data's fused parsing stage
        ds = ds.batch(BATCH).apply(tf.data.experimental.parse_example_dataset(
            spec, num_parallel_calls=autotune, deterministic=False))
        ds = ds.map(image, num_parallel_calls=autotune, deterministic=False)
    return ds.prefetch(loader_module.DEFAULT_PREFETCH)


def _with_options(ds: Any, name: str) -> Any:
    """``ds`` with one tf.data option changed (for :func:`tune`)."""
    import tensorflow as tf

    options = tf.data.Options()
    if name == "intra_op 1":
        options.threading.max_intra_op_parallelism = 1
    elif name == "ram_budget 256 MiB":
        options.autotune.ram_budget = 256 << 20
    elif name == "map_parallelization, parallel_batch off":
        options.experimental_optimization.map_parallelization = False
        options.experimental_optimization.parallel_batch = False
    elif name == "inject_prefetch off":
        options.experimental_optimization.inject_prefetch = False
    return ds.with_options(options)


TUNE_OPTIONS = ("loader's", "intra_op 1", "ram_budget 256 MiB", "map_parallelization, parallel_batch off",
                "inject_prefetch off")


def tune(out: Path, volumes: int, epochs: int, repeats: int) -> dict[str, Any]:
    """Sweeps the loader's knobs one at a time around the defaults (float32 output).

    Every variant's dataset is built and warmed up first; then each repeat times every
    variant once, in turn, so a busy spell on the machine (other processes) falls on all
    variants alike. Reports the median volumes/s and process CPU ms per volume.
    """
    import volprep
    from volprep import loader as loader_module

    streamed = {"direct": False}  # knobs of the streamed path only (direct reads have no interleave)
    sweeps: dict[str, dict[str, dict[str, Any]]] = {
        "reads": {"direct": {"direct": True}, "streamed": dict(streamed)},
        "cycle_length (streamed)": {str(c): {"cycle_length": c, **streamed} for c in (1, 2, 4, 8)},
        "block_length (streamed)": {str(b): {"block_length": b, **streamed} for b in (1, 4)},
        "threads": {("shared" if t == 0 else str(t)): {"threads": t} for t in (0, 2, 4)},
        "prefetch": {("autotune" if p == -1 else str(p)): {"prefetch": p} for p in (1, 2, -1)},
        "shuffle_buffer (streamed)": {str(b): {"shuffle_buffer": b, **streamed} for b in (0, 8, 16, 32)},
        "read_buffer (streamed)": {f"{b >> 10} KiB": {"read_buffer": b, **streamed}
                                   for b in (0, 256 << 10, 1 << 20, 8 << 20)},
        "dtype": {d: {"dtype": d} for d in ("float32", "float16")},
        "options": {name: {"options": name} for name in TUNE_OPTIONS},
    }
    files, manifest = shard_files(out)
    makers: dict[str, Callable[[], Any]] = {}
    default_buffer = loader_module.READ_BUFFER_BYTES

    def variant(kw: dict[str, Any]) -> Callable[[], Any]:
        def make() -> Any:
            kw2 = dict(kw)
            loader_module.READ_BUFFER_BYTES = kw2.pop("read_buffer", default_buffer)  # read at build time
            options = kw2.pop("options", "loader's")
            try:
                return _with_options(volprep.load(out, batch_size=BATCH, seed=0, **kw2), options)
            finally:
                loader_module.READ_BUFFER_BYTES = default_buffer
        return make

    for knob, variants in sweeps.items():
        for name, kw in variants.items():
            makers[f"{knob}|{name}"] = variant(kw)
    for parse in ("per_record", "per_batch", "parse_example_dataset"):
        makers[f"parse|{parse}"] = functools.partial(_replica, files, manifest.features, parse)
    makers["parse|per_batch (volprep.load direct=False)"] = variant({"direct": False})
    measured = rates(makers, volumes, epochs, repeats)
    results: dict[str, Any] = {"batch_size": BATCH, "records": volumes, "epochs": epochs, "repeats": repeats,
                               "load_avg_1m_end": os.getloadavg()[0], "cpu_ms_per_volume": {}}
    for key, r in measured.items():
        knob, name = key.split("|", 1)
        results.setdefault(knob, {})[name] = r["volumes_per_s"]
        results["cpu_ms_per_volume"].setdefault(knob, {})[name] = r["cpu_ms_per_volume"]
    return results


ALLOCATOR_MODES = ("off", "on", "on, arenas uncapped")


def allocator_effect(out: Path, volumes: int, epochs: int, repeats: int) -> dict[str, Any]:
    """volprep.load without :func:`volprep.malloc.tune_allocator`, with it, and with it but
    glibc's arena count left alone, each in a fresh process (in turn, ``repeats`` times)."""
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in ALLOCATOR_MODES}
    for _ in range(max(1, repeats // 2)):
        for mode in ALLOCATOR_MODES:
            cmd = [sys.executable, __file__, "--probe-allocator", mode, "--shards", str(out),
                   "--epochs", str(epochs), "--repeats", "3"]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                  env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            if proc.returncode != 0:
                raise RuntimeError(f"allocator probe failed: {proc.stderr[-2000:]}")
            runs[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {mode: {k: median([r[k] for r in rs]) for k in rs[0]} for mode, rs in runs.items()}


def _probe_allocator(out: Path, mode: str, epochs: int, repeats: int) -> dict[str, Any]:
    import volprep
    from volprep import malloc

    if mode == "on, arenas uncapped":
        malloc.MAX_ARENAS = 0
    volumes = shard_files(out)[1].splits["train"].num_records
    r = rate(lambda: volprep.load(out, batch_size=BATCH, seed=0, tune_malloc=mode != "off"), volumes, epochs, repeats)
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
    load_avg_start = os.getloadavg()[0]
    reads = read_limit_makers(files)
    makers: dict[str, Callable[[], Any]] = {
        "volprep_load": lambda: volprep.load(out, batch_size=BATCH, seed=0),
        "volprep_load_float16": lambda: volprep.load(out, batch_size=BATCH, seed=0, dtype="float16"),
        "volprep_load_streamed": lambda: volprep.load(out, batch_size=BATCH, seed=0, direct=False),
        "volprep_load_streamed_float16": lambda: volprep.load(out, batch_size=BATCH, seed=0, dtype="float16",
                                                              direct=False),
        **{f"read_limit: {k}": v for k, v in reads.items()},
    }
    measured = rates(makers, volumes, epochs, repeats, frozenset(f"read_limit: {k}" for k in reads))
    rows: dict[str, Any] = {
        "volprep_load": measured["volprep_load"],
        "volprep_load_float16": measured["volprep_load_float16"],
        "volprep_load_streamed": measured["volprep_load_streamed"],
        "volprep_load_streamed_float16": measured["volprep_load_streamed_float16"],
        "read_limit": best_read({k: measured[f"read_limit: {k}"] for k in reads}),
        "raw_recipe": raw_recipe(out, manifest, volumes, epochs, repeats),
        "read_floor": read_floor(files, volumes, epochs, repeats),
    }
    rows["fresh"] = fresh_rows(out, repeats, one_process=quick)
    tuning = None
    if do_tune:
        tuning = tune(out, volumes, epochs, repeats)
        tuning["allocator"] = allocator_effect(out, volumes, epochs, repeats)
    # Last: TF's from_generator resets glibc's trim threshold to 128 KiB for the whole
    # process ("Memory patch applied"), which would slow every in-process row after it.
    rows["from_generator"] = from_generator(
        sorted(heads(n, QUICK_SHAPE if quick else FULL_SHAPE).glob("head_*.nii.gz"))[:gen_n], max(1, repeats // 2))
    limit = rows["read_limit"]["volumes_per_s"]
    goals = [
        Goal("volprep.load / TFRecord read limit (float32 output)", rows["volprep_load"]["volumes_per_s"] / limit, 0.7),
        Goal("volprep.load / TFRecord read limit (float16 output)", rows["volprep_load_float16"]["volumes_per_s"] / limit,
             0.7),
        Goal("volprep.load / from_generator", rows["volprep_load"]["volumes_per_s"] / rows["from_generator"]["volumes_per_s"],
             20.0),
    ]
    result: dict[str, Any] = {
        "shards": str(out), "records": volumes, "record_mb": record_mb, "batch_size": BATCH,
        "image": manifest.features["image"].to_dict(), "epochs": epochs, "repeats": repeats,
        "fresh_epochs_timed": f"2-{FRESH_EPOCHS}", "load_avg_1m_start": load_avg_start,
        "load_avg_1m_end": os.getloadavg()[0], "tf_version": tf.__version__, "rows": rows,
        "goals": [g.to_dict() for g in goals],
    }
    if tuning is not None:
        result["tuning"] = tuning
    return result


def report(result: dict[str, Any]) -> str:
    """The loading table and its goals."""
    r, mb = result["rows"], result["record_mb"]
    names = {"read_limit": "read limit (TFRecordDataset, counted)", "volprep_load": "volprep.load (defaults, float32)",
             "volprep_load_float16": "volprep.load dtype='float16'",
             "volprep_load_streamed": "volprep.load direct=False (TFRecordDataset, parse_example)",
             "volprep_load_streamed_float16": "volprep.load direct=False dtype='float16'",
             "read_floor": "read floor (preadv + hardware CRC32C, no decode)",
             "raw_recipe": "raw-file recipe (read_file, decode_raw)",
             "from_generator": "from_generator (nibabel + zoom per step)"}
    rows = []
    for key, name in names.items():
        v = r[key]["volumes_per_s"]
        note = f"{v * mb:.0f} MB/s" if key != "from_generator" else "from .nii.gz"
        note += f", {r[key]['cpu_ms_per_volume']:.2f} CPU-ms/vol"
        if key == "read_limit":
            note += f" ({r[key]['best']})"
        rows.append((name, f"{v:.1f}", note))
    fresh = r["fresh"]
    for key in FRESH_MODES:
        f = fresh[key]
        rows.append((f"fresh process: {f['what']}", f"{f['volumes_per_s']:.1f}",
                     f"epochs 2-{FRESH_EPOCHS}, {f['cpu_ms_per_volume']:.2f} CPU-ms/vol "
                     f"({f['system_ms_per_volume']:.2f} system, {f['faults_per_volume']:.0f} page faults)/vol"))
    fb = fresh["first_batch"]
    rows.append(("fresh process: first batch (import volprep .. next(iter(ds)))", f"{fb['first_batch_s']:.2f} s",
                 f"import tensorflow {fb['import_tensorflow_s']:.2f} s, volprep.load {fb['load_s'] * 1e3:.0f} ms, "
                 f"next(iter(ds)) {fb['next_s'] * 1e3:.0f} ms"))
    shape = "x".join(map(str, result["image"]["shape"][:3]))
    text = table(f"Loading, volumes/s ({shape} {result['image']['dtype']} records, {result['records']} records, "
                 f"batch {result['batch_size']}, median of {result['repeats']}; load average "
                 f"{result['load_avg_1m_start']:.1f} -> {result['load_avg_1m_end']:.1f})", rows, ("loader", "vol/s", "note"))
    ratio = fresh["load"]["volumes_per_s"] / fresh["read"]["volumes_per_s"]
    text += (f"\n  fresh processes: volprep.load (shuffle=False) / plain TFRecordDataset = {ratio:.2f} "
             f"(shuffle=True: {fresh['load_shuffle']['volumes_per_s'] / fresh['read']['volumes_per_s']:.2f}, "
             f"float16: {fresh['load_float16']['volumes_per_s'] / fresh['read']['volumes_per_s']:.2f})")
    return text + "\n" + "\n".join(Goal(**{k: v for k, v in g.items() if k != "met"}).line() for g in result["goals"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny heads, one repeat (for tests)")
    parser.add_argument("--n", type=int, default=48, help="records in the shards")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--generator", type=int, default=6, help="volumes through from_generator")
    parser.add_argument("--tune", action="store_true", help="also sweep the loader knobs (loader_tuning.json)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--probe-allocator", choices=ALLOCATOR_MODES, help=argparse.SUPPRESS)
    parser.add_argument("--probe-fresh", help=argparse.SUPPRESS)  # comma-separated FRESH_MODES
    parser.add_argument("--shards", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe_allocator:
        print(json.dumps(_probe_allocator(args.shards, args.probe_allocator, args.epochs, args.repeats)))
        return 0
    if args.probe_fresh:
        print(json.dumps([_probe_fresh(args.shards, mode, args.epochs) for mode in args.probe_fresh.split(",")]))
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
