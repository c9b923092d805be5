"""`/metrics` after a real flow: a dataset uploaded, a version built, a job trained on the bundled tiny model by
the real worker code, a prediction, a job running, a message waiting in the broker; then every series the
operator's dashboard reads is found, labelled by route template, never by an id. The Grafana dashboard names
only series that the scrape exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from app.core.tasks import CPU_QUEUE, PURGE_STALE_UPLOADS, make_celery
from app.jobs.tables import TrainingJob
from tests.support.jobs import JobKit

TOKEN = "metrics-flow-token"
DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"


class Scrape:
    def __init__(self, text: str, model_id: str, running_job: str, zip_bytes: int) -> None:
        self.text, self.model_id, self.running_job, self.zip_bytes = text, model_id, running_job, zip_bytes
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def samples(self, name: str, **labels: str) -> list[Sample]:
        family = re.sub(r"_(total|bucket|sum|count)$", "", name)
        found = self.families.get(family) or self.families.get(name)
        assert found is not None, f"{name} is not exported"
        return [s for s in found.samples if s.name == name and labels.items() <= s.labels.items()]

    def value(self, name: str, **labels: str) -> float:
        return sum(s.value for s in self.samples(name, **labels))


@pytest.fixture(scope="module")
def scrape(jobs_kit: JobKit) -> Iterator[Scrape]:
    kit = jobs_kit
    settings = kit.make_settings(metrics_token=TOKEN)
    client = kit.make_client(settings)
    kit.new_dataset("metrics-flow")  # an upload through the API, then its version below
    job = kit.create(client)
    assert kit.run(job["id"]) == "succeeded"
    model_id = kit.get(job["id"])["model_id"]
    kit.dataset_zip()
    image = sorted((kit.root / "synth" / "test").glob("*.jpg"))[0].read_bytes()
    r = client.post(f"/api/v1/models/{model_id}/predict", headers=kit.auth,
                    files={"image": ("x.jpg", image, "image/jpeg")}, data={"confidence": "0.05"})  # fmt: skip
    assert r.status_code == 200, r.text
    # A job in training, as its worker's heartbeat leaves it (the API cannot make one run on demand).
    running = kit.create(client)["id"]
    kit.update(TrainingJob, running, status="running",
               progress={"step": 3, "total_steps": 10, "steps_per_second": 1.5, "eta_seconds": 4.7})  # fmt: skip
    # A message waiting in the real broker (the embedded filesystem transport), as the API would send it.
    celery = make_celery(settings)
    celery.send_task(PURGE_STALE_UPLOADS, queue=CPU_QUEUE)
    r = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    yield Scrape(r.text, model_id, running, kit.dataset_zip().stat().st_size)
    kit.update(TrainingJob, running, status="cancelled")
    with celery.connection_for_write() as connection:
        connection.default_channel.queue_purge(CPU_QUEUE)


def test_requests_by_route_template_method_and_status(scrape: Scrape) -> None:
    predict = "/api/v1/models/{model_id}/predict"
    assert scrape.value("samtune_http_requests_total", service="api", method="POST", route=predict,
                        status="200") >= 1  # fmt: skip
    assert scrape.value("samtune_http_requests_total", route="/api/v1/datasets/{dataset_id}/uploads",
                        status="201") >= 1  # fmt: skip
    # The latency histogram of the same route: its count matches the requests answered.
    answered = scrape.value("samtune_http_requests_total", service="api", method="POST", route=predict)
    assert (
        scrape.value("samtune_http_request_duration_seconds_count", method="POST", route=predict) == answered
    )
    assert scrape.samples("samtune_http_request_duration_seconds_bucket", route=predict, le="+Inf")
    # Never a path with an id in it: one series per route, whatever objects it was asked about.
    assert scrape.model_id not in scrape.text
    routes = {s.labels["route"] for s in scrape.samples("samtune_http_requests_total")}
    assert all(r.startswith("/") or r == "<unmatched>" for r in routes), routes


def test_uploads_predictions_and_the_model_cache(scrape: Scrape) -> None:
    assert scrape.value("samtune_upload_bytes_count", kind="zip") >= 1
    assert scrape.value("samtune_upload_bytes_sum", kind="zip") >= scrape.zip_bytes
    assert scrape.value("samtune_prediction_duration_seconds_count") >= 1
    assert scrape.value("samtune_prediction_batch_size_count", source="online") >= 1
    assert scrape.value("samtune_prediction_batch_size_sum", source="online") >= 1
    assert scrape.value("samtune_model_cache_bytes") > 0
    assert scrape.value("samtune_model_cache_models") >= 1


def test_jobs_queues_and_running_jobs_at_scrape_time(scrape: Scrape) -> None:
    statuses = {s.labels["status"] for s in scrape.samples("samtune_jobs")}
    assert statuses == {"queued", "running", "succeeded", "failed", "cancelled"}
    assert scrape.value("samtune_jobs", status="succeeded") >= 1
    assert scrape.value("samtune_jobs", status="running") >= 1
    assert scrape.value("samtune_job_steps_per_second", job_id=scrape.running_job) == 1.5
    assert scrape.value("samtune_job_eta_seconds", job_id=scrape.running_job) == 4.7
    assert scrape.value("samtune_queue_depth", queue="cpu") == 1
    assert scrape.value("samtune_queue_depth", queue="gpu") == 0


def _exported_names(scrape: Scrape) -> set[str]:
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    return {f.name + s for f in scrape.families.values() for s in suffixes.get(f.type, [""])}


def test_every_dashboard_expression_names_exported_series(scrape: Scrape) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert any(v.get("type") == "datasource" for v in dashboard["templating"]["list"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10, exprs
    exported = _exported_names(scrape)
    named: set[str] = set()
    for expr in exprs:
        names = set(re.findall(r"\bsamtune_[a-z_]+", expr))
        assert names, f"{expr!r} names no samtune series"
        assert names <= exported, f"{expr!r} names {names - exported}, which /metrics does not export"
        named |= names
    # The dashboard shows every kind of series the issue asks for.
    for family in ("samtune_http_requests_total", "samtune_http_request_duration_seconds_bucket",
                   "samtune_queue_depth", "samtune_jobs", "samtune_job_steps_per_second", "samtune_job_eta_seconds",
                   "samtune_prediction_duration_seconds_bucket", "samtune_prediction_batch_size_bucket",
                   "samtune_model_cache_bytes", "samtune_upload_bytes_sum", "samtune_tasks_total"):  # fmt: skip
        assert family in named, family


def test_the_inference_service_exposes_its_own_series(tmp_path: Path) -> None:
    """`samtune inference` answers /metrics under the same rule: its requests, predictions and model cache, and
    none of the database's facts (the API's /metrics has those)."""
    from fastapi.testclient import TestClient

    from app.core import migrate
    from app.inference.service import create_inference_app
    from app.settings import Settings

    settings = Settings(data_dir=tmp_path / "data")
    migrate.upgrade(settings.database_url)
    with TestClient(create_inference_app(settings), client=("127.0.0.1", 40000)) as local:
        assert local.get("/healthz").status_code == 200
        r = local.get("/metrics")
        assert r.status_code == 200, r.text
        families = {f.name for f in text_string_to_metric_families(r.text)}
        assert {"samtune_prediction_duration_seconds", "samtune_model_cache_bytes"} <= families
        assert 'route="/healthz",service="inference"' in r.text
        assert "samtune_jobs" not in families and "samtune_queue_depth" not in families
    with TestClient(create_inference_app(settings), client=("192.0.2.7", 40000)) as remote:
        assert remote.get("/metrics").status_code == 403
