"""A real S3-compatible server on 127.0.0.1 for the object-storage tests (moto, server mode).

The server runs in a thread of the test process and speaks HTTP like S3 does; volprep
reaches it through s3fs exactly as it would reach AWS, told where by the standard
environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), which the
subprocesses of a test inherit. Nothing is mocked inside volprep.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

SECRET = "volprep-test-secret-9f3c2a"  # grep-able: it must never reach an object or a log line


@contextlib.contextmanager
def s3_server(*buckets: str) -> Iterator[dict[str, str]]:
    """Starts the server, creates ``buckets``, sets the environment; yields the variables set."""
    import boto3
    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "volprep-test", "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()  # an instance made for another server is no use
    try:
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield env
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def objects(url: str) -> dict[str, bytes]:
    """``{name: bytes}`` of the objects directly under ``s3://bucket/prefix``."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, use_listings_cache=False)
    return {p.rsplit("/", 1)[-1]: fs.cat_file(p) for p in fs.find(path, maxdepth=1)}
