"""Every NIfTI/Analyze file nibabel ships for its own tests: read equal to nibabel, or refused.

Refusals must be InputErrors (never another exception); reads must match nibabel's scaled
voxels. Run under both non-finite policies, so files holding NaN are compared too.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from volprep.config import ReadConfig
from volprep.errors import InputError
from volprep.io import read_volume

DATA = Path(nib.__file__).parent / "tests" / "data"
FILES = sorted({p for pattern in ("*.nii", "*.nii.gz", "*.hdr", "*.img")
                for p in DATA.glob(pattern)})


def test_the_sweep_has_files() -> None:
    assert len(FILES) >= 8


@pytest.mark.parametrize("non_finite", ["fail", "zero"])
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_reads_like_nibabel_or_refuses(path: Path, non_finite: str) -> None:
    cfg = ReadConfig(non_finite=non_finite)
    try:
        volume = read_volume(path, cfg)
    except InputError as err:
        assert str(path) in str(err) and "\n" not in str(err)
        return
    expected = np.asanyarray(nib.load(path).dataobj).astype(np.float64)
    if non_finite == "zero":
        expected = np.where(np.isfinite(expected), expected, 0.0)
    assert volume.data.size == expected.size
    np.testing.assert_allclose(volume.data, expected.reshape(volume.data.shape), rtol=1e-6)


def test_known_files_are_read() -> None:
    """The plain, valid volumes among them must not be refused."""
    for name in ("anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz",
                 "functional.nii", "standard.nii.gz"):
        assert read_volume(DATA / name, ReadConfig()).data.size > 0
