"""Versions over HTTP, built by the real builder: every spec option, immutability, the content hash,
the export round trip, 409 on delete, and the failed build."""

from __future__ import annotations

import io
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from app.jobs.tables import TrainingJob
from tests.factories import CocoBuilder, roboflow_zip, simple_coco_zip, write_zip
from tests.versions.conftest import VersionKit


def _image_size(kit: VersionKit, version: dict, split: str, file_name: str) -> tuple[int, int]:
    prefix = kit.snapshot_keys(version)[0].rsplit("/", 2)[0] + "/"
    return Image.open(io.BytesIO(kit.storage.get_bytes(f"{prefix}{split}/{file_name}"))).size


def test_defaults_and_validation(kit: VersionKit, tmp_path: Path) -> None:
    d = kit.client.get("/api/v1/versions/defaults", headers=kit.auth).json()
    assert d["preprocessing"]["resize"] == {"width": 1008, "height": 1008, "mode": "stretch"}
    assert d["split"]["mode"] == "keep" and d["augmentation"]["outputs_per_image"] == 1

    empty = kit.dataset()
    r = kit.client.post(f"/api/v1/datasets/{empty}/versions", json={}, headers=kit.auth)
    assert r.status_code == 422 and "no images" in r.json()["detail"]

    ds = kit.dataset(simple_coco_zip(tmp_path / "a.zip"))
    url = f"/api/v1/datasets/{ds}/versions"
    bad = [
        ({"preprocessing": {"classes": {"zebra": "horse"}}}, "zebra"),
        ({"split": {"mode": "ratio", "train": 0.9, "valid": 0.3, "test": 0.1}}, "add up to 1"),
        ({"augmentation": {"outputs_per_image": 0}}, "outputs_per_image"),
        ({"preprocessing": {"resize": {"mode": "crop"}}}, "mode"),
        ({"nonsense": 1}, "nonsense"),
    ]
    for spec, fragment in bad:
        r = kit.client.post(url, json=spec, headers=kit.auth)
        assert r.status_code == 422, (spec, r.text)
        assert fragment in r.json()["detail"], (spec, r.json())
    assert kit.client.get(url, headers=kit.auth).json()["items"] == []


def test_default_build_stretches_to_1008(kit: VersionKit, tmp_path: Path) -> None:
    ds = kit.dataset(roboflow_zip(tmp_path / "rf.zip", {"train": 3, "valid": 1, "test": 1}))
    first = kit.create(ds)
    assert first["number"] == 1 and first["progress"] == 0
    v = kit.build(first["id"])
    assert v["status"] == "ready" and v["progress"] == 1 and v["name"] == "d/1"
    assert v["classes"] == ["cat", "dog"]
    assert v["splits"] == {
        "train": {"images": 3, "annotations": 6},
        "valid": {"images": 1, "annotations": 2},
        "test": {"images": 1, "annotations": 2},
    }
    assert len(v["content_hash"]) == 64
    coco = kit.coco(v, "train")
    assert [c["name"] for c in coco["categories"]] == ["cat", "dog"]
    for im in coco["images"]:
        assert (im["width"], im["height"]) == (1008, 1008)
        assert _image_size(kit, v, "train", im["file_name"]) == (1008, 1008)
    # A 30x20 box at (4,4) in a 64x48 image: x scales by 1008/64, y by 1008/48.
    box = next(a["bbox"] for a in coco["annotations"] if a["bbox"][0] < 100)
    assert box == pytest.approx([4 * 15.75, 4 * 21.0, 30 * 15.75, 20 * 21.0], abs=1.5)
    assert kit.create(ds)["number"] == 2


def test_letterbox_and_custom_size(kit: VersionKit, tmp_path: Path) -> None:
    ds = kit.dataset(simple_coco_zip(tmp_path / "a.zip", 2))  # 64x48 images
    v = kit.version(ds, {"preprocessing": {"resize": {"width": 512, "height": 512, "mode": "letterbox"}}})
    coco = kit.coco(v, "train")
    im = coco["images"][0]
    assert (im["width"], im["height"]) == (512, 512)
    prefix = kit.snapshot_keys(v)[0].rsplit("/", 2)[0] + "/"
    pixels = np.asarray(Image.open(io.BytesIO(kit.storage.get_bytes(f"{prefix}train/{im['file_name']}"))))
    # 64x48 fit into 512 -> 512x384, centred: 64 px black bands top and bottom.
    assert pixels[:60].max() < 20 and pixels[-60:].max() < 20 and pixels[200:300].mean() > 20
    ann = next(a for a in coco["annotations"] if a["image_id"] == im["id"])
    x, y, w, h = ann["bbox"]
    assert (x, y, w, h) == pytest.approx([5 * 8, 64 + 5 * 8, 20 * 8, 15 * 8], abs=1.5)


