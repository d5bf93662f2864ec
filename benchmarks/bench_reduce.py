"""Benchmark: milliseconds per volume for each reduction of the preprocess stage.

A synthetic 256x256x160 int16 volume (smooth ellipsoid phantom + Gaussian noise,
Fortran-ordered as nibabel returns it) goes through each reduction; medians over
``--repeats`` runs are printed and written to ``benchmarks/results/reduce.json``. The TF
batched wavelet decoder is measured in volumes/s at 128x128x80 (the shard shape).
``--quick`` uses a 64x64x40 volume and 2 repeats (for the test suite).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from volprep.preprocess import resample, wavelet
from volprep.preprocess.downsample import block_mean, block_mean_reference

RESULTS = Path(__file__).resolve().parent / "results"


def phantom(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Smooth nested ellipsoids plus noise, int16, Fortran order (like a NIfTI read)."""
    rng = np.random.default_rng([seed, 1])
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    r = x**2 / 0.8 + y**2 / 0.6 + z**2 / 0.7
    body = 600 * (r < 0.8) + 300 * (r < 0.4) + 200 * np.exp(-((x - 0.2) ** 2 + y**2 + z**2) * 30)
    noisy = body + rng.normal(0, 15, shape).astype(np.float32)
    return np.asfortranarray(noisy.astype(np.int16))


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn()`` in ms (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny volume, 2 repeats")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="default results/reduce.json (reduce_quick.json with --quick)")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = RESULTS / ("reduce_quick.json" if args.quick else "reduce.json")
    shape = (64, 64, 40) if args.quick else (256, 256, 160)
    small = (32, 32, 16) if args.quick else (128, 128, 80)
    repeats = 2 if args.quick else args.repeats
    volume = phantom(shape)[..., None]
    c_volume = np.ascontiguousarray(volume)
    affine = np.eye(4)
    rows: dict[str, float] = {}
    rows["downsample 2x fast (F order)"] = median_ms(lambda: block_mean(volume, (2, 2, 2)), repeats)
    rows["downsample 2x fast (C order)"] = median_ms(lambda: block_mean(c_volume, (2, 2, 2)), repeats)
    rows["downsample 2x reshape+mean (C order)"] = median_ms(lambda: block_mean_reference(c_volume, (2, 2, 2)), repeats)
    grid = resample.resample_grid(shape, affine, (2.0, 2.0, 2.0))
    for interp in ("linear", "cubic"):
        rows[f"resample 2 mm {interp} + anti-alias"] = median_ms(
            lambda interp=interp: resample.resample_image(volume, *grid, interpolation=interp), repeats)
    rows["wavelet approx db2 level 1"] = median_ms(lambda: wavelet.approximation(volume, "db2", 1), repeats)
    rows["wavelet approx haar level 1"] = median_ms(lambda: wavelet.approximation(volume, "haar", 1), repeats)
    full = np.ascontiguousarray(volume, dtype=np.float32)
    spec = wavelet.layout(full.shape, "db2", 2, 0.05)  # type: ignore[arg-type]
    blob = wavelet.encode(full, "db2", 2, 0.05)
    rows["wavelet compress db2 L2 keep 0.05 encode"] = median_ms(lambda: wavelet.encode(full, "db2", 2, 0.05), repeats)
    rows["wavelet compress decode (numpy)"] = median_ms(lambda: wavelet.decode(blob, spec), repeats)

    import tensorflow as tf

    from volprep.preprocess.wavelet_tf import decode_batch

    batch = 8
    record = np.ascontiguousarray(phantom(small, 3)[..., None], dtype=np.float32)
    small_spec = wavelet.layout(record.shape, "db2", 2, 0.05)  # type: ignore[arg-type]
    data = tf.constant([wavelet.encode(record, "db2", 2, 0.05)] * batch)
    decoder = tf.function(lambda d: decode_batch(d, small_spec))
    tf_ms = median_ms(lambda: decoder(data).numpy(), repeats)
    numpy_small_ms = median_ms(lambda: wavelet.decode(wavelet.encode(record, "db2", 2, 0.05), small_spec), repeats)
    rows[f"TF decode_batch {small} x{batch} (ms per batch)"] = tf_ms
    throughput = {
        "shape": list(small), "batch": batch,
        "tf_volumes_per_s": batch * 1000 / tf_ms,
        "numpy_encode_plus_decode_ms": numpy_small_ms,
        "device": "CPU" if not tf.config.list_physical_devices("GPU") else "GPU",
    }
    width = max(map(len, rows))
    print(f"{'method':<{width}}  median ms  (volume {shape}, {repeats} runs)")
    for name, ms in rows.items():
        print(f"{name:<{width}}  {ms:9.1f}")
    print(f"TF decode_batch throughput: {throughput['tf_volumes_per_s']:.1f} volumes/s at {small} on {throughput['device']}")
    result = {
        "volume_shape": list(shape), "dtype": "int16", "repeats": repeats, "quick": args.quick,
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "median_ms": rows, "tf_decode": throughput,
        "wavelet_record_bytes": spec["nbytes"], "float16_bytes": 2 * full.size,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
