"""Tests of the augmentation spec: validation, sampling, Params JSON (no TensorFlow)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import volprep
from volprep.augment.spec import Augment, Params, pull_passes, sample
from volprep.config import config_from_dict
from volprep.errors import ConfigError

SHAPE = (24, 20, 20)
FULL = Augment(flip_axes=[0, 2], rot90_axes=[1, 2], rotate_deg=[10, 20, 5], scale=[0.9, 1.1],
               shear=0.05, shift_vox=2, fourier_shift_vox=0.7, intensity_scale=[0.9, 1.1],
               intensity_shift=0.1, gamma=[0.8, 1.2], noise_std=0.05, p=0.9)


def test_public_name_and_lists_stored_as_tuples() -> None:
    aug = volprep.Augment(flip_axes=[0, 1], rot90_axes=[0, 2], rotate_deg=[1, 2, 3], scale=[0.9, 1.1])
    assert aug == Augment(flip_axes=(0, 1), rot90_axes=(0, 2), rotate_deg=(1.0, 2.0, 3.0), scale=(0.9, 1.1))
    assert aug.flip_axes == (0, 1) and aug.rot90_axes == (0, 2) and aug.rotate_deg == (1.0, 2.0, 3.0)
    hash(aug)  # frozen and hashable: usable as a tf.function cache key


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


def test_sampling_is_deterministic_and_seeds_differ() -> None:
    a = sample(FULL, np.random.default_rng([7, 1]), SHAPE)
    b = sample(FULL, np.random.default_rng([7, 1]), SHAPE)
    c = sample(FULL, np.random.default_rng([7, 2]), SHAPE)
    assert a == b and a.to_json() == b.to_json()
    assert a.matrix != c.matrix and a.noise_seed != c.noise_seed


def test_sample_refuses_without_a_generator() -> None:
    with pytest.raises(TypeError, match="Generator"):
        sample(FULL, None, SHAPE)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sample(FULL, 3, SHAPE)  # type: ignore[arg-type]


def test_sampled_values_respect_the_bounds() -> None:
    for i in range(50):
        p = sample(FULL, np.random.default_rng(i), SHAPE)
        assert set(p.flips) <= {0, 2}
        assert 0 <= p.rot90_k <= 3 and (p.rot90_axes == (1, 2) or p.rot90_k == 0)
        assert all(abs(t) <= 2 for t in p.translation) and all(abs(s) <= 0.7 for s in p.fourier_shift)
        assert 0.9 <= p.intensity_scale <= 1.1 and abs(p.intensity_shift) <= 0.1
        assert 0.8 <= p.gamma <= 1.2 and 0 <= p.noise_std <= 0.05
        det = np.linalg.det(np.array(p.matrix))
        assert det == 1.0 or 0.9**3 * 0.9 < det < 1.1**3 * 1.1


def test_rot90_skipped_when_the_plane_is_not_square() -> None:
    aug = Augment(rot90_axes=[0, 1])
    ks = {sample(aug, np.random.default_rng(i), (24, 20, 20)).rot90_k for i in range(20)}
    assert ks == {0}
    ks = {sample(aug, np.random.default_rng(i), (20, 20, 24)).rot90_k for i in range(20)}
    assert ks == {0, 1, 2, 3}


def test_p_gates_the_affine() -> None:
    never = dataclasses.replace(FULL, p=0.0)
    for i in range(10):
        p = sample(never, np.random.default_rng(i), SHAPE)
        assert not p.has_affine and p.matrix == ((1, 0, 0), (0, 1, 0), (0, 0, 1))
        assert any(p.fourier_shift)  # the Fourier shift is not gated by p


def test_params_json_round_trip_is_exact() -> None:
    for i in range(10):
        p = sample(FULL, np.random.default_rng(i), SHAPE)
        text = p.to_json()
        back = Params.from_json(text)
        assert back == p
        assert back.to_json() == text
        assert '": ' not in text and text.index('"flips"') < text.index('"matrix"')  # canonical
    with pytest.raises(ValueError, match="unknown"):
        Params.from_json('{"shape": [2, 2, 2], "bogus": 1}')


def test_pull_passes_compose_to_the_inverse_affine() -> None:
    """The three one-row passes chained give the pull map p = B q + o exactly."""
    for i in range(10):
        p = sample(FULL, np.random.default_rng(i), SHAPE)
        rows = pull_passes(np.array(p.matrix), np.array(p.translation), SHAPE)
        elementary = []
        for axis in range(3):
            e = np.eye(4)
            e[axis] = rows[axis]
            elementary.append(e)
        chain = elementary[0] @ elementary[1] @ elementary[2]
        centre = (np.array(SHAPE) - 1) / 2
        b = np.linalg.inv(np.array(p.matrix))
        np.testing.assert_allclose(chain[:3, :3], b, atol=1e-12)
        np.testing.assert_allclose(chain[:3, 3], centre - b @ (centre + np.array(p.translation)), atol=1e-12)
