"""Layout detection: plain COCO, Roboflow export, ODinW subsets, images only."""

from __future__ import annotations

import hashlib

from app.datasets.ingest import SPLITS
from app.datasets.ingest.layout import detect_layout, split_from_json_name


def _box(ann_id, image_id, category_id=1):
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [2, 2, 10, 8],
        "iscrowd": 0,
    }


def test_plain_coco_with_images_folder(ingest_kit):
    k = ingest_kit
    train = k.coco(
        [(1, "a.jpg", 40, 30), (2, "b.jpg", 40, 30)],
        [_box(10, 1), _box(11, 1, 2), _box(12, 2)],
        [(1, "person", "person"), (2, "car", "vehicle")],
    )
    val = k.coco([(1, "c.jpg", 40, 30)], [_box(1, 1, 2)], [(1, "person"), (2, "car")])
    path = k.zip(
        {
            "annotations/instances_train2017.json": train,
            "annotations/instances_val2017.json": val,
            "images/train2017/a.jpg": k.image(),
            "images/train2017/b.jpg": k.image(),
            "images/val2017/c.jpg": k.image(),
        }
    )
    upload = k.ingest(path)
    assert upload.layout == "coco"
    assert upload.categories == ["person", "car"]
    by_source = {i.source: i for i in upload.images}
    assert {s: i.split for s, i in by_source.items()} == {
        "images/train2017/a.jpg": "train",
        "images/train2017/b.jpg": "train",
        "images/val2017/c.jpg": "valid",
    }
    a = by_source["images/train2017/a.jpg"]
    assert [x.category for x in a.annotations] == ["person", "car"]
    assert a.annotations[0].bbox == (2.0, 2.0, 10.0, 8.0)
    assert a.annotations[0].segmentation is None
    assert a.annotations[0].area == 80.0
    assert (a.width, a.height, a.format) == (40, 30, "JPEG")
    assert a.sha256 == hashlib.sha256(a.staged_path.read_bytes()).hexdigest()
    assert a.staged_path.suffix == ".jpg"
    assert by_source["images/val2017/c.jpg"].annotations[0].category == "car"
    assert upload.warnings == []


def test_plain_coco_file_names_relative_to_json_or_root(ingest_kit):
    k = ingest_kit
    doc = k.coco([(1, "imgs/a.jpg", 40, 30), (2, "data/imgs/b.jpg", 40, 30), (3, "../other/c.jpg", 40, 30)])
    path = k.zip(
        {
            "data/coco.json": doc,
            "data/imgs/a.jpg": k.image(),
            "data/imgs/b.jpg": k.image(),
            "other/c.jpg": k.image(),
        }
    )
    upload = k.ingest(path)
    assert sorted(i.source for i in upload.images) == ["data/imgs/a.jpg", "data/imgs/b.jpg", "other/c.jpg"]
    assert {i.split for i in upload.images} == {"train"}
    assert upload.categories == ["cat"]


def test_ambiguous_base_name_is_rejected(ingest_kit):
    k = ingest_kit
    path = k.zip(
        {"ann/train.json": k.coco([(1, "a.jpg", 40, 30)]), "x/a.jpg": k.image(), "y/a.jpg": k.image()}
    )
    k.error(path, 422, "ann/train.json", "'a.jpg'", "several files")


def test_roboflow_export_with_placeholder_category(ingest_kit):
    k = ingest_kit
    cats = [(0, "cells", "none"), (1, "cell", "cells"), (2, "nucleus", "cells"), (3, "debris", "cells")]
    files = {"README.roboflow.txt": "exported", "README.dataset.txt": "cells"}
    for n, split in enumerate(("train", "valid", "test")):
        files[f"cells.v1i.coco/{split}/_annotations.coco.json"] = k.coco(
            [(0, f"{split}_a.jpg", 40, 30), (1, f"{split}_b.jpg", 40, 30)],
            [_box(0, 0, 1), _box(1, 1, 2)] if split != "test" else [],
            cats,
        )
        files[f"cells.v1i.coco/{split}/{split}_a.jpg"] = k.image(seed=100 + n)
        files[f"cells.v1i.coco/{split}/{split}_b.jpg"] = k.image(seed=200 + n)
    upload = k.ingest(k.zip(files))
    assert upload.layout == "roboflow_coco"
    # The placeholder goes; "debris" is unused but a real (leaf) class and stays.
    assert upload.categories == ["cell", "nucleus", "debris"]
    assert sorted({i.split for i in upload.images}) == sorted(SPLITS)
    assert [len(i.annotations) for i in upload.images] == [1, 1, 1, 1, 0, 0]
    assert any("'cells'" in w and "placeholder" in w for w in upload.warnings)
    assert any("2 files that are not images were skipped" in w for w in upload.warnings)


def test_roboflow_split_folder_aliases(ingest_kit):
    k = ingest_kit
    path = k.zip(
        {
            "train/_annotations.coco.json": k.coco([(1, "a.jpg", 40, 30)]),
            "train/a.jpg": k.image(),
            "validation/_annotations.coco.json": k.coco([(1, "b.jpg", 40, 30)]),
            "validation/b.jpg": k.image(),
        }
    )
    upload = k.ingest(path)
    assert upload.layout == "roboflow_coco"
    assert {i.source: i.split for i in upload.images} == {"train/a.jpg": "train", "validation/b.jpg": "valid"}


