"""Tests of the augmentation spec: validation, sampling, Params JSON (no TensorFlow)."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

import volprep
from volprep.augment.registry import OPS
from volprep.augment.spec import Augment, Params, pull_passes, sample
from volprep.config import config_from_dict
from volprep.errors import ConfigError

SHAPE = (24, 20, 20)
FULL = Augment(flip_axes=[0, 2], rot90_axes=[1, 2], rotate_deg=[10, 20, 5], scale=[0.9, 1.1],
               shear=0.05, shift_vox=2, fourier_shift_vox=0.7, intensity_scale=[0.9, 1.1],
               intensity_shift=0.1, gamma=[0.8, 1.2], noise_std=0.05, p=0.9)
CONTRACT_KEYS = {"flip_axes", "rot90_axes", "rotate_deg", "scale", "shear", "shift_vox", "fourier_shift_vox",
                 "intensity_scale", "intensity_shift", "gamma", "noise_std", "p", "seed"}


def test_public_name_and_lists_stored_as_tuples() -> None:
    aug = volprep.Augment(flip_axes=[0, 1], rot90_axes=[0, 2], rotate_deg=[1, 2, 3], scale=[0.9, 1.1])
    assert aug == Augment(flip_axes=(0, 1), rot90_axes=(0, 2), rotate_deg=(1.0, 2.0, 3.0), scale=(0.9, 1.1))
    assert aug.flip_axes == (0, 1) and aug.rot90_axes == (0, 2) and aug.rotate_deg == (1.0, 2.0, 3.0)
    hash(aug)  # frozen and hashable: usable as a tf.function cache key
    with pytest.raises(dataclasses.FrozenInstanceError):
        aug.scale = (1.0, 2.0)  # type: ignore[misc]


def test_config_keys_are_the_dataclass_fields() -> None:
    """volprep.config validates [augment] against these fields: the contract's keys, no more."""
    assert {f.name for f in dataclasses.fields(Augment)} == CONTRACT_KEYS
    assert {k.name for op in OPS for k in op.KEYS} == CONTRACT_KEYS - {"seed"}
    assert [op.NAME for op in OPS] == ["flip", "rot90", "affine", "fourier_shift", "intensity", "gamma", "noise"]


