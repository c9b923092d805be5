"""The authorization matrix: every route of the app, called without a key, with a revoked key and with another
workspace's key on workspace A's ids, against a real server process holding real objects of A.

- API routes: 401 without a key or with a revoked key; 404 with B's key on A's ids (as if they did not exist);
  a route without ids answers B's own (empty) data. Never a byte of A's data.
- UI pages: a redirect to /signin without a session; signed in as B, A's ids show nothing of A.
- Public routes are listed here by name; a route that is in none of these classes fails the test, so a new
  route must be placed in the matrix before it ships.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import Mount

from app.main import create_app
from app.settings import Settings
from tests.factories import jpeg_bytes
from tests.hardening.seed import Seeded

# Answer without a key, by design. (method, path) as the router declares them.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),  # which dependency is down, by kind only: no hosts, no data
    ("GET", "/metrics"),  # no API key opens it: the operator's networks or token do (tested below)
    ("GET", "/openapi.json"),
    ("GET", "/docs"),  # the API reference (Swagger UI): the OpenAPI document only, no data
    ("GET", "/signin"),
    ("POST", "/signin"),  # takes the key in the form: its refusals are tested by the UI's own suite
    ("POST", "/signout"),  # ends whatever session the cookie names; without one there is nothing to end
    ("GET", "/static/vendor/{name}"),
    ("GET", "/api/v1/versions/defaults"),  # the built-in default version spec: the same for everyone, no data
}
PUBLIC_MOUNTS = {"/static"}


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # as declared, with {params}
    url: str  # filled with workspace A's ids
    ui: bool
    kwargs: dict[str, Any]

    @property
    def has_ids(self) -> bool:
        return "{" in self.path


def _routes(seeded: Seeded) -> list[tuple[str, str, bool]]:
    """(method, path, is_ui_page) for every route of the app as `create_app` builds it."""
    app = create_app(seeded.settings)
    out = []
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, Mount):
            assert route.path in PUBLIC_MOUNTS, f"mount {route.path} is not classified in the matrix"
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            path = route.path
            is_api = path.startswith("/api/") or getattr(route, "include_in_schema", False)
            out.append((method, path, not is_api))
    return out


def _image_b64() -> str:
    return base64.b64encode(jpeg_bytes(32, 32)).decode()


def _body(method: str, path: str, ids: dict[str, str]) -> dict[str, Any]:
    """A valid request body for each route that takes one, naming A's objects where a body names any."""
    image = {"files": {"image": ("x.jpg", jpeg_bytes(32, 32), "image/jpeg")}}
    model_ref = f"{ids['project']}/{ids['version']}"
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("POST", "/api/v1/keys"): {"json": {"name": "k"}},
        ("POST", "/api/v1/datasets"): {"json": {"name": "b-dataset"}},
        ("PATCH", "/api/v1/datasets/{dataset_id}"): {"json": {"name": "renamed"}},
        ("POST", "/api/v1/datasets/{dataset_id}/uploads"): {
            "files": {"file": ("x.zip", b"PK\x05\x06" + bytes(18))}
        },
        ("POST", "/api/v1/datasets/{dataset_id}/versions"): {"json": {}},
        ("POST", "/api/v1/jobs/preview"): {"json": {"version_id": ids["version_id"]}},
        ("POST", "/api/v1/jobs"): {"json": {"version_id": ids["version_id"]}},
        ("POST", "/api/v1/models/{model_id}/predict"): image,
        ("POST", "/api/v1/base-models/{owner}/{name}/predict"): image,
        ("POST", "/model/add"): {"json": {"model_id": model_ref}},
        ("POST", "/infer/instance_segmentation"): {
            "json": {"model_id": model_ref, "image": {"type": "base64", "value": _image_b64()}}
        },
        ("POST", "/{project}/{version}"): {"content": _image_b64()},
        # Roboflow's REST API (app/roboflow_api), with the bodies its Python package sends.
        ("POST", "/{workspace}/projects"): {"json": {"name": "b-project", "type": "instance-segmentation"}},
        ("POST", "/dataset/{project}/upload"): {
            "files": {"file": ("x.jpg", jpeg_bytes(32, 32), "image/jpeg")},
            "data": {"name": "x.jpg", "split": "train"},
        },
        ("POST", "/dataset/{project}/annotate/{image_id}"): {"json": {"annotationFile": "{}"}},
        ("POST", "/{workspace}/{project}/generate"): {"json": {"preprocessing": {}, "augmentation": {}}},
        ("POST", "/{workspace}/{project}/{version}/train"): {"json": {"epochs": 1}},
    }
    return bodies.get((method, path), {})


