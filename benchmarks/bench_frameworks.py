"""Benchmark: volumes/s of the TF-free readers (PyTorch, numpy, Grain) against ``volprep.load``.

Shards are ``bench_load``'s (the benchmark heads, 256x256x160 int16 -> 128x128x80 float16,
made once by the real ``volprep shards`` and reused). Every row runs in a fresh Python
process (TensorFlow, torch and the allocator setting ``volprep.load`` makes stay apart),
rows taking turns so a busy machine slows them alike; each run times ``--epochs`` epochs
after one warm-up epoch; the figure is the median over ``--repeats`` runs. Batch 4; the
CPU time counts the process and its DataLoader workers.

* ``volprep_load``: ``volprep.load(out, batch_size=4, seed=0)`` (TensorFlow), iterated;
* ``torch_workers``: ``VolumeIterableDataset`` in a ``DataLoader`` with ``num_workers``
  = cores (persistent workers, ``set_epoch`` each epoch), float32 ``[B, C, D, H, W]``;
* ``torch_workers_f16``: the same with ``dtype="float16"`` (float16 through the workers'
  shared memory), cast to float32 in the training process;
* ``torch_map_workers``: ``VolumeDataset`` with a shuffling sampler, same workers;
* ``torch_in_process``: ``VolumeIterableDataset`` with ``num_workers=0``; and
  ``torch_in_process_1t`` the same after ``torch.set_num_threads(1)`` (torch's intra-op
  threads for the cast and the batch copy compete for 2 cores and spin when the machine is
  busy);
* ``numpy_reader``: ``volprep.readers.Reader`` iterated, one volume at a time (float32);
* ``grain_source``: ``grain.MapDataset.source(Source).shuffle().batch(4)``, in process;
* ``nibabel_dataset``: a ``torch.utils.data.Dataset`` reading the raw ``.nii.gz`` heads with
  nibabel, ``scipy.ndimage.zoom`` 0.5 (order 1) and z-score per item (the same volumes the
  shards hold), same DataLoader workers: what reading NIfTI in a Dataset costs.

Goals: ``torch_workers`` >= 20x ``nibabel_dataset`` and >= 0.7x ``volprep_load``. Writes
``results/frameworks.json`` (``frameworks_quick.json`` with ``--quick``: tiny heads, one
repeat, for a smoke run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import FULL_SHAPE, QUICK_SHAPE, Goal, heads, median, table, write_result  # noqa: E402

BATCH = 4
ROWS = ("volprep_load", "torch_workers", "torch_workers_f16", "torch_map_workers", "torch_in_process",
        "torch_in_process_1t", "numpy_reader", "grain_source", "nibabel_dataset")
NAMES = {
    "volprep_load": "volprep.load (TensorFlow, defaults)",
    "torch_workers": "volprep.torch iterable, DataLoader workers",
    "torch_workers_f16": "  same, float16 through workers, cast after",
    "torch_map_workers": "volprep.torch map-style, shuffling sampler, workers",
    "torch_in_process": "volprep.torch iterable, num_workers=0",
    "torch_in_process_1t": "  same, torch.set_num_threads(1)",
    "numpy_reader": "volprep.readers.Reader (numpy), per volume",
    "grain_source": "volprep.grain.Source in grain.MapDataset",
    "nibabel_dataset": "torch Dataset over .nii.gz (nibabel + zoom), workers",
}


def _cpu_s() -> float:
    """CPU seconds of this process and its live children (DataLoader workers)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # a worker that just exited
            total += sum(child.cpu_times()[:2])
    return total


def _epochs(make_epoch: Callable[[int], Iterable[Any]], count: Callable[[Any], int], volumes: int,
            epochs: int) -> dict[str, Any]:
    """Volumes/s over ``epochs`` epochs after one warm-up epoch, and CPU ms per volume."""
    seen = sum(count(b) for b in make_epoch(0))
    if seen != volumes:
        raise RuntimeError(f"an epoch yielded {seen} volumes, expected {volumes}")
    start, cpu = time.perf_counter(), _cpu_s()
    for e in range(1, epochs + 1):
        for batch in make_epoch(e):
            seen += count(batch)
    wall = time.perf_counter() - start
    return {"volumes_per_s": volumes * epochs / wall, "cpu_ms_per_volume": (_cpu_s() - cpu) / (volumes * epochs) * 1e3}


