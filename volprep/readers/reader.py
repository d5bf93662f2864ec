"""The TF-free reader: one split of a volprep shard folder as numpy samples.

:class:`Reader` is what ``volprep.load`` is without TensorFlow, and what the PyTorch and
Grain bindings (:mod:`volprep.torch`, :mod:`volprep.grain`) wrap. It reads the manifest,
takes the host's records (:mod:`volprep.readers.order`: same ``num_shards`` /
``shard_index`` semantics and equal per-host counts as the loader), reads each record by
random access (:mod:`volprep.readers.index`: record offsets indexed on first read, both
TFRecord CRCs checked on every read, the manifest's sha256 optionally), and decodes it
through the manifest's schema (:meth:`volprep.schema.Schema.decode`, so every encoding
of :data:`volprep.encodings.ENCODINGS`, wavelet reconstruction included, comes for free).

A sample is a dict: ``"image"`` float32 ``[D, H, W, C]`` (``volprep.load``'s layout and
dtype); ``"label"``, the target ``volprep.load`` yields (the class id as an int64 scalar,
or the label volume ``[D, H, W]`` in its stored dtype; absent when the data has none);
and any ``extra_features`` asked for (``case_id``, ``copy``, ``affine``...), decoded.

Order and randomness are explicit: an epoch's order is a function of ``(seed, epoch)``
(:func:`~volprep.readers.order.epoch_positions`), and online augmentation renders
:func:`volprep.augment.spec.sample` parameters drawn from ``(seed, "online", epoch, file,
record)`` with the numpy executor (:func:`volprep.augment.numpy_ops.apply`), so a sample's
bytes do not depend on worker count, process or order of reading. A :class:`PatchSampler`
(the hook for patch sampling of segmentation data) turns each volume into patches last.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from volprep.augment import numpy_ops
from volprep.augment.spec import Augment, sample
from volprep.errors import UsageError
from volprep.manifest import Manifest, read_manifest
from volprep.readers.index import ShardIndex, open_shard, read_record, shard_index, verify_sha256
from volprep.readers.order import epoch_positions, host_plan, host_records
from volprep.schema import Schema
from volprep.seeds import rng_for

IMAGE_DTYPES = ("float32", "float16", None)
"""What ``dtype`` may be (``volprep.load``'s choices)."""

Sample = dict[str, Any]
"""``{"image": float32 [D, H, W, C], "label": ..., <extra features>}``."""


class PatchSampler(Protocol):
    """Cuts a volume into patches (the hook for segmentation patch sampling).

    ``per_volume`` patches are made of every volume, before augmentation (each patch is
    then augmented on its own, as the TF loader does); ``rng`` is drawn from ``(seed,
    "patches", epoch, file, record)``, so patches are reproducible. A sampler returns
    exactly ``per_volume`` samples (dicts with the keys it was given). Optional: a
    ``features`` tuple of record features it reads (decoded into the sample it gets; the
    reader drops them from the patches unless asked for as ``extra_features``) and ``bind(features, label_names)``, called once with the shards'
    schema. :class:`volprep.readers.patches.Patches` is the stored-locations sampler.
    """

    per_volume: int

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sequence[Sample]: ...


def target_feature(features: Schema, target: str) -> str | None:
    """The feature a sample's ``"label"`` holds (:meth:`Schema.target`, ``volprep.load``'s rule)."""
    return features.target(target)


class Reader:
    """One split of a volprep shard folder: random access, and epochs like ``volprep.load``.

    ``len(reader)`` is the records this host yields an epoch (the same on every host);
    ``reader[i]`` is the ``i``-th of them in the unshuffled order (the order of
    ``volprep.load(shuffle=False, deterministic=True)``); ``reader.epoch(e)`` iterates epoch
    ``e`` (shuffled when ``shuffle``); iterating the reader itself runs epoch 0, 1, 2, ... on
    successive calls. Picklable (open files are not carried; each process opens its own).

    Args:
        path: the folder holding ``manifest.json`` and the shards.
        split: which split to read.
        target: ``"label"`` or ``"mask"`` (see :func:`target_feature`).
        shuffle: a new permutation of the host's records each epoch.
        seed: seeds shuffling and augmentation. None: shuffling draws a fresh seed for
            this reader (not reproducible), augmentation uses ``augment.seed`` or 0, as
            ``volprep.load`` does.
        augment: a :class:`volprep.Augment` rendered per sample by the numpy executor.
        num_shards, shard_index: hosts reading this split together, and this host.
        check_sha256: hash every shard this host reads against the manifest first.
        extra_features: other features to decode into each sample (e.g. ``case_id``).
        patches: a :class:`PatchSampler`; each record then yields ``patches.per_volume``
            samples (``len`` counts samples).
        cycle_length, block_length: the loader's interleave (defaults: the loader's).
        dtype: the images' dtype, as ``volprep.load``'s: ``"float32"`` (default),
            ``"float16"``, or None (as stored; augmented images are float32). None suits a
            consumer that casts faster or later: numpy's float16 -> float32 cast costs ~2 ms
            a 128x128x80 volume here, torch's ~0.1 ms, a GPU's nothing.

    Raises:
        UsageError: no manifest, no such split, or a bad host split.
        ValueError: a bad ``target``, or an ``extra_features`` name the records lack.
        DataError: (with ``check_sha256``) a shard whose sha256 differs.
    """

    def __init__(self, path: str | Path, split: str = "train", *, target: str = "label",
                 shuffle: bool = True, seed: int | None = None, augment: Augment | None = None,
                 num_shards: int = 1, shard_index: int = 0, check_sha256: bool = False,
                 extra_features: Sequence[str] = (), patches: PatchSampler | None = None,
                 cycle_length: int | None = None, block_length: int | None = None,
                 dtype: str | None = "float32") -> None:
        self.path = Path(path)
        self.manifest: Manifest = read_manifest(path)
        if split not in self.manifest.splits:
            raise UsageError(f"{path}: no split {split!r}; splits: {', '.join(sorted(self.manifest.splits))}")
        self.split = split
        self.features: Schema = self.manifest.features
        self.label_name = target_feature(self.features, target)
        unknown = sorted(set(extra_features) - set(self.features))
        if unknown:
            raise ValueError(f"extra_features {unknown}: the records have {sorted(self.features)}")
        if patches is not None and hasattr(patches, "bind"):
            patches.bind(self.features, self.manifest.dataset.label_names)
        self.sampler_features = tuple(n for n in getattr(patches, "features", ()) if n in self.features)
        self.names = tuple(dict.fromkeys(["image", *([self.label_name] if self.label_name else []),
                                          *extra_features, *self.sampler_features]))
        self.extra_features = tuple(extra_features)
        self.shards = self.manifest.splits[split].shards
        counts = [s.num_records for s in self.shards]
        plan = host_plan(counts, num_shards, shard_index)
        kwargs = {k: v for k, v in (("cycle_length", cycle_length), ("block_length", block_length)) if v}
        self.records = host_records(counts, plan, num_shards, shard_index, **kwargs)
        self.num_records = plan.num_records
        self.shuffle = shuffle
        self.seed = int(seed) if seed is not None else secrets.randbits(62)
        self.augment = None if augment is None or augment.is_identity else augment
        self.augment_seed = int(seed if seed is not None else (augment.seed if augment and augment.seed is not None else 0))
        self.patches = patches
        if dtype not in IMAGE_DTYPES:
            raise ValueError(f"dtype must be one of {IMAGE_DTYPES}, got {dtype!r}")
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.per_record = 1 if patches is None else int(patches.per_volume)
        if self.per_record < 1:
            raise ValueError(f"patches.per_volume must be >= 1, got {self.per_record}")
        self.label_is_volume = self.label_name is not None and self.features[self.label_name].is_volume
        self._epochs = 0
        self._open: dict[int, tuple[int, ShardIndex]] = {}
        self._lock = threading.Lock()  # Grain reads items from a pool of threads
        if check_sha256:
            for f in sorted({int(f) for f in self.records[:, 0]}):
                verify_sha256(self.path / self.shards[f].file, self.shards[f].sha256)

    # ------------------------------------------------------------------ access

    def __len__(self) -> int:
        return self.num_records * self.per_record

    def __getitem__(self, i: int) -> Sample:
        """Sample ``i`` of the unshuffled order, augmented as in epoch 0 (see :meth:`sample`)."""
        return self.sample(i)

    def sample(self, i: int, epoch: int = 0) -> Sample:
        """Sample ``i`` (``0 <= i < len(self)``) of the unshuffled order, augmented for ``epoch``.

        Raises:
            IndexError: ``i`` out of range.
            DataError: a CRC mismatch or a truncated record (names the file and record).
        """
        n = len(self)
        if isinstance(i, bool) or not -n <= int(i) < n:
            raise IndexError(f"sample {i} out of range for {n} samples")
        position, patch = divmod(int(i) % n, self.per_record)
        return self._render(position, epoch)[patch]

    def record(self, position: int, names: Sequence[str] | None = None) -> dict[str, Any]:
        """Features ``names`` (default: all) of the host's record ``position``, decoded, as stored."""
        file, rec = (int(v) for v in self.records[position])
        return self.features.decode(self.read(file, rec), tuple(names) if names else None)

    def read(self, file: int, rec: int) -> bytes:
        """The serialised ``tf.train.Example`` of record ``rec`` of shard ``file``, CRC-checked."""
        fd, index = self._open.get(file) or self._open_file(file)
        return read_record(fd, index, rec)

    # ------------------------------------------------------------------ epochs

    def positions(self, epoch: int) -> np.ndarray:
        """The host's record positions (rows of ``self.records``) epoch ``epoch`` yields, in order."""
        return epoch_positions(len(self.records), self.num_records, shuffle=self.shuffle, seed=self.seed, epoch=epoch)

    def epoch(self, epoch: int, positions: np.ndarray | None = None) -> Iterator[Sample]:
        """The samples of epoch ``epoch`` (or of the given subset of its ``positions``)."""
        for position in self.positions(epoch) if positions is None else positions:
            yield from self._render(int(position), epoch)

    def __iter__(self) -> Iterator[Sample]:
        epoch, self._epochs = self._epochs, self._epochs + 1
        return self.epoch(epoch)

    # ------------------------------------------------------------------ internals

    def _render(self, position: int, epoch: int) -> list[Sample]:
        file, rec = (int(v) for v in self.records[position])
        decoded = self.features.decode(self.read(file, rec), self.names)
        # Always a writable copy (torch will not share read-only memory): astype copies.
        image = decoded["image"]
        out: Sample = {"image": image.astype(self.dtype or image.dtype)}
        if self.label_name is not None:
            label = decoded[self.label_name]
            out["label"] = np.array(label) if isinstance(label, np.ndarray) else np.int64(label)
        for name in (*self.extra_features, *self.sampler_features):
            out[name] = decoded[name]
        made = [out]
        if self.patches is not None:
            made = list(self.patches(out, rng_for(self.augment_seed, "patches", epoch, file, rec)))
            if len(made) != self.per_record:
                raise ValueError(f"the patch sampler made {len(made)} patches, it promised {self.per_record}")
            for item in made:
                for name in set(self.sampler_features) - set(self.extra_features):
                    item.pop(name, None)
        if self.augment is not None:
            for j, item in enumerate(made):
                keys = (self.augment_seed, "online", epoch, file, rec, *((j,) if self.patches is not None else ()))
                params = sample(self.augment, keys, item["image"].shape[:3])
                mask = item["label"] if self.label_is_volume else None
                image, mask = numpy_ops.apply(params, item["image"], mask)
                item["image"] = image if self.dtype is None else image.astype(self.dtype, copy=False)
                if mask is not None:
                    item["label"] = mask
        return made

    def _open_file(self, file: int) -> tuple[int, ShardIndex]:
        """Opens shard ``file`` once and indexes the file that descriptor sees (so a shard
        replaced on disk later is never read through another file's index)."""
        shard = self.shards[file]
        path = self.path / shard.file
        with self._lock:
            if file in self._open:  # another thread opened it meanwhile
                return self._open[file]
            fd = open_shard(path)
            try:
                index = shard_index(path, num_records=shard.num_records, num_bytes=shard.num_bytes, fd=fd)
            except BaseException:
                os.close(fd)
                raise
            self._open[file] = (fd, index)
            return fd, index

    def close(self) -> None:
        """Closes the shard files this process opened (later reads reopen them).

        A forked worker holds copies of its parent's descriptors: closing them there
        leaves the parent's open.
        """
        opened, self._open = self._open, {}
        for fd, _ in opened.values():
            os.close(fd)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown: nothing left to do
            self.close()

    def __getstate__(self) -> Mapping[str, Any]:
        state = dict(self.__dict__)
        state["_open"] = {}  # descriptors do not travel; each process opens its own
        del state["_lock"]
        return state

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"Reader({str(self.path)!r}, split={self.split!r}, records={self.num_records}, "
                f"files={len({int(f) for f in self.records[:, 0]})})")
