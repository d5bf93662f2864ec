"""Reductions are units of one table: a conformance test of each, and a toy one added.

Adding a reduction takes exactly one new module under ``volprep/reductions/`` and one line
in ``volprep/reductions/__init__.py`` (its module's name in ``UNIT_MODULES``): the config
check of ``reduce``, the header survey, preprocessing, the cache key, the record encoding
and the fidelity figures all go through the unit.
:func:`test_adding_a_reduction_is_one_module_and_one_registry_line` makes exactly those
edits on a copy of the package, counts them, and runs a whole job with the new reduction.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import package_with_unit

from volprep import reductions
from volprep.config import PreprocessConfig
from volprep.errors import ConfigError
from volprep.preprocess import prepare_case, reduced_shape

CONFIGS = {
    "none": PreprocessConfig(reduce="none"),
    "downsample": PreprocessConfig(reduce="downsample", factor=(2, 3, 1)),
    "resample": PreprocessConfig(reduce="resample", spacing=(2.5, 2.0, 3.0)),
    "wavelet-approx": PreprocessConfig(reduce="wavelet", mode="approx", level=1),
    "wavelet-compress": PreprocessConfig(reduce="wavelet", mode="compress", level=2),
}


def test_every_unit_is_registered_and_selected_by_its_config() -> None:
    picked = {name: reductions.for_config(cfg) for name, cfg in CONFIGS.items()}
    assert set(map(id, picked.values())) == set(map(id, reductions.REDUCTIONS))
    assert reductions.names() == ("none", "downsample", "resample", "wavelet")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_unit_keeps_the_contract(name: str) -> None:
    """The header estimate is the real shape; labels keep their values; the affine is a
    scaled, shifted copy of the input's (same orientation), inside the input's extent."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(0)
    shape = (23, 18, 13)
    affine = np.array([[-1.5, 0, 0, 30.0], [0, 1.2, 0, -10.0], [0, 0, 2.0, 5.0], [0, 0, 0, 1]])
    image = rng.normal(100, 20, (*shape, 1)).astype(np.float32)
    labels = rng.integers(0, 4, shape).astype(np.uint8)
    out = prepare_case(image, affine, labels, cfg, fidelity_figures=True)
    assert tuple(out.image.shape[:3]) == reduced_shape(shape, affine, cfg)
    assert set(np.unique(out.mask)) <= {0, 1, 2, 3}
    assert out.image.dtype == np.float32 and out.image.flags.c_contiguous
    # image intensities stay within the input's range (no ringing), and the grid is where
    # the affine says: every output voxel centre lies inside the scan's extent
    assert image.min() <= out.image.min() and out.image.max() <= image.max()
    corners = np.array([[i, j, k, 1] for i in (0, out.image.shape[0] - 1) for j in (0, out.image.shape[1] - 1)
                        for k in (0, out.image.shape[2] - 1)], float)
    in_scan = np.linalg.solve(affine, (out.affine @ corners.T)).T[:, :3]
    assert np.all(in_scan >= -2.0) and np.all(in_scan <= np.array(shape) + 1.0)
    if name != "none":
        assert (out.meta["fidelity"] is not None) == (name != "none")


def test_a_units_own_config_checks_name_the_key() -> None:
    with pytest.raises(ConfigError, match="preprocess.spacing"):
        PreprocessConfig(reduce="resample")
    with pytest.raises(ConfigError, match="preprocess.wavelet"):
        PreprocessConfig(reduce="wavelet", wavelet="no-such-wavelet")
    with pytest.raises(ConfigError, match="preprocess.reduce.*'none', 'downsample', 'resample', 'wavelet'"):
        PreprocessConfig(reduce="stride")


STRIDE_SOURCE = '''"""``reduce = "stride"``: every second voxel (a toy reduction added by a test)."""

from __future__ import annotations

from typing import Any

import numpy as np

from volprep.reductions.base import GridReduction, PreprocessConfig, Reduced


class Stride(GridReduction):
    name = "stride"

    def matches(self, cfg: PreprocessConfig) -> bool:
        return cfg.reduce == "stride"

    def output_shape(self, shape, affine, cfg):
        return tuple(-(-int(n) // 2) for n in shape[:3])

    def apply(self, image, mask, affine, cfg, notes) -> Reduced:
        out = np.ascontiguousarray(image[::2, ::2, ::2], dtype=np.float32)
        small = np.ascontiguousarray(mask[::2, ::2, ::2]) if mask is not None else None
        return out, small, np.asarray(affine, float) @ np.diag([2.0, 2.0, 2.0, 1.0])

    def cache_keys(self, cfg: PreprocessConfig) -> dict[str, Any]:
        return {}


UNIT = Stride()
'''


def test_adding_a_reduction_is_one_module_and_one_registry_line(demo_data: Path, tmp_path: Path) -> None:
    """On a copy of the package: write reductions/stride.py and add its module name to
    ``UNIT_MODULES`` (the only edits, counted below); then, in a fresh interpreter, a job
    with ``reduce = "stride"`` runs end to end and its records sit on the stride grid."""
    copy, diff, changed = package_with_unit(tmp_path, "reductions/stride.py", STRIDE_SOURCE,
                                            "reductions/__init__.py", "volprep.reductions.wavelet_compress")
    assert diff == ['+    "volprep.reductions.stride",']  # one line
    assert changed == ["volprep/reductions/__init__.py", "volprep/reductions/stride.py"]

    config = tmp_path / "stride.toml"
    config.write_text('[preprocess]\nreduce = "stride"\n[balance]\nenabled = false\n')
    out = tmp_path / "out"
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "volprep", "shards", str(demo_data), "--out", str(out),
                           "--config", str(config), "--workers", "1", "--quiet", "--no-report"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    check = subprocess.run([sys.executable, "-c", f"""
import json, numpy as np, volprep
from volprep.manifest import read_manifest
from volprep.records import iter_records
m = read_manifest({str(out)!r})
assert volprep.__file__.startswith({str(copy)!r})
spacings = {{}}
for shard in m.splits["train"].shards:
    for record in iter_records({str(out)!r} + "/" + shard.file):
        values = m.features.decode(record, ("case_id", "affine"))
        spacings[values["case_id"]] = np.sqrt((values["affine"][:3, :3] ** 2).sum(axis=0)).tolist()
print(json.dumps({{"target": list(m.target_shape), "spacings": spacings}}))
"""], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    result = json.loads(check.stdout)
    assert result["spacings"]
    for case_id, spacing in result["spacings"].items():  # twice the scan's (nibabel, in RAS)
        scan = nib.as_closest_canonical(nib.load(demo_data / "imagesTr" / f"{case_id}.nii.gz"))
        np.testing.assert_allclose(spacing, 2 * np.array(scan.header.get_zooms()[:3]), rtol=1e-5)
