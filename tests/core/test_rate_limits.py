"""Per-key rate limits: off unless set; counted per key and bucket (uploads, jobs, predictions) in Redis, which two
API processes share, or in the process's memory on the embedded default; a 429 problem with Retry-After before
any of the body is read; and, when Redis cannot be reached, requests let through rather than refused.

The routes used are the cheapest of each bucket: a request is counted before its route runs, so an upload to an
unknown dataset (404), a job with an empty body (422) and a prediction with an unknown model (404) count as much
as successful ones."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.core import migrate
from app.core.db import make_engine, make_sessionmaker, transaction
from app.core.errors import problem_type
from app.core.rate_limits import Bucket, bucket_for
from app.inference.service import create_inference_app
from app.keys.service import create_key_for_workspace
from app.main import create_app
from app.settings import Settings
from app.ui.session import CSRF_HEADER, SESSION_COOKIE, csrf_token, issue_session
from tests.support.ports import free_port
from tests.support.servers import LiveServer

REDIS = "redis://127.0.0.1:6379/15"  # no other test uses this database
SECRET = "rate-limit-tests"


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('rate-limits') / 'samtune.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture
def make_settings(tmp_path: Path, database: str):
    def _make(**values: object) -> Settings:
        return Settings(data_dir=tmp_path / "data", database_url=database, storage_url=(tmp_path / "objects").as_uri(),
                        secret_key=SECRET, **values)  # fmt: skip

    return _make


@pytest.fixture
def new_key(database: str):
    """A key of a workspace of its own: (secret, its id). Every test counts against keys no other test uses."""
    engine = make_engine(database)

    def _new() -> tuple[str, uuid.UUID]:
        with transaction(make_sessionmaker(engine)) as session:
            row, secret = create_key_for_workspace(session, f"ws-{uuid.uuid4().hex[:8]}")
        return secret, row.id

    yield _new
    engine.dispose()


@pytest.fixture
def api() -> Iterator:
    """API processes: each call is another create_app(), as another uvicorn worker or machine would run."""
    clients: list[TestClient] = []

    def _start(settings: Settings) -> TestClient:
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield _start
    for client in clients:
        client.__exit__(None, None, None)


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _send(client: TestClient, bucket: Bucket, headers: dict[str, str]) -> httpx.Response:
    """One request of the bucket, refused by its route after it was counted."""
    if bucket is Bucket.UPLOADS:
        return client.post(f"/api/v1/datasets/{uuid.uuid4()}/uploads", headers=headers,
                           files={"file": ("d.zip", b"PK\x05\x06" + bytes(18))})  # fmt: skip
    if bucket is Bucket.JOBS:
        return client.post("/api/v1/jobs", headers=headers, json={})
    return client.post(f"/api/v1/models/{uuid.uuid4()}/predict", headers=headers,
                       files={"image": ("x.jpg", b"not an image")})  # fmt: skip


PASSED = {Bucket.UPLOADS: 404, Bucket.JOBS: 422, Bucket.PREDICT: 404}


def _refused(r: httpx.Response, bucket: Bucket, limit: str, window: int) -> None:
    assert r.status_code == 429, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["type"] == problem_type("rate-limited", 429) and problem["status"] == 429, problem
    assert problem["bucket"] == bucket.value and problem["limit"] == limit, problem
    assert bucket.setting in problem["detail"] and limit in problem["detail"], problem
    retry = int(r.headers["retry-after"])
    # The requests were all made within the last few seconds: the oldest leaves the window about `window` on.
    assert window - 15 <= retry <= window, retry
    assert problem["retry_after"] == retry
    assert r.headers["ratelimit"] == f'"{bucket.value}";r=0;t={retry}'


def test_off_by_default(api, make_settings, new_key) -> None:
    """The embedded default sets no rate: many requests of each bucket, none refused, no RateLimit headers."""
    client = api(make_settings())
    headers = _bearer(new_key()[0])
    for bucket in Bucket:
        for _ in range(40):
            r = _send(client, bucket, headers)
            assert r.status_code == PASSED[bucket], (bucket, r.status_code, r.text)
            assert "ratelimit" not in r.headers and "retry-after" not in r.headers


def test_two_api_processes_share_one_count_in_redis(api, make_settings, new_key) -> None:
    settings = make_settings(redis_url=REDIS, rate_limit_predict="4/minute")
    first, second = api(settings), api(settings)
    secret, _ = new_key()
    for n, client in enumerate([first, second, first, second]):
        r = _send(client, Bucket.PREDICT, _bearer(secret))
        assert r.status_code == 404, r.text
        assert r.headers["ratelimit-policy"] == '"predict";q=4;w=60'
        assert r.headers["ratelimit"].startswith(f'"predict";r={3 - n};t='), r.headers["ratelimit"]
        assert "retry-after" not in r.headers
    _refused(_send(first, Bucket.PREDICT, _bearer(secret)), Bucket.PREDICT, "4/minute", 60)
    _refused(_send(second, Bucket.PREDICT, _bearer(secret)), Bucket.PREDICT, "4/minute", 60)
    # Per key: another key of another workspace is not affected.
    assert _send(second, Bucket.PREDICT, _bearer(new_key()[0])).status_code == 404


@pytest.mark.parametrize("bucket", list(Bucket))
def test_each_bucket_is_counted_apart(api, make_settings, new_key, bucket: Bucket) -> None:
    settings = make_settings(redis_url=REDIS, rate_limit_uploads="2/minute", rate_limit_jobs="2/minute",
                             rate_limit_predict="2/minute")  # fmt: skip
    client = api(settings)
    headers = _bearer(new_key()[0])
    for _ in range(2):
        assert _send(client, bucket, headers).status_code == PASSED[bucket]
    _refused(_send(client, bucket, headers), bucket, "2/minute", 60)
    for other in Bucket:
        if other is not bucket:
            for _ in range(2):
                assert _send(client, other, headers).status_code == PASSED[other], other


def test_the_embedded_default_counts_in_memory(api, make_settings, new_key) -> None:
    """Without Redis each API process counts for itself (the embedded default runs one)."""
    settings = make_settings(rate_limit_jobs="2/hour")
    first, second = api(settings), api(settings)
    headers = _bearer(new_key()[0])
    for _ in range(2):
        assert _send(first, Bucket.JOBS, headers).status_code == 422
    _refused(_send(first, Bucket.JOBS, headers), Bucket.JOBS, "2/hour", 3600)
    assert _send(second, Bucket.JOBS, headers).status_code == 422


def test_routes_outside_the_buckets_are_not_counted(api, make_settings, new_key) -> None:
    """A job's preview shares the first segments of /api/v1/jobs, and a dataset's creation those of its upload:
    neither is counted (the bucket comes from the route the request runs, not from a prefix)."""
    client = api(make_settings(redis_url=REDIS, rate_limit_jobs="1/minute", rate_limit_uploads="1/minute"))
    headers = _bearer(new_key()[0])
    for _ in range(5):
        assert client.post("/api/v1/jobs/preview", headers=headers, json={}).status_code == 422
        assert client.post("/api/v1/datasets", headers=headers, json={}).status_code == 422
        assert client.get("/api/v1/jobs", headers=headers).status_code == 200
    assert _send(client, Bucket.JOBS, headers).status_code == 422
    assert _send(client, Bucket.JOBS, headers).status_code == 429


def test_a_web_ui_session_counts_against_its_key(api, make_settings, new_key) -> None:
    """The UI's try-it (a cookie and its CSRF token) and the key itself share one count."""
    client = api(make_settings(redis_url=REDIS, rate_limit_predict="2/minute"))
    secret, key_id = new_key()
    cookie = issue_session(SECRET.encode(), key_id)
    session = {"Cookie": f"{SESSION_COOKIE}={cookie}", CSRF_HEADER: csrf_token(SECRET.encode(), cookie)}
    assert _send(client, Bucket.PREDICT, _bearer(secret)).status_code == 404
    assert _send(client, Bucket.PREDICT, session).status_code == 404
    _refused(_send(client, Bucket.PREDICT, session), Bucket.PREDICT, "2/minute", 60)
    _refused(_send(client, Bucket.PREDICT, _bearer(secret)), Bucket.PREDICT, "2/minute", 60)


