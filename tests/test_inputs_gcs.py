"""Inputs at a URL across stores: S3 (moto) to GCS (fake-gcs-server), and GCS to a local
folder, both on 127.0.0.1; the shards are the bytes of the job from the local copy, and a
rerun from GCS converts nothing again."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import outputs
from gcsserver import gcs_server
from s3server import s3_server

from volprep import storage
from volprep.cli import main
from volprep.config import load_config
from volprep.runner import run_job

BUCKET = "volprep-inputs-x"


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with s3_server(BUCKET), gcs_server(tmp_path_factory.mktemp("gcs"), BUCKET):
        yield


def _upload(local: Path, url: str) -> None:
    fs, path = storage.filesystem(url)
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        fs.put_file(str(file), f"{path}/{file.relative_to(local).as_posix()}")


def _shas(files: dict[str, bytes]) -> dict[str, str]:
    return {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}


def test_s3_to_gcs_and_gcs_to_local(demo_data: Path, pipeline: Path, tmp_path: Path, stores: None) -> None:
    common = ["--config", str(pipeline), "--quiet", "--no-report", "--workers", "2"]
    local = tmp_path / "local"
    assert main(["shards", str(demo_data), "--out", str(local), *common]) == 0
    expected = _shas(outputs(local))
    assert len([n for n in expected if n.endswith(".tfrecord")]) >= 4
    for scheme in ("s3", "gs"):
        _upload(demo_data, f"{scheme}://{BUCKET}/{demo_data.name}")

    out_url = f"gs://{BUCKET}/shards/demo"
    assert main(["shards", f"s3://{BUCKET}/{demo_data.name}", "--out", out_url, *common,
                 "--cache", str(tmp_path / "cache")]) == 0
    fs, path = storage.filesystem(out_url)
    remote = {p.rsplit("/", 1)[-1]: fs.cat_file(p) for p in fs.find(path, maxdepth=1)}
    assert _shas({n: remote[n] for n in expected}) == expected

    from_gcs = tmp_path / "from_gcs"
    assert main(["shards", f"gs://{BUCKET}/{demo_data.name}", "--out", str(from_gcs), *common]) == 0
    assert _shas(outputs(from_gcs)) == expected
    rerun = run_job(f"gs://{BUCKET}/{demo_data.name}", from_gcs, load_config(pipeline), workers=1, quiet=True)
    assert rerun.cases_reused == rerun.cases_found  # gcsfs's md5Hash/updated: nothing downloaded again
