"""`/readyz` checks each dependency for real and says which one is down; `/healthz` stays the liveness check.

Ready: the embedded default (SQLite, the filesystem broker, a local folder) and the production kind (PostgreSQL,
Redis as broker and live feed, S3 over HTTP, an inference service). Not ready, each alone: a broker, a Redis, an
S3 bucket, a database and inference services that do not answer (closed ports on 127.0.0.1, a missing bucket).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.support.ports import free_port

REDIS = "redis://127.0.0.1:6379/13"


def _client(settings: Settings) -> TestClient:
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    client.__enter__()
    return client


class _HealthyService:
    """A real HTTP server on 127.0.0.1 answering GET /healthz with 200, as `samtune inference` does."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200 if self.path == "/healthz" else 404)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _closed() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


def test_the_embedded_default_is_ready(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    client = _client(settings)
    try:
        r = client.get("/readyz")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "ready"
        assert {k: v["status"] for k, v in body["checks"].items()} == {
            "database": "ok", "broker": "ok", "storage": "ok", "live_feed": "not configured",
            "inference": "not configured",
        }  # fmt: skip
    finally:
        client.__exit__(None, None, None)


def test_postgres_redis_s3_and_an_inference_service_are_ready(
    tmp_path: Path, postgres_url: str, s3_settings: Settings
) -> None:
    service = _HealthyService()  # what /readyz asks an inference service: its /healthz
    settings = s3_settings.model_copy(
        update={"database_url": postgres_url, "broker_url": REDIS, "redis_url": REDIS,
                "inference_urls": f"{service.url},http://{_closed()}"}
    )  # fmt: skip
    client = _client(settings)
    try:
        r = client.get("/readyz")
        assert r.status_code == 200, r.text
        assert {v["status"] for v in r.json()["checks"].values()} == {"ok"}
        checks = r.json()["checks"]
        assert (
            checks["live_feed"]["status"] == checks["inference"]["status"] == "ok"
        )  # one of two answers: enough
    finally:
        client.__exit__(None, None, None)
        service.stop()


@pytest.mark.parametrize("broken", ["broker", "live_feed", "storage", "database", "inference"])
def test_each_dependency_down_is_named_and_the_api_stays_alive(
    tmp_path: Path, s3_settings: Settings, broken: str
) -> None:
    values = {
        "data_dir": tmp_path / "data",
        "database_url": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "redis_url": REDIS,
        "storage_url": s3_settings.storage_url,
        "s3_endpoint_url": s3_settings.s3_endpoint_url,
        "s3_access_key_id": "test",
        "s3_secret_access_key": "test",
    }
    match broken:
        case "broker":
            values["broker_url"] = f"redis://{_closed()}/0"
        case "live_feed":
            values["redis_url"] = f"redis://{_closed()}/0"
        case "storage":
            values["storage_url"] = "s3://no-such-bucket-readyz/samtune"
        case "database":
            values["database_url"] = f"postgresql+psycopg://postgres@{_closed()}/postgres"
        case "inference":
            values["inference_urls"] = f"http://{_closed()},http://{_closed()}"
    client = _client(Settings(**values))
    try:
        r = client.get("/readyz")
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["status"] == "not ready"
        failed = {k for k, v in body["checks"].items() if v["status"] == "error"}
        assert failed == {broken}, body
        detail = body["checks"][broken]["detail"]
        assert detail and "127.0.0.1" not in detail and "postgres@" not in detail, detail
        assert body["checks"][broken]["seconds"] < 10
        if broken != "database":
            assert client.get("/healthz").status_code == 200  # alive: not a process to restart
    finally:
        client.__exit__(None, None, None)
