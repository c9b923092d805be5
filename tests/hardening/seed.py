"""A running service with something in it: a real uvicorn process on PostgreSQL and S3 (moto's server), and,
made through its API, a dataset with images, a ready version, a finished job, its model and a finished batch
prediction, so that fuzzing and the authorization matrix reach past 404s.

Background work (version build, training, batch prediction) runs here with the worker's own functions, not
through a broker: the service's queue is Celery's server-less transport, which nothing consumes, so what a
fuzzer creates stays queued instead of loading the two CPU cores.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.core import migrate
from app.core.db import make_engine, make_sessionmaker, transaction
from app.core.storage import make_storage
from app.jobs.runner import run_job
from app.keys.service import create_key_for_workspace
from app.models.batches import run_batch
from app.settings import Settings
from app.versions.builder import build_version
from tests.factories import simple_coco_zip
from tests.hardening.live import samtune_env, uvicorn_server
from tests.support.s3 import fresh_bucket
from tests.support.servers import ServerProcess
from trainer.base_model import EMBEDDED_BASE
from trainer.synth import HELD_OUT_DOMAINS, write_dataset

# Distinctive: the authorization matrix looks for it in every answer another workspace gets.
DATASET_NAME = "workspace-a-private-shapes"
SMALL_VERSION = {"preprocessing": {"resize": {"width": 112, "height": 112}}}
FAST_JOB = {"epochs": 2, "checkpoint_every_steps": 2, "eval_base_model": False}


class _DropQueue:
    """The worker code's TaskQueue for follow-up messages (webhooks): nothing is listening in these tests."""

    def send(self, task: str, args: list[str], queue: str) -> None:
        pass