def test_roboflows_key_in_the_body_is_counted_once_read(api, make_settings, new_key) -> None:
    """Roboflow's /infer takes the key inside its JSON body: the route counts it once it has read it. A key in the
    query is counted before the body, once (not again by the route)."""
    client = api(make_settings(redis_url=REDIS, rate_limit_predict="2/minute"))
    secret, _ = new_key()
    body = {"model_id": "nothing/1", "image": {"type": "base64", "value": "AAAA"}}
    for _ in range(2):
        r = client.post("/infer/instance_segmentation", json={**body, "api_key": secret})
        assert r.status_code == 404, r.text
    _refused(client.post("/infer/instance_segmentation", json={**body, "api_key": secret}), Bucket.PREDICT,
             "2/minute", 60)  # fmt: skip

    other, _ = new_key()
    for _ in range(2):
        r = client.post("/infer/instance_segmentation", params={"api_key": other}, json=body)
        assert r.status_code == 404, r.text
    assert (
        client.post("/infer/instance_segmentation", params={"api_key": other}, json=body).status_code == 429
    )


def _streamed(total: int, sent: list[int], chunk: int = 256 * 1024) -> Iterator[bytes]:
    block = b"A" * chunk
    while sent[0] < total:
        sent[0] += chunk
        yield block


