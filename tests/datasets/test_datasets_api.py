"""Datasets over HTTP: CRUD, uploads merging, health, images and previews, workspace isolation."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

from app.core.storage import make_storage
from app.settings import Settings
from tests.factories import roboflow_zip, simple_coco_zip


def _create(client: TestClient, auth: dict[str, str], name: str = "Pets") -> dict:
    r = client.post("/api/v1/datasets", json={"name": name}, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()


def _upload(client: TestClient, auth: dict[str, str], dataset_id: str, path: Path, **data: str):
    with open(path, "rb") as f:
        return client.post(
            f"/api/v1/datasets/{dataset_id}/uploads",
            files={"file": (path.name, f, "application/zip")},
            data=data,
            headers=auth,
        )


def test_crud(client: TestClient, auth: dict[str, str]) -> None:
    ds = _create(client, auth, "My Pets!")
    assert ds["slug"] == "my-pets" and ds["image_count"] == 0 and ds["classes"] == []
    assert _create(client, auth, "My Pets")["slug"] == "my-pets-2"

    r = client.patch(f"/api/v1/datasets/{ds['id']}", json={"name": "Renamed"}, headers=auth)
    assert r.status_code == 200 and r.json()["name"] == "Renamed" and r.json()["slug"] == "my-pets"
    listed = client.get("/api/v1/datasets", headers=auth).json()["items"]
    assert [d["name"] for d in listed] == ["My Pets", "Renamed"], "newest first"
    # Times read back from the database are UTC with their offset, on SQLite too.
    assert all(d["created_at"].endswith("Z") for d in listed)

    r = client.post("/api/v1/datasets", json={"name": "   "}, headers=auth)
    assert r.status_code == 422 and "blank" in r.json()["detail"]

    assert client.delete(f"/api/v1/datasets/{ds['id']}", headers=auth).status_code == 204
    r = client.get(f"/api/v1/datasets/{ds['id']}", headers=auth)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")


def test_upload_roboflow_export_then_merge_and_dedupe(
    client: TestClient, auth: dict[str, str], tmp_path: Path, settings: Settings
) -> None:
    ds = _create(client, auth)
    r = _upload(
        client, auth, ds["id"], roboflow_zip(tmp_path / "rf.zip", {"train": 4, "valid": 2, "test": 1})
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["layout"] == "roboflow_coco"
    assert body["added"] == {
        "train": {"images": 4, "annotations": 8},
        "valid": {"images": 2, "annotations": 4},
        "test": {"images": 1, "annotations": 2},
    }
    # Roboflow's placeholder category ("pets") is not a class.
    assert sorted(body["classes_found"]) == ["cat", "dog"]

    # The same zip again: nothing new is stored.
    again = _upload(client, auth, ds["id"], tmp_path / "rf.zip").json()
    assert again["duplicates_skipped"] == 7 and again["added"] == {} and again["classes_added"] == []

    # A COCO zip with one new class merges by name.
    more = _upload(
        client, auth, ds["id"], simple_coco_zip(tmp_path / "c.zip", 3, ("dog", "bird"), seed=9)
    ).json()
    assert more["layout"] == "coco" and more["classes_added"] == ["bird"]
    assert more["added"] == {"train": {"images": 3, "annotations": 3}}

    got = client.get(f"/api/v1/datasets/{ds['id']}", headers=auth).json()
    assert got["image_count"] == 10 and got["annotation_count"] == 17
    assert [c["name"] for c in got["classes"]] == ["cat", "dog", "bird"]
    assert [c["class_id"] for c in got["classes"]] == [0, 1, 2]

    storage = make_storage(settings)
    keys = list(storage.list("workspaces/"))
    assert len(keys) == 10

    assert client.delete(f"/api/v1/datasets/{ds['id']}", headers=auth).status_code == 204
    assert list(storage.list("workspaces/")) == []


def test_health(client: TestClient, auth: dict[str, str], tmp_path: Path) -> None:
    ds = _create(client, auth)
    _upload(client, auth, ds["id"], roboflow_zip(tmp_path / "rf.zip", {"train": 3, "valid": 1}))
    h = client.get(f"/api/v1/datasets/{ds['id']}/health", headers=auth).json()
    assert h["splits"] == {"train": {"images": 3, "annotations": 6}, "valid": {"images": 1, "annotations": 2}}
    assert {c["name"]: c["instances"] for c in h["classes"]} == {"cat": 4, "dog": 4}
    assert h["image_width"] == {"min": 64.0, "max": 64.0, "mean": 64.0, "median": 64.0}
    assert h["images_without_annotations"] == {"train": 0, "valid": 0}
    assert h["instances_per_image"]["mean"] == 2.0
    assert h["instances_per_image_histogram"]["2-5"] == 4
    # 20 px tall in a 48 px image is 420 px at 1008: nothing tiny.
    assert h["tiny_at_1008"] == 0


def test_images_list_filters_and_preview(client: TestClient, auth: dict[str, str], tmp_path: Path) -> None:
    ds = _create(client, auth)
    _upload(client, auth, ds["id"], roboflow_zip(tmp_path / "rf.zip", {"train": 3, "valid": 2}))
    page = client.get(f"/api/v1/datasets/{ds['id']}/images", params={"limit": 2}, headers=auth).json()
    assert page["total"] == 5 and len(page["items"]) == 2
    rest = client.get(f"/api/v1/datasets/{ds['id']}/images", params={"offset": 2}, headers=auth).json()
    assert len(rest["items"]) == 3
    assert not {i["id"] for i in page["items"]} & {i["id"] for i in rest["items"]}

    valid = client.get(f"/api/v1/datasets/{ds['id']}/images", params={"split": "valid"}, headers=auth).json()
    assert valid["total"] == 2 and all(i["split"] == "valid" for i in valid["items"])
    cats = client.get(f"/api/v1/datasets/{ds['id']}/images", params={"class": "cat"}, headers=auth).json()
    assert cats["total"] == 5 and all("cat" in i["classes"] for i in cats["items"])
    r = client.get(f"/api/v1/datasets/{ds['id']}/images", params={"class": "zebra"}, headers=auth)
    assert r.status_code == 404 and "zebra" in r.json()["detail"]
    r = client.get(f"/api/v1/datasets/{ds['id']}/images", params={"split": "nope"}, headers=auth)
    assert r.status_code == 422

    image = page["items"][0]
    detail = client.get(f"/api/v1/datasets/{ds['id']}/images/{image['id']}", headers=auth).json()
    assert len(detail["annotations"]) == 2 and detail["annotations"][0]["segmentation"]

    png = client.get(f"/api/v1/datasets/{ds['id']}/images/{image['id']}/preview.png", headers=auth)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    drawn = Image.open(io.BytesIO(png.content)).convert("RGB")
    original = client.get(f"/api/v1/datasets/{ds['id']}/images/{image['id']}/file", headers=auth)
    assert original.headers["content-type"] == "image/jpeg"
    plain = Image.open(io.BytesIO(original.content)).convert("RGB")
    assert drawn.size == plain.size == (64, 48)
    # Inside the first instance (4,4)-(34,24) the colour changed; far outside it did not.
    assert drawn.getpixel((10, 10)) != plain.getpixel((10, 10))
    assert max(abs(a - b) for a, b in zip(drawn.getpixel((60, 2)), plain.getpixel((60, 2)), strict=True)) <= 2


def test_other_workspace_sees_404(client: TestClient, auth: dict[str, str], new_key, tmp_path: Path) -> None:
    ds = _create(client, auth)
    _upload(client, auth, ds["id"], simple_coco_zip(tmp_path / "c.zip"))
    image = client.get(f"/api/v1/datasets/{ds['id']}/images", headers=auth).json()["items"][0]
    other = {"Authorization": f"Bearer {new_key()}"}
    base = f"/api/v1/datasets/{ds['id']}"
    for method, path in [
        ("GET", base),
        ("PATCH", base),
        ("DELETE", base),
        ("GET", f"{base}/health"),
        ("GET", f"{base}/images"),
        ("GET", f"{base}/images/{image['id']}"),
        ("GET", f"{base}/images/{image['id']}/file"),
        ("GET", f"{base}/images/{image['id']}/preview.png"),
    ]:
        r = client.request(method, path, headers=other, json={"name": "x"} if method == "PATCH" else None)
        assert r.status_code == 404, (method, path, r.text)
    r = _upload(client, other, ds["id"], tmp_path / "c.zip")
    assert r.status_code == 404
    assert client.get("/api/v1/datasets", headers=other).json()["items"] == []
    assert client.get(base, headers=auth).json()["image_count"] == 3


def test_upload_and_delete_on_s3(
    make_client, settings: Settings, s3_settings: Settings, auth, tmp_path: Path
) -> None:
    """The same flow with images in a real S3 endpoint (moto's server, over HTTP)."""
    s3 = settings.model_copy(
        update={
            k: getattr(s3_settings, k)
            for k in ("storage_url", "s3_endpoint_url", "s3_access_key_id", "s3_secret_access_key")
        }
    )
    client = make_client(s3)
    storage = make_storage(s3)
    ds = _create(client, auth)
    r = _upload(client, auth, ds["id"], roboflow_zip(tmp_path / "rf.zip", {"train": 2, "valid": 1}))
    assert r.status_code == 201, r.text
    keys = sorted(storage.list("workspaces/"))
    assert len(keys) == 3 and all(k.endswith(".jpg") for k in keys)

    image = client.get(f"/api/v1/datasets/{ds['id']}/images", headers=auth).json()["items"][0]
    assert (
        client.get(f"/api/v1/datasets/{ds['id']}/images/{image['id']}/preview.png", headers=auth).status_code
        == 200
    )

    bad = client.post(
        f"/api/v1/datasets/{ds['id']}/uploads", files={"file": ("x.zip", b"nope")}, headers=auth
    )
    assert bad.status_code == 400 and sorted(storage.list("workspaces/")) == keys

    assert client.delete(f"/api/v1/datasets/{ds['id']}", headers=auth).status_code == 204
    assert list(storage.list("workspaces/")) == []


def test_odinw_subset_chosen_by_form_field(client: TestClient, auth: dict[str, str], tmp_path: Path) -> None:
    one = roboflow_zip(tmp_path / "a.zip", {"train": 2, "valid": 1}, seed=1)
    two = roboflow_zip(tmp_path / "b.zip", {"train": 3}, seed=2)

    odinw = tmp_path / "odinw.zip"
    with zipfile.ZipFile(odinw, "w") as out:
        for subset, src in (("large", one), ("tiled", two)):
            with zipfile.ZipFile(src) as z:
                for name in z.namelist():
                    out.writestr(f"Pets/{subset}/{name}", z.read(name))
    ds = _create(client, auth)
    r = _upload(client, auth, ds["id"], odinw)
    assert r.status_code == 422 and "large" in r.json()["detail"] and "tiled" in r.json()["detail"]
    r = _upload(client, auth, ds["id"], odinw, subset="tiled")
    assert r.status_code == 201, r.text
    assert r.json()["layout"] == "odinw" and r.json()["added"] == {"train": {"images": 3, "annotations": 6}}
