"""Security headers: nosniff and Referrer-Policy on every response; CSP and X-Frame-Options on HTML."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from app.core import migrate
from app.core.security_headers import UI_CSP
from app.main import create_app
from app.settings import Settings


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    root = tmp_path_factory.mktemp("headers")
    settings = Settings(data_dir=root / "data", database_url=f"sqlite:///{root / 'samtune.db'}")
    migrate.upgrade(settings.database_url)
    app = create_app(settings)

    # Stand-ins for any HTML page and any streamed body the app may add later: the middleware must not
    # depend on which router produced the response.
    @app.get("/_test/html", include_in_schema=False)
    def _html() -> HTMLResponse:
        return HTMLResponse("<!doctype html><p>hello</p>")

    @app.get("/_test/boom", include_in_schema=False)
    def _boom() -> None:
        raise RuntimeError("a bug")

    @app.get("/_test/stream", include_in_schema=False)
    def _stream() -> StreamingResponse:
        return StreamingResponse(iter([b"a", b"b"]), media_type="text/plain")

    _before_roboflow_paths(app)
    return app


def _before_roboflow_paths(app: FastAPI) -> None:
    """Put the stand-ins where a page is: before Roboflow's `/{workspace}/...` routes, which app/main.py registers
    after every page and would otherwise answer `/_test/...` (a workspace look-up)."""
    routes = app.router.routes
    routes[:] = [r for r in routes if getattr(r, "path", "").startswith("/_test/")] + [
        r for r in routes if not getattr(r, "path", "").startswith("/_test/")
    ]


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def assert_basic(response) -> None:
    assert response.headers.get("x-content-type-options") == "nosniff", response.headers
    assert response.headers.get("referrer-policy") == "same-origin", response.headers


def csp_directives(policy: str) -> dict[str, list[str]]:
    out = {}
    for part in policy.split(";"):
        name, *values = part.split()
        out[name] = values
    return out


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/openapi.json", 200),
        ("GET", "/api/v1/datasets", 401),  # an error (problem+json) from a dependency
        ("GET", "/api/v1/no-such-route", 404),
        ("GET", "/_test/stream", 200),
        ("GET", "/_test/boom", 500),  # answered by Starlette's outermost middleware, past ours
    ],
)
def test_every_response_has_nosniff_and_referrer_policy(
    client: TestClient, method: str, path: str, status: int
) -> None:
    r = client.request(method, path)
    assert r.status_code == status, r.text
    assert_basic(r)
    # Not HTML: no CSP needed (and none sent, so API clients see no surprise headers).
    assert "content-security-policy" not in r.headers
    assert "x-frame-options" not in r.headers


def test_a_refused_upload_body_still_has_the_headers(client: TestClient) -> None:
    r = client.post(
        "/api/v1/datasets/00000000-0000-0000-0000-000000000000/uploads",
        headers={"Content-Length": str(10 * 2**40)},
        content=b"",
    )
    assert r.status_code == 413, r.text
    assert_basic(r)


def test_html_gets_the_ui_policy_and_no_framing(client: TestClient) -> None:
    r = client.get("/_test/html")
    assert r.status_code == 200
    assert_basic(r)
    assert r.headers["content-security-policy"] == UI_CSP
    assert r.headers["x-frame-options"] == "DENY"
    policy = csp_directives(UI_CSP)
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"] and policy["object-src"] == ["'none'"]


def test_every_html_page_of_the_app_has_the_policy(client: TestClient, app: FastAPI) -> None:
    """Every parameterless GET route that answers HTML (the UI's pages, the API docs) carries a CSP."""
    seen = []
    for route in iter_route_contexts(app.routes):
        path, methods = route.path, route.methods or set()
        if "GET" not in methods or "{" in (path or "") or not path or path.startswith("/_test/"):
            continue
        r = client.get(path, follow_redirects=False)
        assert_basic(r)
        if r.headers.get("content-type", "").startswith("text/html"):
            seen.append(path)
            assert r.headers.get("content-security-policy") == UI_CSP, path
            assert r.headers.get("x-frame-options") == "DENY", path
    assert "/docs" in seen, seen


def _sources(html: str) -> tuple[set[str], set[str]]:
    scripts = set(re.findall(r"<script[^>]*\bsrc=[\"']([^\"']+)", html))
    styles = set(re.findall(r"<link[^>]*\bhref=[\"']([^\"']+)[^>]*rel=[\"']stylesheet", html))
    styles |= set(re.findall(r"<link[^>]*rel=[\"']stylesheet[\"'][^>]*\bhref=[\"']([^\"']+)", html))
    return scripts, styles


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else "'self'"


def test_docs_loads_everything_from_this_origin(client: TestClient) -> None:
    """The API reference runs under the UI's strict policy: every script and stylesheet it names is ours
    (Swagger UI from node_modules), none inline; ReDoc, which only a CDN could serve here, is gone."""
    r = client.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-security-policy"] == UI_CSP
    scripts, styles = _sources(r.text)
    assert "/static/vendor/swagger-ui-bundle.js" in scripts and "/static/vendor/swagger-ui.css" in styles
    assert all(_origin(u) == "'self'" for u in scripts | styles), (scripts, styles)
    assert "<script>" not in r.text and "<style" not in r.text
    for url in scripts | styles:
        assert client.get(url).status_code == 200, url
    assert client.get("/redoc").status_code == 404


def test_a_page_that_sets_its_own_policy_keeps_it(app: FastAPI, tmp_path: Path) -> None:
    @app.get("/_test/own-policy", include_in_schema=False)
    def _own() -> HTMLResponse:
        return HTMLResponse("<p>x</p>", headers={"Content-Security-Policy": "default-src 'none'"})

    _before_roboflow_paths(app)
    with TestClient(app) as client:
        r = client.get("/_test/own-policy")
    assert r.headers["content-security-policy"] == "default-src 'none'"
    assert r.headers["x-frame-options"] == "DENY"
