"""A checked API key is remembered by the process for SAMTUNE_AUTH_CACHE_SECONDS (app/core/short_cache.py): a
prediction then makes no database trip for it. Revoked through this process it stops at once; revoked by
another process (here: in the database directly) it stops within the TTL."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import utcnow
from app.core.short_cache import ShortCache
from app.keys.tables import ApiKey
from app.settings import Settings


@pytest.fixture
def key_reads(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements that read the api_key table, as they are sent."""
    seen: list[str] = []

    def record(_conn, _cursor, statement: str, *_args) -> None:  # noqa: ANN001
        if "FROM api_key " in statement and statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def _client(make_client, settings: Settings, seconds: float) -> TestClient:  # noqa: ANN001
    return make_client(settings.model_copy(update={"auth_cache_seconds": seconds}))


def test_a_checked_key_is_not_read_again_within_the_ttl(make_client, settings: Settings, api_key: str,
                                                        key_reads: list[str]) -> None:  # fmt: skip
    client = _client(make_client, settings, 60)
    auth = {"Authorization": f"Bearer {api_key}"}
    assert client.get("/api/v1/datasets", headers=auth).status_code == 200
    first = len(key_reads)
    assert first >= 1
    for _ in range(3):
        assert client.get("/api/v1/datasets", headers=auth).status_code == 200
        # A request with a body: KeyBeforeBody checks it before reading the body, from the cache too.
        assert client.post("/api/v1/datasets", json={"name": ""}, headers=auth).status_code == 422
    assert len(key_reads) == first


def test_roboflow_routes_use_the_remembered_key_too(make_client, settings: Settings, api_key: str,
                                                    key_reads: list[str]) -> None:  # fmt: skip
    """Roboflow's clients send the key in the query or the JSON body: checked once, remembered as any key."""
    client = _client(make_client, settings, 60)
    assert client.get("/model/registry", params={"api_key": api_key}).json() == {"models": []}
    first = len(key_reads)
    assert first >= 1
    image = {"type": "base64", "value": "aGVsbG8="}
    for _ in range(3):
        assert client.get("/model/registry", params={"api_key": api_key}).status_code == 200
        r = client.post("/infer/instance_segmentation", json={"model_id": "nothing/1", "api_key": api_key,
                                                               "image": image})  # fmt: skip
        assert r.status_code == 404, r.text  # the key passed; the model is not in this workspace
        assert client.post("/nothing/1", params={"api_key": api_key}, content=b"aGVsbG8=").status_code == 404
    assert len(key_reads) == first
    # A wrong key is still refused, on each spelling.
    assert client.get("/model/registry", params={"api_key": api_key + "x"}).status_code == 401
    r = client.post("/infer/instance_segmentation", json={"model_id": "nothing/1", "image": image})
    assert r.status_code == 401 and "required" in r.json()["detail"]


def test_with_no_ttl_every_request_reads_the_key(make_client, settings: Settings, api_key: str,
                                                 key_reads: list[str]) -> None:  # fmt: skip
    client = _client(make_client, settings, 0)
    auth = {"Authorization": f"Bearer {api_key}"}
    for i in range(1, 4):
        assert client.get("/api/v1/datasets", headers=auth).status_code == 200
        assert len(key_reads) >= i


def test_a_key_revoked_elsewhere_stops_within_the_ttl(make_client, settings: Settings, api_key: str,
                                                      session_factory: sessionmaker[Session]) -> None:  # fmt: skip
    client = _client(make_client, settings, 1.0)
    auth = {"Authorization": f"Bearer {api_key}"}
    assert client.get("/api/v1/datasets", headers=auth).status_code == 200
    with session_factory() as session:  # what another API process's revocation leaves in the database
        session.execute(update(ApiKey).where(ApiKey.prefix == api_key[:11]).values(revoked_at=utcnow()))
        session.commit()
    deadline = time.monotonic() + 10
    while client.get("/api/v1/datasets", headers=auth).status_code == 200:
        assert time.monotonic() < deadline, "a revoked key still worked 10 s after a 1 s TTL"
        time.sleep(0.1)
    r = client.get("/api/v1/datasets", headers=auth)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_forgetting_a_tag_drops_its_entries_and_refuses_them_for_the_ttl() -> None:
    cache: ShortCache[str] = ShortCache(ttl_s=0.3)
    cache.put("a", "tag-1", "A")
    cache.put("b", "tag-1", "B")
    cache.put("c", "tag-2", "C")
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("A", "B", "C")
    cache.forget("tag-1")
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, None, "C")
    cache.put("a", "tag-1", "A again")  # a request that read the row before the change was committed
    assert cache.get("a") is None
    time.sleep(0.5)
    assert cache.get("c") is None  # expired
    cache.put("a", "tag-1", "A later")
    assert cache.get("a") == "A later"


def test_a_zero_ttl_holds_nothing() -> None:
    cache: ShortCache[str] = ShortCache(ttl_s=0)
    cache.put("a", "t", "A")
    assert cache.get("a") is None
