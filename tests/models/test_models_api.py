"""Models: list, read, download (a directory Sam3Model.from_pretrained loads) and delete; a model's answer
to predict is tests/models/test_model_predict.py's."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from pathlib import Path

from transformers import Sam3Model

from tests.support.jobs import JobKit
from trainer.base_model import EMBEDDED_BASE


def test_list_and_get(jobs_kit: JobKit, model_id: str) -> None:
    kit = jobs_kit
    listed = kit.client.get("/api/v1/models", headers=kit.auth).json()["items"]
    assert model_id in [m["id"] for m in listed]
    m = kit.client.get(f"/api/v1/models/{model_id}", headers=kit.auth).json()
    assert m["base_model"] == "samtune/sam3-tiny-shapes" and "Not Meta's SAM 3" in m["base_model_description"]
    # The version's classes, in the version's order (a prediction's class_id is an index into this list).
    assert sorted(m["classes"]) == ["orange shape", "purple shape"]
    assert m["classes"] == kit.version["classes"]
    assert set(m["test"]) == {"base", "fine_tuned"} and "summary" in m["test"]["fine_tuned"]
    assert {"segm_AP", "bbox_AP"} <= set(m["best_valid"])
    assert m["hyperparameters"]["mode"]["value"] == m["resolved_mode"] == "decoder"
    assert m["version_name"] == kit.version["name"] and m["requested_mode"] in ("auto", "decoder", "full")
    # The names of 0.1.0, kept for one release with the same values (docs/api.md, "Deprecated fields").
    assert (m["name"], m["mode"], m["test_metrics"]) == (m["version_name"], m["resolved_mode"], m["test"])
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
    # The card names the base model as the API does (not where it lies) and the version by its content hash.
    card = json.loads((tmp_path / "samtune_model_card.json").read_text())
    assert card["base_model"] == EMBEDDED_BASE and Path(card["base_model_location"]).is_dir()
    assert card["content_hash"] == jobs_kit.version["content_hash"] and len(card["annotations_sha256"]) == 64
    model = jobs_kit.client.get(f"/api/v1/models/{model_id}", headers=jobs_kit.auth).json()
    assert card["metrics"] == {"best_valid": model["best_valid"], "test": model["test"]}
    assert (
        card["resolved_mode"] == model["resolved_mode"] and card["requested_mode"] == model["requested_mode"]
    )


def test_delete(jobs_kit: JobKit, test_image: bytes) -> None:
    kit = jobs_kit
    job = kit.create()
    assert kit.run(job["id"]) == "succeeded"
    mid = kit.get(job["id"])["model_id"]
    assert list(kit.storage.list(f"models/{mid}/"))

    def predict() -> int:
        files = {"image": ("x.jpg", test_image)}
        return kit.client.post(f"/api/v1/models/{mid}/predict", files=files, headers=kit.auth).status_code

    assert predict() == 200  # the API now remembers the model's spec (app/core/short_cache.py)
    batch = kit.client.post(
        f"/api/v1/models/{mid}/predict-version/{kit.version['id']}", headers=kit.auth
    ).json()
    busy = kit.client.delete(f"/api/v1/models/{mid}", headers=kit.auth)
    assert busy.status_code == 409 and "in use" in busy.text
    from app.models.batches import run_batch

    assert run_batch(kit.settings, uuid.UUID(batch["id"])) == "succeeded"
    assert kit.client.delete(f"/api/v1/models/{mid}", headers=kit.auth).status_code == 204
    assert kit.client.get(f"/api/v1/models/{mid}", headers=kit.auth).status_code == 404
    assert predict() == 404  # forgotten by the process that deleted it, at once
    assert not list(kit.storage.list(f"models/{mid}/"))
