"""Benchmark: what each record payload encoding costs and saves, on real anatomy.

Tasks (tests/realdata.py): ``tissue`` (MNI152 T1 at 2 mm, grey/white matter, uint8),
``atlas`` (INIA19 with the NeuroMaps atlas, int16, ~650 sparse labels), ``grid`` (the
MNI152 T1 at 1 mm, a 61x73x59 box) and ``mni1mm``: the whole 197x233x189 MNI152 T1 at
1 mm with its grey/white matter labels (two cases, RAS and LPS), written here from the
corpus' sources. Every task is converted by the real ``volprep shards`` at full
resolution (``reduce = "none"``, z-score, float16, one train split, no balancing).

Two kinds of rows:

* payloads (``payloads``): each record's image and label volume (from the raw job)
  encoded by every encoding and zlib level, and a run-length prototype for label volumes
  (``rle16``: little-endian uint16 pairs (run length, value), runs cut at 65535, decoded in
  TF by cumsum/scatter/gather; not shipped): bytes a record, ratio against raw, encode ms
  a record (the converter's side: ``Feature.encode``, i.e. float16 bytes, shuffle, zlib)
  and TF decode ms for a batch of ``BATCH`` records (the loader's side: volprep's batched
  decoder under ``tf.function``, after parsing) with the decoded MB/s.
* jobs (``jobs``): whole jobs with chosen settings: shard bytes per case (the manifest's
  shard bytes / records) and ``volprep.load`` records/s (batch ``BATCH``, no shuffling,
  after a warm-up), against the raw job.

Writes ``results/storage.json`` (``--quick``: the tissue task, level 6, one repeat,
``results/storage_quick.json``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from common import CACHE, median, write_result  # noqa: E402

BATCH = 4
TASKS = ("tissue", "atlas", "grid", "mni1mm")
# whole-job settings: name -> [preprocess] lines
JOBS = {
    "raw": 'mask_encoding = "raw"\n',
    "mask-deflate": 'mask_encoding = "deflate"\n',
    "mask-deflate+image-deflate": 'mask_encoding = "deflate"\nimage_encoding = "deflate"\n',
    "mask-deflate+image-deflate-shuffle": 'mask_encoding = "deflate"\nimage_encoding = "deflate-shuffle"\n',
}
NNUNET_LIKE = {  # mni1mm only: nnU-Net's storage setting (crop to the foreground, float32)
    "float32-cropped-raw": 'crop_foreground = true\ndtype = "float32"\nmask_encoding = "raw"\n',
    "float32-cropped-deflate": ('crop_foreground = true\ndtype = "float32"\nmask_encoding = "deflate"\n'
                                'image_encoding = "deflate-shuffle"\n'),
}


# ---------------------------------------------------------------- data and jobs


def mni1mm_dataset() -> Path:
    """The whole 1 mm MNI152 T1 and its tissue labels as a 2-case MSD folder (written once)."""
    import json

    import nibabel as nib
    import realdata

    folder = CACHE / "storage-data-mni1mm"
    if (folder / "dataset.json").is_file():
        return folder
    src = realdata._Sources.decode(realdata._read_sources(realdata.base_dir() / "src"))
    labels = realdata._tissue(src.gm1, src.wm1, src.mni1)
    training = []
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])  # voxel i -> n - 1 - i along the first two axes
    flip[:2, 3] = np.array(src.mni1.data.shape[:2]) - 1
    for name, affine, order in (("mni_ras", src.mni1.affine, np.s_[:, :, :]),
                                ("mni_lps", src.mni1.affine @ flip, np.s_[::-1, ::-1, :])):
        for sub, data in (("imagesTr", src.mni1.data), ("labelsTr", labels.data)):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(np.ascontiguousarray(data[order]), affine), folder / sub / f"{name}.nii.gz")
        training.append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
    (folder / "dataset.json").write_text(json.dumps({
        "name": "mni1mm", "modality": {"0": "T1"}, "training": training, "numTraining": len(training),
        "labels": {"0": "background", "1": "grey matter", "2": "white matter"}}))
    return folder


def dataset(task: str) -> Path:
    import realdata

    return mni1mm_dataset() if task == "mni1mm" else realdata.task(task)


def run_job(task: str, name: str, settings: str) -> Path:
    """Runs ``volprep shards`` (its own process: a worker never holds TF) into a task's OUT."""
    out = CACHE / f"storage-out-{task}"
    config = CACHE / f"storage-out-{task}-{name}.toml"
    config.write_text('[job]\nsplits = { train = 1.0 }\nshard_size_mb = 256\nfidelity_sample = 0\n'
                      '[balance]\nenabled = false\n'
                      f'[preprocess]\nreduce = "none"\nnormalize = "zscore"\n{settings}'
                      + ("" if "dtype" in settings else 'dtype = "float16"\n'))
    cmd = [sys.executable, "-m", "volprep", "shards", str(dataset(task)), "--out", str(out), "--config",
           str(config), "--workers", "1", "--quiet", "--no-report"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"volprep shards {task} ({name}) failed: {proc.stderr[-2000:]}")
    return out


