"""Every error answer names its kind with a `type` URI from app/core/errors.PROBLEM_TYPES, so a client can branch
on it: real answers of a running app, each kind from the code path that produces it."""

from __future__ import annotations

import io
import uuid
import zipfile

import httpx
from fastapi.testclient import TestClient

from app.core.errors import PROBLEM_BASE, PROBLEM_TYPES, AppError, problem_type

PROBLEM_JSON = "application/problem+json"


def _kind(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM_JSON
    body = answer.json()
    assert body["status"] == status and body["type"].startswith(PROBLEM_BASE), body
    return str(body["type"]).removeprefix(PROBLEM_BASE)


def test_each_kind_of_error_answers_its_type(client: TestClient, auth: dict[str, str]) -> None:
    assert _kind(client.get("/api/v1/datasets"), 401) == "unauthorized"
    assert _kind(client.get("/api/v1/datasets", params={"api_key": "st_not-a-key"}), 401) == "unauthorized"
    assert _kind(client.get(f"/api/v1/datasets/{uuid.uuid4()}", headers=auth), 404) == "not-found"
    assert _kind(client.get("/api/v1/no-such-thing", headers=auth), 404) == "not-found"
    assert _kind(client.put("/api/v1/datasets", headers=auth), 405) == "method-not-allowed"
    refused = client.post("/api/v1/datasets", json={"name": ""}, headers=auth)
    assert _kind(refused, 422) == "validation" and refused.json()["errors"]
    too_large = client.post("/api/v1/datasets", content=b"x" * (2 << 20), headers=auth)
    assert _kind(too_large, 413) == "payload-too-large"

    dataset = client.post("/api/v1/datasets", json={"name": "kinds"}, headers=auth).json()["id"]
    uploads = f"/api/v1/datasets/{dataset}/uploads"
    assert _kind(client.post(uploads, content=b"{}", headers=auth), 415) == "unsupported-media-type"
    not_a_zip = {"file": ("data.zip", b"not a zip at all", "application/zip")}
    assert _kind(client.post(uploads, files=not_a_zip, headers=auth), 400) == "unsafe-archive"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("annotations.json", "{not json")
        archive.writestr("a.jpg", b"not an image")
    no_coco = {"file": ("data.zip", buffer.getvalue(), "application/zip")}
    assert _kind(client.post(uploads, files=no_coco, headers=auth), 422) == "invalid-upload"


def test_roboflow_errors_keep_their_error_member_and_gain_the_type(
    client: TestClient, auth: dict[str, str]
) -> None:
    answer = client.get("/someone-else", headers=auth)
    body = answer.json()
    assert _kind(answer, 404) == "not-found"
    assert set(body["error"]) == {"message", "type"} and body["error"]["message"] == body["detail"]


def test_every_status_has_a_type_and_none_is_about_blank() -> None:
    for status in (400, 401, 403, 404, 405, 406, 409, 413, 415, 418, 422, 429, 500, 502, 503):
        assert problem_type(None, status).startswith(PROBLEM_BASE)
        assert AppError("x", status_code=status).to_problem()["type"] != "about:blank"
    assert problem_type(None, 418) == PROBLEM_BASE + "client-error"
    assert problem_type(None, 502) == PROBLEM_BASE + "server-error"
    # A kind the code names must be in the table docs/api.md is checked against.
    assert all(problem_type(kind, 400) == PROBLEM_BASE + kind for kind in PROBLEM_TYPES)
