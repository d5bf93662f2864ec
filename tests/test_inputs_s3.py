"""Inputs (DATA) at an object-store URL, against a real S3 server on 127.0.0.1 (moto).

The demo dataset is uploaded to ``s3://BUCKET/data``; a job from there to a local folder
and to ``s3://`` publishes the same bytes as the job from the local copy. A rerun
downloads and converts nothing; a changed object is downloaded and its case converted
again; an object gone is a failure naming its URL; a missing dataset or bucket is one line.
"""

from __future__ import annotations

import gzip
import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import outputs
from s3server import objects, s3_server

from volprep import inputs, storage
from volprep.cli import main
from volprep.config import load_config
from volprep.errors import UsageError
from volprep.runner import run_job

BUCKET = "volprep-inputs"


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    with s3_server(BUCKET) as env:
        yield env


def _upload(local: Path, url: str) -> None:
    fs, path = storage.filesystem(url)
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        fs.put_file(str(file), f"{path}/{file.relative_to(local).as_posix()}")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def jobs(demo_data: Path, pipeline: Path, tmp_path_factory: pytest.TempPathFactory,
         s3: dict[str, str]) -> tuple[Path, Path, str]:
    """The demo job from the local copy, from s3 to a local folder, from s3 to s3."""
    root = tmp_path_factory.mktemp("inputs")
    data_url = f"s3://{BUCKET}/{demo_data.name}"
    _upload(demo_data, data_url)
    common = ["--config", str(pipeline), "--quiet", "--workers", "2", "--no-report"]
    local, from_s3 = root / "local", root / "from_s3"
    assert main(["shards", str(demo_data), "--out", str(local), *common]) == 0
    assert main(["shards", data_url + "/", "--out", str(from_s3), *common]) == 0
    out_url = f"s3://{BUCKET}/shards/demo"
    assert main(["shards", data_url, "--out", out_url, *common, "--cache", str(root / "cache")]) == 0
    return local, from_s3, out_url


def test_s3_to_local_is_byte_identical(jobs: tuple[Path, Path, str]) -> None:
    local, from_s3, _ = jobs
    expected = outputs(local)  # the manifest and every shard it names
    assert len([n for n in expected if n.endswith(".tfrecord")]) >= 4
    assert {n: _sha(b) for n, b in expected.items()} == {n: _sha(b) for n, b in outputs(from_s3).items()}
    assert (from_s3 / "plan.json").read_bytes() == (local / "plan.json").read_bytes()
    # the mirror lives beside the cache, in OUT/cache/inputs/<hash>/<dataset name>
    assert list((from_s3 / "cache" / "inputs").glob("*/data/dataset.json"))


def test_s3_to_s3_is_byte_identical(jobs: tuple[Path, Path, str]) -> None:
    local, _, out_url = jobs
    remote = objects(out_url)
    expected = outputs(local)
    assert {n: _sha(b) for n, b in expected.items()} == {n: _sha(remote[n]) for n in expected}


def test_a_changed_object_is_converted_again(demo_data: Path, pipeline: Path, tmp_path: Path,
                                             s3: dict[str, str]) -> None:
    url = f"s3://{BUCKET}/edit/{demo_data.name}"
    _upload(demo_data, url)
    image = sorted((demo_data / "imagesTr").iterdir())[0]
    raw = gzip.decompress(image.read_bytes())
    fs, path = storage.filesystem(f"{url}/imagesTr/{image.name}")
    fs.pipe_file(path, gzip.compress(raw, compresslevel=0, mtime=0))  # stored: its size is fixed
    config, out = load_config(pipeline), tmp_path / "out"
    first = run_job(url, out, config, workers=1, quiet=True)
    assert first.cases_reused == 0 and first.cases_converted == first.cases_found
    again = run_job(url, out, config, workers=1, quiet=True)
    assert again.cases_reused == again.cases_found  # nothing downloaded again, nothing converted
    changed = raw[:-1] + bytes([raw[-1] ^ 1])  # one voxel: same size, other bytes, only the ETag tells
    fs.pipe_file(path, gzip.compress(changed, compresslevel=0, mtime=0))
    assert storage.size(f"{url}/imagesTr/{image.name}") == len(gzip.compress(raw, compresslevel=0, mtime=0))
    # The changed case is converted again (that is how the change shows) and, since a
    # changed input is never appended silently (issue 16 point 4), the job is refused with
    # nothing touched; --rebuild then writes it, from the cache the refused run filled.
    published = outputs(out)
    with pytest.raises(UsageError, match=rf"case {image.name.split('.')[0].removesuffix('_0000')}: its input changed"):
        run_job(url, out, config, workers=1, quiet=True)
    assert outputs(out) == published
    rebuilt = run_job(url, out, config, workers=1, quiet=True, rebuild=True)
    assert rebuilt.cases_reused == rebuilt.cases_found and outputs(out) != published


def test_a_missing_object_is_a_failure_naming_its_url(demo_data: Path, pipeline: Path, tmp_path: Path,
                                                      s3: dict[str, str]) -> None:
    url = f"s3://{BUCKET}/gone/{demo_data.name}"
    _upload(demo_data, url)
    label = sorted((demo_data / "labelsTr").iterdir())[0].name
    assert storage.remove(f"{url}/labelsTr/{label}")
    out = tmp_path / "out"
    assert main(["shards", url, "--out", str(out), "--config", str(pipeline), "--quiet", "--workers", "1",
                 "--no-report"]) == 3
    failures = (out / "failures.csv").read_text()
    assert f"{url}/labelsTr/{label}" in failures, failures
    assert str(tmp_path) not in failures


@pytest.mark.parametrize(("data", "needle"), [
    (f"s3://{BUCKET}/nothing/here", f"s3://{BUCKET}/nothing/here: no such dataset"),
    ("s3://no-such-bucket-in/data", "s3://no-such-bucket-in/data: no such dataset"),
])
def test_a_missing_dataset_is_one_line(data: str, needle: str, tmp_path: Path, s3: dict[str, str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shards", data, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_without_s3fs_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs raises ImportError
    registered = sys.modules["fsspec.registry"]._registry  # s3fs, once imported, is cached there
    monkeypatch.delitem(registered, "s3", raising=False)
    assert main(["shards", "s3://b/data", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "s3://b/data" in err and "volprep[cloud]" in err, err


def test_staging_dir_depends_on_the_url(tmp_path: Path) -> None:
    assert inputs.staging_dir(tmp_path, "s3://a/x") != inputs.staging_dir(tmp_path, "s3://a/y")
    assert inputs.url_of("s3://a/x/") == "s3://a/x" and inputs.url_of("/a/x") is None


def test_no_credentials_is_one_line(tmp_path: Path, s3: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    import s3fs

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    for name in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.setenv(name, str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        assert main(["shards", f"s3://{BUCKET}/data", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"s3://{BUCKET}/data: NoCredentialsError" in err, err