def loader_rate(out: Path, records: int, repeats: int) -> float:
    """``volprep.load`` records/s: ``records`` records (repeating the split), batch BATCH."""
    import volprep

    ds = volprep.load(str(out), split="train", batch_size=BATCH, shuffle=False, repeat=True)
    batches = max(2, records // BATCH)
    for _ in ds.take(2):  # warm-up: graph building, file open
        pass
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in ds.take(batches):
            pass
        rates.append(batches * BATCH / (time.perf_counter() - start))
    return median(rates)


def job_row(task: str, name: str, settings: str, repeats: int) -> dict[str, Any]:
    from volprep.manifest import read_manifest

    out = run_job(task, name, settings)
    m = read_manifest(out)
    shards = m.splits["train"].shards
    records = sum(s.num_records for s in shards)
    size = sum(s.num_bytes for s in shards)
    features = {k: f.to_dict() for k, f in m.features.items() if k in ("image", "label", "mask")}
    return {"task": task, "job": name, "records": records, "shard_bytes_per_case": size / records,
            "features": features, "load_records_per_s": loader_rate(out, max(16, 4 * records), repeats)}


# ---------------------------------------------------------------- payloads


def rle16_encode(mask: np.ndarray) -> bytes:
    """The run-length prototype: uint16 (length, value) pairs, runs cut at 65535."""
    flat = mask.reshape(-1)
    starts = np.r_[0, np.flatnonzero(flat[1:] != flat[:-1]) + 1]
    lengths = np.diff(np.r_[starts, flat.size])
    pieces = -(-lengths // 65535)
    values = np.repeat(flat[starts].astype(np.int64).astype(np.uint16), pieces)  # int16 bits kept
    cut = np.full(int(pieces.sum()), 65535, np.int64)
    ends = np.cumsum(pieces) - 1
    cut[ends] = lengths - 65535 * (pieces - 1)
    return np.stack([cut.astype("<u2"), values.astype("<u2")], axis=1).tobytes()


def rle16_tf(shape: tuple[int, ...], dtype: str) -> Any:
    import tensorflow as tf

    size = int(np.prod(shape))

    @tf.function
    def decode(batch: Any) -> Any:
        pairs = tf.reshape(tf.io.decode_raw(tf.strings.reduce_join(batch), tf.uint16), [-1, 2])
        ends = tf.cumsum(tf.cast(pairs[:, 0], tf.int32))
        total = tf.shape(batch)[0] * size
        tf.debugging.assert_equal(ends[-1], total, message="rle16: runs do not add up to the batch")
        marks = tf.scatter_nd(ends[:-1, None], tf.ones_like(ends[:-1]), [total])
        values = tf.gather(pairs[:, 1], tf.cumsum(marks))
        out = tf.bitcast(values, tf.int16) if dtype == "int16" else tf.cast(values, tf.as_dtype(dtype))
        return tf.reshape(out, [-1, *shape])

    return decode


def tf_decoder(feature: Any) -> Any:
    import tensorflow as tf

    from volprep.schema import Schema
    from volprep.schema_tf import decode_batch

    schema = Schema({feature.name: feature})
    return tf.function(lambda batch: decode_batch({feature.name: batch}, schema)[feature.name])


def time_decode(decode: Any, payloads: list[bytes], repeats: int) -> float:
    import tensorflow as tf

    batch = tf.constant([payloads[i % len(payloads)] for i in range(BATCH)])
    decode(batch)  # trace
    times = []
    for _ in range(max(3, repeats)):
        start = time.perf_counter()
        decode(batch).numpy()
        times.append(time.perf_counter() - start)
    return median(times) * 1e3


def payload_rows(task: str, levels: tuple[int, ...], repeats: int) -> list[dict[str, Any]]:
    """Every encoding of the raw job's images and label volumes, measured."""
    import dataclasses

    import tensorflow as tf

    from volprep.manifest import read_manifest
    from volprep.records import iter_records

    out = run_job(task, "raw", JOBS["raw"])
    m = read_manifest(out)
    label = m.features.label_volume
    assert label is not None, f"{task}: no label volumes"
    arrays: dict[str, list[np.ndarray]] = {"image": [], label: []}
    for shard in m.splits["train"].shards:
        for record in iter_records(out / shard.file):
            values = m.features.decode(record, ("image", label))
            for name in arrays:
                arrays[name].append(np.array(values[name]))
    rows = []
    for name, values in arrays.items():
        raw_feature = m.features[name]
        raw_bytes = values[0].nbytes
        variants: list[tuple[str, int | None]] = [("raw", None)]
        variants += [(enc, lvl) for enc in ("deflate", "deflate-shuffle") for lvl in levels
                     if enc == "deflate" or np.dtype(raw_feature.dtype).itemsize > 1]
        if name == label:
            variants.append(("rle16", None))
        for encoding, level in variants:
            feature = (raw_feature if encoding in ("raw", "rle16") else
                       dataclasses.replace(raw_feature, encoding=encoding, layout={"level": level}))
            encode = (rle16_encode if encoding == "rle16" else feature.encode)
            payloads, times = [], []
            for value in values:
                best: list[float] = []
                while len(best) < repeats and sum(best) < 1.0:  # slow levels: fewer repeats
                    start = time.perf_counter()
                    payload = encode(value)
                    best.append(time.perf_counter() - start)
                payloads.append(payload)
                times.append(min(best))
            decode = (rle16_tf(raw_feature.shape, raw_feature.dtype) if encoding == "rle16"
                      else tf_decoder(feature))
            decoded = decode(tf.constant(payloads[:1])).numpy()[0]
            assert np.array_equal(decoded.view(np.uint8), values[0].view(np.uint8)), (task, name, encoding)
            decode_ms = time_decode(decode, payloads, repeats)
            mean_bytes = float(np.mean([len(p) for p in payloads]))
            rows.append({
                "task": task, "feature": "mask" if name == label else "image", "dtype": raw_feature.dtype,
                "shape": list(raw_feature.shape), "encoding": encoding, "level": level, "records": len(values),
                "raw_bytes": raw_bytes, "bytes_per_record": mean_bytes, "ratio": raw_bytes / mean_bytes,
                "encode_ms": 1e3 * median(times), "decode_ms_per_batch": decode_ms, "batch": BATCH,
                "decode_mb_per_s": BATCH * raw_bytes / 1e6 / (decode_ms / 1e3),
            })
            print(_payload_line(rows[-1]), flush=True)
    return rows


def _payload_line(r: dict[str, Any]) -> str:
    enc = r["encoding"] + (f" L{r['level']}" if r["level"] is not None else "")
    return (f"  {r['task']:7s} {r['feature']:5s} {r['dtype']:7s} {enc:19s} {r['bytes_per_record'] / 1e3:10.1f} kB"
            f" {r['ratio']:6.1f}x  encode {r['encode_ms']:8.1f} ms  decode {r['decode_ms_per_batch']:8.1f} ms"
            f"/batch of {r['batch']} ({r['decode_mb_per_s']:6.0f} MB/s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the tissue task, level 6, one repeat")
    parser.add_argument("--tasks", default=None, help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    tasks = tuple(args.tasks.split(",")) if args.tasks else (("tissue",) if args.quick else TASKS)
    levels = (6,) if args.quick else (1, 6, 9)
    repeats = 1 if args.quick else max(1, args.repeats)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing notes: every variant is its own tf.function
    CACHE.mkdir(parents=True, exist_ok=True)
    payloads, jobs = [], []
    for task in tasks:
        print(f"{task}: payloads (bytes a record, ratio to raw, converter encode, TF decode)", flush=True)
        payloads += payload_rows(task, levels, repeats)
        print(f"{task}: whole jobs (shard bytes per case, volprep.load records/s)", flush=True)
        settings = {**JOBS, **(NNUNET_LIKE if task == "mni1mm" and not args.quick else {})}
        for name, lines in settings.items():
            jobs.append(job_row(task, name, lines, repeats))
            r = jobs[-1]
            print(f"  {task:7s} {name:36s} {r['shard_bytes_per_case'] / 1e6:8.2f} MB/case"
                  f"  load {r['load_records_per_s']:7.1f} records/s", flush=True)
    path = write_result("storage", {"batch": BATCH, "levels": list(levels), "repeats": repeats,
                                    "payloads": payloads, "jobs": jobs}, args.quick, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