def test_filter_null_and_min_instance_px(kit: VersionKit, tmp_path: Path) -> None:
    coco = CocoBuilder(["cat"])
    for i in range(6):
        image_id = coco.add_image(f"{i}.jpg", 200, 100, seed=i)
        if i < 2:
            coco.add_box_polygon(image_id, "cat", 10, 10, 100, 50)
            coco.add_box_polygon(image_id, "cat", 150, 50, 0.5, 30)  # 0.5 px wide: ~2.5 px at 1008
    entries = {"annotations.json": coco.to_json(), **{f"images/{k}": v for k, v in coco.files.items()}}
    ds = kit.dataset(write_zip(tmp_path / "n.zip", entries))
    v = kit.version(ds, {"preprocessing": {"filter_null": 0.5, "min_instance_px": 4}})
    total = sum(s["images"] for s in v["splits"].values())
    assert total == 4 and v["dropped"]["null_images_filtered"] == 2
    assert v["dropped"]["instances_vanished_or_too_small"] == 2
    assert sum(s["annotations"] for s in v["splits"].values()) == 2


def test_classes_rename_merge_drop(kit: VersionKit, tmp_path: Path) -> None:
    ds = kit.dataset(simple_coco_zip(tmp_path / "a.zip", 6, ("cat", "dog", "bird")))
    v = kit.version(ds, {"preprocessing": {"classes": {"cat": "pet", "dog": "pet", "bird": None}}})
    assert v["classes"] == ["pet"]
    assert v["dropped"]["instances_dropped_by_class_map"] == 2
    assert sum(s["annotations"] for s in v["splits"].values()) == 4
    for split in v["splits"]:
        assert {a["category_id"] for a in kit.coco(v, split)["annotations"]} <= {1}


def test_split_ratio_seeded_and_valid_guaranteed(kit: VersionKit, tmp_path: Path) -> None:
    ds = kit.dataset(simple_coco_zip(tmp_path / "a.zip", 10))  # all uploaded as train
    kept = kit.version(ds)
    # Keeping the uploaded splits still yields a validation split.
    assert kept["splits"]["valid"]["images"] >= 1 and "test" not in kept["splits"]
    spec = {"split": {"mode": "ratio", "train": 0.6, "valid": 0.2, "test": 0.2, "seed": 1}}
    a = kit.version(ds, spec)
    assert {s: c["images"] for s, c in a["splits"].items()} == {"train": 6, "valid": 2, "test": 2}
    again = kit.version(ds, spec)
    assert again["content_hash"] == a["content_hash"]
    assert {i["file_name"] for i in kit.coco(again, "valid")["images"]} == {
        i["file_name"] for i in kit.coco(a, "valid")["images"]
    }
    other = kit.version(ds, {"split": {**spec["split"], "seed": 2}})
    assert other["content_hash"] != a["content_hash"]


def test_augmentation_multiplies_train_only(kit: VersionKit, tmp_path: Path) -> None:
    ds = kit.dataset(roboflow_zip(tmp_path / "rf.zip", {"train": 3, "valid": 2}))
    spec = {"augmentation": {"outputs_per_image": 3, "flip_horizontal": True, "brightness": 0.3, "seed": 7}}
    v = kit.version(ds, spec)
    assert v["splits"]["train"]["images"] == 9 and v["splits"]["valid"]["images"] == 2
    names = [i["file_name"] for i in kit.coco(v, "train")["images"]]
    assert sum("_aug" in n for n in names) == 6
    assert v["splits"]["train"]["annotations"] == 18


