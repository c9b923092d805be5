"""API keys never reach a log line: a real server process logs everything at DEBUG (uvicorn's access and
error logs, the app's loggers, SQLAlchemy with its parameters) while keys travel in every way a client sends
them, are created through the API and the command line, and sign in to the web UI."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from app.core import migrate
from tests.factories import jpeg_bytes
from tests.hardening.live import REPO, debug_logging_config, samtune_env, uvicorn_server
from tests.support.databases import drop_postgres_database, fresh_postgres_database
from tests.support.s3 import fresh_bucket


def _cli_key(env: dict[str, str], workspace: str) -> tuple[str, str]:
    """`samtune keys create`: the key is its last stdout line; stderr is what an operator's log keeps."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "samtune"), "keys", "create", "--workspace", workspace],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return done.stdout.strip().splitlines()[-1], done.stderr


def _sign_in(client: httpx.Client, key: str) -> bool:
    """Sign in to the web UI with `key` if this build has the sign-in page; True when it did."""
    page = client.get("/signin")
    if page.status_code == 404:
        return False
    assert page.status_code == 200, page.text
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page.text))
    fields["api_key"] = key
    r = client.post("/signin", data=fields, follow_redirects=False)
    assert r.status_code in (302, 303), r.text
    home = client.get("/", follow_redirects=False)
    assert home.status_code == 200, (home.status_code, home.headers)
    return True


def test_keys_never_appear_in_the_logs(tmp_path: Path, postgres_url: str, s3_endpoint: str) -> None:
    url = fresh_postgres_database(postgres_url, "samtune_hardening_logs")
    migrate.upgrade(url)
    env = samtune_env(
        {
            "data_dir": tmp_path / "data",
            "database_url": url,
            "storage_url": f"s3://{fresh_bucket(s3_endpoint, 'samtune-logs')}/samtune",
            "s3_endpoint_url": s3_endpoint,
            "s3_access_key_id": "test",
            "s3_secret_access_key": "test",
            "secret_key": "logs-test-signing-key",
            "log_level": "debug",
        }
    )
    cli_key, cli_stderr = _cli_key(env, "logs")
    assert cli_key.startswith("st_")

    server = uvicorn_server(
        env,
        tmp_path / "server.log",
        log_config=debug_logging_config(tmp_path / "log.json"),
        log_level="debug",
    )
    secrets = [cli_key]
    with server, httpx.Client(base_url=server.url, timeout=60) as client:
        bearer = {"Authorization": f"Bearer {cli_key}"}
        assert client.get("/api/v1/datasets", headers=bearer).status_code == 200
        # Roboflow's clients put the key in the query string, in any position and case.
        assert client.get(f"/api/v1/datasets?api_key={cli_key}").status_code == 200
        assert client.get(f"/api/v1/datasets?limit=5&api_key={cli_key}&x=1").status_code in (200, 422)
        assert client.get(f"/api/v1/datasets?API_KEY={cli_key}").status_code in (200, 401)
        assert client.get(f"/model/registry?api_key={cli_key}").status_code == 200

        created = client.post("/api/v1/keys", json={"name": "from the API"}, headers=bearer)
        assert created.status_code == 201, created.text
        api_key = created.json()["key"]
        secrets.append(api_key)

        # The key in failing requests too: a 404, a 422, an unknown key, a revoked key, an upload.
        assert client.get(f"/api/v1/datasets/{uuid.uuid4()}?api_key={api_key}").status_code == 404
        assert client.get(f"/api/v1/datasets/not-a-uuid?api_key={api_key}").status_code == 422
        wrong = api_key[:-4] + ("0000" if not api_key.endswith("0000") else "1111")
        secrets.append(wrong)
        assert client.get("/api/v1/datasets", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
        assert client.get(f"/api/v1/datasets?api_key={wrong}").status_code == 401
        ds = client.post("/api/v1/datasets", json={"name": "logs"}, headers=bearer)
        assert ds.status_code == 201, ds.text
        up = client.post(
            f"/api/v1/datasets/{ds.json()['id']}/uploads?api_key={api_key}",
            files={"file": ("x.zip", b"not a zip")},
        )
        assert up.status_code == 400 or up.status_code == 422, up.text
        img = client.post(
            f"/infer/instance_segmentation?api_key={api_key}",
            json={"model_id": "nope/1", "image": {"type": "base64", "value": "eA=="}, "api_key": api_key},
        )
        assert 400 <= img.status_code < 500, img.text
        assert client.post(f"/nope/1?api_key={api_key}", content=jpeg_bytes(16, 16)).status_code < 500

        key_id = created.json()["id"]
        assert client.delete(f"/api/v1/keys/{key_id}", headers=bearer).status_code == 200
        assert client.get(f"/api/v1/datasets?api_key={api_key}").status_code == 401
        assert (
            client.get("/api/v1/datasets", headers={"Authorization": f"Bearer {api_key}"}).status_code == 401
        )

        signed_in = _sign_in(client, cli_key)

    drop_postgres_database(url)
    logs = server.logs()
    # The capture is real: access lines for the query-string requests (redacted) and SQLAlchemy's DEBUG.
    assert "/api/v1/datasets?api_key=[redacted]" in logs, server.log_tail()
    assert "sqlalchemy.engine" in logs and " DEBUG " in logs
    if signed_in:
        assert "POST /signin" in logs
    for secret in secrets:
        # The public prefix (st_ + 8 characters) names the row and may be shown; the rest never.
        tail = secret[len("st_") + 8 :]
        assert secret not in logs and tail not in logs, f"a key reached the server log: {secret[:11]}..."
        assert secret not in cli_stderr and tail not in cli_stderr


def test_keys_never_appear_in_uvicorns_own_trace_log(tmp_path: Path) -> None:
    """At TRACE, uvicorn logs each request's scope (the query string as bytes) through its own formatters;
    `?api_key=` leaked there before the redaction formatted whole messages. SQLite: only the logs matter."""
    url = f"sqlite:///{tmp_path / 'samtune.db'}"
    migrate.upgrade(url)
    env = samtune_env({"data_dir": tmp_path / "data", "database_url": url, "log_level": "trace"})
    key, _ = _cli_key(env, "trace")
    server = uvicorn_server(env, tmp_path / "server.log", log_level="trace")
    with server, httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.get(f"/api/v1/datasets?api_key={key}").status_code == 200
        assert client.get("/api/v1/datasets", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    logs = server.logs()
    assert "ASGI [" in logs and "'query_string': b'api_key=[redacted]'" in logs, server.log_tail()
    assert '"GET /api/v1/datasets?api_key=[redacted] HTTP/1.1" 200' in logs  # uvicorn's access formatter
    assert key not in logs and key[len("st_") + 8 :] not in logs
