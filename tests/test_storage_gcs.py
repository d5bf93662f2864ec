"""Object storage on a GCS emulator (fake-gcs-server on 127.0.0.1, a real process).

A job to ``gs://`` publishes the local run's bytes; ``verify`` and ``volprep.load`` read
it. TensorFlow's GCS client cannot be pointed at an emulator (its endpoint is fixed), so
with ``STORAGE_EMULATOR_HOST`` set the loader streams ``gs://`` through fsspec (gcsfs):
that is the path tested here; TensorFlow's own gs:// reader is not exercised by the tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import outputs
from gcsserver import gcs_server

from volprep.cli import main

BUCKET = "volprep-gcs"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with gcs_server(tmp_path_factory.mktemp("gcs"), BUCKET) as env:
        yield env


def _objects(url: str) -> dict[str, bytes]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, use_listings_cache=False)
    return {p.rsplit("/", 1)[-1]: fs.cat_file(p) for p in fs.find(path, maxdepth=1)}


def test_job_to_gcs_matches_local_and_loads(demo_data: Path, pipeline: Path, tmp_path: Path,
                                            gcs: dict[str, str]) -> None:
    import volprep

    local = tmp_path / "local"
    common = ["--config", str(pipeline), "--quiet", "--no-report", "--workers", "2"]
    assert main(["shards", str(demo_data), "--out", str(local), *common]) == 0
    url = f"gs://{BUCKET}/jobs/demo"
    assert main(["shards", str(demo_data), "--out", url, *common, "--cache", str(tmp_path / "cache")]) == 0
    remote = _objects(url)
    expected = outputs(local)
    assert {n: hashlib.sha256(b).hexdigest() for n, b in expected.items()} == \
           {n: hashlib.sha256(remote[n]).hexdigest() for n in expected}
    assert ".volprep.lease" not in remote
    assert main(["verify", url]) == 0
    kw = {"split": "train", "batch_size": 3, "shuffle": False, "deterministic": True}
    a = [np.asarray(x) for x, _ in volprep.load(str(local), **kw)]
    b = [np.asarray(x) for x, _ in volprep.load(url, **kw)]
    assert len(a) == len(b) > 0
    for xa, xb in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