def test_version_is_immutable_and_hash_names_content(kit: VersionKit, tmp_path: Path) -> None:
    ds = kit.dataset(roboflow_zip(tmp_path / "rf.zip", {"train": 3, "valid": 1}))
    v1 = kit.version(ds)
    keys1 = kit.snapshot_keys(v1)
    bytes1 = {k: kit.storage.get_bytes(k) for k in keys1}
    twin = kit.version(ds)
    assert twin["content_hash"] == v1["content_hash"] and kit.snapshot_keys(twin) == keys1

    kit.upload(ds, simple_coco_zip(tmp_path / "more.zip", 2, seed=5))
    v3 = kit.version(ds)
    assert v3["content_hash"] != v1["content_hash"]
    assert v3["splits"]["train"]["images"] == 5
    # v1 is unchanged: same record, same bytes.
    assert kit.get(v1["id"]) == v1
    assert {k: kit.storage.get_bytes(k) for k in kit.snapshot_keys(v1)} == bytes1

    # Twins share one snapshot: it goes with its last user.
    assert kit.client.delete(f"/api/v1/versions/{v1['id']}", headers=kit.auth).status_code == 204
    assert all(kit.storage.exists(k) for k in keys1)
    assert kit.client.delete(f"/api/v1/versions/{twin['id']}", headers=kit.auth).status_code == 204
    assert not any(kit.storage.exists(k) for k in keys1)
    assert kit.client.get(f"/api/v1/versions/{v1['id']}", headers=kit.auth).status_code == 404


def test_export_round_trip_and_pycocotools(kit: VersionKit, tmp_path: Path) -> None:
    ds = kit.dataset(roboflow_zip(tmp_path / "rf.zip", {"train": 3, "valid": 2, "test": 1}))
    # Brightness makes every copy differ from its original (the upload would merge identical files).
    v = kit.version(
        ds, {"augmentation": {"outputs_per_image": 2, "rotate90": True, "brightness": 0.3, "seed": 3}}
    )
    r = kit.client.get(f"/api/v1/versions/{v['id']}/export", headers=kit.auth)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert "d-v1-coco.zip" in r.headers["content-disposition"]
    exported = tmp_path / "export.zip"
    exported.write_bytes(r.content)
    with zipfile.ZipFile(exported) as zf:
        names = zf.namelist()
        assert {
            "train/_annotations.coco.json",
            "valid/_annotations.coco.json",
            "test/_annotations.coco.json",
        } <= set(names)
        for split in ("train", "valid", "test"):
            path = tmp_path / f"{split}.json"
            path.write_bytes(zf.read(f"{split}/_annotations.coco.json"))
            coco = COCO(str(path))
            for ann in coco.loadAnns(coco.getAnnIds()):
                mask = coco.annToMask(ann)
                assert mask.shape == (1008, 1008) and mask.sum() > 0

    again = kit.dataset(exported, name="round trip")
    got = kit.client.get(f"/api/v1/datasets/{again}", headers=kit.auth).json()
    assert {s: c for s, c in got["splits"].items()} == v["splits"]
    assert [c["name"] for c in got["classes"]] == v["classes"]
    # Annotations survive the trip: compare areas per image file.
    original = kit.coco(v, "train")
    areas = sorted(round(a["area"]) for a in original["annotations"])
    reimported = []
    for item in kit.client.get(
        f"/api/v1/datasets/{again}/images", params={"split": "train", "limit": 500}, headers=kit.auth
    ).json()["items"]:
        detail = kit.client.get(f"/api/v1/datasets/{again}/images/{item['id']}", headers=kit.auth).json()
        reimported += [round(a["area"]) for a in detail["annotations"]]
    assert sorted(reimported) == pytest.approx(areas, abs=2)


def test_export_of_unready_version_is_409(kit: VersionKit, tmp_path: Path) -> None:
    ds = kit.dataset(simple_coco_zip(tmp_path / "a.zip"))
    v = kit.create(ds)
    r = kit.client.get(f"/api/v1/versions/{v['id']}/export", headers=kit.auth)
    assert r.status_code == 409 and "building" in r.json()["detail"]


