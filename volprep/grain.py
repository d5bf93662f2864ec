"""A Grain / JAX data source over volprep shards, without TensorFlow (``volprep[jax]``).

:class:`Source` is a Grain ``RandomAccessDataSource`` (``__len__`` and ``__getitem__``
returning numpy dicts; picklable, so Grain's worker processes can carry it): item ``i``
is sample ``i`` of this host's records in ``volprep.load``'s unshuffled order, read and
checked by :class:`volprep.readers.Reader` (CRCs on every record, optional sha256, equal
per-host counts via ``num_shards``/``shard_index``, wavelet records reconstructed).
Items are ``{"image": float32 [D, H, W, C], "label": ...}`` (channels last, as
``volprep.load`` and ``flax.linen.Conv`` use; ``label`` the class id or the label
volume), plus any ``extra_features``.

Shuffling, epochs and batching are Grain's (``MapDataset.shuffle(seed=...)``,
``.repeat()``, ``.batch()``, or ``IndexSampler``). Online augmentation is
:meth:`Source.augmenter`: a callable for ``MapDataset.random_map``, which hands it a
generator seeded by ``(seed, index)``, so each epoch of a repeated dataset draws new
parameters, reproducibly; it renders the same :class:`volprep.Augment` with the numpy
executor. Grain is only needed by the caller: this module imports neither Grain nor JAX.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from volprep.augment import numpy_ops
from volprep.augment.spec import Augment, sample
from volprep.readers.reader import Reader, Sample

__all__ = ["Source"]


class Source:
    """One split of a volprep shard folder as a Grain random-access source.

    Args:
        path: the folder holding ``manifest.json`` and the shards.
        split: which split to read.
        target: ``"label"`` or ``"mask"`` (as ``volprep.load``).
        num_shards, shard_index: hosts reading this split together (e.g.
            ``jax.process_count()``, ``jax.process_index()``), and this host; every host
            gets the same length. Then give Grain ``NoSharding()``: the source is this
            host's share already.
        check_sha256: hash every shard this host reads against the manifest first.
        extra_features: more features per item, e.g. ``("case_id", "copy")``.
        dtype: the images' dtype, as ``volprep.load``'s: ``"float32"`` (default),
            ``"float16"`` or None (as stored): float16 halves the bytes to the device, where
            the cast is free (``jnp.asarray(x, jnp.float32)``).

    Raises:
        UsageError, ValueError, DataError: as :class:`volprep.readers.Reader`.
    """

    def __init__(self, path: str | Path, split: str = "train", *, target: str = "label",
                 num_shards: int = 1, shard_index: int = 0, check_sha256: bool = False,
                 extra_features: Sequence[str] = (), dtype: str | None = "float32") -> None:
        self.reader = Reader(path, split, target=target, shuffle=False, num_shards=num_shards,
                             shard_index=shard_index, check_sha256=check_sha256,
                             extra_features=extra_features, dtype=dtype)

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> Sample:
        return self.reader.sample(index)

    def __repr__(self) -> str:  # Grain logs and checkpoints name sources by their repr
        return f"volprep.grain.Source({str(self.reader.path)!r}, split={self.reader.split!r})"

    @property
    def manifest(self) -> Any:
        """The shard folder's :class:`volprep.manifest.Manifest`."""
        return self.reader.manifest

    def augmenter(self, augment: Augment) -> Callable[[Sample, np.random.Generator], Sample]:
        """``fn(item, rng) -> item`` rendering ``augment`` (for ``MapDataset.random_map``).

        Parameters are drawn with :func:`volprep.augment.spec.sample` from a seed taken
        from ``rng``; a label volume follows the image (nearest neighbour), a class id is
        left alone. The function is picklable.
        """
        return _Augmenter(augment, self.reader.label_is_volume)


class _Augmenter:
    """A picklable ``(item, rng) -> item`` rendering an :class:`Augment` with numpy."""

    def __init__(self, augment: Augment, label_is_volume: bool) -> None:
        self.augment, self.label_is_volume = augment, label_is_volume

    def __call__(self, item: Sample, rng: np.random.Generator) -> Sample:
        if self.augment.is_identity:
            return item
        image = item["image"]
        params = sample(self.augment, (int(rng.integers(0, 2**62)),), image.shape[:3])
        mask = item.get("label") if self.label_is_volume else None
        image, mask = numpy_ops.apply(params, image, mask)
        out = dict(item, image=image)
        if mask is not None:
            out["label"] = mask
        return out
