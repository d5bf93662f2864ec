"""Object storage end to end, against a real S3 server on 127.0.0.1 (moto, server mode).

A job writing to ``s3://`` publishes the same bytes as one writing to a local folder;
``verify``, ``inspect`` and ``volprep.load`` read the URL; bad URLs are one line each.
The credentials come from the environment only, and never reach an object or the output.
The lease and kill tests (real subprocesses) are in ``test_storage_lease.py``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import outputs
from s3server import SECRET, objects, s3_server

from volprep.cli import main

BUCKET = "volprep-s3"


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    with s3_server(BUCKET) as env:
        yield env


@pytest.fixture(scope="module")
def published(demo_data: Path, pipeline: Path, tmp_path_factory: pytest.TempPathFactory,
              s3: dict[str, str]) -> tuple[Path, str, str]:
    """The same job run to a local folder and to ``s3://``; returns (local, url, its output)."""
    root = tmp_path_factory.mktemp("s3job")
    local = root / "local"
    common = ["--config", str(pipeline), "--quiet", "--workers", "2"]
    assert main(["shards", str(demo_data), "--out", str(local), *common, "--no-report"]) == 0
    url = f"s3://{BUCKET}/jobs/demo"
    capture = root / "stdout.txt"
    import contextlib
    with open(capture, "w") as fh, contextlib.redirect_stdout(fh):
        assert main(["shards", str(demo_data), "--out", url, *common, "--cache", str(root / "cache")]) == 0
    return local, url, capture.read_text()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_job_to_s3_publishes_the_local_bytes(published: tuple[Path, str, str]) -> None:
    local, url, _ = published
    remote = objects(url)
    expected = outputs(local)  # the manifest and every shard it names
    assert {n: _sha(b) for n, b in expected.items()} == {n: _sha(remote[n]) for n in expected}
    assert len([n for n in expected if n.endswith(".tfrecord")]) >= 4
    for name in ("plan.json", "failures.csv", "timings.json"):
        assert name in remote
    assert remote["plan.json"] == (local / "plan.json").read_bytes()
    # no temporary, pending or lease object is left behind
    assert sorted(n for n in remote if n.startswith(".")) == []


def test_report_is_uploaded(published: tuple[Path, str, str]) -> None:
    _, url, _ = published
    report = objects(f"{url}/report")
    assert {"index.html", "montage.png", "class_counts.png", "histograms.png", "summary.txt"} <= set(report)
    assert report["montage.png"].startswith(b"\x89PNG")


def test_credentials_never_written(published: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    local, url, printed = published
    blobs = list(objects(url).values()) + list(objects(f"{url}/report").values())
    assert not any(SECRET.encode() in b or b"volprep-test" in b for b in blobs)
    assert SECRET not in printed and url in printed
    assert main(["inspect", url]) == 0
    out = capsys.readouterr().out
    assert url in out and SECRET not in out


def test_verify_and_inspect_accept_urls(published: tuple[Path, str, str], s3: dict[str, str],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    local, url, _ = published
    assert main(["verify", url]) == 0
    assert "all shards match" in capsys.readouterr().out
    assert main(["inspect", url]) == 0
    text = capsys.readouterr().out
    assert "train" in text and "val" in text


def test_verify_names_a_damaged_object(published: tuple[Path, str, str], s3: dict[str, str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    import fsspec

    local, url, _ = published
    copy = f"s3://{BUCKET}/jobs/damaged"
    fs, _ = fsspec.core.url_to_fs(copy, use_listings_cache=False)
    for name, data in objects(url).items():
        fs.pipe_file(f"{BUCKET}/jobs/damaged/{name}", data)
    shard = json.loads((local / "manifest.json").read_text())["splits"]["val"]["shards"][0]["file"]
    data = bytearray(objects(url)[shard])
    data[40] ^= 0xFF
    fs.pipe_file(f"{BUCKET}/jobs/damaged/{shard}", bytes(data))
    assert main(["verify", copy]) == 1
    err = capsys.readouterr().err
    assert f"{shard}: sha256" in err


def test_load_over_s3_gives_the_local_batches(published: tuple[Path, str, str]) -> None:
    import volprep

    local, url, _ = published
    for split in ("train", "val"):
        kw = {"split": split, "batch_size": 3, "shuffle": False, "deterministic": True}
        a = [(np.asarray(x), np.asarray(y)) for x, y in volprep.load(str(local), **kw)]
        b = [(np.asarray(x), np.asarray(y)) for x, y in volprep.load(url, **kw)]
        assert len(a) == len(b) > 0
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)


@pytest.mark.parametrize("args, needle", [
    (["shards", "{data}", "--out", "s3://no-such-bucket-vp/x"], "s3://no-such-bucket-vp/x: no bucket"),
    (["inspect", f"s3://{BUCKET}/nothing/here"], f"s3://{BUCKET}/nothing/here: no manifest.json"),
    (["verify", f"s3://{BUCKET}/nothing/here"], f"s3://{BUCKET}/nothing/here: no manifest.json"),
    (["shards", "{data}", "--out", "nosuchscheme://b/x"], "nosuchscheme://b/x: not a storage URL"),
    (["shards", "{data}", "--out", f"s3://{BUCKET}/x", "--cache", "s3://b/c"], "the cache must be a local folder"),
])
def test_bad_urls_are_one_line(args: list[str], needle: str, demo_data: Path, s3: dict[str, str],
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main([a.replace("{data}", str(demo_data)) for a in args] + ["--quiet"] * (args[0] == "shards")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
