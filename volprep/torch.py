"""PyTorch datasets over volprep shards, without TensorFlow (``pip install 'volprep[torch]'``).

Two datasets wrap the numpy :class:`volprep.readers.Reader` (CRC checks on every record,
optional sha256, host sharding with equal per-host counts, seeded epochs, schema decoding
including wavelet reconstruction), each built like ``volprep.load``:

* :class:`VolumeDataset`, map-style: ``len`` and ``ds[i]``; a DataLoader's sampler
  shuffles and its workers receive disjoint indices by construction.
* :class:`VolumeIterableDataset`: yields an epoch in the reader's order (a fresh
  permutation per epoch when ``shuffle``); DataLoader workers split each epoch's records
  without duplicates (``torch.utils.data.get_worker_info``), taking turns in blocks of
  ``batch_size`` records so a DataLoader with that batch size yields the same batches in
  the same order whatever its ``num_workers``.

A sample is ``(image, label)``: ``image`` float32, ``[C, D, H, W]`` (channels first, what
``torch.nn.Conv3d``, MONAI and TorchIO expect; ``channels_first=False`` gives
``volprep.load``'s ``[D, H, W, C]``); ``label`` the class id (int64 scalar) or the label
volume ``[D, H, W]`` in its stored dtype (``target="mask"`` as in ``volprep.load``); only
``image`` when the data has no label. ``as_dict=True`` yields ``{"image", "label", *extra
features}`` instead. Values equal ``volprep.load``'s, element for element.

Online augmentation takes the same :class:`volprep.Augment` and renders it per sample
with the numpy executor (:func:`volprep.augment.numpy_ops.apply`), inside the DataLoader
workers, from parameters drawn from ``(seed, epoch, record)``: reproducible whatever the
worker count. A batched torch executor of every op (three-pass affine resampling, Fourier
shift, ...) would be a third implementation to hold to the other two and pays off only on
a GPU; the numpy executor is the reference the TF one is tested against. Epochs: call
``set_epoch(epoch)`` at the start of each epoch (as with ``DistributedSampler``); without
it, each ``iter()`` of a dataset object counts one epoch in the process that iterates it,
which covers ``num_workers=0`` and ``persistent_workers=True`` but not workers re-created
every epoch (they start from the parent's copy, so every epoch would repeat epoch 0).
Patch sampling for segmentation plugs in as a :class:`volprep.readers.PatchSampler`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from volprep.augment.spec import Augment
from volprep.readers.order import worker_share
from volprep.readers.reader import PatchSampler, Reader, Sample

__all__ = ["VolumeDataset", "VolumeIterableDataset", "to_torch"]

log = logging.getLogger(__name__)


TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, None: None}
"""``dtype`` names (``volprep.load``'s choices) and the torch dtype each gives."""


def to_torch(sample: Sample, *, channels_first: bool = True, as_dict: bool = False,
             dtype: str | None = "float32") -> Any:
    """A reader sample as torch tensors: ``(image, label)``, ``image`` or a dict.

    The image becomes ``dtype`` (None: as it comes) ``[C, D, H, W]`` (or ``[D, H, W, C]``),
    cast in torch (its float16 cast is ~20x faster than numpy's here); a single channel
    moves to the front for free.
    """
    image_dtype = TORCH_DTYPES[dtype]
    image = torch.from_numpy(sample["image"])
    if channels_first:
        image = image.permute(3, 0, 1, 2)
    if image_dtype is not None:
        image = image.to(image_dtype)
    out: dict[str, Any] = {"image": image.contiguous()}
    if "label" in sample:
        out["label"] = torch.as_tensor(sample["label"])
    if as_dict:
        for name, value in sample.items():
            if name not in out:
                out[name] = torch.from_numpy(np.array(value)) if isinstance(value, np.ndarray) else value
        return out
    return (out["image"], out["label"]) if "label" in out else out["image"]


class _Base:
    """What both datasets share: the reader, the output layout, the epoch."""

    def __init__(self, path: str | Path, split: str, *, shuffle: bool, target: str, seed: int | None,
                 augment: Augment | None, channels_first: bool, as_dict: bool, num_shards: int,
                 shard_index: int, check_sha256: bool, extra_features: Sequence[str],
                 patches: PatchSampler | None, dtype: str | None) -> None:
        if dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype must be one of {tuple(TORCH_DTYPES)}, got {dtype!r}")
        self.reader = Reader(path, split, target=target, shuffle=shuffle, seed=seed, augment=augment,
                             num_shards=num_shards, shard_index=shard_index, check_sha256=check_sha256,
                             extra_features=extra_features, patches=patches, dtype=None)
        self.channels_first = channels_first
        self.as_dict = as_dict
        self.dtype = dtype
        self.epoch = 0
        self.epoch_set = False

    @property
    def manifest(self) -> Any:
        """The shard folder's :class:`volprep.manifest.Manifest`."""
        return self.reader.manifest

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch whose order and augmentation the next ``iter()`` / items use."""
        if isinstance(epoch, bool) or int(epoch) < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch, self.epoch_set = int(epoch), True

    def __len__(self) -> int:
        return len(self.reader)

    def _out(self, sample: Sample) -> Any:
        return to_torch(sample, channels_first=self.channels_first, as_dict=self.as_dict,
                        dtype=self.dtype)


class VolumeDataset(_Base, Dataset[Any]):
    """Map-style: ``ds[i]`` is sample ``i`` of this host's records (``volprep.load``'s
    unshuffled order), augmented for the epoch set by :meth:`set_epoch`.

    Args:
        path: the folder holding ``manifest.json`` and the shards.
        split: which split to read.
        target: ``"label"`` or ``"mask"`` (as ``volprep.load``).
        seed: seeds augmentation (None: ``augment.seed`` or 0, as ``volprep.load``).
        augment: a :class:`volprep.Augment`, rendered per sample (numpy executor).
        channels_first: ``[C, D, H, W]`` images (default) or ``[D, H, W, C]``.
        as_dict: yield dicts (``image``, ``label``, ``extra_features``) instead of tuples.
        num_shards, shard_index: hosts reading this split together, and this host; every
            host gets the same length (or use a ``DistributedSampler`` over one host's view).
        check_sha256: hash every shard this host reads against the manifest first.
        extra_features: more features per sample (with ``as_dict``), e.g. ``case_id``.
        patches: a :class:`volprep.readers.PatchSampler` (each record gives
            ``patches.per_volume`` items).
        dtype: the images' dtype, as ``volprep.load``'s: ``"float32"`` (default),
            ``"float16"`` or None (as stored). float16 shards read with ``"float16"`` (or
            None) move half the bytes through the DataLoader's shared memory and to the GPU;
            cast there (``x.to(device).float()``).

    Raises:
        UsageError, ValueError, DataError: as :class:`volprep.readers.Reader`.
    """

    def __init__(self, path: str | Path, split: str = "train", *, target: str = "label",
                 seed: int | None = None, augment: Augment | None = None, channels_first: bool = True,
                 as_dict: bool = False, num_shards: int = 1, shard_index: int = 0,
                 check_sha256: bool = False, extra_features: Sequence[str] = (),
                 patches: PatchSampler | None = None,
                 dtype: str | None = "float32") -> None:
        super().__init__(path, split, shuffle=False, target=target, seed=seed, augment=augment,
                         channels_first=channels_first, as_dict=as_dict, num_shards=num_shards,
                         shard_index=shard_index, check_sha256=check_sha256,
                         extra_features=extra_features, patches=patches, dtype=dtype)

    def __getitem__(self, index: int) -> Any:
        return self._out(self.reader.sample(index, self.epoch))


class VolumeIterableDataset(_Base, IterableDataset[Any]):
    """Iterable: each ``iter()`` yields one epoch of this host's records, split between
    DataLoader workers without duplicates.

    Args:
        path, split, target, augment, channels_first, as_dict, num_shards, shard_index,
            check_sha256, extra_features, patches, dtype: as :class:`VolumeDataset`.
        shuffle: a new permutation of the host's records each epoch (seeded).
        seed: seeds shuffling and augmentation; None draws a fresh shuffling seed for
            this dataset (augmentation then uses ``augment.seed`` or 0, as ``volprep.load``).
        batch_size: the DataLoader's batch size: workers take records in turns of this
            many, so the batches do not depend on ``num_workers`` (any value is correct;
            only the order changes). With ``patches``, turns are of
            ``batch_size // patches.per_volume`` records.

    ``len(ds)`` is the samples an epoch yields on this host, over all workers.
    """

    def __init__(self, path: str | Path, split: str = "train", *, shuffle: bool = True,
                 seed: int | None = None, target: str = "label", augment: Augment | None = None,
                 batch_size: int = 1, channels_first: bool = True, as_dict: bool = False,
                 num_shards: int = 1, shard_index: int = 0, check_sha256: bool = False,
                 extra_features: Sequence[str] = (), patches: PatchSampler | None = None,
                 dtype: str | None = "float32") -> None:
        super().__init__(path, split, shuffle=shuffle, target=target, seed=seed, augment=augment,
                         channels_first=channels_first, as_dict=as_dict, num_shards=num_shards,
                         shard_index=shard_index, check_sha256=check_sha256,
                         extra_features=extra_features, patches=patches, dtype=dtype)
        if isinstance(batch_size, bool) or int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.block = max(1, int(batch_size) // self.reader.per_record)
        self._warned = False

    def __iter__(self) -> Iterator[Any]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        positions = self.reader.positions(epoch)
        info = get_worker_info()
        if info is not None:
            if not self.epoch_set and epoch == 0 and not self._warned and (self.reader.shuffle or self.reader.augment):
                self._warned = True
                log.warning("volprep.torch: DataLoader workers re-created each epoch cannot count epochs; "
                            "call dataset.set_epoch(epoch) each epoch (or use persistent_workers=True), "
                            "or every epoch repeats epoch %d's order and augmentation", epoch)
            positions = positions[worker_share(len(positions), info.id, info.num_workers, self.block)]
        for sample in self.reader.epoch(epoch, positions):
            yield self._out(sample)

