from __future__ import annotations

import logging

from fastapi.testclient import TestClient

from app.core.logging import RedactSecrets, redact


def test_missing_and_bad_keys_are_401_problem_json(client: TestClient) -> None:
    r = client.get("/api/v1/datasets")
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "samtune keys create" in r.json()["detail"]

    r = client.get("/api/v1/datasets", headers={"Authorization": "Bearer st_0000000000nothing"})
    assert r.status_code == 401
    assert r.json()["detail"] == "the API key is not valid"


def test_bearer_and_query_param_both_authenticate(client: TestClient, api_key: str) -> None:
    assert client.get("/api/v1/datasets", headers={"Authorization": f"Bearer {api_key}"}).status_code == 200
    assert client.get("/api/v1/datasets", params={"api_key": api_key}).status_code == 200


def test_create_list_revoke(client: TestClient, auth: dict[str, str]) -> None:
    r = client.post("/api/v1/keys", json={"name": "ci"}, headers=auth)
    assert r.status_code == 201
    created = r.json()
    second = created["key"]
    assert second.startswith("st_") and created["prefix"] == second[:11]

    listed = client.get("/api/v1/keys", headers=auth).json()["items"]
    assert {k["id"] for k in listed} >= {created["id"]}
    assert all("key" not in k and "key_hash" not in k for k in listed)

    assert client.get("/api/v1/keys", headers={"Authorization": f"Bearer {second}"}).status_code == 200
    r = client.delete(f"/api/v1/keys/{created['id']}", headers=auth)
    assert r.status_code == 200 and r.json()["revoked_at"]
    r = client.get("/api/v1/keys", headers={"Authorization": f"Bearer {second}"})
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_keys_of_another_workspace_are_404(client: TestClient, auth: dict[str, str], new_key) -> None:
    other = {"Authorization": f"Bearer {new_key()}"}
    mine = client.post("/api/v1/keys", json={}, headers=auth).json()
    assert client.delete(f"/api/v1/keys/{mine['id']}", headers=other).status_code == 404
    assert mine["id"] not in {k["id"] for k in client.get("/api/v1/keys", headers=other).json()["items"]}


def test_keys_never_reach_the_access_log(caplog) -> None:
    secret = "st_abcdef0123456789abcdef"
    assert secret not in redact(f"GET /api/v1/datasets?api_key={secret}&x=1")
    assert secret not in redact(f"Authorization: Bearer {secret}")

    logger = logging.getLogger("uvicorn.access.test")
    logger.addFilter(RedactSecrets())
    with caplog.at_level(logging.INFO, logger="uvicorn.access.test"):
        logger.info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1", "GET", f"/api/v1/datasets?api_key={secret}", "1.1", 200
        )
    assert secret not in caplog.text
    assert "api_key=[redacted]" in caplog.text


def test_healthz_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}
    spec = client.get("/openapi.json").json()
    assert "/api/v1/datasets/{dataset_id}/uploads" in spec["paths"]
    assert client.get("/docs").status_code == 200
