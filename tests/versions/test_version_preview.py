"""POST /datasets/{id}/versions/preview: what a build would write, for the first few training images,
without writing anything."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image

from tests.factories import roboflow_zip
from tests.versions.conftest import VersionKit


def _decode(data_url: str) -> Image.Image:
    head, _, body = data_url.partition(",")
    assert head == "data:image/jpeg;base64"
    return Image.open(io.BytesIO(base64.b64decode(body)))


def test_preview_is_what_the_build_writes(kit: VersionKit, tmp_path: Path) -> None:
    ds = kit.dataset(roboflow_zip(tmp_path / "rf.zip", {"train": 3, "valid": 1}))
    spec = {
        "augmentation": {"outputs_per_image": 3, "flip_horizontal": True, "rotation_degrees": 10, "seed": 4}
    }
    r = kit.client.post(f"/api/v1/datasets/{ds}/versions/preview?images=2", json=spec, headers=kit.auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["classes"] == ["cat", "dog"] and body["augmentation_enabled"] is True
    images = body["images"]
    # Two training images, each as the resized original plus its two augmented copies.
    assert [im["augmented"] for im in images] == [False, True, True] * 2
    assert len({im["source_image_id"] for im in images}) == 2
    for im in images:
        assert (im["width"], im["height"]) == (1008, 1008)
        assert max(_decode(im["image"]).size) <= 384
        assert im["instances"], im["file_name"]
    assert kit.client.get(f"/api/v1/datasets/{ds}/versions", headers=kit.auth).json()["items"] == []

    version = kit.version(ds, spec)
    built = kit.coco(version, "train")
    by_name = {img["file_name"]: img["id"] for img in built["images"]}
    for im in images:
        anns = [a for a in built["annotations"] if a["image_id"] == by_name[im["file_name"]]]
        assert [a["category_id"] - 1 for a in anns] == [i["class_id"] for i in im["instances"]]
        for a, inst in zip(anns, im["instances"], strict=True):
            assert a["bbox"] == [round(v, 3) for v in inst["bbox"]]
            assert a["segmentation"] == inst["segmentation"]


def test_preview_without_augmentation_caps_and_remaps(kit: VersionKit, tmp_path: Path) -> None:
    ds = kit.dataset(roboflow_zip(tmp_path / "rf.zip", {"train": 2, "valid": 1}))
    url = f"/api/v1/datasets/{ds}/versions/preview"
    plain = kit.client.post(url, json={"preprocessing": {"classes": {"dog": None}}}, headers=kit.auth).json()
    assert plain["augmentation_enabled"] is False and plain["classes"] == ["cat"]
    assert [im["augmented"] for im in plain["images"]] == [False, False, False]
    assert all(i["class_id"] == 0 for im in plain["images"] for i in im["instances"])

    many = kit.client.post(
        url + "?images=1", json={"augmentation": {"outputs_per_image": 10}}, headers=kit.auth
    ).json()
    assert len(many["images"]) == 4  # the original and at most 3 copies, however many the build makes


def test_preview_refuses_what_a_build_would(kit: VersionKit, tmp_path: Path, new_key) -> None:
    empty = kit.dataset(name="empty")
    r = kit.client.post(f"/api/v1/datasets/{empty}/versions/preview", json={}, headers=kit.auth)
    assert r.status_code == 422 and "no images" in r.json()["detail"]
    assert r.headers["content-type"] == "application/problem+json"

    ds = kit.dataset(roboflow_zip(tmp_path / "rf.zip", {"train": 1}))
    url = f"/api/v1/datasets/{ds}/versions/preview"
    r = kit.client.post(url, json={"preprocessing": {"classes": {"zebra": "horse"}}}, headers=kit.auth)
    assert r.status_code == 422 and "zebra" in r.json()["detail"]
    r = kit.client.post(url, json={"augmentation": {"brightness": 3}}, headers=kit.auth)
    assert r.status_code == 422 and "brightness" in r.json()["detail"]
    r = kit.client.post(url + "?images=50", json={}, headers=kit.auth)
    assert r.status_code == 422
    other = {"Authorization": f"Bearer {new_key()}"}
    assert kit.client.post(url, json={}, headers=other).status_code == 404
