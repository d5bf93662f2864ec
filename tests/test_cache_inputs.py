"""A cache entry depends on every file a volume's voxels come from, not only the named one.

An Analyze/NIfTI pair names its ``.hdr`` and keeps its voxels in the ``.img``; a DICOM
series is named by its folder and kept in its slices. Rewriting the voxels (same sizes,
a new mtime) and rerunning must give what a fresh job on the edited data gives, never the
stale cache entry of the old voxels.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import outputs
from dicom_corpus import write_series
from realdata import task

from volprep.cli import main

CONFIG = '[job]\nseed = 1\nsplits = { train = 1.0 }\n[preprocess]\nreduce = "none"\nnormalize = "percentile"\n'


def _job(data: Path, out: Path, config: Path, *extra: str) -> None:
    assert main(["shards", str(data), "--out", str(out), "--config", str(config), "--workers", "1",
                 "--quiet", "--no-report", *extra]) == 0


def _head(n: int) -> tuple[np.ndarray, np.ndarray]:
    """A real T1 crop (the corpus's grid task) as int16, and its affine."""
    image = nib.load(sorted((task("grid") / "imagesTr").glob("*.nii.gz"))[n])
    data = np.asarray(image.dataobj)[:24, :28, :20]
    return np.round(data).astype(np.int16), image.affine


def _touch_later(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def _rerun_matches_a_fresh_job(tmp_path: Path, data: Path, edit: callable) -> None:
    config = tmp_path / "job.toml"
    config.write_text(CONFIG)
    out = tmp_path / "out"
    _job(data, out, config)
    before = outputs(out)
    edit()
    # an edited case is refused (exit 2: volprep.append) until --rebuild asks for a rewrite
    assert main(["shards", str(data), "--out", str(out), "--config", str(config), "--workers", "1",
                 "--quiet", "--no-report"]) == 2
    _job(data, out, config, "--rebuild")
    fresh = tmp_path / "fresh"
    _job(data, fresh, config)
    assert outputs(out) == outputs(fresh)
    assert outputs(out) != before  # the edit reached the shards


def test_an_edited_img_of_a_pair_is_converted_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for n in range(2):
        values, affine = _head(n)
        nib.save(nib.Nifti1Pair(values, affine), data / f"case{n}.hdr")
    img = data / "case0.img"
    assert img.exists()

    def edit() -> None:
        size = img.stat().st_size
        raw = bytearray(img.read_bytes())
        raw[size // 2: size // 2 + 400] = bytes(400)  # a block of voxels zeroed, same size
        img.write_bytes(bytes(raw))
        _touch_later(img)

    _rerun_matches_a_fresh_job(tmp_path, data, edit)


@pytest.mark.slow
def test_an_edited_slice_of_a_dicom_series_is_converted_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for n in range(2):
        values, affine = _head(n)
        write_series(data / f"head{n}", values, affine, seed=n)
    slices = sorted((data / "head0").iterdir())

    def edit() -> None:
        victim = slices[len(slices) // 2]
        values, affine = _head(1)  # other voxels, same geometry and sizes
        write_series(data / "tmp", values, affine, seed=0)
        replacement = sorted((data / "tmp").iterdir())[len(slices) // 2]
        import pydicom

        ds = pydicom.dcmread(victim)
        ds.PixelData = pydicom.dcmread(replacement).PixelData
        ds.save_as(victim)
        for path in (data / "tmp").iterdir():
            path.unlink()
        (data / "tmp").rmdir()
        _touch_later(victim)

    _rerun_matches_a_fresh_job(tmp_path, data, edit)
