"""Never serve a regression by accident (issue 17): a model that scored below its base on the test split (mask
AP) is marked so, its job says so, and its version's `slug/N` alias keeps naming the previous good model unless
the user promotes it (POST /api/v1/models/{id}/promote).

The alias's choice is tested on rows inserted directly (no training, so no learned figure is asserted); one job
made to regress on purpose checks the path through the worker, the job's events and the API: a learning rate of
0.3 wrecks the tiny bundled model's decoder, its test mask AP falling to 0.0 against the base's 0.8 on concepts
it was pretrained on. Measured when written: 0.03, 0.1, 0.3 and 1.0 all give 0.0; 3.0 and 10 make the loss NaN
and fail the job; so 0.3 sits a factor 10 from either edge."""

from __future__ import annotations

import shutil
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from app.core.db import transaction, utcnow
from app.core.errors import NotFound
from app.jobs.tables import TrainingJob
from app.models import service
from app.models.tables import Model
from tests.support.jobs import JobKit
from trainer.synth import PRETRAIN_CONCEPTS, write_dataset


def _results(base: float, tuned: float) -> dict[str, Any]:
    return {
        "best_valid": None,
        "test": {"base": {"summary": {"segm_AP": base}}, "fine_tuned": {"summary": {"segm_AP": tuned}}},
    }


def _insert(kit: JobKit, version_id: str, eval_results: dict[str, Any], created_ago_s: float) -> str:
    """A model row of a new (never run) job of the version, created `created_ago_s` seconds ago."""
    job = kit.create(version_id=version_id)
    with transaction(kit.factory) as session:
        row = session.get(TrainingJob, uuid.UUID(job["id"]))
        assert row is not None
        model = service.register_model(session, row, uuid.uuid4(), "0" * 64, eval_results)
        model.created_at = utcnow() - timedelta(seconds=created_ago_s)
        return str(model.id)


def _alias(kit: JobKit, workspace_id: uuid.UUID, reference: str) -> str:
    with transaction(kit.factory) as session:
        return str(service.by_reference(session, workspace_id, reference)[0].id)


def _workspace(kit: JobKit, model_id: str) -> uuid.UUID:
    with transaction(kit.factory) as session:
        model = session.get(Model, uuid.UUID(model_id))
        assert model is not None
        return model.workspace_id


def test_is_regression_compares_test_mask_ap() -> None:
    assert service.is_regression(_results(0.5, 0.1))
    assert not service.is_regression(_results(0.5, 0.5))
    assert not service.is_regression(_results(0.1, 0.5))
    # Nothing to compare: the base (or the fine-tuned model) was not evaluated on a test split.
    assert not service.is_regression({"test": {"base": None, "fine_tuned": {"summary": {"segm_AP": 0.1}}}})
    assert not service.is_regression({})


def test_alias_skips_regressions_until_promoted(jobs_kit: JobKit) -> None:
    kit = jobs_kit
    _, version = kit.ready_version("alias")
    regressed_only = _insert(kit, version["id"], _results(0.6, 0.05), created_ago_s=50)
    workspace = _workspace(kit, regressed_only)
    name = kit.client.get(f"/api/v1/models/{regressed_only}", headers=kit.auth).json()["version_name"]

    # Its only model regressed: the alias answers 404 saying why and how to promote it, never that model.
    with pytest.raises(NotFound) as caught:
        _alias(kit, workspace, name)
    message = str(caught.value)
    assert "scored below its base" in message and f"/api/v1/models/{regressed_only}/promote" in message
    assert "0.050" in message and "0.600" in message
    key = kit.auth["Authorization"].removeprefix("Bearer ")
    r = kit.client.post("/model/add", json={"model_id": name, "api_key": key})
    assert r.status_code == 404 and "scored below its base" in r.text, r.text
    # By its own id it is still there. Roboflow's registry lists only names that name a model.
    assert _alias(kit, workspace, regressed_only) == regressed_only

    def listed() -> list[str]:
        return [m["model_id"] for m in kit.client.get("/model/registry", headers=kit.auth).json()["models"]]

    assert name not in listed()

    good = _insert(kit, version["id"], _results(0.6, 0.7), created_ago_s=40)
    assert _alias(kit, workspace, name) == good
    assert name in listed()
    newer_regression = _insert(kit, version["id"], _results(0.6, 0.2), created_ago_s=30)
    assert _alias(kit, workspace, name) == good, "a newer regression must not take the alias"

    shown = kit.client.get(f"/api/v1/models/{newer_regression}", headers=kit.auth).json()
    assert (shown["regression"], shown["promoted"], shown["promoted_at"]) == (True, False, None)
    assert kit.client.get(f"/api/v1/models/{good}", headers=kit.auth).json()["regression"] is False

    # Promoted explicitly: the alias names it; promoting again changes nothing else.
    for _ in range(2):
        r = kit.client.post(f"/api/v1/models/{newer_regression}/promote", headers=kit.auth)
        assert r.status_code == 200, r.text
        assert (r.json()["id"], r.json()["regression"], r.json()["promoted"]) == (
            newer_regression,
            True,
            True,
        )
        assert _alias(kit, workspace, name) == newer_regression

    # Another workspace's model, or none at all: 404, and nothing promoted.
    other = kit.new_auth()
    assert kit.client.post(f"/api/v1/models/{regressed_only}/promote", headers=other).status_code == 404
    assert kit.client.post(f"/api/v1/models/{uuid.uuid4()}/promote", headers=kit.auth).status_code == 404
    assert kit.client.get(f"/api/v1/models/{regressed_only}", headers=kit.auth).json()["promoted"] is False

    # A newer model that did not regress takes the alias again.
    newest_good = _insert(kit, version["id"], _results(0.6, 0.6), created_ago_s=-5)
    assert _alias(kit, workspace, name) == newest_good
    # Models without a test comparison (no test split, base not evaluated) are served as before.
    unknown = _insert(
        kit, version["id"], {"best_valid": None, "test": {"base": None, "fine_tuned": None}}, -10
    )
    assert _alias(kit, workspace, name) == unknown


