"""The test S3 endpoint (moto's standalone server, a real HTTP endpoint): its server and its buckets."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

from tests.support.ports import free_port
from tests.support.servers import ServerProcess


def moto_server(log_path: Path) -> ServerProcess:
    """moto's server on a free port of 127.0.0.1, not started; ready once the port takes connections (it has
    no health endpoint)."""
    port = free_port()
    return ServerProcess(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        port=port,
        log_path=log_path,
        health_path=None,
        name="moto server",
    )


def s3_client(endpoint: str) -> Any:
    """A boto3 client for the test S3 endpoint (moto takes any credentials)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def fresh_bucket(endpoint: str, prefix: str = "samtune-test") -> str:
    """A new, empty bucket on the test S3 endpoint; returns its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name
