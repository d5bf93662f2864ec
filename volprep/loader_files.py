"""How the loader reads shard files: with TensorFlow's own filesystem where it has one,
streamed through fsspec where it has none.

TensorFlow 2.21 reads local files and ``gs://`` itself (``tf.io.gfile``'s registered
schemes); ``s3://`` left core TensorFlow in 2.6 (it lives in tensorflow-io). A shard at a
URL TensorFlow cannot open is streamed through fsspec (s3fs, gcsfs: ``volprep[cloud]``):
each file becomes a ``from_generator`` dataset of its records (:func:`volprep.records.
iter_records`, CRCs checked), and the loader's parallel interleave keeps several of them
in flight, so the network waits overlap; nothing is copied to local disk. Without the
scheme's fsspec package the loader refuses in one line naming what to install.

TensorFlow's GCS client talks to ``https://www.googleapis.com/storage/v1/`` only (no
setting points it elsewhere in 2.21), so with ``STORAGE_EMULATOR_HOST`` set (a local GCS
emulator, as gcsfs and Google's own clients honour it) ``gs://`` is read through fsspec.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from volprep import storage
from volprep.records import iter_records


def native(tf: Any, where: storage.Location) -> bool:
    """True when TensorFlow reads ``where`` itself; False when it is streamed through fsspec.

    Raises:
        UsageError: a URL neither TensorFlow nor an installed fsspec filesystem can read
            (one line saying what to install).
    """
    scheme = storage.scheme(where)
    if not scheme:
        return True
    if scheme == "gs" and os.environ.get("STORAGE_EMULATOR_HOST"):
        storage.filesystem(str(where))
        return False
    if scheme in tf.io.gfile.get_registered_schemes():
        return True
    storage.filesystem(str(where))  # raises, naming the package, when fsspec cannot either
    return False


def _records(file: bytes) -> Iterator[bytes]:
    yield from iter_records(file.decode())


def file_reader(tf: Any, native_files: bool, buffer_size: int) -> Callable[[Any], Any]:
    """The interleave's function: a shard's path (a string tensor) -> a dataset of its records."""
    if native_files:
        return lambda f: tf.data.TFRecordDataset(f, buffer_size=buffer_size)
    signature = tf.TensorSpec([], tf.string)
    return lambda f: tf.data.Dataset.from_generator(_records, args=(f,), output_signature=signature)