def _odinw_files(k):
    files = {}
    for subset in ("large", "tiled"):
        for split in ("train", "valid"):
            folder = f"AerialMaritimeDrone/{subset}/{split}"
            files[f"{folder}/_annotations.coco.json"] = k.coco(
                [(1, "a.jpg", 40, 30)], [_box(1, 1, 1)], [(0, "boats", "none"), (1, "boat", "boats")]
            )
            files[f"{folder}/a.jpg"] = k.image()
    return files


def test_odinw_with_several_subsets_needs_a_choice(ingest_kit):
    k = ingest_kit
    path = k.zip(_odinw_files(k))
    err = k.error(path, 422, "large", "tiled", "subset")
    assert err.extra["subsets"] == ["large", "tiled"]
    k.error(path, 422, "'huge'", "large", "tiled", subset="huge")

    upload = k.ingest(path, subset="tiled")
    assert upload.layout == "odinw"
    assert sorted(i.source for i in upload.images) == [
        "AerialMaritimeDrone/tiled/train/a.jpg",
        "AerialMaritimeDrone/tiled/valid/a.jpg",
    ]
    assert upload.categories == ["boat"]
    assert any("4 files outside subset 'tiled' were ignored" in w for w in upload.warnings)


def test_odinw_single_subset_needs_no_choice(ingest_kit):
    k = ingest_kit
    files = {n: c for n, c in _odinw_files(k).items() if "/large/" in n}
    upload = k.ingest(k.zip(files))
    assert upload.layout == "odinw"
    assert len(upload.images) == 2


def test_subset_given_for_a_zip_without_subsets(ingest_kit):
    k = ingest_kit
    path = k.zip({"train.json": k.coco([(1, "a.jpg", 40, 30)]), "a.jpg": k.image()})
    k.error(path, 422, "'large'", subset="large")


def test_images_only(ingest_kit):
    k = ingest_kit
    path = k.zip(
        {
            "shots/train/a.jpg": k.image(),
            "shots/valid/b.png": k.image(fmt="PNG"),
            "shots/test/c.webp": k.image(fmt="WEBP"),
            "shots/d.JPG": k.image(),
            "shots/no_extension": k.image(fmt="PNG"),
            "shots/README.txt": "some notes",
            "shots/labels.csv": "a,b",
        }
    )
    upload = k.ingest(path)
    assert upload.layout == "images_only"
    assert upload.categories == []
    assert {i.source: (i.split, i.format) for i in upload.images} == {
        "shots/train/a.jpg": ("train", "JPEG"),
        "shots/valid/b.png": ("valid", "PNG"),
        "shots/test/c.webp": ("test", "WEBP"),
        "shots/d.JPG": ("train", "JPEG"),
        "shots/no_extension": ("train", "PNG"),
    }
    assert all(i.annotations == [] for i in upload.images)
    assert upload.warnings == [
        "2 files that are not images were skipped (e.g. shots/README.txt, shots/labels.csv)"
    ]


def test_images_only_rejects_unsupported_image_formats(ingest_kit):
    k = ingest_kit
    path = k.zip({"a.jpg": k.image(), "anim.gif": k.image(fmt="GIF", mode="RGB")})
    k.error(path, 422, "anim.gif", "GIF", "JPEG, PNG and WebP")


def test_images_only_with_no_images(ingest_kit):
    k = ingest_kit
    k.error(k.zip({"README.txt": "hello"}), 422, "no images")


def test_unreferenced_images_are_skipped_with_one_warning(ingest_kit):
    k = ingest_kit
    files = {"train.json": k.coco([(1, "a.jpg", 40, 30)]), "a.jpg": k.image()}
    files.update({f"extra/{i}.jpg": b"not even decoded" for i in range(5)})
    upload = k.ingest(k.zip(files))
    assert [i.source for i in upload.images] == ["a.jpg"]
    assert upload.warnings == [
        "5 image files are not referenced by any annotation file and were skipped "
        "(e.g. extra/0.jpg, extra/1.jpg, extra/2.jpg, ...)"
    ]


def test_split_from_json_name():
    assert split_from_json_name("annotations/instances_train2017.json") == "train"
    assert split_from_json_name("annotations/instances_val2017.json") == "valid"
    assert split_from_json_name("annotations/image_info_test-dev2017.json") == "test"
    assert split_from_json_name("val/labels.json") == "valid"
    assert split_from_json_name("labels.json") == "train"


def test_detect_layout_prefers_roboflow_files_and_reports_other_json():
    layout = detect_layout(["d/train/_annotations.coco.json", "d/train/a.jpg", "d/meta.json"])
    assert layout.kind == "roboflow_coco"
    assert [f.entry for f in layout.annotation_files] == ["d/train/_annotations.coco.json"]
    assert layout.unused_json == ["d/meta.json"]