def _fill(path: str, ids: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        assert name in ids, f"no id of workspace A for path parameter {{{name}}} of {path}: seed one"
        return ids[name]

    return re.sub(r"\{(\w+)\}", one, path)


def _calls(seeded: Seeded) -> list[Call]:
    ids = seeded.ids | {"name": seeded.ids["name"]}
    calls = []
    for method, path, ui in _routes(seeded):
        if (method, path) in PUBLIC:
            continue
        if path == "/static/vendor/{name}":
            continue
        calls.append(Call(method, path, _fill(path, ids), ui, _body(method, path, ids)))
    return calls


@pytest.fixture(scope="module")
def calls(seeded: Seeded) -> list[Call]:
    return _calls(seeded)


@pytest.fixture(scope="module")
def a_data(seeded: Seeded) -> list[str]:
    """Strings only workspace A's data holds: the names and ids a response about A would show."""
    with httpx.Client(base_url=seeded.url, headers=seeded.auth, timeout=60) as client:
        dataset = client.get(f"/api/v1/datasets/{seeded.ids['dataset_id']}").json()
        model = client.get(f"/api/v1/models/{seeded.ids['model_id']}").json()
        image = client.get(
            f"/api/v1/datasets/{seeded.ids['dataset_id']}/images/{seeded.ids['image_id']}"
        ).json()
    strings = [seeded.key_id, str(model.get("job_id")), str(dataset.get("name"))]
    strings += [str(image.get("sha256") or "")]
    return [s for s in strings if s and s != "None"]


@dataclass(frozen=True)
class AState:
    """What B's attempts must leave as they found it: A's objects (answer status by path), its dataset's name and
    its key's revocation."""

    statuses: dict[str, int]
    dataset_name: str | None
    key_revoked_at: str | None


def _a_state(http: httpx.Client, seeded: Seeded) -> AState:
    a = seeded.auth
    statuses = {
        path: http.get("/api/v1/" + _fill(path, seeded.ids), headers=a).status_code
        for path in ("datasets/{dataset_id}", "versions/{version_id}", "jobs/{job_id}", "models/{model_id}")
    }
    dataset = http.get(f"/api/v1/datasets/{seeded.ids['dataset_id']}", headers=a).json()
    keys = {k["id"]: k for k in http.get("/api/v1/keys", params={"limit": 500}, headers=a).json()["items"]}
    return AState(statuses, dataset.get("name"), keys[seeded.key_id]["revoked_at"])


@pytest.fixture(scope="module")
def a_before(http: httpx.Client, seeded: Seeded) -> AState:
    """A's state before B tries anything, read now rather than assumed from the seed: the service is shared by
    the session's hardening suites, and the fuzzer, acting as A, renames and deletes A's objects as any owner
    may (run after it, this module found A's dataset renamed by A)."""
    return _a_state(http, seeded)


def _no_a_data(r: httpx.Response, a_data: list[str], call: Call) -> None:
    text = r.text
    for s in a_data:
        if s in call.url or s in str(call.kwargs):  # a 404 names what was asked for (path, model_id)
            continue
        assert s not in text, f"{call.method} {call.path} showed workspace A's {s!r}: {text[:300]}"


@pytest.fixture(scope="module")
def http(seeded: Seeded) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=seeded.url, timeout=120, follow_redirects=False) as client:
        yield client


def test_every_route_is_classified(calls: list[Call]) -> None:
    assert any(c.path.startswith("/api/v1/") for c in calls)
    # Routes the issue names must be in the matrix, not silently public.
    declared = {(c.method, c.path) for c in calls}
    for must in [
        ("GET", "/api/v1/datasets"),
        ("DELETE", "/api/v1/models/{model_id}"),
        ("GET", "/model/registry"),
        ("POST", "/"),
        ("GET", "/{workspace}"),
        ("GET", "/{workspace}/{project}/{version}/{export_format}/zip"),
    ]:
        assert must in declared


def _do(
    http: httpx.Client, call: Call, headers: dict[str, str] | None = None, **extra: Any
) -> httpx.Response:
    return http.request(call.method, call.url, headers=headers, **(call.kwargs | extra))


