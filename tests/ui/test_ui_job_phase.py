"""The job page while a decoder-mode job caches its image embeddings (issue 17), in real Chromium: the progress
line names the phase, counts its images and gives its own ETA; once training began it shows steps again.

The job is a row set directly (no training: what is tested is the page), served by the app in a thread on the
jobs kit's SQLite database, as tests/ui/test_ui_model_regression.py does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from app.core.db import transaction
from app.jobs.tables import TrainingJob
from app.keys.service import create_key_for_workspace
from tests.support.jobs import JobKit
from tests.support.servers import LiveServer
from tests.ui.conftest import DESKTOP, ROOT, ConsoleWatch


@pytest.fixture
def served(jobs_kit: JobKit) -> Iterator[tuple[str, str]]:
    """The app on the kit's database at a free port, and a key of the kit's workspace."""
    settings = jobs_kit.make_settings(ui_vendor_dir=ROOT / "node_modules")
    with LiveServer(jobs_kit.make_app(settings)) as live:
        with transaction(jobs_kit.factory) as session:
            _, key = create_key_for_workspace(session, "jobs-kit")
        yield live.url, key


@pytest.mark.parametrize("jobs_kit", ["sqlite"], indirect=True)
def test_the_job_page_shows_the_caching_phase_and_its_eta(
    jobs_kit: JobKit, served: tuple[str, str], browser: Any
) -> None:
    url, key = served
    kit = jobs_kit
    job = kit.create()
    caching = {"name": "caching", "done": 37, "total": 120, "eta_seconds": 95.0}
    kit.update(
        TrainingJob, job["id"], status="running", progress={"step": 0, "total_steps": 2, "phase": caching}
    )
    console = ConsoleWatch()
    context = browser.new_context(viewport=DESKTOP, base_url=url)
    page = context.new_page()
    page.on("console", lambda msg: console.record(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: console.record(f"pageerror: {exc}"))
    try:
        page.goto("/signin")
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda u: "/signin" not in u)

        page.goto(f"/jobs/{job['id']}")
        text = page.locator("#progress-text")
        expect(text).to_contain_text("caching image embeddings 37/120")
        expect(text).to_contain_text("about 1 min 35 s left")
        expect(text).to_have_attribute("data-phase", "caching")
        expect(page.locator("#job-progress")).to_have_attribute("max", "120")

        # Training began: the row's phase is null and the page, live or reloaded, shows steps.
        kit.update(TrainingJob, job["id"], progress={"step": 1, "total_steps": 2, "phase": None})
        page.reload()
        expect(text).to_contain_text("step 1 of 2")
        expect(text).not_to_contain_text("caching")
        assert not console.errors, console.errors
    finally:
        context.close()