@pytest.mark.timeout(120)
def test_a_limited_upload_is_refused_before_its_body_is_read(make_settings, new_key) -> None:
    """A real server: the second upload of a key allowed one a minute is 429 while its 256 MB are still being
    sent; what went out is what the sockets' buffers took before the answer came."""
    secret, _ = new_key()
    app = create_app(make_settings(redis_url=REDIS, rate_limit_uploads="1/minute"))
    headers = _bearer(secret) | {"content-type": "multipart/form-data; boundary=x"}
    path = f"/api/v1/datasets/{uuid.uuid4()}/uploads"
    with LiveServer(app) as server, httpx.Client(timeout=60) as http:
        assert http.post(f"{server.url}{path}", headers=headers, content=b"--x--\r\n").status_code == 404
        sent = [0]
        r = http.post(f"{server.url}{path}", headers=headers, content=_streamed(256 * 2**20, sent))
        _refused(r, Bucket.UPLOADS, "1/minute", 60)
        assert r.headers["connection"] == "close"
        assert sent[0] < 32 * 2**20, sent[0]


def test_an_unreachable_redis_lets_requests_through(api, make_settings, new_key, caplog) -> None:
    """Refusing every request because the counter is down would be worse than not counting for a while."""
    client = api(make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", rate_limit_predict="1/minute"))
    headers = _bearer(new_key()[0])
    with caplog.at_level(logging.WARNING, logger="samtune.rate_limits"):
        for _ in range(3):
            r = _send(client, Bucket.PREDICT, headers)
            assert r.status_code == 404, r.text
            assert "ratelimit" not in r.headers
    warnings = [r for r in caplog.records if r.name == "samtune.rate_limits"]
    # One warning: after a failure, Redis is left alone for a few seconds rather than asked again per request.
    assert len(warnings) == 1 and "not enforced" in warnings[0].getMessage(), caplog.text


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("ten a minute", "not a rate"),
        ("1/minute;10/hour", "one rate per bucket"),
        ("5/fortnight", "not a rate"),
    ],
)
def test_a_rate_that_cannot_be_read_is_refused_at_start(make_settings, value: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as refused:
        make_settings(rate_limit_jobs=value)
    assert "SAMTUNE_RATE_LIMIT_JOBS" in str(refused.value) and fragment in str(refused.value)


# Every POST route of the API and the bucket it counts in; any other POST (or PUT, PATCH) counts in none.
EXPECTED = {
    "/api/v1/datasets/{dataset_id}/uploads": Bucket.UPLOADS,
    "/dataset/{project}/upload": Bucket.UPLOADS,
    "/dataset/{project}/annotate/{image_id}": Bucket.UPLOADS,
    "/api/v1/jobs": Bucket.JOBS,
    "/api/v1/datasets/{dataset_id}/versions": Bucket.JOBS,
    "/api/v1/models/{model_id}/predict-version/{version_id}": Bucket.JOBS,
    "/{workspace}/{project}/{version}/train": Bucket.JOBS,
    "/{workspace}/{project}/generate": Bucket.JOBS,
    "/api/v1/models/{model_id}/predict": Bucket.PREDICT,
    "/api/v1/base-models/{owner}/{name}/predict": Bucket.PREDICT,
    "/infer/instance_segmentation": Bucket.PREDICT,
    "/model/add": Bucket.PREDICT,
    "/{project}/{version}": Bucket.PREDICT,
}


def test_every_route_is_in_its_bucket(make_settings) -> None:
    """Each POST of the OpenAPI document (path templates match as their paths would) in the bucket it belongs to,
    previews, creations of datasets, keys and projects and job controls in none; the inference service's public
    routes, which count in the same Redis, likewise."""
    settings = make_settings()
    for app in (create_app(settings), create_inference_app(settings)):
        for path, operations in app.openapi()["paths"].items():
            for method in operations:
                assert bucket_for(method.upper(), path) is (
                    EXPECTED.get(path) if method == "post" else None
                ), path
    posts = {p for p, ops in create_app(settings).openapi()["paths"].items() if "post" in ops}
    assert set(EXPECTED) <= posts, set(EXPECTED) - posts