def test_without_a_key(http: httpx.Client, calls: list[Call], a_data: list[str]) -> None:
    failures = []
    for call in calls:
        r = _do(http, call)
        if call.ui:
            ok = r.status_code in (302, 303, 307) and r.headers["location"].startswith("/signin")
        else:
            ok = r.status_code == 401 and r.headers.get("www-authenticate") == "Bearer"
        if not ok:
            failures.append(f"{call.method} {call.path}: {r.status_code} {r.text[:200]}")
        _no_a_data(r, a_data, call)
    assert not failures, "\n".join(failures)


def test_with_a_revoked_key(http: httpx.Client, seeded: Seeded, calls: list[Call], a_data: list[str]) -> None:
    failures = []
    for call in calls:
        if call.ui:
            continue  # pages take no key; a revoked key's UI session is the next test's business
        for how in ("header", "query"):
            if how == "header":
                r = _do(http, call, {"Authorization": f"Bearer {seeded.revoked_key}"})
            else:
                r = _do(http, call, params={"api_key": seeded.revoked_key})
            if r.status_code != 401 or "revoked" not in r.json().get("detail", ""):
                failures.append(f"{call.method} {call.path} ({how}): {r.status_code} {r.text[:200]}")
            _no_a_data(r, a_data, call)
    assert not failures, "\n".join(failures)


def test_with_another_workspaces_key(
    http: httpx.Client, seeded: Seeded, calls: list[Call], a_data: list[str], a_before: AState
) -> None:
    other = {"Authorization": f"Bearer {seeded.other_key}"}
    failures = []
    for call in calls:
        if call.ui:
            continue
        r = _do(http, call, other)
        in_body = "version_id" in str(call.kwargs) or "model_id" in str(call.kwargs)
        if call.path == "/api/v1/base-models/{owner}/{name}/predict":
            ok = r.status_code < 400  # base models are shared by every workspace
        elif call.has_ids:
            ok = r.status_code == 404
        elif in_body:
            # A reference in a body that names nothing of the caller's is an invalid field: 404 or 422,
            # exactly as for an id that exists nowhere.
            ok = r.status_code in (404, 422) and "not found" in r.json().get("detail", "")
        else:
            ok = r.status_code < 400
        if not ok:
            failures.append(f"{call.method} {call.path}: {r.status_code} {r.text[:200]}")
        _no_a_data(r, a_data, call)
    assert not failures, "\n".join(failures)


def test_a_is_intact_after_b_tried_everything(http: httpx.Client, seeded: Seeded, a_before: AState) -> None:
    """B's deletes, renames, stops and revocations on A's ids changed nothing."""
    assert a_before.statuses["datasets/{dataset_id}"] == 200, a_before  # something of A's to protect
    assert a_before.key_revoked_at is None, a_before
    assert _a_state(http, seeded) == a_before


def _ui_sign_in(http: httpx.Client, key: str) -> None:
    """Sign `http` in to the web UI with `key` (its cookie jar keeps the session). The UI is part of every
    build: a missing sign-in page fails these tests rather than skipping them."""
    page = http.get("/signin")
    assert page.status_code == 200, (page.status_code, page.text[:300])
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page.text))
    fields["api_key"] = key
    r = http.post("/signin", data=fields)
    assert r.status_code in (302, 303), r.text


def test_ui_pages_signed_in_as_another_workspace(
    seeded: Seeded, calls: list[Call], a_data: list[str]
) -> None:
    ui_calls = [c for c in calls if c.ui and c.method == "GET"]
    assert ui_calls, "no web UI pages found among the app's routes"
    with httpx.Client(base_url=seeded.url, timeout=60, follow_redirects=False) as http:
        _ui_sign_in(http, seeded.other_key)
        for call in ui_calls:
            r = http.get(call.url)
            assert r.status_code in (200, 404), (call.path, r.status_code, r.headers)
            _no_a_data(r, a_data, call)


def test_unknown_ids_are_404_for_the_owner_too(http: httpx.Client, seeded: Seeded, calls: list[Call]) -> None:
    """The 404 B sees is the one A gets for an id that does not exist: nothing tells them apart."""
    ids = {k: str(uuid.uuid4()) if k.endswith("_id") else v for k, v in seeded.ids.items()}
    for call in calls:
        # Paths that name things (a workspace, a project, a model as `{project}/{version}`) rather than by id.
        named = any(n in call.path for n in ("{owner}", "{project}", "{workspace}"))
        if call.ui or not call.has_ids or named:
            continue
        url = _fill(call.path, ids)
        mine = http.request(call.method, url, headers=seeded.auth, **call.kwargs)
        theirs = http.request(call.method, call.url, headers={"Authorization": f"Bearer {seeded.other_key}"},
                              **call.kwargs)  # fmt: skip
        assert mine.status_code == theirs.status_code == 404, (call.path, mine.text, theirs.text)
        assert mine.headers["content-type"] == theirs.headers["content-type"] == "application/problem+json"


