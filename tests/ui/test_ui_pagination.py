"""The list pages page through (issue 20), in real Chromium: datasets, jobs, models, keys and a dataset's
versions each show 20 rows, "Showing 1–20 of 21 ...", and Previous/Next links that carry the offset in the
address, so that the two pages together show every row once and a reload stays on the page.

The rows are made through the API and, for models, inserted as a finished job registers them (no training:
what is tested is the pages), served by the app in a thread on the jobs kit's SQLite database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.support.jobs import JobKit
from tests.support.lists import fill_workspace
from tests.support.servers import LiveServer
from tests.ui.conftest import DESKTOP, ROOT, ConsoleWatch

ROWS = 21  # the pages show 20 (app/ui/static/js/pager.js PAGE_SIZE): two pages


@pytest.fixture
def served(jobs_kit: JobKit) -> Iterator[str]:
    settings = jobs_kit.make_settings(ui_vendor_dir=ROOT / "node_modules")
    with LiveServer(jobs_kit.make_app(settings)) as live:
        yield live.url


# page, the rows' locator, how a row names its object, the noun of "Showing ... of N <noun>"
def _pages(dataset_id: str) -> list[tuple[str, str, str, str, str]]:
    return [
        ("/datasets", "#datasets-body tr", "a", "href", "datasets"),
        ("/jobs", "#jobs-body tr", "", "data-job", "jobs"),
        ("/models", "#models-body tr", "", "data-model", "models"),
        ("/keys", "#keys-body tr", "", "data-key-id", "keys"),
        (f"/datasets/{dataset_id}", "#versions-body tr", "a", "href", "versions"),
    ]


def _ids(page: Any, rows: str, inner: str, attribute: str) -> list[str]:
    found = page.locator(f"{rows} {inner}" if inner else rows)
    return [str(found.nth(i).get_attribute(attribute)).rsplit("/", 1)[-1] for i in range(found.count())]


@pytest.mark.parametrize("jobs_kit", ["sqlite"], indirect=True)
def test_every_list_page_pages_through(jobs_kit: JobKit, served: str, browser: Any) -> None:
    auth = jobs_kit.new_auth()
    dataset_id, made = fill_workspace(jobs_kit, auth, ROWS)
    key = auth["Authorization"].removeprefix("Bearer ")
    console = ConsoleWatch()
    context = browser.new_context(viewport=DESKTOP, base_url=served)
    page = context.new_page()
    page.on("console", lambda msg: console.record(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: console.record(f"pageerror: {exc}"))
    made_by_page = {
        "datasets": made["/api/v1/datasets"],
        "jobs": made["/api/v1/jobs"],
        "models": made["/api/v1/models"],
        "keys": made["/api/v1/keys"],
        "versions": made[f"/api/v1/datasets/{dataset_id}/versions"],
    }
    try:
        page.goto("/signin")
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda u: "/signin" not in u)

        for path, rows, inner, attribute, noun in _pages(dataset_id):
            param = "versions_offset" if noun == "versions" else "offset"
            pager = page.locator(f"#{noun}-pager")
            page.goto(path)
            expect(pager).to_contain_text(f"Showing 1–20 of {ROWS} {noun}")
            expect(page.locator(rows)).to_have_count(20)
            expect(pager.get_by_role("link", name="Previous")).to_have_count(0)
            first = _ids(page, rows, inner, attribute)

            pager.get_by_role("link", name="Next").click()
            page.wait_for_url(lambda u, p=param: f"{p}=20" in u)
            expect(pager).to_contain_text(f"Showing 21–21 of {ROWS} {noun}")
            expect(page.locator(rows)).to_have_count(1)
            expect(pager.get_by_role("link", name="Next")).to_have_count(0)
            second = _ids(page, rows, inner, attribute)
            assert sorted(first + second) == sorted(made_by_page[noun]), (noun, first, second)

            page.reload()  # the offset is in the address: a reload stays on the second page
            expect(pager).to_contain_text(f"Showing 21–21 of {ROWS} {noun}")
            pager.get_by_role("link", name="Previous").click()
            page.wait_for_url(lambda u, p=param: p not in u)
            expect(pager).to_contain_text(f"Showing 1–20 of {ROWS} {noun}")

        # A filter starts again from its first page, and the pager counts what it keeps.
        page.goto("/jobs?offset=20")
        expect(page.locator("#jobs-pager")).to_contain_text(f"Showing 21–21 of {ROWS} jobs")
        page.get_by_label("Status").select_option("queued")
        page.wait_for_url(lambda u: "offset" not in u and "status=queued" in u)
        expect(page.locator("#jobs-pager")).to_contain_text(f"Showing 1–20 of {ROWS} queued jobs")
        assert not console.errors, console.errors
    finally:
        context.close()
