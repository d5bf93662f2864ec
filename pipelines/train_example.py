"""Reference training example (``make train``): a small 3D CNN on volprep shards.

Trains :func:`volprep.bench.reference_model` (depthwise-separable 3D convolutions with
batch norm and ReLU) for a few steps on a shard folder read with ``volprep.load``, and
prints each step's time and the time it waited for data, then the medians and the share
of time spent waiting. ``--compare-layers`` times the ways to write a depthwise 3D
convolution in Keras/TF (forward + backward of one layer) and writes
``benchmarks/results/depthwise.json``:

* ``slices``: :class:`volprep.bench.DepthwiseConv3D`, a sum over the depth taps of
  ``tf.nn.depthwise_conv2d`` on ``[B*D, H, W, C]`` slices (CPU and GPU, no XLA): chosen;
* ``grouped_xla``: ``Conv3D(groups=C)`` (TF runs grouped 3D convolutions on CPU only
  under XLA, so ``jit_compile=True``);
* ``loop``: one ``Conv3D(1)`` per channel, concatenated;
* ``full``: a plain ``Conv3D(C -> C)`` (not separable: the cost separability avoids).

Measured here (2-core CPU, [2, 64, 64, 40, 16], results/depthwise.json): slices 270 ms,
loop 352 ms, grouped under XLA 5430 ms, full 95 ms. ``slices`` is the fastest depthwise
form and needs no XLA, so the model uses it; on this CPU oneDNN's dense Conv3D is still
faster at 16 channels (depthwise convolutions are memory-bound on CPU), so for CPU-only
training at small widths ``--depthwise full`` is the quicker model; on GPUs and at larger
widths the separable form does 1/C of the multiply-adds.

Usage: ``python pipelines/train_example.py shards/demo [--steps 20] [--batch-size 4]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def train(out: str, steps: int, batch_size: int, augment: bool, seed: int,
          depthwise: str = "slices") -> dict[str, Any]:
    """Trains the reference model for ``steps`` steps; returns per-step wait and step times."""
    import numpy as np

    import volprep
    from volprep.bench import reference_model

    aug = None
    if augment:
        from volprep.manifest import read_manifest

        aug = volprep.Augment(**read_manifest(out).config.get("augment", {}))
    ds, manifest = volprep.load(out, split="train", batch_size=batch_size, seed=seed, repeat=True,
                                augment=aug, drop_remainder=True, with_info=True)
    names = list(manifest.classes.names) or ["0", "1"]
    image_shape = tuple(manifest.features["image"].shape)
    model = reference_model(image_shape, max(2, len(names)), depthwise=depthwise)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    it = iter(ds)
    waits, times = [], []
    for step in range(steps + 1):
        start = time.perf_counter()
        batch = next(it)
        images, labels = batch if isinstance(batch, tuple) else (batch, np.zeros([batch_size], np.int64))
        if labels.shape.rank != 1:  # segmentation shards: a class head on a dummy target
            labels = np.zeros([batch_size], np.int64)
        got = time.perf_counter()
        loss = model.train_on_batch(images, labels)
        done = time.perf_counter()
        if step == 0:  # tracing and graph building: not a training step
            print(f"first step (builds the graph): {1e3 * (done - start):.0f} ms")
            continue
        waits.append(1e3 * (got - start))
        times.append(1e3 * (done - got))
        print(f"step {step:3d}  waited {waits[-1]:7.1f} ms for data  step {times[-1]:7.1f} ms  "
              f"loss {float(np.ravel(loss)[0]):.4f}")
    total = sum(waits) + sum(times)
    summary = {"steps": steps, "batch_size": batch_size, "image_shape": list(image_shape),
               "median_wait_ms": statistics.median(waits), "median_step_ms": statistics.median(times),
               "waiting_share": sum(waits) / total if total else 0.0, "params": int(model.count_params())}
    print(f"median: waited {summary['median_wait_ms']:.1f} ms for data, step {summary['median_step_ms']:.1f} ms; "
          f"{100 * summary['waiting_share']:.0f}% of the time waiting on input "
          f"({summary['params']} parameters, batch {batch_size} of {'x'.join(map(str, image_shape))})")
    return summary


def compare_layers(shape: tuple[int, ...] = (2, 64, 64, 40, 16), runs: int = 5) -> dict[str, Any]:
    """ms of forward + backward of one depthwise 3D convolution, each implementation."""
    import keras
    import numpy as np
    import tensorflow as tf

    from volprep.bench import DepthwiseConv3D

    channels = shape[-1]
    x = tf.constant(np.random.default_rng(0).standard_normal(shape), tf.float32)

    def loop_layer() -> Any:
        convs = [keras.layers.Conv3D(1, 3, padding="same", use_bias=False) for _ in range(channels)]
        return lambda t: tf.concat([c(t[..., i:i + 1]) for i, c in enumerate(convs)], -1)

    options: dict[str, tuple[Any, bool]] = {
        "slices": (DepthwiseConv3D(3), False),
        "grouped_xla": (keras.layers.Conv3D(channels, 3, padding="same", groups=channels, use_bias=False), True),
        "loop": (loop_layer(), False),
        "full": (keras.layers.Conv3D(channels, 3, padding="same", use_bias=False), False),
    }
    out: dict[str, Any] = {"input_shape": list(shape), "runs": runs}
    for name, (layer, jit) in options.items():
        layer(x)  # build

        @tf.function(jit_compile=jit)
        def step(t: Any, layer: Any = layer) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(t)
                y = tf.reduce_sum(layer(t) ** 2)
            return tape.gradient(y, t)

        try:
            step(x).numpy()
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                step(x).numpy()
                times.append(1e3 * (time.perf_counter() - start))
            out[name] = statistics.median(times)
        except Exception as err:  # noqa: BLE001 - an implementation this machine cannot run is a finding
            out[name] = f"fails: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
        print(f"  {name:12s} {out[name] if isinstance(out[name], str) else f'{out[name]:8.1f} ms'}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shards", nargs="?", default="shards/demo", help="a volprep shard folder")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augment", action="store_true", help="online augmentation from the manifest's [augment]")
    parser.add_argument("--depthwise", default="slices", choices=("slices", "grouped", "loop", "full"),
                        help="depthwise 3D implementation (see --compare-layers)")
    parser.add_argument("--compare-layers", action="store_true", help="time the depthwise 3D implementations")
    args = parser.parse_args(argv)
    if args.compare_layers:
        print("depthwise 3D convolution, forward + backward (ms, median):")
        result = compare_layers()
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "depthwise.json").write_text(json.dumps(result, indent=2) + "\n")
        return 0
    if not (Path(args.shards) / "manifest.json").is_file():
        print(f"train_example: {args.shards}: no manifest.json (run `make shards` first)", file=sys.stderr)
        return 2
    train(args.shards, args.steps, args.batch_size, args.augment, args.seed, args.depthwise)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
