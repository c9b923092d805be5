"""A decoder-mode job's caching phase (the frozen ViT over every image before step 0), seen from outside:
the job object's `progress.phase` while it runs, the live feed's progress snapshots, the events at its start
and end, and the preview's estimate that counts it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from app.jobs.feed import stream_key
from tests.support.jobs import JobKit
from trainer.vision_cache import VisionCache

IMAGES = 2 + 1 + 1  # the kit's version: train, valid, test; every split is cached
PAUSE_AT = 2


def _wait_for(what: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := what():
            return value
        time.sleep(0.1)
    raise AssertionError("not seen in time")


def _hold_fill_at(image: int, monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Holds the caching phase once its `image`-th image is cached: the first event is set when it gets there,
    and it goes on once the second is set (or after 120 s)."""
    reached, release = threading.Event(), threading.Event()
    fill = VisionCache.fill

    def held_fill(self: VisionCache, *args: Any, on_image: Callable[[int], None], **kw: Any) -> None:
        def on(n: int) -> None:
            on_image(n)
            if n == image:
                reached.set()
                release.wait(120)

        fill(self, *args, on_image=on, **kw)

    monkeypatch.setattr(VisionCache, "fill", held_fill)
    return reached, release


def test_a_decoder_job_shows_its_caching_phase_while_it_runs(
    jobs_kit: JobKit, feed_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = jobs_kit
    # The phase is held after its 2nd image until the test has seen it through the API.
    reached, release = _hold_fill_at(PAUSE_AT, monkeypatch)
    job = kit.create()
    result: list[str] = []
    worker = threading.Thread(
        target=lambda: result.append(kit.run(job["id"], kit.redis_settings())), daemon=True
    )
    worker.start()
    try:
        assert reached.wait(120), "the caching phase never reached its 2nd image"
        # The heartbeat writes the phase to the row within a period; the API reads it from there.
        running = _wait_for(
            lambda: (
                (j := kit.get(job["id"]))["progress"]["phase"]
                and j["progress"]["phase"]["done"] == PAUSE_AT
                and j
            )
        )
    finally:
        release.set()
        worker.join(300)
    assert result == ["succeeded"]

    assert running["status"] == "running"
    phase = running["progress"]["phase"]
    assert phase["name"] == "caching" and phase["total"] == IMAGES
    assert isinstance(phase["eta_seconds"], float) and phase["eta_seconds"] >= 0
    assert running["progress"]["step"] == 0
    kinds = [e["kind"] for e in running["events"]]
    assert "cache_start" in kinds and "cache" not in kinds, kinds

    done = kit.get(job["id"])
    assert done["progress"]["phase"] is None, "training began: the phase is over"
    events = {e["kind"]: e for e in done["events"]}
    assert events["cache_start"]["data"]["images"] == IMAGES
    assert events["cache"]["data"]["images"] == IMAGES and events["cache"]["data"]["seconds"] >= 0
    assert events["cache_start"]["id"] < events["cache"]["id"]

    # The live feed: progress snapshots with the phase, its count never going back, from 0 to the total, then
    # one without it once training began.
    client = redis.Redis.from_url(feed_redis)
    entries = client.xrange(stream_key(job["id"]))
    client.close()
    progress = [json.loads(f[b"data"]) for _, f in entries if f[b"kind"] == b"progress"]
    phases = [p["phase"] for p in progress if p.get("phase")]
    counts = [p["done"] for p in phases]
    assert counts[0] == 0 and counts[-1] == IMAGES and counts == sorted(counts), counts
    assert phases[-1]["eta_seconds"] == 0.0 and {p["total"] for p in phases} == {IMAGES}
    last_phase = max(i for i, p in enumerate(progress) if p.get("phase"))
    assert any("phase" in p and p["phase"] is None for p in progress[last_phase + 1 :])


def test_a_cancel_during_the_caching_phase_ends_the_job_there(
    jobs_kit: JobKit, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """At SAM 3's size the phase lasts minutes: a cancel is obeyed between two images, not at step 0."""
    kit = jobs_kit
    reached, release = _hold_fill_at(PAUSE_AT, monkeypatch)
    job = kit.create()
    own_cache = kit.make_settings(data_dir=tmp_path / "data")  # an empty embeddings cache: the phase runs
    result: list[str] = []
    worker = threading.Thread(target=lambda: result.append(kit.run(job["id"], own_cache)), daemon=True)
    worker.start()
    try:
        assert reached.wait(120), "the caching phase never reached its 2nd image"
        r = kit.client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=kit.auth)
        assert r.status_code == 202, r.text
        # The worker's heartbeat (every second here) reads the request from the row: three periods of margin.
        time.sleep(3 * kit.settings.job_heartbeat_seconds)
    finally:
        release.set()
        worker.join(300)
    assert result == ["cancelled"]
    kinds = [e["kind"] for e in kit.get(job["id"])["events"]]
    assert "cache_start" in kinds and "cache" not in kinds, kinds  # it ended inside the phase


def test_the_preview_counts_the_caching_phase_in_decoder_mode_only(jobs_kit: JobKit) -> None:
    kit = jobs_kit
    decoder = kit.client.post("/api/v1/jobs/preview", json=kit.job_body(), headers=kit.auth)
    full = kit.client.post("/api/v1/jobs/preview", json=kit.job_body(mode="full"), headers=kit.auth)
    assert decoder.status_code == full.status_code == 200, decoder.text + full.text
    basis = decoder.json()["estimate"]["basis"]
    assert "caching image embeddings" in basis and f"{IMAGES} images" in basis, basis
    assert "caching" not in full.json()["estimate"]["basis"]
