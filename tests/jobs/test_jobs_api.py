"""Training jobs over HTTP, on SQLite and PostgreSQL: preview, create (and the message it enqueues), the 422s,
workspace isolation, listing, queue positions, a job run in-process by the real worker code and everything
it leaves (metrics, logs, events, model), the event stream on the database feed and on Redis (full, resumed,
live, token auth), stop/cancel, and signed webhooks retried until the receiver accepts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.core.db import transaction
from app.core.queue import CeleryQueue
from app.core.tasks import make_celery
from app.jobs import runner as job_runner
from app.jobs import tokens
from app.jobs.service import OVERRIDABLE
from app.jobs.tables import TrainingJob
from app.jobs.webhook_target import new_secret
from app.jobs.webhooks import LEGACY_SIGNATURE_HEADER, WebhookRejected, deliver
from app.versions.tables import DatasetVersion
from tests.support.jobs import BROKER_REDIS_URL, FAST_HYPERPARAMETERS, JobKit
from tests.support.ports import free_port
from tests.support.servers import LiveServer
from tests.support.sse import SseEvent, parse_block, parse_sse
from tests.support.webhooks import WebhookReceiver
from trainer.base_model import CARD_FILE, EMBEDDED_BASE, EMBEDDED_BASE_DIR
from trainer.config import TrainConfig, resolve

TRAIN_TASK, WEBHOOK_TASK = "samtune.train_job", "samtune.send_webhook"


@dataclass
class Finished:
    """A job created through the Redis-enabled API and run to success with the real worker code, so that
    both feeds hold it: the database rows and the Redis stream."""

    id: str
    created: dict[str, Any]
    redis_client: TestClient


@pytest.fixture(scope="module")
def finished(jobs_kit: JobKit, feed_redis: str, webhook_receiver: WebhookReceiver) -> Finished:
    kit = jobs_kit
    rclient = kit.make_client(kit.redis_settings())
    created = kit.create(client=rclient, webhook_url=webhook_receiver.url)
    assert created["webhook_secret"], created
    assert kit.run(created["id"], kit.redis_settings()) == "succeeded"
    return Finished(created["id"], created, rclient)


@pytest.fixture(scope="module")
def other(jobs_kit: JobKit) -> tuple[dict[str, str], dict]:
    """Another workspace, with a ready version of its own."""
    auth = jobs_kit.new_auth()
    _, version = jobs_kit.ready_version("theirs", auth)
    return auth, version


def _count_jobs(kit: JobKit) -> int:
    with transaction(kit.factory) as session:
        return int(session.scalar(select(func.count()).select_from(TrainingJob)) or 0)


def _stream(client: TestClient, job_id: str, headers: dict[str, str] | None = None, **params: str) -> list:
    r = client.get(f"/api/v1/jobs/{job_id}/events", headers=headers or {}, params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    return parse_sse(r.text)


def _key(e: SseEvent) -> tuple[str | None, str, str]:
    return e.id, e.kind, json.dumps(e.data, sort_keys=True)


# --- preview, create, reject -------------------------------------------------------------------------


def test_base_models_and_preview_creates_nothing(jobs_kit: JobKit) -> None:
    kit = jobs_kit
    models = kit.client.get("/api/v1/base-models", headers=kit.auth).json()
    tiny = next(m for m in models if m["name"] == EMBEDDED_BASE)
    assert tiny["available"] and "location" not in tiny
    assert [m["name"] for m in models if m["default"]] == [models[0]["name"]]
    meta = next(m for m in models if m["name"] == "facebook/sam3")
    if not meta["available"]:  # the hint gives commands that exist in huggingface_hub 1.x
        assert "hf download facebook/sam3" in meta["unavailable_reason"], meta

    jobs_before, sent_before = _count_jobs(kit), len(kit.tasks.sent)
    r = kit.client.post("/api/v1/jobs/preview", json=kit.job_body(), headers=kit.auth)
    assert r.status_code == 200, r.text
    p = r.json()
    cfg = TrainConfig(base_model="x", data_dir=Path("."), output_dir=Path("."), mode="decoder",
                      **FAST_HYPERPARAMETERS)  # fmt: skip
    recommended = json.loads((EMBEDDED_BASE_DIR / CARD_FILE).read_text())["recommended_hyperparameters"]
    expected = resolve(cfg, num_train_images=2, device_type="cpu", recommended=recommended)
    assert set(p["hyperparameters"]) == set(expected) | {"gpus"}, "every resolved hyperparameter is shown"
    # `gpus` is the API's own (the job's devices), not the trainer's
    assert p["hyperparameters"].pop("gpus") == {"value": 1, "reason": "one device per job unless asked"}
    assert p["hyperparameters"]["lr_heads"] == {
        "value": recommended["lr_heads"],
        "reason": "recommended by the base model's card",
    }
    for name, value in p["hyperparameters"].items():
        assert value["value"] == expected[name].value, name
        assert value["reason"].strip(), f"{name} has no reason"
    assert p["hyperparameters"]["epochs"] == {"value": 2, "reason": "set in the configuration"}
    assert p["hyperparameters"]["total_steps"]["value"] == 2  # 2 train images, batch 2, 2 epochs
    assert p["base_model"] == EMBEDDED_BASE and "tiny SAM 3" in p["base_model_description"]
    assert (
        p["version_name"] == kit.version["name"] and p["resolved_mode"] == "decoder" and p["device"] == "cpu"
    )
    assert p["requested_mode"] == kit.job_body()["mode"]
    # The names of 0.1.0, kept for one release with the same values (docs/api.md, "Deprecated fields").
    assert (p["version"], p["mode"]) == (p["version_name"], p["resolved_mode"])
    assert p["estimate"]["steps"] == 2 and p["estimate"]["seconds"] > 0 and p["estimate"]["basis"]
    # Auto mode on a CPU worker explains itself too.
    auto = kit.client.post(
        "/api/v1/jobs/preview",
        json={"version_id": kit.version["id"], "base_model": EMBEDDED_BASE},
        headers=kit.auth,
    )
    assert auto.status_code == 200 and auto.json()["hyperparameters"]["mode"]["value"] == "decoder"
    assert "no GPU" in auto.json()["hyperparameters"]["mode"]["reason"]
    assert (_count_jobs(kit), len(kit.tasks.sent)) == (jobs_before, sent_before)


def test_create_enqueues_on_the_gpu_queue(jobs_kit: JobKit) -> None:
    kit = jobs_kit
    r = kit.client.post("/api/v1/jobs", json=kit.job_body(), headers=kit.auth)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "queued" and job["attempt"] == 0 and job["webhook_secret"] is None
    assert kit.tasks.for_job(job["id"]) == [(TRAIN_TASK, [job["id"]], "gpu")]
    assert job["version_id"] == kit.version["id"] and job["dataset_id"] == kit.dataset_id
    assert job["hyperparameters"]["epochs"]["value"] == 2 and job["mode"] == "decoder"
    assert job["resolved_mode"] == "decoder" and job["best_valid"] is None and job["best_metrics"] == {}
    assert job["test"] == {"base": None, "fine_tuned": None} and job["test_metrics"] == {}
    assert [(e["kind"], e["data"]) for e in job["events"]] == [("status", {"status": "queued"})]
    assert job["progress"]["total_steps"] == 2 and job["model_id"] is None

    hooked = kit.create(webhook_url="http://127.0.0.1:9/hook")
    assert hooked["webhook_secret"] and len(hooked["webhook_secret"]) >= 24
    assert "webhook_secret" not in kit.get(hooked["id"]), "the secret is shown once"


def test_create_rejects_with_a_clear_reason(jobs_kit: JobKit, other: tuple[dict[str, str], dict]) -> None:
    kit = jobs_kit
    building = kit.new_version(kit.dataset_id, build=False)
    assert building["status"] == "building"
    failed = kit.new_version(kit.dataset_id, build=False)
    kit.update(DatasetVersion, failed["id"], status="failed", error="disk on fire")
    theirs = other[1]
    cases: list[tuple[dict[str, Any], str, list[str]]] = [
        (kit.job_body(building["id"]), "version_id", ["is building, not ready", "wait for its build"]),
        (kit.job_body(failed["id"]), "version_id", ["is failed, not ready", "disk on fire"]),
        (kit.job_body(theirs["id"]), "version_id", [f"version {theirs['id']} not found in this workspace"]),
        (kit.job_body(base_model="nope/model"), "base_model", ["unknown base model 'nope/model'", EMBEDDED_BASE]),
        (kit.job_body(hyperparameters={"epochz": 3}), "hyperparameters.epochz",
         ["unknown hyperparameter 'epochz'", "epochs"]),
        (kit.job_body(hyperparameters={"output_dir": "/etc"}), "hyperparameters.output_dir",
         ["unknown hyperparameter 'output_dir'"]),
        (kit.job_body(hyperparameters={"epochs": 0}), "hyperparameters.epochs",
         ["invalid hyperparameter epochs=0", "greater than or equal to 1"]),
        (kit.job_body(hyperparameters={"layer_decay": 1.5}), "hyperparameters.layer_decay",
         ["invalid hyperparameter layer_decay=1.5", "less than or equal to 1"]),
    ]  # fmt: skip
    jobs_before, sent_before = _count_jobs(kit), len(kit.tasks.sent)
    for body, source, fragments in cases:
        for path in ("/api/v1/jobs", "/api/v1/jobs/preview"):
            r = kit.client.post(path, json=body, headers=kit.auth)
            assert r.status_code == 422, (path, body, r.text)
            problem = r.json()
            assert problem["source"] == source, (body, problem)
            for fragment in fragments:
                assert fragment in problem["detail"], (body, problem["detail"])
    # The request model itself: an unknown top-level field, a bad mode.
    for body in ({**kit.job_body(), "epochs": 3}, kit.job_body(mode="turbo")):
        assert kit.client.post("/api/v1/jobs", json=body, headers=kit.auth).status_code == 422
    assert (_count_jobs(kit), len(kit.tasks.sent)) == (jobs_before, sent_before), "nothing created or sent"
    assert set(OVERRIDABLE) >= set(FAST_HYPERPARAMETERS)


def test_another_workspace_sees_404(jobs_kit: JobKit, other: tuple[dict[str, str], dict]) -> None:
    kit, (their_auth, _) = jobs_kit, other
    job = kit.create()
    base = f"/api/v1/jobs/{job['id']}"
    for method, path in [("GET", ""), ("GET", "/metrics"), ("GET", "/logs"), ("POST", "/stop"),
                         ("POST", "/cancel"), ("POST", "/events-token"), ("GET", "/events")]:  # fmt: skip
        r = kit.client.request(method, base + path, headers=their_auth)
        assert r.status_code == 404, (method, path, r.text)
        assert "not found in this workspace" in r.json()["detail"]
    assert job["id"] not in {
        j["id"] for j in kit.client.get("/api/v1/jobs", headers=their_auth).json()["items"]
    }
    assert kit.get(job["id"])["status"] == "queued", "their stop and cancel changed nothing"
    assert kit.client.get(f"/api/v1/jobs/{uuid.uuid4()}", headers=kit.auth).status_code == 404
    assert kit.client.get(base).status_code == 401


# --- listing, queue, stop and cancel -----------------------------------------------------------------


def test_list_filters_by_status_and_dataset(jobs_kit: JobKit) -> None:
    kit = jobs_kit
    auth = kit.new_auth()  # a fresh workspace: the list holds exactly this test's jobs
    mine, version = kit.ready_version("mine", auth)
    second, version2 = kit.ready_version("second", auth)
    a = kit.create(auth=auth, version_id=version["id"])
    b = kit.create(auth=auth, version_id=version["id"])
    c = kit.create(auth=auth, version_id=version2["id"])
    assert kit.client.post(f"/api/v1/jobs/{b['id']}/cancel", headers=auth).status_code == 202

    def ids(**params: str) -> list[str]:
        r = kit.client.get("/api/v1/jobs", params=params, headers=auth)
        assert r.status_code == 200, r.text
        return [j["id"] for j in r.json()["items"]]

    assert ids() == [c["id"], b["id"], a["id"]], "newest first"
    assert ids(status="queued") == [c["id"], a["id"]]
    assert ids(status="cancelled") == [b["id"]]
    assert ids(status="succeeded") == []
    assert ids(dataset_id=mine) == [b["id"], a["id"]]
    assert ids(dataset_id=second) == [c["id"]]
    assert ids(dataset_id=second, status="cancelled") == []
    assert ids(dataset_id=str(uuid.uuid4())) == []
    assert kit.client.get("/api/v1/jobs", params={"status": "paused"}, headers=auth).status_code == 422
    listed = kit.client.get("/api/v1/jobs", params={"dataset_id": second}, headers=auth).json()["items"][0]
    assert listed["version_name"] == listed["version"] == "second/1" and listed["dataset_id"] == second


def test_queue_positions_and_the_base_model_named(jobs_kit: JobKit) -> None:
    kit = jobs_kit
    kit.cancel_all_queued()
    jobs = [kit.create() for _ in range(3)]
    assert [kit.get(j["id"])["queue_position"] for j in jobs] == [1, 2, 3]
    # Another workspace's queued job counts too: the workers are shared.
    other_auth = kit.new_auth()
    _, their_version = kit.ready_version("queue", other_auth)
    theirs = kit.create(auth=other_auth, version_id=their_version["id"])
    assert kit.get(theirs["id"], other_auth)["queue_position"] == 4
    assert kit.client.post(f"/api/v1/jobs/{jobs[0]['id']}/cancel", headers=kit.auth).status_code == 202
    assert [kit.get(j["id"])["queue_position"] for j in jobs] == [None, 1, 2]
    out = kit.get(jobs[1]["id"])
    assert out["base_model"] == EMBEDDED_BASE
    assert "samtune's tiny SAM 3" in out["base_model_description"]
    assert "bundled" in out["base_model_description"] and "Not Meta's SAM 3" in out["base_model_description"]
    kit.cancel_all_queued()


@pytest.mark.parametrize("verb", ["stop", "cancel"])
def test_stop_or_cancel_a_queued_job_ends_it_at_once(jobs_kit: JobKit, verb: str) -> None:
    kit = jobs_kit
    job = kit.create()
    r = kit.client.post(f"/api/v1/jobs/{job['id']}/{verb}", headers=kit.auth)
    assert r.status_code == 202, r.text
    out = r.json()
    assert out["status"] == "cancelled" and out["finished_at"] and out["queue_position"] is None
    last = out["events"][-1]
    assert last["kind"] == "status" and last["data"] == {"status": "cancelled"}
    assert ("stopped while queued" if verb == "stop" else "cancelled while queued") in last["message"]
    # Its message is still in the queue: the worker that gets it does nothing.
    assert kit.run(job["id"]) == "not claimed (cancelled)"
    assert kit.get(job["id"])["status"] == "cancelled"
    for again in ("stop", "cancel"):
        r = kit.client.post(f"/api/v1/jobs/{job['id']}/{again}", headers=kit.auth)
        assert r.status_code == 409 and "already cancelled" in r.json()["detail"]


# --- a job run to the end ----------------------------------------------------------------------------


def test_finished_job_shows_its_model_metrics_logs_and_events(jobs_kit: JobKit, finished: Finished) -> None:
    kit = jobs_kit
    out = kit.get(finished.id)
    assert out["status"] == "succeeded" and out["error"] is None and out["attempt"] == 1, out
    assert out["model_id"] and out["queue_position"] is None and out["finished_at"] and out["started_at"]
    assert out["progress"]["step"] == out["progress"]["total_steps"] == 2
    assert out["progress"]["eta_seconds"] == 0
    assert {"segm_AP", "bbox_AP"} <= set(out["best_valid"]) and out["best_metrics"] == out["best_valid"]
    # The test split, both models, as the model's API shows it; the deprecated test_metrics holds summaries.
    model = kit.client.get(f"/api/v1/models/{out['model_id']}", headers=kit.auth).json()
    assert out["test"] == model["test"] and out["test"]["fine_tuned"]["summary"]["segm_AP"] >= 0
    assert out["test_metrics"] == {k: result and result["summary"] for k, result in out["test"].items()}
    assert out["hyperparameters"]["total_steps"]["value"] == 2
    assert "loss" in out["metrics"] and "valid_segm_AP" in out["metrics"]
    statuses = [e["data"]["status"] for e in out["events"] if e["kind"] == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    final = next(e for e in out["events"] if e["data"].get("status") == "succeeded")
    assert final["data"]["model_id"] == out["model_id"] and final["attempt"] == 1
    assert any(e["kind"] == "cache" for e in out["events"]), "the trainer's own events are kept"
    with transaction(kit.factory) as session:
        row = session.get(TrainingJob, uuid.UUID(finished.id))
        assert row is not None and row.started_at and row.finished_at
        began = datetime.fromisoformat(row.progress["training_started_at"])  # when the training loop began
        assert row.started_at <= began <= row.finished_at
    # The API creates one message per job; the worker one webhook on the cpu queue.
    assert kit.tasks.for_job(finished.id) == [(TRAIN_TASK, [finished.id], "gpu"),
                                              (WEBHOOK_TASK, [finished.id], "cpu")]  # fmt: skip

    points = kit.client.get(f"/api/v1/jobs/{finished.id}/metrics", headers=kit.auth).json()
    keys = [(p["step"], p["name"]) for p in points]
    assert keys == sorted(keys) and len(set(keys)) == len(keys), "ordered, one point per (name, step)"
    assert {"loss", "lr", "valid_segm_AP"} <= {p["name"] for p in points}
    assert max(p["step"] for p in points) == 2
    only = kit.client.get(f"/api/v1/jobs/{finished.id}/metrics", params={"name": ["loss", "lr"]},
                          headers=kit.auth).json()  # fmt: skip
    assert only == [p for p in points if p["name"] in ("loss", "lr")]
    # A NUL byte reached PostgreSQL (which refuses it in text) and answered 500; a name is a metric's name.
    bad = kit.client.get(f"/api/v1/jobs/{finished.id}/metrics", params={"name": "loss\x00"}, headers=kit.auth)
    assert bad.status_code == 422 and "name" in bad.text, bad.text

    logs = kit.client.get(f"/api/v1/jobs/{finished.id}/logs", headers=kit.auth).json()
    assert logs and all(line["attempt"] == 1 for line in logs)
    assert any("samtune.trainer" in line["message"] for line in logs)
    ids = [line["id"] for line in logs]
    assert ids == sorted(ids)
    paged, after = [], 0
    while page := kit.client.get(f"/api/v1/jobs/{finished.id}/logs", params={"after": after, "limit": 1},
                                 headers=kit.auth).json():  # fmt: skip
        assert len(page) == 1
        paged += page
        after = page[-1]["id"]
    assert paged == logs
    assert kit.client.get(f"/api/v1/jobs/{finished.id}/logs", params={"after": ids[-1]},
                          headers=kit.auth).json() == []  # fmt: skip
    assert kit.client.get(f"/api/v1/jobs/{finished.id}/logs", params={"after": -1},
                          headers=kit.auth).status_code == 422  # fmt: skip

    for verb in ("stop", "cancel"):
        r = kit.client.post(f"/api/v1/jobs/{finished.id}/{verb}", headers=kit.auth)
        assert r.status_code == 409, r.text
        assert f"already succeeded; nothing to {verb}" in r.json()["detail"]
    assert kit.get(finished.id)["stop_requested"] is False


# --- the event stream --------------------------------------------------------------------------------


def _check_full_stream(events: list[SseEvent], points: list[dict]) -> None:
    assert events, "an empty stream"
    assert all(e.id for e in events), [e for e in events if not e.id]
    assert len({e.id for e in events}) == len(events), "ids are unique"
    final = events[-1]
    assert final.kind == "status" and final.data["status"] == "succeeded", final
    assert sum(e.kind == "status" and e.data.get("status") in ("succeeded", "failed", "cancelled")
               for e in events) == 1  # fmt: skip
    statuses = [e.data["status"] for e in events if e.kind == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    streamed = {(e.data["step"], name) for e in events if e.kind == "metrics" for name in e.data["metrics"]}
    assert streamed == {(p["step"], p["name"]) for p in points}, "every metric point, once"


def _check_resume(client: TestClient, job_id: str, auth: dict[str, str], full: list[SseEvent]) -> None:
    """From every id but the last, a reconnect yields exactly what followed it."""
    for i, event in enumerate(full[:-1]):
        rest = _stream(client, job_id, auth | {"Last-Event-ID": str(event.id)})
        assert [_key(e) for e in rest] == [_key(e) for e in full[i + 1 :]], f"resumed after {event.id}"
    # After the final event there is nothing left: 204 tells EventSource to stop reconnecting.
    final = [e for e in full if e.kind == "status"][-1]
    again = client.get(f"/api/v1/jobs/{job_id}/events", headers=auth | {"Last-Event-ID": str(final.id)})
    assert again.status_code == 204, again.text


def test_event_stream_on_the_database_feed(jobs_kit: JobKit, finished: Finished) -> None:
    kit = jobs_kit
    assert kit.settings.redis_url is None
    points = kit.client.get(f"/api/v1/jobs/{finished.id}/metrics", headers=kit.auth).json()
    r = kit.client.get(f"/api/v1/jobs/{finished.id}/events", headers=kit.auth)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-cache"
    assert r.text.startswith("retry: ")
    full = parse_sse(r.text)
    _check_full_stream(full, points)
    assert all(e.id and e.id.startswith("db-") for e in full)
    _check_resume(kit.client, finished.id, kit.auth, full)
    # A cursor that is not one of ours starts from the beginning rather than failing.
    assert [_key(e) for e in _stream(kit.client, finished.id, kit.auth | {"Last-Event-ID": "db-x-y"})] == [
        _key(e) for e in full
    ]


def test_event_stream_on_the_redis_feed(jobs_kit: JobKit, finished: Finished) -> None:
    kit, client = jobs_kit, finished.redis_client
    points = client.get(f"/api/v1/jobs/{finished.id}/metrics", headers=kit.auth).json()
    full = _stream(client, finished.id, kit.auth)
    _check_full_stream([e for e in full if e.kind != "progress"], points)
    assert all(e.id and e.id[0].isdigit() and "-" in e.id for e in full), "Redis stream ids"
    stamps = [tuple(int(x) for x in str(e.id).split("-")) for e in full]
    assert stamps == sorted(stamps)
    assert full[0].kind == "status" and full[0].data["status"] == "queued", "published by the API"
    progress = [e for e in full if e.kind == "progress"]
    assert progress and progress[-1].data["step"] == 2 and progress[-1].data["total_steps"] == 2
    _check_resume(client, finished.id, kit.auth, full)
    # A database cursor (from before Redis held the stream) resumes on the database feed.
    db_full = _stream(kit.client, finished.id, kit.auth)
    middle = db_full[len(db_full) // 2]
    rest = _stream(client, finished.id, kit.auth | {"Last-Event-ID": str(middle.id)})
    assert [_key(e) for e in rest] == [_key(e) for e in db_full[db_full.index(middle) + 1 :]]


def test_event_stream_token(jobs_kit: JobKit, finished: Finished) -> None:
    kit = jobs_kit
    r = kit.client.post(f"/api/v1/jobs/{finished.id}/events-token", headers=kit.auth)
    assert r.status_code == 200, r.text
    token, url = r.json()["token"], r.json()["url"]
    assert url.endswith(f"/api/v1/jobs/{finished.id}/events?token={token}")
    expires = datetime.fromisoformat(r.json()["expires_at"])
    assert 14 * 60 < (expires - datetime.now(UTC)).total_seconds() <= 15 * 60

    with_token = kit.client.get(url)  # no API key at all
    assert with_token.status_code == 200, with_token.text
    events = parse_sse(with_token.text)
    assert events[-1].kind == "status" and events[-1].data["status"] == "succeeded"

    _, workspace, api_key, _, _ = token.split(".")
    job_id, key_id = uuid.UUID(finished.id), uuid.UUID(hex=api_key)
    key = kit.settings.signing_key
    expired, _ = tokens.issue(
        key, job_id, uuid.UUID(workspace), key_id, now=time.time() - tokens.TOKEN_SECONDS - 5
    )
    foreign, _ = tokens.issue(b"another installation's key", job_id, uuid.UUID(workspace), key_id)
    another_job = kit.create()
    theirs = kit.client.post(f"/api/v1/jobs/{another_job['id']}/events-token", headers=kit.auth).json()[
        "token"
    ]
    mac_flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    cases = {
        "expired": (expired, "expired"),
        "signed with another key": (foreign, "invalid event token"),
        "tampered": (mac_flipped, "invalid event token"),
        "garbage": ("not-a-token", "invalid event token"),
        "another job's": (theirs, "another job"),
    }
    for name, (bad, fragment) in cases.items():
        r = kit.client.get(f"/api/v1/jobs/{finished.id}/events", params={"token": bad})
        assert r.status_code == 401, (name, r.text)
        assert fragment in r.json()["detail"], (name, r.json())
    assert kit.client.get(f"/api/v1/jobs/{finished.id}/events").status_code == 401
    bad_key = {"Authorization": "Bearer st_nope"}
    assert kit.client.get(f"/api/v1/jobs/{finished.id}/events", headers=bad_key).status_code == 401
    assert kit.client.post(f"/api/v1/jobs/{finished.id}/events-token").status_code == 401


def test_live_event_stream_while_the_job_runs(
    jobs_kit: JobKit, feed_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client connected before the job starts receives its metrics while it trains, then the final
    status, and the stream ends. SQLite is read on the database feed, PostgreSQL through Redis.

    The worker may not finish (register the model, say succeeded) until the client has received a metrics
    event, so the test cannot pass by reading everything after the fact, however fast the machine."""
    kit = jobs_kit
    feed = "db" if kit.backend == "sqlite" else "redis"
    settings = kit.make_settings() if feed == "db" else kit.redis_settings()
    metrics_seen = threading.Event()
    succeed = job_runner._Attempt._succeed

    def gated_succeed(self: Any, result: Any) -> str:
        assert metrics_seen.wait(60), "the client saw no metrics while the job was running"
        return succeed(self, result)

    monkeypatch.setattr(job_runner._Attempt, "_succeed", gated_succeed)
    outcome: list[Any] = []

    def work(job_id: str) -> None:
        try:
            outcome.append(kit.run(job_id, settings))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome.append(exc)

    received: list[tuple[SseEvent, bool]] = []  # (event, was the job still unfinished)
    with LiveServer(kit.make_app(settings)) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        r = http.post("/api/v1/jobs", json=kit.job_body(hyperparameters=FAST_HYPERPARAMETERS | {"epochs": 3}),
                      headers=kit.auth)  # fmt: skip
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        worker = threading.Thread(target=work, args=(job_id,), daemon=True)
        with http.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=kit.auth) as s:
            assert s.status_code == 200, s.read()
            buffer = ""
            for chunk in s.iter_text():
                buffer += chunk
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    event = parse_block(block)
                    if event is None:
                        continue
                    received.append((event, not outcome))
                    if event.kind == "metrics":
                        metrics_seen.set()
                    if not worker.is_alive() and not outcome:
                        worker.start()  # the client is connected and has the queued status: go
        worker.join(timeout=120)
    assert outcome == ["succeeded"], outcome
    events = [e for e, _ in received]
    assert events[0].kind == "status" and events[0].data["status"] == "queued"
    final = events[-1]
    assert final.kind == "status" and final.data["status"] == "succeeded", [e.kind for e in events]
    first_metrics = next(i for i, e in enumerate(events) if e.kind == "metrics")
    assert first_metrics < len(events) - 1 and received[first_metrics][1], "metrics came while it ran"
    assert [e.data["status"] for e in events if e.kind == "status"] == ["queued", "running", "succeeded"]
    assert all(e.id for e in events if e.kind != "progress"), "every resumable event has an id"
    ids = [e.id for e in events if e.id]
    assert len(set(ids)) == len(ids)
    if feed == "redis":
        assert all(e.id for e in events), "on Redis even progress snapshots have an id"
    seen = [(e.data["step"], name) for e in events if e.kind == "metrics" for name in e.data["metrics"]]
    assert len(set(seen)) == len(seen), "no metric point twice"
    points = kit.client.get(f"/api/v1/jobs/{job_id}/metrics", headers=kit.auth).json()
    assert set(seen) == {(p["step"], p["name"]) for p in points}, "every point, live"
    assert max(step for step, _ in seen) == 3


