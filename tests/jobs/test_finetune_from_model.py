"""A job may continue from a model of its own workspace (Roboflow's "train from a checkpoint"): named by its id
or by its version's `slug/N`, fetched by the worker from object storage, with the lineage kept on the job, the
model, its card and its page; a model trained on other classes is allowed, with a warning."""

from __future__ import annotations

import io
import json
import re
import shutil
import uuid
import zipfile
from dataclasses import dataclass

import pytest

from app.models.tables import Model
from tests.support.jobs import JobKit
from trainer.base_model import CARD_FILE, EMBEDDED_BASE, EMBEDDED_BASE_DIR
from trainer.synth import HELD_OUT_DOMAINS, write_dataset


@dataclass
class Trained:
    job: dict
    model: dict


def _train(kit: JobKit, **body: object) -> Trained:
    job = kit.create(**body)
    assert kit.run(job["id"]) == "succeeded", kit.get(job["id"])
    job = kit.get(job["id"])
    r = kit.client.get(f"/api/v1/models/{job['model_id']}", headers=kit.auth)
    assert r.status_code == 200, r.text
    return Trained(job, r.json())


def _card(kit: JobKit, model_id: str) -> dict:
    r = kit.client.get(f"/api/v1/models/{model_id}/download", headers=kit.auth)
    assert r.status_code == 200, r.text
    return json.loads(zipfile.ZipFile(io.BytesIO(r.content)).read(CARD_FILE))


@pytest.fixture(scope="module")
def first(jobs_kit: JobKit) -> Trained:
    """A model fine-tuned from the bundled tiny base on the kit's version (purple and orange shapes)."""
    return _train(jobs_kit)


@pytest.fixture(scope="module")
def second(jobs_kit: JobKit, first: Trained) -> Trained:
    """A model fine-tuned from `first`, named by its id, on the same version."""
    return _train(jobs_kit, base_model=str(first.model["id"]))


def test_a_job_continues_from_a_model_named_by_its_id(
    jobs_kit: JobKit, first: Trained, second: Trained
) -> None:
    a, version_name = first.model["id"], first.model["version_name"]
    assert first.model["lineage"] == [EMBEDDED_BASE] and first.model["base_model_id"] is None

    job = second.job
    assert job["status"] == "succeeded"
    assert job["base_model"] == f"{version_name} (model {a})"
    assert job["base_model_id"] == a
    assert job["base_model_description"].startswith(f"model {a} of {version_name}")
    assert EMBEDDED_BASE in job["base_model_description"]
    assert not [e for e in job["events"] if e["kind"] == "classes_changed"], "same classes: no warning"
    assert job["events"][0]["message"] == f"queued: {job['base_model']} on {job['version_name']}"

    model = second.model
    assert model["base_model"] == job["base_model"] and model["base_model_id"] == a
    assert model["lineage"] == [f"{version_name} (model {a})", EMBEDDED_BASE]
    card = _card(jobs_kit, model["id"])
    assert card["lineage"] == model["lineage"] and card["base_model"] == job["base_model"]
    # The tiny base's recommended values suit its fine-tunes too: the card carries them to the next job.
    tiny = json.loads((EMBEDDED_BASE_DIR / CARD_FILE).read_text())["recommended_hyperparameters"]
    assert card["recommended_hyperparameters"] == _card(jobs_kit, a)["recommended_hyperparameters"] == tiny


