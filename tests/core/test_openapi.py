"""The OpenAPI document describes the API to a user: every operation has a summary and a description, a stable
readable operation id, and the security schemes (so /docs has an Authorize button); public routes list none."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.errors import PROBLEM_TYPES
from app.main import create_app
from app.settings import Settings

METHODS = {"get", "put", "post", "patch", "delete", "head", "options"}
# Answer without a key, by design (tests/hardening/test_authorization.py's PUBLIC, as far as the document goes).
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/api/v1/versions/defaults")}
# Clients generated from the document name their methods after these: renaming one breaks them.
PINNED = {
    ("GET", "/api/v1/datasets"): "list_datasets",
    ("POST", "/api/v1/datasets/{dataset_id}/uploads"): "upload_dataset_zip",
    ("POST", "/api/v1/jobs"): "create_job",
    ("GET", "/api/v1/jobs/{job_id}/events"): "stream_job_events",
    ("POST", "/api/v1/models/{model_id}/predict"): "predict_with_model",
    ("GET", "/api/v1/versions/{version_id}"): "get_version",
    ("GET", "/{workspace}/{project}/{version}"): "roboflow_get_version",
    ("POST", "/infer/instance_segmentation"): "roboflow_infer_instance_segmentation",
}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # Served as clients get it; building the document needs no database.
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("openapi")))
    with TestClient(app) as client:
        answer = client.get("/openapi.json")
    assert answer.status_code == 200
    return answer.json()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def test_every_operation_has_a_written_summary_and_description(document: dict[str, Any]) -> None:
    operations = _operations(document)
    assert len(operations) > 50
    lacking = [f"{m} {p}" for m, p, op in operations if not op.get("summary") or not op.get("description")]
    assert not lacking, lacking
    # FastAPI's fallback summary is the function's name title-cased ("List Datasets"): not one written for a user.
    generated = [
        f"{m} {p}: {op['summary']}"
        for m, p, op in operations
        if op["summary"] == op["operationId"].replace("_", " ").title()
    ]
    assert not generated, generated


def test_operation_ids_are_readable_unique_and_pinned(document: dict[str, Any]) -> None:
    operations = _operations(document)
    ids = Counter(op.get("operationId") for _, _, op in operations)
    assert not [i for i, n in ids.items() if n > 1 or i is None], ids
    # FastAPI's default appends the path and the method (list_datasets_api_v1_datasets_get).
    unreadable = [
        i for i in ids if not re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", i) or i.endswith(("_get", "_post"))
    ]
    assert not unreadable, unreadable
    found = {(m, p): op["operationId"] for m, p, op in operations}
    assert {key: found.get(key) for key in PINNED} == PINNED


def test_security_schemes_are_declared_and_every_private_operation_lists_them(
    document: dict[str, Any],
) -> None:
    schemes = document["components"]["securitySchemes"]
    assert (schemes["bearer"]["type"], schemes["bearer"]["scheme"]) == ("http", "bearer")
    api_key = schemes["api_key"]
    assert (api_key["type"], api_key["in"], api_key["name"]) == ("apiKey", "query", "api_key")
    for method, path, op in _operations(document):
        if (method, path) in PUBLIC:  # none of the API key's schemes (a scheme of its own, /metrics may have)
            assert not any({"bearer", "api_key"} & set(s) for s in op.get("security", [])), (method, path)
        else:
            assert op.get("security") == [{"bearer": []}, {"api_key": []}], (method, path, op.get("security"))


def test_the_problem_schema_lists_every_error_type(document: dict[str, Any]) -> None:
    uris = [t.uri for t in PROBLEM_TYPES.values()]
    for method, path, op in _operations(document):
        problem = op["responses"]["4XX"]["content"]["application/problem+json"]["schema"]
        assert problem["properties"]["type"]["enum"] == uris, (method, path)
    assert "about:blank" not in str(document)


def test_docs_api_md_documents_every_error_type() -> None:
    """docs/api.md's table: one row per kind, with its URI and status, and no kind the code does not have."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    rows = re.findall(r"^\| `(https://samtune\.dev/problems/[a-z-]+)` \| (\S+) \|", text, re.MULTILINE)
    assert rows == [(t.uri, t.status) for t in PROBLEM_TYPES.values()]
