"""Reading volprep shards without TensorFlow: the numpy reader every framework binding uses.

:class:`Reader` (:mod:`.reader`) reads one split of a shard folder with the loader's
guarantees (CRC checks, optional sha256, host sharding with equal counts, seeded epochs);
:mod:`.index` owns random access into a TFRecord file, :mod:`.order` which records a host
reads and in which order. :mod:`volprep.torch` and :mod:`volprep.grain` wrap the reader.
"""

from volprep.readers.index import ShardIndex, read_record, shard_index, verify_sha256
from volprep.readers.order import interleave
from volprep.readers.patches import Patches
from volprep.readers.reader import PatchSampler, Reader, Sample, target_feature

__all__ = ["PatchSampler", "Patches", "Reader", "Sample", "ShardIndex", "interleave", "read_record", "shard_index",
           "target_feature", "verify_sha256"]
