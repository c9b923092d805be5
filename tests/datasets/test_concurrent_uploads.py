"""Zips uploaded to one dataset at the same time, sharing pictures and bringing the same new classes: every
upload answers 201, each picture is stored once, and no upload's rollback deletes a file another one stored (one
object key per content). Without the dataset's lock two of them inserted the same picture or class and one
answered 500."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.factories import CocoBuilder, write_zip
from tests.support.jobs import JobKit
from tests.support.servers import LiveServer

UPLOADS = 6


def _zip(path: Path, n: int) -> bytes:
    """Three pictures every zip holds, one of its own; classes every zip brings, one of its own."""
    coco = CocoBuilder(["shared a", "shared b", f"own {n}"])
    for i in range(3):
        image = coco.add_image(f"shared{i}.jpg", seed=500 + i)
        coco.add_box_polygon(image, "shared a" if i % 2 else "shared b", 5, 5, 20, 15)
    image = coco.add_image(f"own{n}.jpg", seed=600 + n)
    coco.add_box_polygon(image, f"own {n}", 5, 5, 20, 15)
    entries: dict[str, bytes | str | dict] = {"annotations.json": coco.to_json()}
    entries.update({f"images/{name}": data for name, data in coco.files.items()})
    return write_zip(path / f"upload{n}.zip", entries).read_bytes()


def test_concurrent_zips_with_shared_pictures_and_classes(jobs_kit: JobKit, tmp_path: Path) -> None:
    auth = jobs_kit.auth
    made = jobs_kit.client.post(
        "/api/v1/datasets", json={"name": f"race-{uuid.uuid4().hex[:6]}"}, headers=auth
    )
    assert made.status_code == 201, made.text
    dataset = made.json()["id"]
    zips = [_zip(tmp_path, n) for n in range(UPLOADS)]
    with (
        LiveServer(jobs_kit.make_app(jobs_kit.settings)) as server,
        httpx.Client(base_url=server.url, timeout=120) as http,
    ):

        def upload(n: int) -> httpx.Response:
            return http.post(f"/api/v1/datasets/{dataset}/uploads", headers=auth,
                             files={"file": (f"upload{n}.zip", zips[n], "application/zip")})  # fmt: skip

        with ThreadPoolExecutor(max_workers=UPLOADS) as pool:
            answers = list(pool.map(upload, range(UPLOADS)))
    assert [a.status_code for a in answers] == [201] * UPLOADS, [a.text[:300] for a in answers]

    got = jobs_kit.client.get(f"/api/v1/datasets/{dataset}", headers=auth).json()
    assert got["image_count"] == 3 + UPLOADS
    assert sorted(c["name"] for c in got["classes"]) == sorted(
        ["shared a", "shared b", *(f"own {n}" for n in range(UPLOADS))]
    )
    images = jobs_kit.client.get(f"/api/v1/datasets/{dataset}/images", headers=auth,
                                 params={"limit": 100}).json()["items"]  # fmt: skip
    assert len(images) == 3 + UPLOADS
    for image in images:  # every stored picture is still there: no rollback took another upload's file
        shown = jobs_kit.client.get(f"/api/v1/datasets/{dataset}/images/{image['id']}/file", headers=auth)
        assert shown.status_code == 200 and shown.content[:2] == b"\xff\xd8", image
