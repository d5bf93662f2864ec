"""``volprep bench``: what ``volprep.load`` delivers on this machine, and whether training waits.

:func:`measure_loader` times the loader on a shard folder (volumes/s, MB/s, time per
batch) next to the read limit of the same shards (a plain ``TFRecordDataset``, records
counted, nothing parsed) and, optionally, a training step of the reference 3D CNN
(:func:`reference_model`, the one ``pipelines/train_example.py`` trains) on the same
batches. :func:`bench_text` turns the figures into a verdict: given a step time, would
training wait on input, and if so which knob to turn. The reference model's depthwise 3D
convolution (:class:`DepthwiseConv3D`) works on CPU and GPU without XLA.
"""

from __future__ import annotations

import functools
import statistics
import time
from pathlib import Path
from typing import Any

WARMUP_BATCHES = 3
MODEL_STEPS = 5


def measure_loader(out: str | Path, split: str = "train", batch_size: int = 4, batches: int = 20,
                   model: bool = False, **load_options: Any) -> dict[str, Any]:
    """Times ``volprep.load`` (and optionally a reference model step) on a shard folder.

    Args:
        out: the shard folder.
        split: the split to read.
        batch_size: volumes a batch.
        batches: batches timed after :data:`WARMUP_BATCHES` warm-up batches.
        model: also time a training step of :func:`reference_model` on one batch.
        **load_options: passed to :func:`volprep.loader.load` (e.g. ``cache=True``).

    Returns:
        A JSON-able dict: ``volumes_per_s``, ``mb_per_s``, ``ms_per_batch`` (median),
        ``p90_ms_per_batch``, ``read_limit_volumes_per_s``, ``fraction_of_read_limit``,
        ``record_mb``, ``decoded_gb`` (the split in memory, in the loader's output dtype),
        ``image`` (shape, stored dtype), ``output_dtype``, ``first_batch_s`` (from the
        ``volprep.load`` call to the first batch, TensorFlow already imported),
        ``model_step_ms`` (or None) and the options used.
    """
    import tensorflow as tf

    from volprep.loader import READ_BUFFER_BYTES, load

    if batches < 1 or batch_size < 1:
        raise ValueError(f"batches and batch_size must be >= 1, got {batches}, {batch_size}")
    called = time.perf_counter()
    ds, manifest = load(out, split=split, batch_size=batch_size, repeat=True, seed=0, with_info=True,
                        **load_options)
    info = manifest.splits[split]
    records = info.num_records
    record_mb = sum(s.num_bytes for s in info.shards) / max(1, records) / 1e6
    image = manifest.features["image"]
    it = iter(ds)
    first = next(it)
    first_batch_s = time.perf_counter() - called
    for _ in range(WARMUP_BATCHES - 1):
        next(it)
    times = []
    start = time.perf_counter()
    for _ in range(batches):
        t = time.perf_counter()
        next(it)
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    volumes_per_s = batches * batch_size / total

    files = [str(Path(out) / s.file) for s in info.shards]
    # The read limit, timed the same way as the loader (a warmed-up iterator, one next()
    # a batch), so small or large records compare fairly: records read and batched,
    # nothing parsed.
    raw = tf.data.TFRecordDataset(files, buffer_size=READ_BUFFER_BYTES, num_parallel_reads=min(4, len(files)))
    raw_it = iter(raw.repeat().batch(batch_size).prefetch(2))
    for _ in range(WARMUP_BATCHES):
        next(raw_it)
    t = time.perf_counter()
    for _ in range(batches):
        next(raw_it)
    read_limit = batches * batch_size / (time.perf_counter() - t)

    voxels = 1
    for n in image.shape:
        voxels *= int(n)
    images = first[0] if isinstance(first, tuple) else first
    output_dtype = images.dtype.name
    figures: dict[str, Any] = {
        "out": str(out), "split": split, "batch_size": batch_size, "batches": batches,
        "image": {"shape": list(image.shape), "dtype": image.dtype, "encoding": image.encoding},
        "records": records, "record_mb": record_mb,
        "volumes_per_s": volumes_per_s, "mb_per_s": volumes_per_s * record_mb,
        "ms_per_batch": statistics.median(times) * 1e3,
        "p90_ms_per_batch": sorted(times)[int(0.9 * (len(times) - 1))] * 1e3,
        "mean_ms_per_batch": total / batches * 1e3,
        "read_limit_volumes_per_s": read_limit,
        "fraction_of_read_limit": volumes_per_s / read_limit,
        "decoded_gb": records * voxels * images.dtype.size / 1e9,
        "output_dtype": output_dtype, "first_batch_s": first_batch_s,
        "options": {k: (v if isinstance(v, int | float | str | bool) or v is None else repr(v))
                    for k, v in load_options.items()},
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
        "model_step_ms": None,
    }
    if model:
        figures["model_step_ms"] = _model_step_ms(first, manifest)
    return figures


