"""Every kind of bad upload answers 4xx problem+json naming the culprit, and leaves the dataset exactly
as it was: same rows, same objects, no staging left behind."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.core.storage import make_storage
from app.settings import Settings
from tests.factories import CocoBuilder, jpeg_bytes, simple_coco_zip


def _coco_with(
    mutate: Callable[[dict], None] | None = None, image_bytes: bytes | None = None
) -> dict[str, object]:
    coco = CocoBuilder(["cat"])
    image_id = coco.add_image("a.jpg")
    coco.add_box_polygon(image_id, "cat", 2, 2, 10, 10)
    doc = coco.to_json()
    if mutate:
        mutate(doc)
    return {"annotations.json": doc, "images/a.jpg": image_bytes or coco.files["a.jpg"]}


def _zip_bytes(entries: dict[str, object]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, json.dumps(data) if isinstance(data, dict) else data)
    return buf.getvalue()


def _symlink_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("images/link.jpg")
        info.external_attr = (0o120777 << 16) | 0x20
        zf.writestr(info, "/etc/passwd")
        zf.writestr("images/b.jpg", jpeg_bytes(8, 8))
    return buf.getvalue()


def _bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("images/zeros.jpg", b"\0" * (60 * 2**20))
    return buf.getvalue()


def _gif() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(out, format="GIF")
    return out.getvalue()


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("1", (width, height)).save(out, format="PNG")
    return out.getvalue()


def _drop_key(doc: dict) -> None:
    del doc["images"]


def _missing_image(doc: dict) -> None:
    doc["annotations"][0]["image_id"] = 99


def _unknown_category(doc: dict) -> None:
    doc["annotations"][0]["category_id"] = 42


def _missing_file(doc: dict) -> None:
    doc["images"][0]["file_name"] = "not-in-zip.jpg"


VALID = _zip_bytes(_coco_with())

# (case id, zip bytes, expected status, a fragment the detail or source must contain, settings overrides)
CASES: list[tuple[str, bytes, int, str, dict]] = [
    ("not-a-zip", b"this is not a zip at all", 400, "zip", {}),
    ("truncated-zip", VALID[: len(VALID) // 2], 400, "zip", {}),
    ("empty-zip", _zip_bytes({}), 400, "empty", {}),
    ("dotdot-entry", _zip_bytes({"../evil.jpg": jpeg_bytes(8, 8)}), 400, "../evil.jpg", {}),
    ("absolute-entry", _zip_bytes({"/etc/evil.jpg": jpeg_bytes(8, 8)}), 400, "/etc/evil.jpg", {}),
    ("symlink-entry", _symlink_zip(), 400, "images/link.jpg", {}),
    ("zip-bomb-ratio", _bomb(), 413, "images/zeros.jpg", {}),
    ("zip-bomb-total", VALID, 413, "", {"max_zip_uncompressed_bytes": 200}),
    ("too-many-entries", _zip_bytes({f"images/{i}.jpg": jpeg_bytes(4, 4, i) for i in range(12)}), 400, "10",
     {"max_zip_entries": 10}),
    ("invalid-json", _zip_bytes({"annotations.json": "{not json", "images/a.jpg": jpeg_bytes(8, 8)}), 422,
     "annotations.json", {}),
    ("json-not-coco", _zip_bytes(_coco_with(_drop_key)), 422, "annotations.json", {}),
    ("annotation-missing-image", _zip_bytes(_coco_with(_missing_image)), 422, "99", {}),
    ("annotation-unknown-category", _zip_bytes(_coco_with(_unknown_category)), 422, "42", {}),
    ("image-missing-from-zip", _zip_bytes(_coco_with(_missing_file)), 422, "not-in-zip.jpg", {}),
    ("image-does-not-decode", _zip_bytes(_coco_with(image_bytes=b"\xff\xd8\xff\xe0 garbage")), 422, "a.jpg", {}),
    ("decompression-bomb", _zip_bytes(_coco_with(image_bytes=_png(3000, 3000))), 422, "a.jpg",
     {"max_image_pixels": 1_000_000}),
    ("unsupported-format", _zip_bytes(_coco_with(image_bytes=_gif())), 422, "a.jpg", {}),
]  # fmt: skip


def _state(client: TestClient, auth: dict[str, str], settings: Settings, dataset_id: str) -> tuple:
    ds = client.get(f"/api/v1/datasets/{dataset_id}", headers=auth).json()
    images = client.get(f"/api/v1/datasets/{dataset_id}/images", params={"limit": 500}, headers=auth).json()
    objects = sorted(make_storage(settings).list("workspaces/"))
    return ds, images, objects


@pytest.mark.parametrize(
    ("case", "payload", "status", "fragment", "overrides"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_upload_changes_nothing(
    make_client,
    settings: Settings,
    auth: dict[str, str],
    tmp_path: Path,
    case: str,
    payload: bytes,
    status: int,
    fragment: str,
    overrides: dict,
) -> None:
    # A dataset with content, made under the default limits; the bad upload runs under the case's limits.
    client = make_client(settings)
    ds = client.post("/api/v1/datasets", json={"name": "d"}, headers=auth).json()
    ok = client.post(
        f"/api/v1/datasets/{ds['id']}/uploads",
        files={"file": ("ok.zip", simple_coco_zip(tmp_path / "ok.zip", 2).read_bytes())},
        headers=auth,
    )
    assert ok.status_code == 201, ok.text
    before = _state(client, auth, settings, ds["id"])

    client = make_client(settings.model_copy(update=overrides))
    r = client.post(
        f"/api/v1/datasets/{ds['id']}/uploads", files={"file": (f"{case}.zip", payload)}, headers=auth
    )
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["status"] == status and problem["detail"]
    assert fragment in problem["detail"] + problem.get("source", ""), problem

    assert _state(client, auth, settings, ds["id"]) == before
    assert list(settings.tmp_dir.iterdir()) == []


def test_body_over_the_limit_is_413_before_reading(
    make_client, settings: Settings, auth: dict[str, str]
) -> None:
    settings = settings.model_copy(update={"max_upload_bytes": 50_000})
    client = make_client(settings)
    ds = client.post("/api/v1/datasets", json={"name": "d"}, headers=auth).json()
    big = b"x" * 200_000
    r = client.post(f"/api/v1/datasets/{ds['id']}/uploads", files={"file": ("big.zip", big)}, headers=auth)
    assert r.status_code == 413 and "SAMTUNE_MAX_UPLOAD_BYTES" in r.json()["detail"]

    # No Content-Length (chunked): refused once the count passes the limit.
    def chunks():
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.zip"\r\n\r\n'
        for _ in range(20):
            yield b"x" * 10_000
        yield b"\r\n--b--\r\n"

    r = client.post(
        f"/api/v1/datasets/{ds['id']}/uploads",
        content=chunks(),
        headers={**auth, "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert r.status_code == 413
    assert client.get(f"/api/v1/datasets/{ds['id']}", headers=auth).json()["image_count"] == 0


def test_upload_needs_multipart_file(client: TestClient, auth: dict[str, str]) -> None:
    ds = client.post("/api/v1/datasets", json={"name": "d"}, headers=auth).json()
    r = client.post(f"/api/v1/datasets/{ds['id']}/uploads", content=b"PK..", headers=auth)
    assert r.status_code == 415 and "multipart" in r.json()["detail"]
    r = client.post(
        f"/api/v1/datasets/{ds['id']}/uploads", data={"other": "1"}, files={"x": ("a", b"1")}, headers=auth
    )
    assert r.status_code == 422 and "'file'" in r.json()["detail"]


def test_storage_failure_midway_leaves_nothing(
    client: TestClient, auth: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    """If storing fails after some images were written, those objects are removed and no row stays."""
    storage = client.app.state.storage
    real_put = storage.put_file
    calls = {"n": 0}

    def failing_put(key: str, path: Path, *, move: bool = False) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        real_put(key, path, move=move)

    storage.put_file = failing_put
    ds = client.post("/api/v1/datasets", json={"name": "d"}, headers=auth).json()
    r = client.post(
        f"/api/v1/datasets/{ds['id']}/uploads",
        files={"file": ("c.zip", simple_coco_zip(tmp_path / "c.zip", 5).read_bytes())},
        headers=auth,
    )
    assert r.status_code == 500
    assert calls["n"] == 3
    assert client.get(f"/api/v1/datasets/{ds['id']}", headers=auth).json()["image_count"] == 0
    assert list(make_storage(settings).list("workspaces/")) == []
    assert list(settings.tmp_dir.iterdir()) == []
