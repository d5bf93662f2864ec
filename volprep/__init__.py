"""volprep: offline preprocessing and sharding of 3D medical volumes, and a fast loader.

The public API is small: :func:`load` (a ``tf.data.Dataset`` from a shard folder),
:class:`Augment` (one description of an augmentation, rendered offline by numpy and
online, batched, by TensorFlow), :func:`run_job` (what ``volprep shards`` runs), and
:func:`prepare` / :func:`invert` (a job's preprocessing applied to a new scan, and a
prediction mapped back to the scan's grid), :func:`sliding_window` (a whole-volume
prediction from a model trained on patches).
TensorFlow is imported only when :func:`load` is called.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
version = __version__

__all__ = ["Augment", "__version__", "invert", "load", "prepare", "run_job", "sliding_window", "version"]


def load(*args: Any, **kwargs: Any) -> Any:
    """See :func:`volprep.loader.load`."""
    from volprep.loader import load as _load

    return _load(*args, **kwargs)


def run_job(*args: Any, **kwargs: Any) -> Any:
    """See :func:`volprep.runner.run_job`."""
    from volprep.runner import run_job as _run_job

    return _run_job(*args, **kwargs)


def prepare(*args: Any, **kwargs: Any) -> Any:
    """See :func:`volprep.inference.prepare`."""
    from volprep.inference import prepare as _prepare

    return _prepare(*args, **kwargs)


def invert(*args: Any, **kwargs: Any) -> Any:
    """See :func:`volprep.inference.invert`."""
    from volprep.inference import invert as _invert

    return _invert(*args, **kwargs)


def sliding_window(*args: Any, **kwargs: Any) -> Any:
    """See :func:`volprep.patches.sliding_window`."""
    from volprep.patches import sliding_window as _sliding_window

    return _sliding_window(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "Augment":
        from volprep.augment.spec import Augment

        return Augment
    raise AttributeError(f"module 'volprep' has no attribute {name!r}")
