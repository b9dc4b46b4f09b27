"""A real S3-protocol server for tests: moto's standalone server, over HTTP
on a free loopback port, started once per test process; each test gets a
bucket of its own and the standard variables that point the platform at it."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

ACCESS_KEY = "bifrost-test-key"
SECRET_KEY = "bifrost-test-secret"
REGION = "us-east-1"


@functools.cache
def s3_endpoint() -> str:
    """The server's URL; it runs until the test process ends."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return f"http://{host}:{port}"


@dataclass(frozen=True)
class Bucket:
    name: str
    endpoint: str
    prefix: str = "fleet"

    @property
    def url(self) -> str:
        """What BIFROST_WHEEL_CACHE says."""
        return f"s3://{self.name}/{self.prefix}"

    def env(self) -> dict[str, str]:
        return {"BIFROST_WHEEL_CACHE": self.url, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION,
                "AWS_ENDPOINT_URL": self.endpoint}

    def client(self) -> Any:
        """A boto3 client on the server, for the test's own look at the bucket."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def keys(self, under: str = "") -> list[str]:
        listed = self.client().list_objects_v2(Bucket=self.name, Prefix=f"{self.prefix}/{under}")
        return sorted(item["Key"].removeprefix(f"{self.prefix}/")
                      for item in listed.get("Contents", []))

    def read(self, key: str) -> bytes:
        body = self.client().get_object(Bucket=self.name, Key=f"{self.prefix}/{key}")["Body"]
        return bytes(body.read())

    def write(self, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=self.name, Key=f"{self.prefix}/{key}", Body=data)


def new_bucket() -> Bucket:
    """A bucket of the test's own on the shared server."""
    bucket = Bucket(f"bifrost-{uuid.uuid4().hex[:16]}", s3_endpoint())
    bucket.client().create_bucket(Bucket=bucket.name)
    return bucket


@contextmanager
def s3_server_that_checks_credentials() -> Iterator[str]:
    """A moto server of its own that refuses every key it does not know
    (moto checks credentials only when asked, for the whole process)."""
    from src.foundation.local_redis import free_port
    from tests.support.waiting import wait_for

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(endpoint), 60, what="the moto server")
        yield endpoint
    finally:
        server.kill()
        server.wait()


def _answers(endpoint: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(endpoint, timeout=2)
    except urllib.error.HTTPError:
        return True  # it answered (403: it checks credentials)
    except OSError:
        return False
    return True
