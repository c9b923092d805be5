"""Models: list, read, download (a directory Sam3Model.from_pretrained loads) and delete; a model's answer
to predict is tests/models/test_model_predict.py's."""

from __future__ import annotations

import io
import uuid
import zipfile
from pathlib import Path

from transformers import Sam3Model

from tests.jobs.conftest import JobKit


def test_list_and_get(jobs_kit: JobKit, model_id: str) -> None:
    kit = jobs_kit
    listed = kit.client.get("/api/v1/models", headers=kit.auth).json()
    assert model_id in [m["id"] for m in listed]
    m = kit.client.get(f"/api/v1/models/{model_id}", headers=kit.auth).json()
    assert m["base_model"] == "samtune/sam3-tiny-shapes" and "Not Meta's SAM 3" in m["base_model_description"]
    # The version's classes, in the version's order (a prediction's class_id is an index into this list).
    assert sorted(m["classes"]) == ["orange shape", "purple shape"]
    assert m["classes"] == kit.version["classes"]
    assert set(m["test_metrics"]) == {"base", "fine_tuned"} and "summary" in m["test_metrics"]["fine_tuned"]
    assert m["hyperparameters"]["mode"]["value"] == "decoder"
    other = kit.new_auth()
    assert kit.client.get(f"/api/v1/models/{model_id}", headers=other).status_code == 404
    assert kit.client.get(f"/api/v1/models/{uuid.uuid4()}", headers=kit.auth).status_code == 404


def test_download_loads_with_from_pretrained(jobs_kit: JobKit, model_id: str, tmp_path: Path) -> None:
    r = jobs_kit.client.get(f"/api/v1/models/{model_id}/download", headers=jobs_kit.auth)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    zipfile.ZipFile(io.BytesIO(r.content)).extractall(tmp_path)
    for name in ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "README.md"):
        assert (tmp_path / name).exists(), name
    assert isinstance(Sam3Model.from_pretrained(tmp_path), Sam3Model)


def test_delete(jobs_kit: JobKit) -> None:
    kit = jobs_kit
    job = kit.create()
    assert kit.run(job["id"]) == "succeeded"
    mid = kit.get(job["id"])["model_id"]
    assert list(kit.storage.list(f"models/{mid}/"))
    batch = kit.client.post(
        f"/api/v1/models/{mid}/predict-version/{kit.version['id']}", headers=kit.auth
    ).json()
    busy = kit.client.delete(f"/api/v1/models/{mid}", headers=kit.auth)
    assert busy.status_code == 409 and "in use" in busy.text
    from app.models.batches import run_batch

    assert run_batch(kit.settings, uuid.UUID(batch["id"])) == "succeeded"
    assert kit.client.delete(f"/api/v1/models/{mid}", headers=kit.auth).status_code == 204
    assert kit.client.get(f"/api/v1/models/{mid}", headers=kit.auth).status_code == 404
    assert not list(kit.storage.list(f"models/{mid}/"))