@pytest.mark.parametrize(("table", "key"), [
    ({"flip_axes": [3]}, "augment.flip_axes"),
    ({"flip_axes": [0, 0]}, "augment.flip_axes"),
    ({"flip_axes": 0}, "augment.flip_axes"),
    ({"rot90_axes": [1, 1]}, "augment.rot90_axes"),
    ({"rot90_axes": [0]}, "augment.rot90_axes"),
    ({"rotate_deg": -1}, "augment.rotate_deg"),
    ({"rotate_deg": 90}, "augment.rotate_deg"),
    ({"rotate_deg": [1, 2]}, "augment.rotate_deg"),
    ({"rotate_deg": "10"}, "augment.rotate_deg"),
    ({"scale": [1.1, 0.9]}, "augment.scale"),
    ({"scale": [0, 1]}, "augment.scale"),
    ({"scale": 1.0}, "augment.scale"),
    ({"shear": 0.5}, "augment.shear"),
    ({"shift_vox": -2}, "augment.shift_vox"),
    ({"fourier_shift_vox": float("nan")}, "augment.fourier_shift_vox"),
    ({"intensity_scale": [2, 1]}, "augment.intensity_scale"),
    ({"gamma": [0, 1]}, "augment.gamma"),
    ({"noise_std": -0.1}, "augment.noise_std"),
    ({"p": 1.5}, "augment.p"),
    ({"seed": -1}, "augment.seed"),
    ({"seed": True}, "augment.seed"),
])
def test_validation_names_the_key(table: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        Augment(**table)
    assert err.value.key == key
    with pytest.raises(ConfigError) as err:  # and config.py passes it on with the file name
        config_from_dict({"augment": table}, "x.toml")
    assert err.value.key == key and err.value.source == "x.toml"


def test_is_identity() -> None:
    assert Augment().is_identity
    assert Augment(rotate_deg=10, p=0.0).is_identity
    assert Augment(scale=[1.0, 1.0], gamma=[1.0, 1.0]).is_identity
    for change in ({"flip_axes": [0]}, {"rotate_deg": 5}, {"noise_std": 0.1}, {"gamma": [0.9, 1.0]},
                   {"fourier_shift_vox": 0.5}, {"rot90_axes": [0, 1]}, {"intensity_shift": 0.1}):
        assert not Augment(**change).is_identity, change
    assert sample(Augment(), (0, "c", 1), SHAPE).ops == {}


def test_sampling_is_deterministic_and_seeds_differ() -> None:
    a = sample(FULL, (7, "case", 1), SHAPE)
    b = sample(FULL, [7, "case", 1], SHAPE)
    c = sample(FULL, (7, "case", 2), SHAPE)
    assert a == b and a.to_json() == b.to_json()
    assert a.ops["affine"] != c.ops["affine"] and a.ops["noise"]["seed"] != c.ops["noise"]["seed"]


def test_each_op_draws_from_its_own_stream() -> None:
    """An op's draws depend on the seed keys and its name only, not on the other ops."""
    seeds = [(3, f"case{i}", k) for i in range(5) for k in (1, 2)]
    alone = {op.NAME: Augment(**{k.name: getattr(FULL, k.name) for k in op.KEYS}) for op in OPS}
    for seed in seeds:
        together = sample(FULL, seed, SHAPE).ops
        for name, values in together.items():
            assert sample(alone[name], seed, SHAPE).ops[name] == values, name
    # a different op's name is a different stream: flips of the same keys are not the noise's
    a = sample(Augment(noise_std=1.0), (1, "c", 1), SHAPE).ops["noise"]
    assert a != sample(Augment(noise_std=1.0), (1, "c", 2), SHAPE).ops["noise"]


def test_sample_refuses_without_explicit_seed_keys() -> None:
    for bad in (None, 3, np.random.default_rng(0), (), ("c", 1), (-1, "c"), (True, "c"), (1, 2.5)):
        with pytest.raises(TypeError, match="seed keys"):
            sample(FULL, bad, SHAPE)  # type: ignore[arg-type]


def test_sampled_values_respect_the_bounds() -> None:
    for i in range(50):
        p = sample(FULL, (i, "c", 1), SHAPE).ops
        assert set(p.get("flip", {"axes": ()})["axes"]) <= {0, 2}
        if "rot90" in p:
            assert p["rot90"]["k"] in (1, 2, 3) and p["rot90"]["axes"] == (1, 2)
        assert all(abs(s) <= 0.7 for s in p["fourier_shift"]["shift"])
        assert 0.9 <= p["intensity"]["scale"] <= 1.1 and abs(p["intensity"]["shift"]) <= 0.1
        assert 0.8 <= p["gamma"]["gamma"] <= 1.2 and 0 <= p["noise"]["std"] <= 0.05
        if "affine" in p:
            assert all(abs(t) <= 2 for t in p["affine"]["translation"])
            det = np.linalg.det(np.array(p["affine"]["matrix"]))
            assert 0.9**3 * 0.9 < det < 1.1**3 * 1.1


def test_rot90_skipped_when_the_plane_is_not_square() -> None:
    aug = Augment(rot90_axes=[0, 1])
    assert all("rot90" not in sample(aug, (i, "c", 1), (24, 20, 20)).ops for i in range(20))
    ks = {sample(aug, (i, "c", 1), (20, 20, 24)).ops.get("rot90", {"k": 0})["k"] for i in range(20)}
    assert ks == {0, 1, 2, 3}


def test_p_gates_the_affine() -> None:
    never = dataclasses.replace(FULL, p=0.0)
    assert "affine" not in {op.NAME for op in never.active_ops()}
    half = dataclasses.replace(FULL, p=0.5)
    applied = ["affine" in sample(half, (i, "c", 1), SHAPE).ops for i in range(200)]
    assert 0.35 < np.mean(applied) < 0.65
    for i in range(10):
        p = sample(never, (i, "c", 1), SHAPE)
        assert "affine" not in p.ops and "fourier_shift" in p.ops  # the Fourier shift is not gated by p


def test_params_json_round_trip_is_exact_and_canonical() -> None:
    for i in range(10):
        p = sample(FULL, (i, "c", 1), SHAPE)
        text = p.to_json()
        back = Params.from_json(text)
        assert back == p and back.to_json() == text
        data = json.loads(text)
        assert data["version"] == 2 and set(data) == {"version", "shape", "ops"}
        assert '": ' not in text and text == json.dumps(data, sort_keys=True, separators=(",", ":"))
    with pytest.raises(ValueError, match="unknown augmentation op"):
        Params.from_json('{"version": 2, "shape": [2, 2, 2], "ops": {"bogus": {}}}')
    with pytest.raises(ValueError, match="unknown parameter"):
        Params.from_json('{"version": 2, "shape": [2, 2, 2], "ops": {"gamma": {"gama": 2}}}')
    with pytest.raises(ValueError, match="version"):
        Params.from_json('{"version": 3, "shape": [2, 2, 2]}')


def test_params_pickle_and_copy() -> None:
    p = sample(FULL, (2, "c", 1), SHAPE)
    assert pickle.loads(pickle.dumps(p)) == p and copy.deepcopy(p) == p
    assert pickle.loads(pickle.dumps(FULL)) == FULL


def test_identity_entries_are_dropped() -> None:
    p = Params(shape=(4, 4, 4), ops={"flip": {"axes": []}, "gamma": {"gamma": 1.0}, "noise": {"std": 0.0, "seed": 3},
                                     "intensity": {"scale": 1.5, "shift": 0.0}})
    assert list(p.ops) == ["intensity"]
    assert p == Params(shape=(4, 4, 4), ops={"intensity": {"scale": 1.5, "shift": 0}})


def test_pull_passes_compose_to_the_inverse_affine() -> None:
    """The three one-row passes chained give the pull map p = B q + o exactly."""
    for i in range(10):
        p = sample(dataclasses.replace(FULL, p=1.0), (i, "c", 1), SHAPE).ops["affine"]
        rows = pull_passes(np.array(p["matrix"]), np.array(p["translation"]), SHAPE)
        elementary = []
        for axis in range(3):
            e = np.eye(4)
            e[axis] = rows[axis]
            elementary.append(e)
        chain = elementary[0] @ elementary[1] @ elementary[2]
        centre = (np.array(SHAPE) - 1) / 2
        b = np.linalg.inv(np.array(p["matrix"]))
        np.testing.assert_allclose(chain[:3, :3], b, atol=1e-12)
        np.testing.assert_allclose(chain[:3, 3], centre - b @ (centre + np.array(p["translation"])), atol=1e-12)


def test_the_spec_imports_neither_scipy_nor_tensorflow() -> None:
    """volprep.config imports the spec (and so every op): every command pays for its imports."""
    code = ("import sys\nimport volprep.augment.spec\n"
            "assert not {'scipy', 'tensorflow'} & set(sys.modules), sorted({'scipy', 'tensorflow'} & set(sys.modules))\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_numpy_path_never_imports_tensorflow() -> None:
    """Converter workers sample and render copies; TensorFlow (2 s, 0.5 GB) must stay out."""
    code = ("import sys, numpy as np\n"
            "from volprep.augment import numpy_ops\n"
            "from volprep.augment.spec import Augment, Params, sample\n"
            "aug = Augment(flip_axes=[0], rot90_axes=[1, 2], rotate_deg=10, fourier_shift_vox=1,"
            " intensity_shift=1, gamma=[0.8, 1.2], noise_std=1)\n"
            "p = Params.from_json(sample(aug, (0, 'c', 1), (6, 5, 5)).to_json())\n"
            "numpy_ops.apply(p, np.ones((6, 5, 5, 1), np.float32), np.ones((6, 5, 5), np.uint8))\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
