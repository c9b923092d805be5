"""A workspace with n rows in every paginated list (issue 20): datasets, one dataset's versions, jobs, models,
keys and batch predictions, made through the API where it can make them (jobs stay queued: the kit's task queue
records them) and, for models, as the rows a finished job registers (no training: what is tested is the list)."""

from __future__ import annotations

import uuid

from app.core.db import transaction
from app.jobs.tables import TrainingJob
from app.models import service as models
from tests.support.jobs import JobKit

# Test-split figures, so that a model reads as one that was evaluated (the model pages show the lift).
EVALUATED = {
    "best_valid": None,
    "test": {"base": {"summary": {"segm_AP": 0.5, "segm_AP50": 0.5}},
             "fine_tuned": {"summary": {"segm_AP": 0.6, "segm_AP50": 0.6}}},
}  # fmt: skip


def register_model(kit: JobKit, job_id: str) -> str:
    """The model row a job registers when it succeeds, for a queued job."""
    with transaction(kit.factory) as session:
        job = session.get(TrainingJob, uuid.UUID(job_id))
        assert job is not None
        return str(models.register_model(session, job, uuid.uuid4(), "0" * 64, EVALUATED).id)


def fill_workspace(kit: JobKit, auth: dict[str, str], n: int) -> tuple[str, dict[str, set[str]]]:
    """n rows of every list in the workspace of `auth` (its first key and a ready dataset version included):
    (the dataset whose versions are listed, {list path: the ids made})."""
    dataset_id, version = kit.ready_version(f"pages-{uuid.uuid4().hex[:6]}", auth)
    versions = f"/api/v1/datasets/{dataset_id}/versions"
    made: dict[str, set[str]] = {
        "/api/v1/datasets": {dataset_id},
        versions: {version["id"]},
        "/api/v1/keys": {k["id"] for k in kit.client.get("/api/v1/keys", headers=auth).json()["items"]},
    }
    for i in range(n - 1):
        r = kit.client.post("/api/v1/datasets", json={"name": f"more {i}"}, headers=auth)
        assert r.status_code == 201, r.text
        made["/api/v1/datasets"].add(r.json()["id"])
        made[versions].add(kit.new_version(dataset_id, auth, build=False)["id"])
    while len(made["/api/v1/keys"]) < n:
        r = kit.client.post("/api/v1/keys", json={"name": f"key {len(made['/api/v1/keys'])}"}, headers=auth)
        assert r.status_code == 201, r.text
        made["/api/v1/keys"].add(r.json()["id"])
    jobs = [kit.create(auth=auth, version_id=version["id"])["id"] for _ in range(n)]
    model_ids = [register_model(kit, job) for job in jobs]
    made["/api/v1/jobs"] = set(jobs)
    made["/api/v1/models"] = set(model_ids)
    made["/api/v1/batch-predictions"] = set()
    for _ in range(n):
        r = kit.client.post(f"/api/v1/models/{model_ids[0]}/predict-version/{version['id']}", headers=auth)
        assert r.status_code == 202, r.text
        made["/api/v1/batch-predictions"].add(r.json()["id"])
    return dataset_id, made
