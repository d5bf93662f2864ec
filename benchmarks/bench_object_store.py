"""Benchmark: what the object-storage layer costs, against local disk on the same machine.

A demo dataset (``--cases`` cases, 64x64x40) is converted by the real ``volprep shards``
to a local folder and to ``s3://`` on a moto S3 server on 127.0.0.1 (the same server the
tests use: it runs in this process, so its own CPU is counted against the S3 rows), each
job from an empty cache; then ``volprep.load`` reads each output's train split (batch 4,
no shuffling) after one warm-up pass: records/s. Medians of ``--repeats`` runs. Writes
``results/object_store.json``.

This measures the layer's overhead (staging, HTTP, fsspec streaming instead of
TensorFlow's reader), not a cloud store's bandwidth or latency.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from s3server import s3_server  # noqa: E402

from volprep.cli import main  # noqa: E402
from volprep.demo import write_demo  # noqa: E402


def _load_rate(where: str) -> float:
    import volprep

    ds = volprep.load(where, split="train", batch_size=4, shuffle=False)
    sum(1 for _ in ds)  # warm-up
    start = time.perf_counter()
    n = sum(int(x.shape[0]) for x, _ in ds)
    return n / (time.perf_counter() - start)


def run(cases: int, repeats: int) -> dict[str, object]:
    rows: dict[str, dict[str, list[float]]] = {"local": {"job_s": [], "load_rec_s": []},
                                               "s3": {"job_s": [], "load_rec_s": []}}
    with tempfile.TemporaryDirectory() as tmp, s3_server("bench") as _:
        data = write_demo(Path(tmp) / "data", n_cases=cases, shape=(64, 64, 40), seed=1)
        for r in range(repeats):
            for kind in ("local", "s3"):
                out = str(Path(tmp) / f"out{r}") if kind == "local" else f"s3://bench/out{r}"
                start = time.perf_counter()
                code = main(["shards", str(data), "--out", out, "--quiet", "--no-report", "--workers", "2",
                             "--cache", str(Path(tmp) / f"cache-{kind}{r}")])
                assert code == 0
                rows[kind]["job_s"].append(time.perf_counter() - start)
                rows[kind]["load_rec_s"].append(_load_rate(out))
    medians = {k: {m: round(statistics.median(v), 3) for m, v in row.items()} for k, row in rows.items()}
    return {"cases": cases, "repeats": repeats, "runs": rows, "median": medians,
            "s3_over_local": {"job_time": round(medians["s3"]["job_s"] / medians["local"]["job_s"], 2),
                              "load_rate": round(medians["s3"]["load_rec_s"] / medians["local"]["load_rec_s"], 2)}}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cases", type=int, default=24)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    result = run(args.cases, args.repeats)
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "object_store.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["median"]), json.dumps(result["s3_over_local"]))