def run_row(row: str, shards: Path, nifti: Path, volumes: int, epochs: int, workers: int) -> dict[str, Any]:
    """One row, in this process (``--row``)."""
    if row == "volprep_load":
        import volprep

        ds = volprep.load(shards, batch_size=BATCH, seed=0)
        return _epochs(lambda e: ds, lambda b: int(b.shape[0]), volumes, epochs)
    if row == "numpy_reader":
        from volprep.readers import Reader

        reader = Reader(shards, seed=0)
        return _epochs(reader.epoch, lambda s: 1, volumes, epochs)
    if row == "grain_source":
        import grain

        from volprep.grain import Source

        source = Source(shards)
        return _epochs(lambda e: grain.MapDataset.source(source).shuffle(seed=e).batch(BATCH),
                       lambda b: len(b["image"]), volumes, epochs)
    import torch
    from torch.utils.data import DataLoader, Dataset

    from volprep.torch import VolumeDataset, VolumeIterableDataset

    loader_kw: dict[str, Any] = {"batch_size": BATCH, "num_workers": workers}
    if workers:
        loader_kw |= {"persistent_workers": True, "prefetch_factor": 4}
    if row == "nibabel_dataset":
        paths = sorted(nifti.glob("head_*.nii.gz"))[:volumes]
        loader = DataLoader(_NiftiDataset(paths), **loader_kw)
        return _epochs(lambda e: loader, lambda b: len(b), len(paths), epochs)
    if row == "torch_map_workers":
        mapped: Dataset[Any] = VolumeDataset(shards)
        loader = DataLoader(mapped, shuffle=True, generator=torch.Generator().manual_seed(0), **loader_kw)
        return _epochs(lambda e: loader, lambda b: len(b), volumes, epochs)
    f16 = row == "torch_workers_f16"
    ds = VolumeIterableDataset(shards, seed=0, batch_size=BATCH, dtype="float16" if f16 else "float32")
    if row.startswith("torch_in_process"):
        loader_kw = {"batch_size": BATCH, "num_workers": 0}
        if row.endswith("_1t"):
            torch.set_num_threads(1)
    loader = DataLoader(ds, **loader_kw)

    def epoch(e: int) -> Iterable[Any]:
        ds.set_epoch(e)
        for batch in loader:
            yield batch.float() if f16 else batch

    return _epochs(epoch, lambda b: len(b), volumes, epochs)


class _NiftiDataset:
    """The naive baseline: nibabel ``get_fdata``, zoom 0.5 (order 1), z-score, per item."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        import nibabel as nib
        import numpy as np
        import scipy.ndimage
        import torch

        image = nib.load(str(self.paths[i])).get_fdata(dtype=np.float32)
        image = scipy.ndimage.zoom(image, 0.5, order=1)
        image = (image - image.mean()) / image.std()
        return torch.from_numpy(np.ascontiguousarray(image[None]))


def _subprocess_row(row: str, shards: Path, nifti: Path, volumes: int, epochs: int, workers: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--row", row, "--shards", str(shards), "--nifti", str(nifti),
           "--volumes", str(volumes), "--epochs", str(epochs), "--workers", str(workers)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"row {row} failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def measure(quick: bool, n: int, epochs: int, repeats: int, nib_n: int, workers: int) -> dict[str, Any]:
    """Every row, ``repeats`` times in turn, each in a fresh process."""
    import bench_load

    from volprep.manifest import read_manifest

    out = bench_load.make_shards(quick, n)
    manifest = read_manifest(out)
    volumes = manifest.splits["train"].num_records
    nifti = heads(n, QUICK_SHAPE if quick else FULL_SHAPE)
    runs: dict[str, list[dict[str, Any]]] = {row: [] for row in ROWS}
    for _ in range(repeats):
        for row in ROWS:
            nib = row == "nibabel_dataset"
            runs[row].append(_subprocess_row(row, out, nifti, nib_n if nib else volumes, 1 if nib else epochs, workers))
    rows = {row: {"volumes_per_s": median([r["volumes_per_s"] for r in rs]),
                  "cpu_ms_per_volume": median([r["cpu_ms_per_volume"] for r in rs]),
                  "runs": [round(r["volumes_per_s"], 1) for r in rs]} for row, rs in runs.items()}
    torch_rate = rows["torch_workers"]["volumes_per_s"]
    goals = [Goal("volprep.torch (workers) / nibabel Dataset (workers)", torch_rate / rows["nibabel_dataset"]["volumes_per_s"], 20.0),
             Goal("volprep.torch (workers) / volprep.load", torch_rate / rows["volprep_load"]["volumes_per_s"], 0.7)]
    import torch

    return {"shards": str(out), "records": volumes, "batch_size": BATCH, "workers": workers,
            "image": manifest.features["image"].to_dict(), "epochs": epochs, "repeats": repeats,
            "nibabel_volumes": nib_n, "torch_version": torch.__version__, "rows": rows,
            "goals": [g.to_dict() for g in goals]}


def report(result: dict[str, Any]) -> str:
    """The table and its goals."""
    shape = "x".join(map(str, result["image"]["shape"][:3]))
    rows = [(NAMES[k], f"{v['volumes_per_s']:.1f}", f"{v['cpu_ms_per_volume']:.2f} CPU-ms/vol; runs {v['runs']}")
            for k, v in result["rows"].items()]
    text = table(f"Reading without TensorFlow, volumes/s ({shape} {result['image']['dtype']} records, "
                 f"{result['records']} records, batch {result['batch_size']}, {result['workers']} workers, "
                 f"median of {result['repeats']})", rows, ("reader", "vol/s", "note"))
    return text + "\n" + "\n".join(Goal(**{k: v for k, v in g.items() if k != "met"}).line() for g in result["goals"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny heads, one repeat (a smoke run)")
    parser.add_argument("--n", type=int, default=32, help="records in the shards")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nibabel", type=int, default=8, help="volumes through the nibabel Dataset")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="DataLoader workers")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)
    parser.add_argument("--shards", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--nifti", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--volumes", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.row:
        print(json.dumps(run_row(args.row, args.shards, args.nifti, args.volumes, args.epochs, args.workers)))
        return 0
    if args.quick:
        n, epochs, repeats, nib_n = 8, 1, 1, 2
    else:
        n, epochs, repeats, nib_n = args.n, args.epochs, args.repeats, args.nibabel
    result = measure(args.quick, n, epochs, repeats, nib_n, args.workers)
    print(report(result))
    path = write_result("frameworks", result, args.quick, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
