"""Every list of the API pages the same way (app/core/pagination.py, issue 20): `{items, total, limit, offset}`,
newest first then by id, so that walking the pages meets every row exactly once; the bounds of `limit` and
`offset` are 422s naming them; `total` counts the caller's workspace only; and the database does the paging (a
COUNT and a LIMIT/OFFSET query), on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from app.core.pagination import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET
from tests.support.jobs import JobKit
from tests.support.lists import fill_workspace

ROWS = 7  # of each kind in the workspace under test: three pages of 3


@dataclass
class Lists:
    auth: dict[str, str]
    dataset_id: str
    made: dict[str, set[str]]  # list path -> the ids made in the workspace under test


@pytest.fixture(scope="module")
def lists(jobs_kit: JobKit) -> Lists:
    auth = jobs_kit.new_auth()
    dataset_id, made = fill_workspace(jobs_kit, auth, ROWS)
    # Another workspace with one of everything, which no count of the first may include.
    fill_workspace(jobs_kit, jobs_kit.new_auth(), 1)
    return Lists(auth=auth, dataset_id=dataset_id, made=made)


PATHS = [
    "/api/v1/datasets",
    "/api/v1/datasets/{dataset_id}/versions",
    "/api/v1/jobs",
    "/api/v1/models",
    "/api/v1/keys",
    "/api/v1/batch-predictions",
]


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL every engine runs meanwhile (the app builds its own engine from the settings)."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement.lower())

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


@pytest.mark.parametrize("path", PATHS)
def test_pages_cover_the_list_once_newest_first(jobs_kit: JobKit, lists: Lists, path: str) -> None:
    url = path.format(dataset_id=lists.dataset_id)
    walked: list[dict] = []
    offset = 0
    while True:
        with statements() as sql:
            r = jobs_kit.client.get(url, params={"limit": 3, "offset": offset}, headers=lists.auth)
        assert r.status_code == 200, r.text
        page = r.json()
        assert set(page) == {"items", "total", "limit", "offset"}
        assert (page["total"], page["limit"], page["offset"]) == (ROWS, 3, offset), (
            "another workspace counted"
        )
        assert len(page["items"]) == min(3, ROWS - offset)
        # The database pages: a COUNT, and the page itself with LIMIT/OFFSET.
        assert any("count(" in s for s in sql) and any("limit" in s and "offset" in s for s in sql), sql
        walked += page["items"]
        offset += 3
        if offset >= ROWS:
            break
    ids = [item["id"] for item in walked]
    assert len(ids) == len(set(ids)) == ROWS, "a row on two pages, or on none"
    assert set(ids) == lists.made[path.format(dataset_id=lists.dataset_id)]
    whole = jobs_kit.client.get(url, params={"limit": MAX_LIMIT}, headers=lists.auth).json()
    assert [item["id"] for item in whole["items"]] == ids, "one order, page after page"
    created = [item["created_at"] for item in walked]
    assert created == sorted(created, reverse=True), "newest first"
    if "versions" in path:
        assert [v["number"] for v in walked] == list(range(ROWS, 0, -1))
    # Past the end: an empty page that still says how many there are.
    beyond = jobs_kit.client.get(url, params={"offset": ROWS}, headers=lists.auth).json()
    assert (beyond["items"], beyond["total"], beyond["limit"]) == ([], ROWS, DEFAULT_LIMIT)


@pytest.mark.parametrize("path", [*PATHS, "/api/v1/datasets/{dataset_id}/images"])
def test_bounds_are_422s_naming_them(jobs_kit: JobKit, lists: Lists, path: str) -> None:
    url = path.format(dataset_id=lists.dataset_id)
    for params, fragment in [
        ({"limit": MAX_LIMIT + 1}, f"query.limit: Input should be less than or equal to {MAX_LIMIT}"),
        ({"limit": 0}, "query.limit: Input should be greater than or equal to 1"),
        ({"offset": -1}, "query.offset: Input should be greater than or equal to 0"),
        ({"offset": MAX_OFFSET + 1}, f"query.offset: Input should be less than or equal to {MAX_OFFSET}"),
        ({"limit": "ten"}, "query.limit: Input should be a valid integer"),
    ]:
        r = jobs_kit.client.get(url, params=params, headers=lists.auth)
        assert r.status_code == 422, (params, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert fragment in r.json()["detail"], (params, r.json())
    assert jobs_kit.client.get(url, params={"limit": MAX_LIMIT}, headers=lists.auth).status_code == 200


def test_filters_count_what_they_keep(jobs_kit: JobKit, lists: Lists) -> None:
    """`total` of a filtered list counts the filtered rows: the jobs' status and dataset, a model's batches."""
    kit, auth = jobs_kit, lists.auth
    jobs = kit.client.get("/api/v1/jobs", params={"limit": 2}, headers=auth).json()["items"]
    for job in jobs:
        assert kit.client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=auth).status_code == 202
    cancelled = kit.client.get(
        "/api/v1/jobs", params={"status": "cancelled", "limit": 1}, headers=auth
    ).json()
    assert cancelled["total"] == 2 and [j["id"] for j in cancelled["items"]] == [jobs[0]["id"]]
    queued = kit.client.get("/api/v1/jobs", params={"status": "queued", "offset": 1}, headers=auth).json()
    assert queued["total"] == ROWS - 2 and len(queued["items"]) == ROWS - 3
    of_dataset = kit.client.get("/api/v1/jobs", params={"dataset_id": lists.dataset_id}, headers=auth).json()
    assert of_dataset["total"] == ROWS
    batches = kit.client.get("/api/v1/batch-predictions", headers=auth).json()["items"]
    model_id = batches[0]["model_id"]
    mine = kit.client.get("/api/v1/batch-predictions", params={"model_id": model_id}, headers=auth).json()
    assert mine["total"] == ROWS and {b["model_id"] for b in mine["items"]} == {model_id}
    assert batches[0]["results_url"] is None  # queued: no results yet
    other_model = kit.client.get(
        "/api/v1/batch-predictions", params={"model_id": str(uuid.uuid4())}, headers=auth
    ).json()
    assert other_model == {"items": [], "total": 0, "limit": DEFAULT_LIMIT, "offset": 0}


def test_the_images_list_answers_as_before(jobs_kit: JobKit, lists: Lists) -> None:
    """The images list moved onto the shared page: same defaults, same order (upload order, oldest first)."""
    url = f"/api/v1/datasets/{lists.dataset_id}/images"
    whole = jobs_kit.client.get(url, headers=lists.auth).json()
    assert (whole["total"], whole["limit"], whole["offset"]) == (4, DEFAULT_LIMIT, 0) and len(
        whole["items"]
    ) == 4
    second = jobs_kit.client.get(url, params={"limit": 2, "offset": 2}, headers=lists.auth).json()
    assert second["items"] == whole["items"][2:] and second["total"] == 4
