"""A job is fitted to its worker's memory at preview and creation: a smaller batch with gradient accumulation
when the default does not fit, a 422 naming the numbers when nothing the configuration allows fits. The
worker's memory is injected with SAMTUNE_WORKER_MEMORY_BYTES (the machine's own free RAM plays no part)."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import func, select

from app.core.db import transaction
from app.jobs import base_models
from app.jobs.memory import memory_plan
from app.jobs.service import train_config
from app.jobs.tables import TrainingJob
from app.versions.tables import DatasetVersion
from tests.support.jobs import FAST_HYPERPARAMETERS, JobKit
from trainer.base_model import EMBEDDED_BASE
from trainer.memory import SAFETY


def _estimates(kit: JobKit) -> tuple[int, int]:
    """The API's own estimate of a decoder-mode step of the kit's version at batch 1 and 2."""
    with transaction(kit.factory) as session:
        version = session.get(DatasetVersion, uuid.UUID(kit.version["id"]))
        assert version is not None
        classes, counts = len(version.classes), dict(version.split_counts)
    settings = kit.make_settings(worker_memory_bytes=10**12)
    base = base_models.resolve(settings, EMBEDDED_BASE)
    cfg = train_config(base, "decoder", FAST_HYPERPARAMETERS, data_dir=Path("."), output_dir=Path("."))
    plan = memory_plan(settings, base, cfg, "cpu", classes=classes, counts=counts)
    assert plan is not None
    one, two = (plan.estimate("decoder", b, "fp32").total for b in (1, 2))
    assert one < two
    return one, two


def _jobs(kit: JobKit) -> int:
    with transaction(kit.factory) as session:
        return int(session.scalar(select(func.count()).select_from(TrainingJob)) or 0)


def test_a_worker_too_small_for_the_default_batch_gets_a_smaller_one_with_accumulation(
    jobs_kit: JobKit,
) -> None:
    kit = jobs_kit
    one, two = _estimates(kit)
    roomy = kit.make_client(kit.make_settings(worker_memory_bytes=10**12))
    r = roomy.post("/api/v1/jobs/preview", json=kit.job_body(), headers=kit.auth)
    assert r.status_code == 200, r.text
    wide = r.json()["hyperparameters"]
    assert wide["batch_size"]["value"] == 2 and wide["grad_accumulation"]["value"] == 1
    assert "SAMTUNE_WORKER_MEMORY_BYTES" in wide["batch_size"]["reason"]

    tight = kit.make_client(kit.make_settings(worker_memory_bytes=int((one + two) / 2 / SAFETY)))
    r = tight.post("/api/v1/jobs/preview", json=kit.job_body(), headers=kit.auth)
    assert r.status_code == 200, r.text
    hp = r.json()["hyperparameters"]
    assert hp["batch_size"]["value"] == 1 and hp["grad_accumulation"]["value"] == 2
    assert "at batch 1" in hp["batch_size"]["reason"]
    assert "accumulating 2 to keep 2" in hp["grad_accumulation"]["reason"]
    assert hp["total_steps"]["value"] == wide["total_steps"]["value"], "a step is still 2 images"


def test_a_job_that_cannot_fit_is_422_at_preview_and_creation_naming_the_numbers(jobs_kit: JobKit) -> None:
    kit = jobs_kit
    one, two = _estimates(kit)
    client = kit.make_client(kit.make_settings(worker_memory_bytes=int((one + two) / 2 / SAFETY)))
    before, sent = _jobs(kit), len(kit.tasks.sent)
    body = kit.job_body(hyperparameters={**FAST_HYPERPARAMETERS, "batch_size": 2})
    for path in ("/api/v1/jobs/preview", "/api/v1/jobs"):
        r = client.post(path, json=body, headers=kit.auth)
        assert r.status_code == 422, r.text
        problem = r.json()
        detail = problem["detail"]
        assert "does not fit the worker's memory" in detail and "at batch 2" in detail, detail
        assert "needs an estimated" in detail and "SAMTUNE_WORKER_MEMORY_BYTES" in detail, detail
        assert "batch_size 1 (with grad_accumulation 2" in detail, detail
        assert problem.get("source") == "hyperparameters.batch_size", problem

    # Not even one image: the default batch cannot help either.
    tiny = kit.make_client(kit.make_settings(worker_memory_bytes=10**6))
    r = tiny.post("/api/v1/jobs/preview", json=kit.job_body(), headers=kit.auth)
    assert r.status_code == 422 and "at batch 1" in r.json()["detail"], r.text
    assert (_jobs(kit), len(kit.tasks.sent)) == (before, sent), "nothing was created or enqueued"
