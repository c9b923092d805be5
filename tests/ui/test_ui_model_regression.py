"""The model page of a model that scored below its base (issue 17), in real Chromium: a notice with both mask APs
saying that the version's Roboflow-style id keeps naming the previous model, and a Promote button that calls the
API (with the page's CSRF token) and says it was promoted.

The model is a row inserted directly (no training: what is tested is the page), served by the app in a thread on
the jobs kit's SQLite database, not by `samtune up`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from app.core.db import transaction, utcnow
from app.jobs.tables import TrainingJob
from app.keys.service import create_key_for_workspace
from app.models import service
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


def _model(kit: JobKit, base: float, tuned: float) -> str:
    job = kit.create()
    results = {
        "best_valid": None,
        "test": {"base": {"summary": {"segm_AP": base}}, "fine_tuned": {"summary": {"segm_AP": tuned}}},
    }
    with transaction(kit.factory) as session:
        row = session.get(TrainingJob, uuid.UUID(job["id"]))
        assert row is not None
        model = service.register_model(session, row, uuid.uuid4(), "0" * 64, results)
        model.created_at = utcnow() - timedelta(seconds=1)
        return str(model.id)


@pytest.mark.parametrize("jobs_kit", ["sqlite"], indirect=True)
def test_regression_notice_and_promote(jobs_kit: JobKit, served: tuple[str, str], browser: Any) -> None:
    url, key = served
    model_id = _model(jobs_kit, 0.8, 0.125)
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

        page.goto(f"/models/{model_id}")
        notice = page.locator("#model-regression")
        expect(notice).to_be_visible()
        expect(notice).to_contain_text("scored below its base model on the test split")
        expect(page.locator("#regression-tuned")).to_have_text("0.125")
        expect(page.locator("#regression-base")).to_have_text("0.800")
        expect(page.locator("#regression-state")).to_contain_text("keeps naming the previous model")

        page.get_by_role("button", name="Promote").click()
        expect(page.locator("#regression-state")).to_contain_text("was promoted")
        expect(page.get_by_role("button", name="Promote")).to_have_count(0)
        shown = jobs_kit.client.get(f"/api/v1/models/{model_id}", headers=jobs_kit.auth).json()
        assert (shown["regression"], shown["promoted"]) == (True, True)

        # Reloaded, the page still says so; a model that did not regress shows no notice.
        page.reload()
        expect(page.locator("#regression-state")).to_contain_text("was promoted")
        page.goto(f"/models/{_model(jobs_kit, 0.8, 0.8)}")
        expect(page.locator("#model-facts")).to_be_visible()
        expect(notice).to_be_hidden()
        assert not console.errors, console.errors
    finally:
        context.close()