def test_delete_version_used_by_a_job_is_409(kit: VersionKit, tmp_path: Path, db) -> None:
    ds = kit.dataset(simple_coco_zip(tmp_path / "a.zip"))
    v = kit.version(ds)
    from app.datasets.tables import Dataset

    workspace_id = db.get(Dataset, uuid.UUID(ds)).workspace_id
    db.add(
        TrainingJob(workspace_id=workspace_id, version_id=uuid.UUID(v["id"]), base_model="x", mode="decoder")
    )
    db.flush()
    db.commit()
    r = kit.client.delete(f"/api/v1/versions/{v['id']}", headers=kit.auth)
    assert r.status_code == 409 and "training job" in r.json()["detail"]
    assert kit.get(v["id"])["status"] == "ready"
    r = kit.client.delete(f"/api/v1/datasets/{ds}", headers=kit.auth)
    assert r.status_code == 409


def test_failed_build_records_reason_and_leaves_no_snapshot(kit: VersionKit, tmp_path: Path) -> None:
    ds = kit.dataset(simple_coco_zip(tmp_path / "a.zip", 4))
    # Storage corrupted behind samtune's back: one image no longer decodes.
    key = sorted(kit.storage.list("workspaces/"))[0]
    kit.storage.put_bytes(key, b"\xff\xd8\xff garbage")
    v = kit.build(kit.create(ds)["id"])
    assert v["status"] == "failed"
    assert "could not be processed" in v["error"]
    assert [k for k in kit.storage.list("workspaces/") if "/snapshots/" in k] == []
    r = kit.client.get(f"/api/v1/versions/{v['id']}/export", headers=kit.auth)
    assert r.status_code == 409


def test_other_workspace_cannot_see_versions(kit: VersionKit, tmp_path: Path, new_key) -> None:
    ds = kit.dataset(simple_coco_zip(tmp_path / "a.zip"))
    v = kit.version(ds)
    other = {"Authorization": f"Bearer {new_key()}"}
    for method, path in [
        ("GET", f"/api/v1/versions/{v['id']}"),
        ("DELETE", f"/api/v1/versions/{v['id']}"),
        ("GET", f"/api/v1/versions/{v['id']}/export"),
        ("GET", f"/api/v1/datasets/{ds}/versions"),
        ("POST", f"/api/v1/datasets/{ds}/versions"),
    ]:
        assert kit.client.request(method, path, headers=other).status_code == 404, (method, path)
    assert kit.get(v["id"])["status"] == "ready"


def test_auto_orient(kit: VersionKit, tmp_path: Path) -> None:
    """A portrait photo stored landscape with EXIF orientation 6: auto_orient gives a portrait frame to
    resize; without it the raw landscape pixels are used and the annotation is mapped back onto them."""
    raw = np.full((60, 120, 3), 200, np.uint8)  # stored landscape 120x60
    raw[10:30, 80:110] = (255, 0, 0)
    img = Image.fromarray(raw)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: 60x120 portrait
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif, quality=98)
    # In the displayed (portrait) frame the red block sits at x in [30,50), y in [80,110).
    coco = {
        "images": [{"id": 1, "file_name": "p.jpg", "width": 60, "height": 120}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [30, 80, 20, 30],
                         "segmentation": [[30, 80, 50, 80, 50, 110, 30, 110]], "area": 600, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "red"}],
    }  # fmt: skip
    ds = kit.dataset(write_zip(tmp_path / "o.zip", {"a.json": coco, "p.jpg": buf.getvalue()}))
    for auto in (True, False):
        v = kit.version(ds, {"preprocessing": {"auto_orient": auto, "resize": {"width": 240, "height": 240}}})
        split = next(s for s in v["splits"] if kit.coco(v, s)["annotations"])
        doc = kit.coco(v, split)
        ann = doc["annotations"][0]
        image = next(i for i in doc["images"] if i["id"] == ann["image_id"])
        prefix = kit.snapshot_keys(v)[0].rsplit("/", 2)[0] + "/"
        pixels = np.asarray(
            Image.open(io.BytesIO(kit.storage.get_bytes(f"{prefix}{split}/{image['file_name']}")))
        )
        x, y, w, h = (int(round(c)) for c in ann["bbox"])
        inside = pixels[y + 3 : y + h - 3, x + 3 : x + w - 3].reshape(-1, 3).mean(axis=0)
        assert inside[0] > 200 and inside[1] < 80, (auto, ann["bbox"], inside)