# --- webhooks ----------------------------------------------------------------------------------------


def _verify(delivery_body: bytes, headers: dict[str, str], secret: str) -> bool:
    """Standard Webhooks verification, written from the scheme's text (docs/api.md shows the same)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + delivery_body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(headers["webhook-signature"], expected)


def _verify_legacy(delivery_body: bytes, headers: dict[str, str], secret: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), delivery_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers[LEGACY_SIGNATURE_HEADER.lower()], expected)


def _webhook_events(kit: JobKit, job_id: str) -> list[dict]:
    return [e for e in kit.get(job_id)["events"] if e["kind"] == "webhook"]


def test_webhook_is_signed_and_retried_until_accepted(
    jobs_kit: JobKit, finished: Finished, webhook_receiver: WebhookReceiver
) -> None:
    kit, secret = jobs_kit, finished.created["webhook_secret"]
    before = len(_webhook_events(kit, finished.id))
    webhook_receiver.reset(500)
    with pytest.raises(WebhookRejected, match="HTTP 500"):
        deliver(kit.settings, uuid.UUID(finished.id), 0)
    assert deliver(kit.settings, uuid.UUID(finished.id), 1) == 200
    first, second = webhook_receiver.deliveries
    assert (first.answered, second.answered) == (500, 200)
    for n, d in enumerate((first, second)):
        assert _verify(d.body, d.headers, secret), "the signature verifies with the secret shown at creation"
        assert not _verify(d.body, d.headers, new_secret()), "another secret does not verify"
        # The timestamp is signed: a delivery replayed with a fresh timestamp does not verify.
        assert abs(int(d.headers["webhook-timestamp"]) - time.time()) < 120
        replayed = d.headers | {"webhook-timestamp": str(int(d.headers["webhook-timestamp"]) + 600)}
        assert not _verify(d.body, replayed, secret)
        # One id for every try, so a receiver can drop a message it already has.
        assert d.headers["webhook-id"] == f"msg_{uuid.UUID(finished.id).hex}_succeeded"
        assert _verify_legacy(d.body, d.headers, secret), "the deprecated header, for one release"
        assert d.headers["content-type"] == "application/json"
        assert d.headers["x-samtune-delivery"] == f"{finished.id}/{n}"
    body = json.loads(second.body)
    job = kit.get(finished.id)
    assert (
        body["event"] == "job.succeeded" and body["job_id"] == finished.id and body["status"] == "succeeded"
    )
    assert (
        body["model_id"] == job["model_id"] and body["base_model"] == EMBEDDED_BASE and body["error"] is None
    )
    assert body["best_valid"] == body["best_metrics"] == job["best_valid"] and body["finished_at"]
    recorded = _webhook_events(kit, finished.id)[before:]
    assert [(e["data"]["delivered"], e["data"]["attempt"]) for e in recorded] == [(False, 1), (True, 2)]
    assert "HTTP 500" in recorded[0]["message"] and "delivered (HTTP 200)" in recorded[1]["message"]

    # Nobody listening: a failure without the network error's text, raised for the task to retry.
    kit.update(TrainingJob, finished.id, webhook_url=f"http://127.0.0.1:{free_port()}/hook")
    try:
        with pytest.raises(WebhookRejected, match="^no HTTP answer$"):
            deliver(kit.settings, uuid.UUID(finished.id), 2)
    finally:
        kit.update(TrainingJob, finished.id, webhook_url=webhook_receiver.url)
    assert _webhook_events(kit, finished.id)[-1]["data"] == {"delivered": False, "attempt": 3}


@pytest.mark.timeout(240)
def test_webhook_task_retries_by_itself_in_a_real_worker(
    jobs_kit: JobKit, finished: Finished, webhook_receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """The worker's own `samtune.send_webhook` retries with backoff (2 s, then 4 s) until the receiver
    says 200. SQLite with the embedded filesystem broker; PostgreSQL with Redis as the broker."""
    kit = jobs_kit
    if kit.backend == "sqlite":
        settings = kit.make_settings(broker_url="filesystem://", webhook_max_retries=4)
    else:
        redis.Redis.from_url(BROKER_REDIS_URL).flushdb()
        settings = kit.make_settings(broker_url=BROKER_REDIS_URL, webhook_max_retries=4)
    before = len(_webhook_events(kit, finished.id))
    webhook_receiver.reset(500, 503)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMTUNE_")}
    env.update(
        SAMTUNE_DATA_DIR=str(settings.data_dir), SAMTUNE_DATABASE_URL=settings.database_url,
        SAMTUNE_BROKER_URL=settings.broker_url, SAMTUNE_STORAGE_URL=settings.storage_url,
        SAMTUNE_SECRET_KEY=settings.secret_key, SAMTUNE_WEBHOOK_MAX_RETRIES="4", SAMTUNE_LOG_LEVEL="info",
        SAMTUNE_WEBHOOK_ALLOWED_HOSTS=settings.webhook_allowed_hosts,
    )  # fmt: skip
    # The message the worker code queued when the job finished, sent for real this time.
    message = kit.tasks.for_job(finished.id)[-1]
    assert message == (WEBHOOK_TASK, [finished.id], "cpu")
    CeleryQueue(make_celery(settings)).send(*message)
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "-Q", "cpu"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            deliveries = webhook_receiver.wait_for(3, timeout=150)
            deadline = time.monotonic() + 20
            while len(_webhook_events(kit, finished.id)) < before + 3 and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    assert [d.answered for d in deliveries] == [500, 503, 200], log.read_text()[-3000:]
    gaps = [b.at - a.at for a, b in zip(deliveries, deliveries[1:], strict=False)]
    assert gaps[0] >= 1.8 and gaps[1] >= 3.8, f"exponential backoff, got {gaps}"
    secret = finished.created["webhook_secret"]
    assert all(_verify(d.body, d.headers, secret) for d in deliveries)
    assert [d.headers["x-samtune-delivery"] for d in deliveries] == [f"{finished.id}/{n}" for n in range(3)]
    recorded = _webhook_events(kit, finished.id)[before:]
    assert [(e["data"]["delivered"], e["data"]["attempt"]) for e in recorded] == [
        (False, 1), (False, 2), (True, 3)
    ]  # fmt: skip


def test_best_valid_is_kept_when_the_run_ends_between_heartbeats(jobs_kit: JobKit) -> None:
    """The heartbeat writes progress once a period; a run shorter than one period still ends with its best
    validation metrics on the job (the worker writes the last progress when training ends). Last in this module:
    its run fills the shared embedding cache, and the `finished` job checks that its own run filled it."""
    kit = jobs_kit
    slow_heartbeat = kit.settings.model_copy(
        update={"job_heartbeat_seconds": 3600.0, "job_lease_seconds": 7200}
    )
    created = kit.create()
    assert kit.run(created["id"], slow_heartbeat) == "succeeded"
    out = kit.get(created["id"])
    assert {"segm_AP", "bbox_AP"} <= set(out["best_valid"]), out["best_valid"]
    assert out["progress"]["step"] == out["progress"]["total_steps"]
