"""Batch predictions: a model over a version's split in the background, as COCO results JSON that COCOeval
reads as it is; their lease (app/core/lease.py) reaped, retried, then given up."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.support.jobs import JobKit


def test_predict_version_batch_gives_coco_results(jobs_kit: JobKit, model_id: str, tmp_path: Path) -> None:
    import json

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from app.models.batches import run_batch
    from app.versions.tables import DatasetVersion

    kit = jobs_kit
    version_id = kit.version["id"]
    # iou_threshold=1 keeps every mask, as the job's evaluation did (eval_nms_iou is off): the same AP below.
    r = kit.client.post(
        f"/api/v1/models/{model_id}/predict-version/{version_id}?split=test&iou_threshold=1", headers=kit.auth
    )
    assert r.status_code == 202, r.text
    batch = r.json()
    assert batch["status"] == "queued" and batch["results_url"] is None
    assert ("samtune.predict_version", [batch["id"]], "gpu") in kit.tasks.sent
    early = kit.client.get(f"/api/v1/batch-predictions/{batch['id']}/results", headers=kit.auth)
    assert early.status_code == 409
    assert run_batch(kit.settings, uuid.UUID(batch["id"])) == "succeeded"
    assert run_batch(kit.settings, uuid.UUID(batch["id"])) == "not claimed", "a second delivery does nothing"
    done = kit.client.get(f"/api/v1/batch-predictions/{batch['id']}", headers=kit.auth).json()
    assert done["status"] == "succeeded" and done["num_images"] == 1 and done["results_url"]
    results = kit.client.get(f"/api/v1/batch-predictions/{batch['id']}/results", headers=kit.auth).json()
    assert len(results) == done["num_detections"] > 0
    # COCOeval reads it as it is, against the version's own test annotations, and finds what the job's
    # final evaluation found.
    with kit.factory() as session:
        prefix = session.get(DatasetVersion, uuid.UUID(version_id)).snapshot_prefix
    gt_path = tmp_path / "gt.json"
    gt_path.write_bytes(kit.storage.get_bytes(f"{prefix}test/_annotations.coco.json"))
    gt = COCO(str(gt_path))
    ev = COCOeval(gt, gt.loadRes(results), "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    model = kit.client.get(f"/api/v1/models/{model_id}", headers=kit.auth).json()
    assert ev.stats[0] == pytest.approx(model["test"]["fine_tuned"]["summary"]["segm_AP"], abs=1e-6)
    assert json.dumps(results[0]["segmentation"])  # RLE as JSON
    # bad requests
    other_auth = kit.new_auth()
    _, theirs = kit.ready_version("theirs-batch", other_auth)
    r = kit.client.post(f"/api/v1/models/{model_id}/predict-version/{theirs['id']}", headers=kit.auth)
    assert r.status_code == 422 and "not found" in r.text
    r = kit.client.post(f"/api/v1/models/{model_id}/predict-version/{version_id}?split=all", headers=kit.auth)
    assert r.status_code == 422
    assert kit.client.get(f"/api/v1/batch-predictions/{batch['id']}", headers=other_auth).status_code == 404


def test_batch_lease_reaped_retried_then_given_up(jobs_kit: JobKit, model_id: str) -> None:
    """The lease of app/core/lease.py on batch predictions: a batch whose worker went silent is sent again
    while attempts remain, failed after, and the silent attempt can write nothing once fenced out."""
    from datetime import timedelta

    from app.core.db import utcnow
    from app.models.batches import MAX_ATTEMPTS, reap_stale_batches, run_batch
    from app.models.tables import BatchPrediction

    kit = jobs_kit
    url = f"/api/v1/models/{model_id}/predict-version/{kit.version['id']}?split=test"
    quiet, hopeless = (kit.client.post(url, headers=kit.auth).json()["id"] for _ in range(2))
    past = utcnow() - timedelta(seconds=5)
    kit.update(
        BatchPrediction, quiet, status="running", lease_token="silent", lease_expires_at=past, attempt=1
    )
    kit.update(BatchPrediction, hopeless, status="running", lease_token="silent", lease_expires_at=past,
               attempt=MAX_ATTEMPTS)  # fmt: skip
    kit.tasks.sent.clear()
    assert reap_stale_batches(kit.settings, kit.tasks) == [quiet]
    assert kit.tasks.sent == [("samtune.predict_version", [quiet], "gpu")]
    gone = kit.client.get(f"/api/v1/batch-predictions/{hopeless}", headers=kit.auth).json()
    assert gone["status"] == "failed" and f"stopped responding {MAX_ATTEMPTS} times" in gone["error"]
    assert kit.client.get(f"/api/v1/batch-predictions/{quiet}", headers=kit.auth).json()["status"] == "queued"
    assert reap_stale_batches(kit.settings, kit.tasks) == [], "queued again: nothing left to reap"
    # The next delivery runs it as attempt 2 and clears the lease behind it.
    assert run_batch(kit.settings, uuid.UUID(quiet)) == "succeeded"
    with kit.factory() as session:
        row = session.get(BatchPrediction, uuid.UUID(quiet))
        assert (
            row is not None and row.attempt == 2 and row.lease_token is None and row.lease_expires_at is None
        )


def test_a_batch_whose_message_was_lost_is_sent_again(jobs_kit: JobKit, model_id: str) -> None:
    """A batch that sat queued long after its message was sent lost that message (lease.forgotten, the rule
    the jobs reaper follows too): the reaper sends it again, through the real broker, and marks it sent."""
    import json
    from datetime import timedelta

    import redis

    from app.core.db import utcnow
    from app.core.queue import CeleryQueue
    from app.core.tasks import make_celery
    from app.models.batches import reap_stale_batches, run_batch
    from app.models.tables import BatchPrediction
    from tests.support.jobs import BROKER_REDIS_URL

    kit = jobs_kit
    url = f"/api/v1/models/{model_id}/predict-version/{kit.version['id']}?split=test"
    lost, fresh = (kit.client.post(url, headers=kit.auth).json()["id"] for _ in range(2))
    # Sent when it was created, long ago; no worker ever took it.
    long_ago = utcnow() - 2 * timedelta(seconds=kit.settings.job_requeue_after_seconds)
    kit.update(BatchPrediction, lost, created_at=long_ago)
    broker = redis.Redis.from_url(BROKER_REDIS_URL)
    broker.flushdb()
    settings = kit.make_settings(broker_url=BROKER_REDIS_URL)
    tasks = CeleryQueue(make_celery(settings))
    before = utcnow()
    assert reap_stale_batches(settings, tasks) == [lost], "the fresh batch's message may still be on its way"
    messages = [json.loads(m) for m in broker.lrange("gpu", 0, -1)]
    assert [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages] == [
        ("samtune.predict_version", repr([lost]))
    ]
    with kit.factory() as session:
        row = session.get(BatchPrediction, uuid.UUID(lost))
        assert row is not None and row.status == "queued" and row.attempt == 0 and row.lease_token is None
        assert row.enqueued_at is not None and row.enqueued_at >= before
    assert reap_stale_batches(settings, tasks) == [], "just sent again: not sent a third time"
    broker.flushdb()
    # The message, delivered, runs the batch as its first attempt.
    for batch_id in (lost, fresh):
        assert run_batch(kit.settings, uuid.UUID(batch_id)) == "succeeded"
