"""Augmentation ops are units of one table: a conformance test of every op, and a toy op added.

Adding an op takes exactly one new module under ``volprep/augment/ops/`` and one entry in
``volprep/augment/registry.py`` (its module's name in ``OP_MODULES``); nothing in ``spec.py``, ``numpy_ops.py``, ``tf_ops.py`` or ``config.py``.
:func:`test_adding_an_op_is_one_module_and_one_registry_entry` makes exactly those edits on
a copy of the package and counts them. The other toy-op tests build the same objects
in-process from the extended table (``Augment.with_ops``, which is how ``Augment`` itself
is built from ``OPS``), and check that the ops already there draw the same parameters (numpy
and TF) and that both executors render the new op alike.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf
from conftest import package_with_unit

from volprep.augment import numpy_ops, registry, tf_ops
from volprep.augment.ops.base import Op
from volprep.augment.spec import Augment, Params, sample

SHAPE = (12, 10, 10)
FULL = {"flip_axes": [0, 1], "rot90_axes": [1, 2], "rotate_deg": 12, "scale": [0.9, 1.1], "shear": 0.04,
        "shift_vox": 1.5, "p": 0.8, "fourier_shift_vox": 0.9, "intensity_scale": [0.8, 1.2],
        "intensity_shift": 0.5, "gamma": [0.7, 1.4], "noise_std": 0.3}
SEEDS = [(11, f"case{i}", k) for i in range(6) for k in (1, 2, 3)]

# The toy op, exactly as its module volprep/augment/ops/invert.py would read.
INVERT_SOURCE = '''"""A toy op: with probability ``invert_p`` each channel's intensities are mirrored, x -> lo + hi - x."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from volprep.augment.ops.base import Key, Settings, Values, decode_fields, number

NAME = "invert"
KEYS = (Key("invert_p", 0.0, lambda v, k: number(v, k, minimum=0, maximum=1)),)


def active(cfg: Settings) -> bool:
    return cfg["invert_p"] > 0


def sample(cfg: Settings, rng: np.random.Generator, shape: tuple[int, int, int]) -> Values:
    return {"on": bool(rng.random() < cfg["invert_p"])}


def decode(values: Mapping[str, Any]) -> Values:
    return decode_fields(NAME, values, {"on": bool})


def is_identity(params: Mapping[str, Any]) -> bool:
    return not params["on"]


