"""Reading volprep shards without TensorFlow: the numpy reader every framework binding uses.

:class:`Reader` (:mod:`.reader`) reads one split of a shard folder with the loader's
guarantees (CRC checks, optional sha256, host sharding with equal counts, seeded epochs);
:mod:`.index` owns random access into a TFRecord file, :mod:`.order` which records a host
reads and in which order. :mod:`volprep.torch` and :mod:`volprep.grain` wrap the reader.

Names are imported on first use, so ``volprep.loader`` (which uses :mod:`.index` and
:mod:`.order` for its direct reads) does not pay for the reader's augmentation imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from volprep.readers.index import ShardIndex, read_record, shard_index, verify_sha256
    from volprep.readers.order import interleave
    from volprep.readers.patches import Patches
    from volprep.readers.reader import PatchSampler, Reader, Sample, target_feature

_HOME = {"ShardIndex": "index", "read_record": "index", "shard_index": "index", "verify_sha256": "index",
         "interleave": "order", "Patches": "patches", "PatchSampler": "reader", "Reader": "reader",
         "Sample": "reader", "target_feature": "reader"}

__all__ = ["PatchSampler", "Patches", "Reader", "Sample", "ShardIndex", "interleave", "read_record", "shard_index",
           "target_feature", "verify_sha256"]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