def _pretrain_dataset(kit: JobKit) -> str:
    """A dataset of concepts the bundled base model was pretrained on (its zero-shot test AP is clearly > 0;
    on the kit's held-out colours it is about 0, so no fine-tune could score below it)."""
    out = kit.root / "pretrain-synth"
    if not out.exists():
        write_dataset(out, list(PRETRAIN_CONCEPTS[:2]), {"train": 2, "valid": 1, "test": 2}, size=112, seed=1,
                      max_objects=2)  # fmt: skip
    archive = Path(shutil.make_archive(str(kit.root / "pretrain-synth"), "zip", out))
    r = kit.client.post("/api/v1/datasets", json={"name": "known colours"}, headers=kit.auth)
    assert r.status_code == 201, r.text
    with open(archive, "rb") as f:
        up = kit.client.post(
            f"/api/v1/datasets/{r.json()['id']}/uploads", files={"file": ("synth.zip", f)}, headers=kit.auth
        )
    assert up.status_code == 201, up.text
    return str(r.json()["id"])


def test_a_job_made_to_regress(jobs_kit: JobKit) -> None:
    kit = jobs_kit
    version = kit.new_version(_pretrain_dataset(kit))
    assert version["status"] == "ready", version
    hyperparameters = {"epochs": 2, "checkpoint_every_steps": 2, "eval_base_model": True, "lr_heads": 0.3}
    job = kit.create(version_id=version["id"], hyperparameters=hyperparameters)
    assert kit.run(job["id"]) == "succeeded"
    done = kit.get(job["id"])
    base = done["test"]["base"]["summary"]["segm_AP"]
    tuned = done["test"]["fine_tuned"]["summary"]["segm_AP"]
    # The base knows these concepts (a fixed, pretrained model: 0.8 when written); the wrecked decoder finds
    # nothing useful (0.0 when written). Far from the edge either way.
    assert base > 0.3, done["test"]
    assert tuned < base / 2, done["test"]

    model_id = done["model_id"]
    events = [e for e in done["events"] if e["kind"] == "regression"]
    assert len(events) == 1, done["events"]
    assert events[0]["data"] == {"model_id": model_id, "metric": "segm_AP", "base": base, "fine_tuned": tuned}
    assert "below its base" in events[0]["message"]
    final = done["events"][-1]
    assert final["data"]["status"] == "succeeded" and final["data"]["regression"] is True
    assert "below its base" in final["message"]

    model = kit.client.get(f"/api/v1/models/{model_id}", headers=kit.auth).json()
    assert (model["regression"], model["promoted"]) == (True, False)
    key = kit.auth["Authorization"].removeprefix("Bearer ")
    r = kit.client.post("/model/add", json={"model_id": model["version_name"], "api_key": key})
    assert r.status_code == 404 and "scored below its base" in r.text, r.text

    r = kit.client.post(f"/api/v1/models/{model_id}/promote", headers=kit.auth)
    assert r.status_code == 200 and r.json()["promoted"] is True, r.text
    assert _alias(kit, _workspace(kit, model_id), model["version_name"]) == model_id