def apply(params: Mapping[str, Any], image: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    lo, hi = image.min(axis=(0, 1, 2), keepdims=True), image.max(axis=(0, 1, 2), keepdims=True)
    return ((lo + hi) - image).astype(np.float32), mask


def tf_sample(cfg: Settings, seed: Any, batch: Any, shape: tuple[int, int, int]) -> dict[str, Any]:
    import tensorflow as tf

    return {"on": tf.random.stateless_uniform([batch], seed=seed, dtype=tf.float64) < cfg["invert_p"]}


def tf_params(values: Sequence[Mapping[str, Any] | None], shape: tuple[int, int, int]) -> dict[str, Any]:
    import tensorflow as tf

    return {"on": tf.constant([bool(v and v["on"]) for v in values])}


def tf_apply(params: Mapping[str, Any], images: Any, masks: Any, jit_compile: bool) -> tuple[Any, Any]:
    import tensorflow as tf

    lo = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
    hi = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
    return tf.where(tf.reshape(params["on"], [-1, 1, 1, 1, 1]), (lo + hi) - images, images), masks
'''


def _module(name: str, source: str) -> Op:
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)  # the toy op module's text, written in this file
    return module  # type: ignore[return-value]


INVERT = _module("volprep.augment.ops.invert", INVERT_SOURCE)
EXTENDED = (*registry.OPS, INVERT)  # the one registry entry
ToyAugment = Augment.with_ops(EXTENDED)  # what importing spec.py does with registry.OPS


def smooth_volume(seed: int, channels: int = 2) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal((*SHAPE, channels))
    vol = scipy.ndimage.gaussian_filter(noise, (2, 2, 2, 0))
    return (vol * 10 + np.arange(channels) * 50).astype(np.float32)


def _batch(n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    images = np.stack([smooth_volume(20 + i) for i in range(n)])
    masks = (images[..., 0] > np.median(images[..., 0])).astype(np.uint8)
    return images, masks


# ---------------------------------------------------------------- every op, one contract


@pytest.mark.parametrize("op", registry.OPS, ids=lambda op: op.NAME)
def test_every_op_keeps_the_contract(op: Op) -> None:
    """Defaults inactive (a new op changes no existing config), JSON round trip, identity
    dropped, numpy apply keeps shape and dtype, TF renders recorded parameters like numpy."""
    defaults = {k.name: k.check(k.default, k.name) for k in op.KEYS}
    assert not op.active(defaults), "an op's defaults must leave volumes unchanged"
    aug = Augment(**{k: v for k, v in FULL.items() if k in {key.name for key in op.KEYS}})
    assert [o.NAME for o in aug.active_ops()] == [op.NAME]
    images, masks = _batch()
    params = [sample(aug, seed, SHAPE) for seed in SEEDS[:4]]
    assert any(op.NAME in p.ops for p in params)
    for p in params:
        text = p.to_json()
        assert Params.from_json(text) == p and Params.from_json(text).to_json() == text
        assert set(p.ops) <= {op.NAME}
        if op.NAME in p.ops:
            assert not op.is_identity(p.ops[op.NAME])
    out, lab = tf_ops.apply_params_batch(tf.constant(images), tf.constant(masks), params)
    for b, p in enumerate(params):
        ref, ref_lab = numpy_ops.apply(p, images[b], masks[b])
        assert ref.shape == images[b].shape and ref.dtype == np.float32 and ref_lab.dtype == np.uint8
        if op.NAME != "noise":  # the TF noise field is not numpy's (see ops/noise.py)
            inner = (slice(2, -2),) * 3
            assert np.abs(out.numpy()[b] - ref)[inner].max() <= 1e-3 * float(np.ptp(ref)), op.NAME
            assert (lab.numpy()[b] == ref_lab).mean() > 0.99


def test_a_table_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        registry.check_table((*registry.OPS, registry.OPS[0]))
    clash = _module("clash", INVERT_SOURCE.replace('"invert"', '"clash"').replace('"invert_p"', '"gamma"'))
    with pytest.raises(ValueError, match="already taken"):
        Augment.with_ops((*registry.OPS, clash))
    with pytest.raises(ValueError, match="must keep every op"):
        Augment.with_ops((*registry.OPS[1:], INVERT))


# ---------------------------------------------------------------- a toy op added


def test_a_new_op_leaves_the_draws_of_the_others_unchanged() -> None:
    """(i) For the same seeds every existing op draws the same parameters, numpy and TF,
    wherever in the table the new op is put."""
    middle = ToyAugment.with_ops((*registry.OPS[:3], INVERT, *registry.OPS[3:]))
    before = Augment(**FULL)
    assert ToyAugment(**FULL).is_identity is False and ToyAugment().is_identity
    assert sample(ToyAugment(**FULL), SEEDS[0], SHAPE).to_json() == sample(before, SEEDS[0], SHAPE).to_json()
    inverted = 0
    for table in (ToyAugment, middle):
        after = table(**FULL, invert_p=0.5)
        for seed in SEEDS:
            old, new = sample(before, seed, SHAPE).ops, dict(sample(after, seed, SHAPE).ops)
            inverted += "invert" in new
            new.pop("invert", None)
            assert new == old, seed
        step = tf.constant([5, 17], tf.int64)
        old_tf, new_tf = tf_ops.sample_batch(before, step, 6, SHAPE), tf_ops.sample_batch(after, step, 6, SHAPE)
        assert set(new_tf) == set(old_tf) | {"invert"}
        for name, drawn in old_tf.items():
            for key, value in drawn.items():
                if isinstance(value, tf.Tensor):
                    np.testing.assert_array_equal(new_tf[name][key].numpy(), value.numpy(), err_msg=f"{name}.{key}")
    assert 0 < inverted < 2 * len(SEEDS)


def test_both_executors_render_the_new_op_alike() -> None:
    """(ii) numpy and TF agree on the new op, alone and after the others."""
    images, masks = _batch()
    for cfg in ({"invert_p": 0.5}, {**FULL, "noise_std": 0.0, "invert_p": 0.5}):
        aug = ToyAugment(**cfg)
        params = [sample(aug, (3, "case", i), SHAPE) for i in range(12)]
        assert {"invert" in p.ops for p in params} == {True, False}
        params = sorted(params, key=lambda p: "invert" in p.ops)[-len(images):]  # inverted ones included
        out, lab = tf_ops.apply_params_batch(tf.constant(images), tf.constant(masks), params)
        for b, p in enumerate(params):
            ref, ref_lab = numpy_ops.apply(p, images[b], masks[b])
            inner = (slice(2, -2),) * 3
            assert np.abs(out.numpy()[b] - ref)[inner].max() <= 1e-3 * float(np.ptp(ref))
            assert (lab.numpy()[b] == ref_lab).mean() > 0.99
    # online: every example inverted at p = 1, exactly lo + hi - x
    out, _ = tf_ops.augment_batch(images, masks, ToyAugment(invert_p=1.0), tf.constant([0, 1]))
    lo, hi = images.min(axis=(1, 2, 3), keepdims=True), images.max(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(out.numpy(), (lo + hi) - images, rtol=0, atol=1e-5)
    p = Params.from_json(sample(ToyAugment(invert_p=1.0), (0, "c", 1), SHAPE).to_json(), EXTENDED)
    np.testing.assert_array_equal(numpy_ops.apply(p, images[0])[0], (lo[0] + hi[0]) - images[0])


def test_adding_an_op_is_one_module_and_one_registry_entry(tmp_path: Path) -> None:
    """(iii) On a copy of the package: write ops/invert.py, add its module to registry.py's
    ``OP_MODULES`` (the only edits: counted below), then, in a fresh interpreter, the
    config file accepts ``invert_p``, copies render the inversion, and the existing ops draw
    what they draw here."""
    copy, diff, changed = package_with_unit(tmp_path, "augment/ops/invert.py", INVERT_SOURCE,
                                            "augment/registry.py", "volprep.augment.ops.noise")
    assert diff == ['+    "volprep.augment.ops.invert",']  # one line
    assert changed == ["volprep/augment/ops/invert.py", "volprep/augment/registry.py"]
    script = f"""
import json, sys
import numpy as np
import volprep
from volprep.augment import numpy_ops
from volprep.augment.spec import Params, sample
from volprep.config import config_from_dict
assert volprep.__file__.startswith({str(tmp_path)!r}), volprep.__file__
cfg = config_from_dict({{"augment": {{**{json.dumps(FULL)}, "invert_p": 0.5}}}}, "x.toml")
aug = cfg.augmentation()
drawn = [json.loads(sample(aug, seed, {SHAPE!r}).to_json()) for seed in {json.dumps(SEEDS)}]
image = np.arange(np.prod({SHAPE!r}), dtype=np.float32).reshape({SHAPE!r} + (1,))
p = Params.from_dict({{"version": 2, "shape": {list(SHAPE)!r}, "ops": {{"invert": {{"on": True}}}}}})
out, _ = numpy_ops.apply(p, image)
assert np.array_equal(out, image.max() - image), "inverted"
assert "tensorflow" not in sys.modules
print(json.dumps(drawn))
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    drawn = json.loads(run.stdout)
    assert any("invert" in d["ops"] for d in drawn)
    for seed, d in zip(SEEDS, drawn, strict=True):
        d["ops"].pop("invert", None)
        assert d == json.loads(sample(Augment(**FULL), tuple(seed), SHAPE).to_json()), seed


def test_toy_params_are_dataclass_equal_across_tables() -> None:
    """Params read with the extended table but holding only old ops equal the registry's."""
    p = sample(Augment(**FULL), SEEDS[0], SHAPE)
    q = Params.from_json(p.to_json(), EXTENDED)
    assert q == p and dataclasses.replace(q, table=registry.OPS) == p
