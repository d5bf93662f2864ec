"""3D augmentation: one spec (:mod:`.spec`), two executors (:mod:`.numpy_ops`, :mod:`.tf_ops`).

``Augment`` describes the distribution, ``sample`` draws a replayable ``Params`` from an
explicit generator, ``numpy_ops.apply`` renders it offline and ``tf_ops.augment_batch``
draws and renders whole batches online. TensorFlow is imported only by ``tf_ops``.
"""

from volprep.augment.spec import Augment, Params, sample

__all__ = ["Augment", "Params", "sample"]