@dataclass
class Seeded:
    """Ids in workspace A (`auth`), a key of workspace B, a revoked key of A, and objects made to be destroyed."""

    server: ServerProcess
    settings: Settings
    key: str
    key_id: str
    other_key: str
    revoked_key: str
    ids: dict[str, str] = field(default_factory=dict)
    # Objects that destructive operations may take (deleting the seeded ones would turn later cases into 404s).
    expendable: dict[str, str] = field(default_factory=dict)
    upload: bytes = b""

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def _ok(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    return r.json() if r.content else {}


def start_seeded(root: Path, database_url: str, s3_endpoint: str) -> Seeded:
    migrate.upgrade(database_url)
    values: dict[str, Any] = {
        "data_dir": root / "data",
        "database_url": database_url,
        "storage_url": f"s3://{fresh_bucket(s3_endpoint, 'samtune-hardening')}/samtune",
        "s3_endpoint_url": s3_endpoint,
        "s3_access_key_id": "test",
        "s3_secret_access_key": "test",
        "secret_key": "hardening-signing-key",
        "worker_device": "cpu",
        "job_heartbeat_seconds": 1.0,
        "metrics_flush_seconds": 0.3,
    }
    settings = Settings(**values)
    engine = make_engine(database_url)
    factory = make_sessionmaker(engine)
    with transaction(factory) as session:
        row, key = create_key_for_workspace(session, "workspace-a", "fuzzer")
        key_id = str(row.id)
        _, other_key = create_key_for_workspace(session, "workspace-b", "other")
        revoked_row, revoked_key = create_key_for_workspace(session, "workspace-a", "revoked")
        spare_row, _ = create_key_for_workspace(session, "workspace-a", "expendable")
    server = uvicorn_server(samtune_env(values), root / "server.log").start()
    seeded = Seeded(server, settings, key, key_id, other_key, revoked_key)
    seeded.expendable["key_id"] = str(spare_row.id)
    try:
        with httpx.Client(base_url=server.url, headers=seeded.auth, timeout=120) as client:
            assert client.delete(f"/api/v1/keys/{revoked_row.id}").status_code == 200
            _seed(client, seeded, settings, factory, root)
    except BaseException:
        server.stop()
        raise
    finally:
        engine.dispose()
    return seeded


def _seed(client: httpx.Client, seeded: Seeded, settings: Settings, factory: Any, root: Path) -> None:
    storage = make_storage(settings)
    data = write_dataset(root / "synth", list(HELD_OUT_DOMAINS["new-colours"]),
                         {"train": 2, "valid": 1, "test": 1}, size=112, seed=1, max_objects=2)  # fmt: skip
    archive = Path(shutil.make_archive(str(root / "synth"), "zip", data))

    ids = seeded.ids
    # Roboflow's REST API names things: the workspace by its name, the export by its format.
    ids["workspace"], ids["export_format"] = "workspace-a", "coco"
    dataset = _ok(client.post("/api/v1/datasets", json={"name": DATASET_NAME}), 201)
    ids["dataset_id"] = dataset["id"]
    ids["project"] = dataset["slug"]
    with open(archive, "rb") as f:
        _ok(client.post(f"/api/v1/datasets/{dataset['id']}/uploads", files={"file": ("synth.zip", f)}), 201)
    images = _ok(client.get(f"/api/v1/datasets/{dataset['id']}/images"), 200)
    items = images["items"] if isinstance(images, dict) else images
    ids["image_id"] = str(items[0]["id"])

    version = _ok(client.post(f"/api/v1/datasets/{dataset['id']}/versions", json=SMALL_VERSION), 202)
    assert build_version(factory, storage, settings, uuid.UUID(version["id"])) == "ready"
    ids["version_id"] = version["id"]
    ids["version"] = str(version["number"])

    body = {
        "version_id": version["id"],
        "base_model": EMBEDDED_BASE,
        "mode": "decoder",
        "hyperparameters": FAST_JOB,
    }
    job = _ok(client.post("/api/v1/jobs", json=body), 201)
    run_job(settings, uuid.UUID(job["id"]), _DropQueue())
    job = _ok(client.get(f"/api/v1/jobs/{job['id']}"), 200)
    assert job["status"] == "succeeded" and job["model_id"], job
    ids["job_id"], ids["model_id"] = job["id"], job["model_id"]

    batch = _ok(
        client.post(f"/api/v1/models/{job['model_id']}/predict-version/{version['id']}?split=test"), 202
    )
    run_batch(settings, uuid.UUID(batch["id"]))
    assert _ok(client.get(f"/api/v1/batch-predictions/{batch['id']}"), 200)["status"] == "succeeded"
    ids["batch_id"] = batch["id"]
    ids["key_id"] = seeded.key_id
    owner, _, name = EMBEDDED_BASE.partition("/")
    ids["owner"], ids["name"] = owner, name

    # For destructive operations: a dataset, a ready version, a model and a queued job nothing else uses.
    spare = _ok(client.post("/api/v1/datasets", json={"name": "expendable"}), 201)
    seeded.expendable["dataset_id"] = spare["id"]
    spare_version = _ok(client.post(f"/api/v1/datasets/{dataset['id']}/versions", json=SMALL_VERSION), 202)
    assert build_version(factory, storage, settings, uuid.UUID(spare_version["id"])) == "ready"
    seeded.expendable["version_id"] = spare_version["id"]
    spare_job = _ok(client.post("/api/v1/jobs", json=body), 201)
    run_job(settings, uuid.UUID(spare_job["id"]), _DropQueue())
    seeded.expendable["model_id"] = _ok(client.get(f"/api/v1/jobs/{spare_job['id']}"), 200)["model_id"]
    # Queued jobs (nothing consumes the queue), one to stop and one to cancel.
    seeded.expendable["job_id"] = _ok(client.post("/api/v1/jobs", json=body), 201)["id"]
    seeded.expendable["cancel_job_id"] = _ok(client.post("/api/v1/jobs", json=body), 201)["id"]

    # A small valid upload, for fuzzed uploads to get past the zip checks.
    seeded.upload = simple_coco_zip(root / "upload.zip", n_images=2).read_bytes()
