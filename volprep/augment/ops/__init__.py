"""Augmentation ops, one module each, behind the :class:`~volprep.augment.ops.base.Op` protocol.

Each module owns its ``[augment]`` keys, its sampling (numpy, from its own generator), its
numpy apply and its TensorFlow batched sample and apply. The ordered table of the ops that
run, and so the order they run in, is :data:`volprep.augment.registry.OPS`: adding an op is
a new module here and one line there.
"""