def _model_step_ms(batch: Any, manifest: Any) -> float:
    """Median ms of a training step of the reference model on one batch."""
    import numpy as np

    images = batch[0] if isinstance(batch, tuple) else batch
    labels = batch[1] if isinstance(batch, tuple) else None
    names = manifest.classes.names
    if labels is None or labels.shape.rank != 1:
        labels = np.zeros([int(images.shape[0])], np.int64)  # a class head on segmentation data
    model = reference_model(tuple(images.shape[1:]), max(2, len(names)))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    for _ in range(2):
        model.train_on_batch(images, labels)
    times = []
    for _ in range(MODEL_STEPS):
        t = time.perf_counter()
        model.train_on_batch(images, labels)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def bench_text(figures: dict[str, Any], step_ms: float | None = None) -> str:
    """The figures as text, and a verdict: would training wait on input, and what to turn.

    Args:
        figures: what :func:`measure_loader` returned.
        step_ms: a model's step time in ms; default the measured reference model step.

    Returns:
        Several lines; the verdict line starts with ``verdict:``.
    """
    f = figures
    shape = "x".join(str(n) for n in f["image"]["shape"])
    lines = [
        f"volprep bench {f['out']} (split {f['split']}, batch {f['batch_size']}, {f['batches']} batches, {f['device']})",
        f"  records      {f['records']} x {shape} {f['image']['dtype']} ({f['record_mb']:.2f} MB each)",
        f"  loader       {f['volumes_per_s']:.1f} volumes/s, {f['mb_per_s']:.0f} MB/s, "
        f"{f['ms_per_batch']:.1f} ms a batch (median; p90 {f['p90_ms_per_batch']:.1f} ms)",
        f"  read limit   {f['read_limit_volumes_per_s']:.1f} volumes/s (plain TFRecordDataset, nothing parsed); "
        f"the loader reaches {100 * f['fraction_of_read_limit']:.0f}% of it",
    ]
    if f.get("first_batch_s") is not None:
        lines.append(f"  first batch  {1e3 * f['first_batch_s']:.0f} ms after volprep.load() was called "
                     f"(TensorFlow already imported; output {f.get('output_dtype', 'float32')})")
    if f.get("model_step_ms") is not None:
        lines.append(f"  model step   {f['model_step_ms']:.1f} ms (reference 3D CNN, batch {f['batch_size']})")
    step = step_ms if step_ms is not None else f.get("model_step_ms")
    if step is None:
        lines.append("verdict: give --step-ms (your model's step time) or --model to know whether training would wait on input")
        return "\n".join(lines)
    batch_ms = f["mean_ms_per_batch"]
    if batch_ms <= step:
        lines.append(f"verdict: training would not wait on input: a batch every {batch_ms:.1f} ms, a step takes "
                     f"{step:.1f} ms ({step / batch_ms:.1f}x headroom)")
        if step / batch_ms < 1.5:
            lines.append("  little headroom: " + _knobs(f)[0])
        return "\n".join(lines)
    lines.append(f"verdict: training would wait on input: about {batch_ms - step:.1f} ms a step "
                 f"(a batch every {batch_ms:.1f} ms, a step takes {step:.1f} ms; the accelerator idles "
                 f"{100 * (1 - step / batch_ms):.0f}% of the time)")
    lines += [f"  turn: {k}" for k in _knobs(f)]
    return "\n".join(lines)


def _knobs(f: dict[str, Any]) -> list[str]:
    """Which knobs would help, most promising first."""
    knobs = []
    if f["fraction_of_read_limit"] < 0.7:
        knobs.append("the loader is below the read limit of its own shards: read more files in parallel "
                     "(cycle_length=8), prefetch deeper (prefetch=4) or give it threads (threads=4)")
    mem_gb = _available_gb()
    if mem_gb is None or f["decoded_gb"] < 0.5 * mem_gb:
        knobs.append(f"cache=True: the split decodes to {f['decoded_gb']:.2f} GB in memory"
                     + (f" ({mem_gb:.0f} GB available)" if mem_gb is not None else "")
                     + "; later epochs read and parse nothing (or cache='file' on a fast local disk)")
    else:
        knobs.append(f"cache='/local/ssd/file': the split decodes to {f['decoded_gb']:.1f} GB, too much for memory")
    if f["image"]["dtype"] == "float32":
        knobs.append("store float16 (preprocess.dtype = 'float16'): half the bytes to read and parse")
    elif f["image"]["dtype"] == "float16" and f.get("output_dtype", "float32") == "float32":
        knobs.append("volprep.load(..., dtype='float16'): yield the stored float16 and let the model cast on the "
                     "accelerator (a Keras model does; skips a CPU pass over every voxel, halves the bytes moved)")
    knobs.append("smaller volumes: more converter downsampling (preprocess.factor), a smaller target_shape, "
                 "or reduce = 'wavelet' approx (each halving of an axis halves the bytes)")
    return knobs


