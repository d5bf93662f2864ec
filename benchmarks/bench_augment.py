"""Benchmark: ms per volume of the affine augmentation, scipy per volume vs TF batched.

For each shape (128x128x80 and 128^3; tiny ones with ``--quick``) times, as medians over
``--runs`` runs after two warm-up calls (the first call's time, which includes tracing and
XLA compilation, is reported separately as ``first_ms``):

* ``scipy_affine_order1``: ``scipy.ndimage.affine_transform(order=1)``, one volume (the baseline);
* ``numpy_executor_affine``: volprep's numpy executor (three 1D passes), one volume;
* TF, batch ``--batch``, per volume: the default path (``augment_batch``, three 1D passes,
  one XLA cluster per pass), the same without XLA, the three passes in one XLA cluster, a
  direct 8-tap trilinear gather (with and without XLA), and two 2D passes of
  ``ImageProjectiveTransformV3`` (slices, then lines);
* the Fourier shift (numpy and TF) and the full ``augment_batch`` with every op.

It also reports the interpolation error of the three-pass and direct trilinear resampling
against an analytic smooth volume. Prints a table; writes JSON to
``benchmarks/results/augment.json`` (``augment_quick.json`` with ``--quick``).
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
import scipy.ndimage

from volprep.augment import numpy_ops
from volprep.augment.spec import Augment, Params, affine_matrix, pull_passes, sample

RESULTS = Path(__file__).resolve().parent / "results"
SPATIAL = Augment(rotate_deg=10, scale=[0.9, 1.1], shear=0.02, shift_vox=3)
FULL = Augment(flip_axes=[0, 1], rotate_deg=10, scale=[0.9, 1.1], shift_vox=3, fourier_shift_vox=1.0,
               intensity_scale=[0.9, 1.1], intensity_shift=0.1, gamma=[0.8, 1.25], noise_std=0.05)


def timed_interleaved(fns: dict[str, Callable[[], Any]], runs: int) -> dict[str, dict[str, float]]:
    """First-call time and median of ``runs`` calls, in ms, the variants run round-robin.

    Round-robin (every run times each variant once) so that load from other processes on a
    shared machine falls on every variant alike: the ratios stay meaningful.
    """
    out: dict[str, dict[str, float]] = {}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for name, fn in fns.items():
        t = time.perf_counter()
        fn()
        out[name] = {"first_ms": (time.perf_counter() - t) * 1e3}
        fn()
    for _ in range(runs):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) * 1e3)
    for name in fns:
        out[name]["median_ms"] = statistics.median(times[name])
    return out


def tf_variants(shape: tuple[int, int, int], batch: int) -> dict[str, Callable[..., Any]]:
    """TF resampling variants: fn(images [B,D,H,W,1], rows [B,3,4], pull [B,3,4]) -> images."""
    import tensorflow as tf

    from volprep.augment import tf_ops

    d, h, w = shape

    def trilinear(x: Any, rows: Any, pull: Any) -> Any:
        grid = tf.stack(tf.meshgrid(*(tf.range(n, dtype=tf.float32) for n in shape), indexing="ij"), -1)
        p = tf.einsum("bij,dhwj->bdhwi", pull[:, :, :3], grid) + pull[:, None, None, None, :, 3]
        f0 = tf.floor(p)
        frac = p - f0
        i0 = tf.cast(f0, tf.int32)
        flat = tf.reshape(x, [-1])
        out = tf.zeros(tf.shape(p)[:4])
        b = tf.range(tf.shape(x)[0])[:, None, None, None]
        for corner in range(8):
            o = [(corner >> a) & 1 for a in range(3)]
            idx = i0 + tf.constant(o, tf.int32)
            inside = tf.reduce_all((idx >= 0) & (idx < tf.constant(shape, tf.int32)), -1)
            wgt = tf.reduce_prod(tf.where(tf.constant([bool(v) for v in o]), frac, 1.0 - frac), -1)
            c = tf.clip_by_value(idx, 0, tf.constant(shape, tf.int32) - 1)
            lin = ((b * d + c[..., 0]) * h + c[..., 1]) * w + c[..., 2]
            out += tf.where(inside, wgt, 0.0) * tf.gather(flat, lin)
        return out[..., None]

    def projective(x: Any, rows: Any, pull: Any) -> Any:
        # Pass 1: 2D affine in (i, j) on slices along k; pass 2: 1D along k on (j, k) slices.
        # Needs the (i, j) part pulled through rows E0 @ E1 and k through row 2.
        r0, r1, r2 = rows[:, 0], rows[:, 1], rows[:, 2]
        kk = tf.range(w, dtype=tf.float32)
        # The op maps output (x=col, y=row) to input; slices [B*W, D, H]: row = i, col = j.
        # E0 @ E1 on a k slice: i' = a0 i + a1 j' + a2 k + a3 with j' = b.(i, j, k, 1).
        a0, a1, a2, a3 = (r0[:, n] for n in range(4))
        b0, b1, b2, b3 = (r1[:, n] for n in range(4))
        ii = a0 + a1 * b0
        ij = a1 * b1
        ic = (a1 * b2 + a2)[:, None] * kk[None] + (a1 * b3 + a3)[:, None]
        ji, jj = b0, b1
        jc = b2[:, None] * kk[None] + b3[:, None]
        bw = tf.shape(ic)[0] * w
        tr = tf.stack([tf.repeat(jj, w), tf.repeat(ji, w), tf.reshape(jc, [-1]),
                       tf.repeat(ij, w), tf.repeat(ii, w), tf.reshape(ic, [-1]),
                       tf.zeros([bw]), tf.zeros([bw])], 1)
        s = tf.reshape(tf.transpose(x, [0, 3, 1, 2, 4]), [-1, d, h, 1])
        s = tf.raw_ops.ImageProjectiveTransformV3(images=s, transforms=tr, output_shape=[d, h], fill_value=0.0,
                                                  interpolation="BILINEAR", fill_mode="CONSTANT")
        s = tf.transpose(tf.reshape(s, [-1, w, d, h, 1]), [0, 2, 3, 1, 4])
        ii2 = tf.range(d, dtype=tf.float32)
        c = r2[:, 0, None] * ii2[None] + r2[:, 3, None]
        bd = tf.shape(c)[0] * d
        tr2 = tf.stack([tf.repeat(r2[:, 2], d), tf.repeat(r2[:, 1], d), tf.reshape(c, [-1]),
                        tf.zeros([bd]), tf.ones([bd]), tf.zeros([bd]), tf.zeros([bd]), tf.zeros([bd])], 1)
        s = tf.raw_ops.ImageProjectiveTransformV3(images=tf.reshape(s, [-1, h, w, 1]), transforms=tr2,
                                                  output_shape=[h, w], fill_value=0.0,
                                                  interpolation="BILINEAR", fill_mode="CONSTANT")
        return tf.reshape(s, [-1, d, h, w, 1])

    def three_pass_one_cluster(x: Any, rows: Any, pull: Any) -> Any:
        low = tf.reduce_min(x, axis=[1, 2, 3], keepdims=True)
        for axis in range(3):
            x = tf_ops._image_pass(x, rows, axis, low)
        return x

    return {
        "tf_default_3pass_xla_per_pass": tf.function(lambda x, rows, pull: tf_ops._warp_image(x, rows, True)),
        "tf_3pass_no_xla": tf.function(lambda x, rows, pull: tf_ops._warp_image(x, rows, False)),
        "tf_3pass_one_xla_cluster": tf.function(three_pass_one_cluster, jit_compile=True),
        "tf_trilinear_gather_xla": tf.function(trilinear, jit_compile=True),
        "tf_trilinear_gather_no_xla": tf.function(trilinear),
        "tf_projective2d_two_passes": tf.function(projective),
    }


def interpolation_error(shape: tuple[int, int, int]) -> dict[str, float]:
    """Max interior error, in % of the range, of 3-pass and trilinear on an analytic volume."""
    grids = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")

    def field(i: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
        return np.sin(i / 4.0) * np.cos(j / 5.0) + np.sin((j + k) / 6.0)

    matrix = affine_matrix(np.radians([10, -7, 12]), [0.02, 0, -0.01, 0, 0.01, 0], 1.05)
    translation = np.array([1.3, -0.7, 0.4])
    centre = (np.array(shape) - 1) / 2
    b = np.linalg.inv(matrix)
    src = np.einsum("ij,jdhw->idhw", b, np.stack(grids) - (centre + translation)[:, None, None, None])
    src += centre[:, None, None, None]
    truth = field(*src)
    image = field(*grids)[..., None].astype(np.float32)
    three = numpy_ops.warp_image(image, pull_passes(matrix, translation, shape))[..., 0]
    tri = numpy_ops.reference_affine(image, matrix, translation)[..., 0]
    inner = tuple(slice(n // 5, n - n // 5) for n in shape)
    span = float(np.ptp(image))
    return {"three_pass_max_err_pct": float(np.abs(three - truth)[inner].max() / span * 100),
            "trilinear_max_err_pct": float(np.abs(tri - truth)[inner].max() / span * 100),
            "three_pass_vs_trilinear_max_pct": float(np.abs(three - tri)[inner].max() / span * 100)}


def error_by_rotation(shape: tuple[int, int, int], samples: int) -> dict[str, dict[str, float]]:
    """Median and max interior error (% of range) of both resamplings vs rotate_deg (shear 0.05)."""
    grids = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")

    def field(i: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
        return np.sin(i / 4.0) * np.cos(j / 5.0) + np.sin((j + k) / 6.0)

    image = field(*grids)[..., None].astype(np.float32)
    span = float(np.ptp(image))
    centre = (np.array(shape) - 1) / 2
    inner = tuple(slice(n // 4, n - n // 4) for n in shape)
    out: dict[str, dict[str, float]] = {}
    for deg in (10, 20, 30, 45):
        three, tri = [], []
        for i in range(samples):
            p = sample(Augment(rotate_deg=deg, shear=0.05), (i, "bench", 1), shape)
            matrix = np.array(p.ops["affine"]["matrix"])
            b = np.linalg.inv(matrix)
            src = np.einsum("ij,jdhw->idhw", b, np.stack(grids) - centre[:, None, None, None]) + centre[:, None, None, None]
            truth = field(*src)
            warped = numpy_ops.warp_image(image, pull_passes(matrix, np.zeros(3), shape))[..., 0]
            three.append(np.abs(warped - truth)[inner].max() / span * 100)
            ref = numpy_ops.reference_affine(image, matrix, np.zeros(3))[..., 0]
            tri.append(np.abs(ref - truth)[inner].max() / span * 100)
        out[str(deg)] = {"three_pass_median_pct": float(np.median(three)), "three_pass_max_pct": float(np.max(three)),
                         "trilinear_median_pct": float(np.median(tri)), "trilinear_max_pct": float(np.max(tri))}
    return out


def bench_shape(shape: tuple[int, int, int], batch: int, runs: int) -> dict[str, Any]:
    import tensorflow as tf

    from volprep.augment import tf_ops

    rng = np.random.default_rng(0)
    vol = scipy.ndimage.gaussian_filter(rng.standard_normal(shape), 2).astype(np.float32)
    images = np.repeat(vol[None, ..., None], batch, axis=0)
    params = [sample(SPATIAL, (1, "bench", i), shape) for i in range(batch)]
    affines = [(np.array(p.ops["affine"]["matrix"]), np.array(p.ops["affine"]["translation"])) for p in params]
    p0 = params[0]
    b = np.linalg.inv(affines[0][0])
    centre = (np.array(shape) - 1) / 2
    offset = centre - b @ (centre + affines[0][1])
    rows = np.stack([pull_passes(m, t, shape) for m, t in affines])
    pull = []
    for m, t in affines:
        bi = np.linalg.inv(m)
        pull.append(np.concatenate([bi, (centre - bi @ (centre + t))[:, None]], 1))
    x = tf.constant(images)
    rows_t, pull_t = tf.constant(rows, tf.float32), tf.constant(np.stack(pull), tf.float32)
    shifted = Params(shape=shape, ops={"fourier_shift": {"shift": [0.3, -1.2, 0.7]}})
    fourier = tf.function(lambda x, s: tf_ops._fourier_shift(x, s))
    shift = tf.constant([[0.3, -1.2, 0.7]] * batch, tf.float32)
    per_volume: dict[str, Callable[[], Any]] = {
        "scipy_affine_order1": lambda: scipy.ndimage.affine_transform(vol, b, offset=offset, order=1),
        "numpy_executor_affine": lambda: numpy_ops.apply(p0, vol[..., None]),
        "numpy_fourier_shift": lambda: numpy_ops.apply(shifted, vol[..., None]),
    }
    batched: dict[str, Callable[[], Any]] = {
        name: (lambda fn=fn: fn(x, rows_t, pull_t).numpy()) for name, fn in tf_variants(shape, batch).items()
    }
    batched["tf_fourier_shift"] = lambda: fourier(x, shift).numpy()
    for name, aug in (("tf_augment_batch_spatial", SPATIAL), ("tf_augment_batch_full", FULL)):
        fn = tf.function(lambda x, s, aug=aug: tf_ops.augment_batch(x, None, aug, s)[0])
        seeds = iter(range(10**6))
        batched[name] = lambda fn=fn, seeds=seeds: fn(x, tf.constant([0, next(seeds)])).numpy()
    timings = timed_interleaved({**per_volume, **batched}, runs)
    out: dict[str, Any] = {"shape": list(shape), "batch": batch}
    for name, t in timings.items():
        out[name] = t if name in per_volume else {"first_ms_batch": t["first_ms"], "median_ms": t["median_ms"] / batch}
    base = out["scipy_affine_order1"]["median_ms"]
    for value in out.values():
        if isinstance(value, dict) and "median_ms" in value:
            value["speedup_vs_scipy"] = base / value["median_ms"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, few runs (for tests)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args(argv)
    shapes = [(16, 16, 12)] if args.quick else [(128, 128, 80), (128, 128, 128)]
    runs = 2 if args.quick else max(5, args.runs)
    results: dict[str, Any] = {"machine": platform.machine(), "python": platform.python_version(),
                               "runs": runs, "shapes": [],
                               "interpolation_error": interpolation_error((32, 32, 24) if args.quick else (64, 64, 48))}
    results["interpolation_error_by_rotate_deg"] = error_by_rotation((24, 24, 24) if args.quick else (40, 40, 40),
                                                                     2 if args.quick else 12)
    for shape in shapes:
        res = bench_shape(shape, args.batch, runs)
        results["shapes"].append(res)
        print(f"\n{shape[0]}x{shape[1]}x{shape[2]} float32, TF batch {args.batch} (ms per volume, median of {runs})")
        print(f"{'variant':34s} {'median ms':>10s} {'x scipy':>8s} {'first call ms':>14s}")
        for name, value in res.items():
            if isinstance(value, dict):
                first = value.get("first_ms", value.get("first_ms_batch", float("nan")))
                print(f"{name:34s} {value['median_ms']:10.2f} {value['speedup_vs_scipy']:8.2f} {first:14.1f}")
    print("\ninterpolation error vs the analytic volume (interior, % of range):")
    for name, value in results["interpolation_error"].items():
        print(f"  {name:34s} {value:.4f}")
    print("max interior error by rotate_deg (% of range): three-pass median/max vs trilinear median/max")
    for deg, value in results["interpolation_error_by_rotate_deg"].items():
        print(f"  {deg:>3s} deg  {value['three_pass_median_pct']:.3f} / {value['three_pass_max_pct']:.3f}"
              f"   vs {value['trilinear_median_pct']:.3f} / {value['trilinear_max_pct']:.3f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("augment_quick.json" if args.quick else "augment.json")
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