def test_ui_session_cookie_sees_only_its_workspace_and_ends_with_its_key(
    seeded: Seeded, calls: list[Call], a_data: list[str]
) -> None:
    """The API also accepts the UI's session cookie: B's cookie gets 404 on A's ids, like B's key; once the key
    it was made with is revoked, the cookie opens neither the API (401) nor a page (back to /signin)."""
    other = {"Authorization": f"Bearer {seeded.other_key}"}
    with httpx.Client(base_url=seeded.url, timeout=60, follow_redirects=False) as http:
        made = http.post("/api/v1/keys", json={"name": "ui session"}, headers=other)
        assert made.status_code == 201, made.text
        _ui_sign_in(http, made.json()["key"])
        assert http.get("/").status_code == 200
        assert http.get("/api/v1/datasets").status_code == 200  # the cookie alone authenticates
        # The REST API; the Roboflow-compatible routes take a key only, as Roboflow's clients send one.
        reads = [c for c in calls if c.path.startswith("/api/v1/") and c.method == "GET"]
        for call in reads:
            r = http.get(call.url)
            assert r.status_code == (404 if call.has_ids else 200), (call.path, r.status_code, r.text[:200])
            _no_a_data(r, a_data, call)

        revoked = http.delete(f"/api/v1/keys/{made.json()['id']}", headers=other)
        assert revoked.status_code == 200, revoked.text
        for call in reads:
            assert http.get(call.url).status_code == 401, call.path
        for call in (c for c in calls if c.ui and c.method == "GET"):
            r = http.get(call.url)
            assert r.status_code in (302, 303, 307) and r.headers["location"].startswith("/signin"), call.path


# --- /metrics: SAMTUNE_METRICS_ALLOW's networks (loopback by default) or SAMTUNE_METRICS_TOKEN, never an API key ---


def test_metrics_answers_loopback_by_default(http: httpx.Client, seeded: Seeded) -> None:
    """The seeded server runs on the default settings and is reached on 127.0.0.1."""
    for headers in ({}, seeded.auth, {"Authorization": f"Bearer {seeded.revoked_key}"}):
        r = http.get("/metrics", headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain")
        assert "samtune_http_requests_total" in r.text


def _settings(seeded: Seeded, **changes: str) -> Settings:
    return Settings(**(seeded.settings.model_dump(include=set(Settings.model_fields)) | changes))


def _metrics_from(seeded: Seeded, address: str, **changes: str) -> TestClient:
    """The seeded app with `changes`, called from `address`."""
    return TestClient(create_app(_settings(seeded, **changes)), client=(address, 40000))


def test_metrics_elsewhere_needs_the_token_or_an_allowed_network(seeded: Seeded) -> None:
    token = "the-operators-metrics-token"
    with _metrics_from(seeded, "192.0.2.7", metrics_token=token, metrics_allow="10.0.0.0/8") as outside:
        for headers in ({}, seeded.auth, {"Authorization": "Bearer not-the-token"}):  # an API key is no token
            r = outside.get("/metrics", headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.headers["content-type"] == "application/problem+json"
            assert "SAMTUNE_METRICS_TOKEN" in r.json()["detail"]
            assert "samtune_" not in r.text
        r = outside.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and "samtune_jobs" in r.text, r.text
    for address in ("10.1.2.3", "::ffff:10.1.2.3"):  # an allowed network, also as an IPv4-mapped address
        with _metrics_from(seeded, address, metrics_allow="10.0.0.0/8") as inside:
            assert inside.get("/metrics").status_code == 200, address
    # No network and no token: nobody, loopback included; 403, since no token would help.
    with _metrics_from(seeded, "127.0.0.1", metrics_allow="") as closed:
        r = closed.get("/metrics", headers=seeded.auth)
        assert r.status_code == 403, r.text
        assert "SAMTUNE_METRICS_ALLOW" in r.json()["detail"]


def test_a_wrong_metrics_network_stops_the_app_at_start(seeded: Seeded) -> None:
    with pytest.raises(ValueError, match="'intranet' is not an address or a network"):
        create_app(_settings(seeded, metrics_allow="10.0.0.0/8,intranet"))