def _available_gb() -> float | None:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a dependency
        return None
    return float(psutil.virtual_memory().available / 1e9)


def depthwise_conv3d(x: Any, kernel: Any) -> Any:
    """A 'same'-padded, stride-1 depthwise 3D convolution from 2D depthwise convolutions.

    Sums, over the kernel's depth taps, a ``tf.nn.depthwise_conv2d`` of the depth-shifted
    slices (``[B*D, H, W, C]``): exact, and runs on CPU and GPU without XLA.

    Args:
        x: ``[B, D, H, W, C]``.
        kernel: ``[kd, kh, kw, C, 1]``.
    """
    import tensorflow as tf

    kd = int(kernel.shape[0])
    shape = tf.shape(x)
    b, d, h, w = shape[0], shape[1], shape[2], shape[3]
    c = x.shape[-1]
    before = (kd - 1) // 2
    padded = tf.pad(x, [[0, 0], [before, kd - 1 - before], [0, 0], [0, 0], [0, 0]])
    out = None
    for tap in range(kd):
        slices = tf.reshape(padded[:, tap:tap + d], [-1, h, w, c])
        y = tf.nn.depthwise_conv2d(slices, kernel[tap], [1, 1, 1, 1], "SAME")
        out = y if out is None else out + y
    return tf.reshape(out, [b, d, h, w, c])


@functools.cache
def _layers() -> Any:
    """The :class:`DepthwiseConv3D` class, built on first use (Keras is imported only then)."""
    import keras

    class DepthwiseConv3D(keras.layers.Layer):
        """Depthwise 3D convolution ('same', stride 1) via :func:`depthwise_conv3d`."""

        def __init__(self, kernel_size: int = 3, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.kernel_size = kernel_size

        def build(self, input_shape: Any) -> None:
            k = self.kernel_size
            self.kernel = self.add_weight(shape=(k, k, k, int(input_shape[-1]), 1),
                                          initializer="he_normal", name="kernel")

        def call(self, x: Any) -> Any:
            return depthwise_conv3d(x, self.kernel)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "kernel_size": self.kernel_size}

    return DepthwiseConv3D


def reference_model(input_shape: tuple[int, ...], n_classes: int, width: int = 16,
                    depthwise: str = "slices") -> Any:
    """The reference 3D CNN: a stem, three depthwise-separable blocks, a class head.

    Each block is depthwise 3x3x3 -> batch norm -> ReLU -> pointwise 1x1x1 -> batch norm
    -> ReLU -> 2x average pooling. ``depthwise`` picks the depthwise implementation:
    ``"slices"`` (:class:`DepthwiseConv3D`, the default: the fastest that runs on CPU and
    GPU without XLA), ``"grouped"`` (``Conv3D(groups=C)``: needs XLA on CPU),
    ``"loop"`` (one ``Conv3D(1)`` per channel) or ``"full"`` (a plain ``Conv3D``, not
    separable: the baseline).
    """
    import keras

    layers = keras.layers

    def depthwise_layer(channels: int) -> Any:
        if depthwise == "slices":
            return _layers()(3)
        if depthwise == "grouped":
            return layers.Conv3D(channels, 3, padding="same", groups=channels, use_bias=False)
        if depthwise == "full":
            return layers.Conv3D(channels, 3, padding="same", use_bias=False)
        if depthwise == "loop":
            def per_channel(x: Any) -> Any:
                parts = [layers.Conv3D(1, 3, padding="same", use_bias=False)(x[..., i:i + 1]) for i in range(channels)]
                return layers.Concatenate()(parts)
            return per_channel
        raise ValueError(f"depthwise must be 'slices', 'grouped', 'loop' or 'full', got {depthwise!r}")

    inputs = keras.Input(shape=input_shape)
    x = layers.Conv3D(width, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    channels = width
    for filters in (2 * width, 4 * width, 4 * width):
        x = depthwise_layer(channels)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.Conv3D(filters, 1, use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.AveragePooling3D(2, padding="same")(x)
        channels = filters
    x = layers.GlobalAveragePooling3D()(x)
    outputs = layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=f"volprep_reference_{depthwise}")


def __getattr__(name: str) -> Any:
    if name == "DepthwiseConv3D":  # a Keras layer: defined on first use, keeping Keras out of imports
        return _layers()
    raise AttributeError(f"module 'volprep.bench' has no attribute {name!r}")
