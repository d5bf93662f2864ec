"""3D augmentation: one spec (:mod:`.spec`), ops as units (:mod:`.ops`, listed in
:mod:`.registry`), two executors (:mod:`.numpy_ops`, :mod:`.tf_ops`).

``Augment`` describes the distribution (one config field per key the registry's ops own),
``sample`` draws a replayable ``Params`` (``{op name: params}``) with a random stream per op,
``numpy_ops.apply`` renders it offline and ``tf_ops.augment_batch`` draws and renders whole
batches online. TensorFlow is imported only by ``tf_ops``/``tf_kernels`` and inside the ops'
TF functions, never on the numpy path.
"""

from volprep.augment.registry import OPS
from volprep.augment.spec import Augment, Params, sample

__all__ = ["OPS", "Augment", "Params", "sample"]
