"""An S3-compatible server on loopback for tests: moto's, started and stopped by the test itself.

Users point exoray at S3 the pyarrow way: ``s3://bucket/prefix?endpoint_override=...`` for a
non-AWS endpoint, credentials and region from the usual ``AWS_*`` variables. Tests do the same.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow.fs as pafs
import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "exoray-test", "AWS_SECRET_ACCESS_KEY": "exoray-test",
               "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


EXTERNAL_ENDPOINT = "EXORAY_TEST_S3_ENDPOINT"  # set by docker-compose.test.yml's s3 service


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    proc: subprocess.Popen | None  # None: a server someone else runs (docker compose)
    namespace: str = field(default_factory=lambda: f"run-{uuid.uuid4().hex[:8]}")

    def location(self, bucket: str, prefix: str = "") -> str:
        """A BASE or image-root location on this server, as a user writes it (under a fresh
        namespace, so a shared server keeps runs apart)."""
        path = f"{bucket}/{self.namespace}/{prefix}".rstrip("/")
        return f"s3://{path}?endpoint_override={self.endpoint}&scheme=http"

    def key(self, bucket: str, prefix: str) -> str:
        """The same place as a pyarrow path (``bucket/namespace/prefix``)."""
        return f"{bucket}/{self.namespace}/{prefix}"

    def make_bucket(self, bucket: str) -> pafs.FileSystem:
        fs, _ = pafs.FileSystem.from_uri(
            f"s3://{bucket}?endpoint_override={self.endpoint}&scheme=http"
            "&allow_bucket_creation=true")
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            fs.create_dir(bucket)
        return fs


@contextlib.contextmanager
def s3_server(log_path: str) -> Iterator[S3Server]:
    """moto's S3 server in its own process group; stopped (with its children) whatever happens."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        pytest.fail("the S3 tests need moto's server: pip install 'moto[server]>=5'")
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    external = os.environ.get(EXTERNAL_ENDPOINT)
    if external:
        try:
            yield S3Server(external.rstrip("/"), None)
        finally:
            _restore(saved)
        return
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{port}", proc)
    try:
        _wait_until_up(server, log_path)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _restore(saved)


def _restore(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _wait_until_up(server: S3Server, log_path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            with open(log_path) as log:
                pytest.fail(f"moto_server exited: {log.read()[-2000:]}")
        try:
            urllib.request.urlopen(server.endpoint + "/", timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"moto_server did not answer on {server.endpoint} within {timeout:.0f}s")
