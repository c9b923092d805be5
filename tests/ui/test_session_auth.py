"""The web UI's session over HTTP: the cookie authenticates the API, unsafe cookie requests need the
session's CSRF token, Bearer requests are untouched, and sign-in/out resist forgery."""

from __future__ import annotations

import re
import uuid

from fastapi.testclient import TestClient

from app.ui.session import SESSION_COOKIE, issue_session
from app.ui.vendor import VENDOR_FILES
from app.ui.version_form import form_paths, version_form
from app.versions.schemas import VersionSpec

_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
_META = re.compile(r'<meta name="csrf-token" content="([^"]*)"')


def _sign_in(client: TestClient, key: str, next_path: str = "/") -> TestClient:
    form = client.get("/signin")
    token = _TOKEN.search(form.text).group(1)
    r = client.post(
        "/signin", data={"api_key": key, "csrf_token": token, "next": next_path}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    return client


def _csrf(client: TestClient) -> str:
    return _META.search(client.get("/keys").text).group(1)


def _set_session(client: TestClient, value: str) -> None:
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, value)


def _problem(r, status: int, fragment: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert fragment in r.json()["detail"], r.json()


def test_the_cookie_authenticates_the_api(client: TestClient, api_key: str, auth: dict[str, str]) -> None:
    anonymous = client.get("/api/v1/keys")
    _problem(anonymous, 401, "API key is required")
    _sign_in(client, api_key)
    assert SESSION_COOKIE in client.cookies
    assert api_key not in client.cookies[SESSION_COOKIE]  # the cookie names the key; it does not hold it
    mine = client.get("/api/v1/keys")
    assert mine.status_code == 200
    assert mine.json() == client.get("/api/v1/keys", headers=auth).json()


def test_cookie_posts_need_the_sessions_csrf_token(client: TestClient, api_key: str) -> None:
    _sign_in(client, api_key)
    token = _csrf(client)
    assert token
    _problem(client.post("/api/v1/datasets", json={"name": "a"}), 403, "X-CSRF-Token")
    wrong = client.post("/api/v1/datasets", json={"name": "a"}, headers={"X-CSRF-Token": token[:-2] + "xx"})
    _problem(wrong, 403, "X-CSRF-Token")
    key_id = client.get("/api/v1/keys").json()["items"][0]["id"]
    _problem(client.delete(f"/api/v1/keys/{key_id}"), 403, "X-CSRF-Token")
    assert client.get("/api/v1/keys").json()["items"][0]["revoked_at"] is None
    assert client.get("/api/v1/datasets").json()["items"] == []  # refused writes wrote nothing

    made = client.post("/api/v1/datasets", json={"name": "a"}, headers={"X-CSRF-Token": token})
    assert made.status_code == 201, made.text
    # Another session's token does not fit this one.
    other = TestClient(client.app)
    _sign_in(other, api_key)
    other_token = _csrf(other)
    assert other_token != token
    _problem(
        client.post("/api/v1/datasets", json={"name": "b"}, headers={"X-CSRF-Token": other_token}),
        403,
        "X-CSRF",
    )


def test_bearer_requests_are_unaffected(client: TestClient, api_key: str, new_key) -> None:
    other_key = new_key()
    _sign_in(client, api_key)
    # A presented key wins over the cookie: no CSRF token needed, and the key's workspace is used.
    r = client.post("/api/v1/datasets", json={"name": "b"}, headers={"Authorization": f"Bearer {other_key}"})
    assert r.status_code == 201, r.text
    theirs = client.get("/api/v1/datasets", headers={"Authorization": f"Bearer {other_key}"}).json()
    assert [d["name"] for d in theirs["items"]] == ["b"]
    assert client.get("/api/v1/datasets").json()["items"] == []  # the session's workspace is another one
    client.cookies.clear()
    assert client.post(f"/api/v1/datasets?api_key={other_key}", json={"name": "c"}).status_code == 201


def test_forged_expired_and_revoked_sessions_are_refused(client: TestClient, api_key: str, settings) -> None:
    _sign_in(client, api_key)
    key_id = client.get("/api/v1/keys").json()["items"][0]["id"]
    real = client.cookies[SESSION_COOKIE]

    _set_session(client, real[:-3] + "abc")
    _problem(client.get("/api/v1/keys"), 401, "sign in again")
    expired = issue_session(settings.signing_key, uuid.UUID(key_id), now=0)
    _set_session(client, expired)
    _problem(client.get("/api/v1/keys"), 401, "sign in again")
    assert client.get("/keys", follow_redirects=False).headers["location"] == "/signin?next=/keys"

    _set_session(client, real)
    token = _csrf(client)
    assert client.delete(f"/api/v1/keys/{key_id}", headers={"X-CSRF-Token": token}).status_code == 200
    _problem(client.get("/api/v1/keys"), 401, "revoked")
    assert client.get("/datasets", follow_redirects=False).status_code == 303


def test_signin_and_signout_forms(client: TestClient, api_key: str) -> None:
    # Without the pre-session cookie's token the form is refused (login CSRF).
    r = client.post("/signin", data={"api_key": api_key, "csrf_token": "x"}, follow_redirects=False)
    assert r.status_code == 200 and "had expired" in r.text and SESSION_COOKIE not in client.cookies
    form = client.get("/signin")
    token = _TOKEN.search(form.text).group(1)
    r = client.post("/signin", data={"api_key": "st_nope", "csrf_token": token}, follow_redirects=False)
    assert "the API key is not valid" in r.text and SESSION_COOKIE not in client.cookies
    # Only a path on this site is followed after signing in.
    token = _TOKEN.search(r.text).group(1)
    r = client.post(
        "/signin",
        data={"api_key": api_key, "csrf_token": token, "next": "//evil.example/x"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie

    # Signing out needs the session's token too; with it the cookie is cleared.
    assert (
        client.post("/signout", data={"csrf_token": "x"}, follow_redirects=False).headers["location"] == "/"
    )
    assert client.get("/api/v1/keys").status_code == 200
    r = client.post("/signout", data={"csrf_token": _csrf(client)}, follow_redirects=False)
    assert r.headers["location"] == "/signin"
    assert SESSION_COOKIE not in client.cookies
    assert client.get("/api/v1/keys").status_code == 401


def test_vendor_files_are_an_allow_list(client: TestClient) -> None:
    r = client.get("/static/vendor/chart.umd.min.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert b"Chart" in r.content[:2000]
    for name in ("package.json", "..%2Fpackage.json", "chart.js"):
        assert client.get(f"/static/vendor/{name}").status_code == 404
    assert client.get("/static/js/api.js").status_code == 200
    css = client.get("/static/vendor/swagger-ui.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert set(VENDOR_FILES) == {
        "chart.umd.min.js", "chart.umd.min.js.map", "swagger-ui-bundle.js", "swagger-ui.css",
    }  # fmt: skip


def _leaves(value: object, prefix: str = "") -> list[str]:
    if isinstance(value, dict) and prefix != "preprocessing.classes":
        return [p for k, v in value.items() for p in _leaves(v, f"{prefix}.{k}" if prefix else k)]
    return [prefix]


def test_the_version_form_shows_every_option(client: TestClient, api_key: str) -> None:
    spec = VersionSpec().model_dump()
    spec["augmentation"]["crop"] = {"min_scale": 0.6}  # an optional group: off by default
    assert sorted(form_paths(version_form())) == sorted(_leaves(spec))
    _sign_in(client, api_key)
    dataset = client.post(
        "/api/v1/datasets", json={"name": "f"}, headers={"X-CSRF-Token": _csrf(client)}
    ).json()
    page = client.get(f"/datasets/{dataset['id']}/versions/new").text
    for path in form_paths(version_form()):
        assert f'data-path="{path}"' in page, path
    assert 'data-path="preprocessing.resize.width" data-kind="integer"' in page
    assert 'value="1008"' in page