def test_by_slug_n_on_a_version_with_other_classes(jobs_kit: JobKit, first: Trained, second: Trained) -> None:
    """`slug/N` names the version's newest model (here `second`); the new version's classes win, and the job
    says which were added and removed before it runs."""
    kit = jobs_kit
    data = write_dataset(kit.root / "synth-tools", list(HELD_OUT_DOMAINS["tools"]),
                         {"train": 2, "valid": 1, "test": 1}, size=112, seed=2, max_objects=2)  # fmt: skip
    archive = shutil.make_archive(str(kit.root / "synth-tools"), "zip", data)
    r = kit.client.post("/api/v1/datasets", json={"name": "tools"}, headers=kit.auth)
    assert r.status_code == 201, r.text
    with open(archive, "rb") as f:
        up = kit.client.post(f"/api/v1/datasets/{r.json()['id']}/uploads", files={"file": ("t.zip", f)},
                             headers=kit.auth)  # fmt: skip
    assert up.status_code == 201, up.text
    version = kit.new_version(r.json()["id"])
    assert version["status"] == "ready", version
    old, new = second.model["classes"], version["classes"]
    assert set(old).isdisjoint(new)

    slug_n = first.model["version_name"]
    job = kit.create(version_id=version["id"], base_model=slug_n)
    b = second.model["id"]
    assert job["base_model"] == f"{slug_n} (model {b})" and job["base_model_id"] == b
    warning = [e for e in job["events"] if e["kind"] == "classes_changed"]
    assert len(warning) == 1, job["events"]
    assert warning[0]["data"]["added"] == new and warning[0]["data"]["removed"] == old
    for name in [*new, *old]:
        assert name in warning[0]["message"]

    assert kit.run(job["id"]) == "succeeded", kit.get(job["id"])
    model = kit.client.get(f"/api/v1/models/{kit.get(job['id'])['model_id']}", headers=kit.auth).json()
    assert model["classes"] == new
    assert model["lineage"] == [f"{slug_n} (model {b})", *second.model["lineage"]]
    card = _card(kit, model["id"])
    assert card["lineage"] == model["lineage"] and card["classes"] == new
    assert model["test"]["fine_tuned"] is not None  # evaluated on its own classes

    # The model page has a place for the lineage, which its script fills from the API's `lineage`.
    ui = kit.make_client(kit.settings)
    page = ui.get("/signin")
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page.text))
    fields["api_key"] = kit.auth["Authorization"].removeprefix("Bearer ")
    assert ui.post("/signin", data=fields, follow_redirects=False).status_code in (302, 303)
    html = ui.get(f"/models/{model['id']}")
    assert html.status_code == 200 and 'id="model-lineage"' in html.text
    assert "model.lineage" in ui.get("/static/js/model.js").text


def test_another_workspaces_model_or_an_unknown_one_is_404(jobs_kit: JobKit, first: Trained) -> None:
    kit = jobs_kit
    auth = kit.new_auth()
    _, version = kit.ready_version("elsewhere", auth)
    for name in (str(first.model["id"]), first.model["version_name"], str(uuid.uuid4()), "shapes/99"):
        r = kit.client.post("/api/v1/jobs", json=kit.job_body(version["id"], base_model=name), headers=auth)
        assert r.status_code == 404, (name, r.text)
        assert r.json()["source"] == "base_model" and name in r.json()["detail"], r.json()
    # Not a model reference at all: still the catalog's 422, which lists what exists.
    r = kit.client.post("/api/v1/jobs", json=kit.job_body(base_model="nope/model"), headers=kit.auth)
    assert r.status_code == 422 and "slug/N" in r.json()["detail"]


def test_a_model_that_is_not_ready_is_422(jobs_kit: JobKit, first: Trained) -> None:
    kit = jobs_kit
    kit.update(Model, first.model["id"], status="failed")
    try:
        r = kit.client.post(
            "/api/v1/jobs", json=kit.job_body(base_model=str(first.model["id"])), headers=kit.auth
        )
        assert r.status_code == 422 and r.json()["source"] == "base_model", r.text
        assert "not ready" in r.json()["detail"]
    finally:
        kit.update(Model, first.model["id"], status="ready")


def test_the_memory_check_counts_a_model_base_as_its_root_architecture(
    jobs_kit: JobKit, first: Trained
) -> None:
    """A workspace model's files are in object storage, not on the API's disk: its architecture is its lineage
    root's, so a job from it that cannot fit is refused at preview and creation like one from the root."""
    kit = jobs_kit
    tiny = kit.make_client(kit.make_settings(worker_memory_bytes=10**6))
    for path in ("/api/v1/jobs/preview", "/api/v1/jobs"):
        r = tiny.post(path, json=kit.job_body(base_model=str(first.model["id"])), headers=kit.auth)
        assert r.status_code == 422 and "does not fit the worker's memory" in r.json()["detail"], r.text
    roomy = kit.make_client(kit.make_settings(worker_memory_bytes=64 * 2**30))
    r = roomy.post(
        "/api/v1/jobs/preview", json=kit.job_body(base_model=str(first.model["id"])), headers=kit.auth
    )
    assert r.status_code == 200, r.text
