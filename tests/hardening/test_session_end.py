"""Sessions end when they are ended (issue 20): signing out of the web UI ends the session on the server, so a
copy of its cookie taken before is refused; a revoked key's events tokens stop working at once, and an event
stream opened with a key ends soon after that key is revoked. SQLite and PostgreSQL (jobs_kit)."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.core.db import transaction
from app.ui.session import SESSION_COOKIE
from app.ui.tables import EndedSession
from tests.support.jobs import JobKit

_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
_META = re.compile(r'<meta name="csrf-token" content="([^"]*)"')


def _signed_in(kit: JobKit, secret: str) -> TestClient:
    client = kit.make_client(kit.settings)
    form = client.get("/signin")
    token = _TOKEN.search(form.text).group(1)
    r = client.post(
        "/signin", data={"api_key": secret, "csrf_token": token, "next": "/"}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    return client


def _with_cookie(kit: JobKit, cookie: str) -> TestClient:
    client = kit.make_client(kit.settings)
    client.cookies.set(SESSION_COOKIE, cookie)
    return client


def _ended_rows(kit: JobKit) -> int:
    with transaction(kit.factory) as session:
        return int(session.scalar(select(func.count()).select_from(EndedSession)) or 0)


def test_sign_out_ends_the_session_on_the_server(jobs_kit: JobKit) -> None:
    kit = jobs_kit
    secret = kit.auth["Authorization"].removeprefix("Bearer ")
    browser = _signed_in(kit, secret)
    other_tab = _signed_in(kit, secret)  # another sign-in with the same key: its own session
    cookie = browser.cookies[SESSION_COOKIE]
    stolen = _with_cookie(kit, cookie)  # a copy of the cookie, taken before sign-out
    assert stolen.get("/api/v1/keys").status_code == 200
    assert stolen.get("/", follow_redirects=False).status_code == 200

    csrf = _META.search(browser.get("/keys").text).group(1)
    before = _ended_rows(kit)
    out = browser.post("/signout", data={"csrf_token": csrf}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    assert _ended_rows(kit) == before + 1

    refused = stolen.get("/api/v1/keys")
    assert refused.status_code == 401 and "signed out" in refused.json()["detail"], refused.text
    page = stolen.get("/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/signin")
    # Only that session ended: the other sign-in and the key itself still work.
    assert other_tab.get("/api/v1/keys").status_code == 200
    assert kit.client.get("/api/v1/keys", headers=kit.auth).status_code == 200


def test_signing_out_twice_and_pruning(jobs_kit: JobKit) -> None:
    """A second sign-out with the same cookie adds nothing; rows of sessions whose cookies have expired anyway
    are removed at the next sign-out."""
    kit = jobs_kit
    secret = kit.auth["Authorization"].removeprefix("Bearer ")
    with transaction(kit.factory) as session:
        session.add(EndedSession(nonce="expired-long-ago", expires_at=datetime.now(UTC) - timedelta(days=1)))
    browser = _signed_in(kit, secret)
    cookie = browser.cookies[SESSION_COOKIE]
    csrf = _META.search(browser.get("/keys").text).group(1)
    browser.post("/signout", data={"csrf_token": csrf}, follow_redirects=False)
    with transaction(kit.factory) as session:
        assert session.get(EndedSession, "expired-long-ago") is None, "pruned"
    count = _ended_rows(kit)
    again = _with_cookie(kit, cookie)
    again.post("/signout", data={"csrf_token": csrf}, follow_redirects=False)
    assert _ended_rows(kit) == count


def _second_key(kit: JobKit) -> tuple[str, str]:
    r = kit.client.post("/api/v1/keys", json={"name": "tokens"}, headers=kit.auth)
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


def test_a_revoked_keys_event_tokens_stop_at_once(jobs_kit: JobKit) -> None:
    kit = jobs_kit
    job = kit.create()
    key_id, secret = _second_key(kit)
    theirs = {"Authorization": f"Bearer {secret}"}
    token = kit.client.post(f"/api/v1/jobs/{job['id']}/events-token", headers=theirs).json()["token"]
    kit.cancel_all_queued()  # the job ends, so a stream answers and closes
    assert kit.client.get(f"/api/v1/jobs/{job['id']}/events", params={"token": token}).status_code == 200

    assert kit.client.delete(f"/api/v1/keys/{key_id}", headers=kit.auth).status_code == 200
    r = kit.client.get(f"/api/v1/jobs/{job['id']}/events", params={"token": token})
    assert r.status_code == 401 and "revoked" in r.json()["detail"], r.text
    # A token from a key that is still valid is unaffected.
    mine = kit.client.post(f"/api/v1/jobs/{job['id']}/events-token", headers=kit.auth).json()["token"]
    assert kit.client.get(f"/api/v1/jobs/{job['id']}/events", params={"token": mine}).status_code == 200


def test_an_open_stream_ends_when_its_key_is_revoked(jobs_kit: JobKit) -> None:
    """A queued job's stream stays open until the job ends; revoking the key that opened it closes it within
    a few seconds (the stream rechecks the key every 2 s) instead of streaming for the job's lifetime."""
    kit = jobs_kit
    job = kit.create()
    key_id, secret = _second_key(kit)
    token = kit.client.post(
        f"/api/v1/jobs/{job['id']}/events-token", headers={"Authorization": f"Bearer {secret}"}
    ).json()["token"]
    answered: list[int] = []
    viewer = kit.make_client(kit.settings)

    def watch() -> None:
        answered.append(viewer.get(f"/api/v1/jobs/{job['id']}/events", params={"token": token}).status_code)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    watcher.join(timeout=3)
    assert watcher.is_alive(), "the stream of a queued job stays open"
    assert kit.client.delete(f"/api/v1/keys/{key_id}", headers=kit.auth).status_code == 200
    watcher.join(timeout=30)
    try:
        assert not watcher.is_alive(), "the stream did not end after its key was revoked"
        assert answered == [200]
    finally:
        kit.cancel_all_queued()
        watcher.join(timeout=30)
