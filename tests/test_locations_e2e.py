"""Records of a real segmentation job carry true class locations and their padding value.

A job on the corpus's tissue task (MNI152 grey/white matter on 2 mm heads), with a window
longer than every head along the first axis so that the converter pads: every stored
location of every record (augmented copies included) holds its label in that record's
own mask, the counts follow the label list the manifest declares, and the first and last
planes (padding) of each original hold exactly the record's ``fill``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from realdata import task

from volprep.cli import main
from volprep.manifest import read_manifest
from volprep.records import iter_records


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("locations")
    config = root / "job.toml"
    config.write_text('[job]\nseed = 2\nsplits = { train = 1.0 }\n'
                      '[preprocess]\nreduce = "none"\ntarget_shape = [100, 104, 88]\nclass_locations = 900\n'
                      '[balance]\nenabled = true\nclass_by = "rarest"\nmax_copies_per_case = 1\n'
                      'max_augmented_fraction = 1.0\n')
    out = root / "out"
    assert main(["shards", str(task("tissue")), "--out", str(out), "--config", str(config), "--workers", "2",
                 "--quiet", "--no-report"]) == 0
    return out


@pytest.fixture(scope="module")
def demo_job(demo_data: Path, pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo (classes and masks, with augmented copies of the rare classes)."""
    out = tmp_path_factory.mktemp("locations-demo") / "out"
    assert main(["shards", str(demo_data), "--out", str(out), "--config", str(pipeline), "--workers", "1",
                 "--quiet", "--no-report"]) == 0
    return out


def _records(out: Path) -> list[dict]:
    manifest = read_manifest(out)
    return [manifest.features.decode(record) for split in manifest.splits.values()
            for shard in split.shards for record in iter_records(out / shard.file)]


@pytest.mark.parametrize("which", ["tissue", "demo"])
def test_every_location_holds_its_label_in_its_own_record(which: str, job: Path, demo_job: Path) -> None:
    out = job if which == "tissue" else demo_job
    manifest = read_manifest(out)
    labels = manifest.features["location_counts"].layout["labels"]
    budget = manifest.features["locations"].shape[0]
    if which == "tissue":
        assert labels == [1, 2] and budget == 900  # the tissue masks' labels (the job's voxel counts)
    records = _records(out)
    if which == "demo":
        assert any(r["copy"] > 0 for r in records)  # augmented copies are checked too
    volume = manifest.features.label_volume
    for record in records:
        mask, coords, counts = record[volume], record["locations"], record["location_counts"]
        assert counts.sum() == min(budget, np.count_nonzero(np.isin(mask, labels)))
        ends = np.cumsum(counts)
        for value, n, end in zip(labels, counts, ends, strict=True):
            rows = coords[end - n:end].astype(np.intp)
            assert (mask[tuple(rows.T)] == value).all()
            assert n == min(np.count_nonzero(mask == value), n)  # never more than there are


def test_the_padding_holds_the_fill_value(job: Path) -> None:
    for record in _records(job):
        if record["copy"]:
            continue
        image, fill = record["image"].astype(np.float32), record["fill"]
        assert image.shape[0] == 100
        for plane in (image[0], image[-1]):  # heads are 85 voxels long: these are padding
            np.testing.assert_array_equal(plane, np.broadcast_to(fill, plane.shape))
