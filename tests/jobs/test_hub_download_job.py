"""Meta's weights on first use, through the job API: with a Hugging Face token configured and HF_HUB_OFFLINE
unset, `facebook/sam3` is offered before it is here, and the first job that names it downloads it, as a phase
of its own (bytes, with an ETA) between two events; a gated-licence refusal fails the job with what to do.

The Hub is a local stand-in speaking its HTTP API (tests/support/hub.py), serving the bundled tiny model's
files as `facebook/sam3` so that the job trains in seconds; huggingface_hub's real client downloads them.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.hub import HubStandIn, point_the_hub_client_at
from tests.support.jobs import JobKit
from trainer.base_model import CARD_FILE, EMBEDDED_BASE_DIR, META_BASE

GOOD, REFUSED = "hf_granted_token_0123456789", "hf_refused_token_9876543210"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStandIn]:
    repo = tmp_path / "repo"
    shutil.copytree(
        EMBEDDED_BASE_DIR, repo, ignore=shutil.ignore_patterns(CARD_FILE, "*.png", "*.csv", "*.md")
    )
    # Slowed to about 5 s for its 20 MB, so that the job is seen inside its download phase.
    server = HubStandIn(META_BASE, repo, granted={GOOD}, chunk_delay=0.06).start()
    point_the_hub_client_at(server, tmp_path / "hub-cache", monkeypatch)
    monkeypatch.delenv("SAMTUNE_SAM3_PATH", raising=False)
    yield server
    server.stop()


def _meta(kit: JobKit) -> dict[str, Any]:
    r = kit.client.get("/api/v1/base-models", headers=kit.auth)
    assert r.status_code == 200, r.text
    return next(m for m in r.json() if m["name"] == META_BASE)


def _events(kit: JobKit, job_id: str) -> list[dict[str, Any]]:
    return list(kit.get(job_id)["events"])


def test_the_first_job_on_facebook_sam3_downloads_it_as_a_phase_then_trains(
    jobs_kit: JobKit, hub: HubStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = jobs_kit
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN", GOOD)
    meta = _meta(kit)
    assert meta["available"] and meta["download"] and not meta["default"], (
        meta
    )  # offered, never chosen unasked

    # The memory check counts facebook/sam3 at its real size: this test's worker is told it has room.
    client = kit.make_client(kit.make_settings(worker_memory_bytes=64 * 2**30))
    job = kit.create(client=client, base_model=META_BASE)
    assert job["base_model"] == META_BASE

    result: list[str] = []
    worker = threading.Thread(target=lambda: result.append(kit.run(job["id"])), daemon=True)
    worker.start()
    phase = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and worker.is_alive():
        progress = kit.get(job["id"]).get("progress") or {}
        if (progress.get("phase") or {}).get("name") == "downloading":
            phase = progress["phase"]
            break
        time.sleep(0.2)
    worker.join(300)
    assert result == ["succeeded"], (result, kit.get(job["id"]).get("error"))
    assert phase is not None, "the job was never seen in its downloading phase"
    assert phase["total"] > 10_000_000 and 0 <= phase["done"] <= phase["total"]

    events = {e["kind"]: e for e in _events(kit, job["id"])}
    start, done = events["download_start"], events["download"]
    assert start["data"]["bytes"] == done["data"]["bytes"] == phase["total"]
    assert "facebook/sam3" in done["message"] and "downloaded" in done["message"]
    assert all(token == GOOD for _, _, token in hub.requests)

    # Here now: the catalog says so, and Meta's SAM 3 becomes the default.
    meta = _meta(kit)
    assert meta["available"] and not meta["download"] and meta["default"], meta


def test_a_gated_refusal_fails_the_job_saying_what_to_do(
    jobs_kit: JobKit, hub: HubStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = jobs_kit
    monkeypatch.setenv("HF_TOKEN", REFUSED)
    client = kit.make_client(kit.make_settings(worker_memory_bytes=64 * 2**30))
    job = kit.create(client=client, base_model=META_BASE)
    assert kit.run(job["id"]) == "failed"
    failed = kit.get(job["id"])
    error = failed["error"]
    assert "gated" in error and f"{hub.url}/facebook/sam3" in error and "accept the licence" in error, error
    everything = error + repr(_events(kit, job["id"]))
    assert REFUSED not in everything


def test_without_a_token_or_with_hf_hub_offline_it_is_not_offered(
    jobs_kit: JobKit, hub: HubStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    kit = jobs_kit
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hub.directory / "no-login" / "token"))
    meta = _meta(kit)
    assert not meta["available"] and "HF_TOKEN" in meta["unavailable_reason"]
    monkeypatch.setenv("HF_TOKEN", GOOD)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    meta = _meta(kit)
    assert not meta["available"] and "HF_HUB_OFFLINE" in meta["unavailable_reason"]
    r = kit.client.post("/api/v1/jobs", json=kit.job_body(base_model=META_BASE), headers=kit.auth)
    assert r.status_code == 422 and "HF_HUB_OFFLINE" in r.text
    assert not hub.requests
