"""Annotation files that cannot be used: every error names the file and the culprit."""

from __future__ import annotations

import json

import pytest

from app.datasets.ingest import IngestLimits


def _zip(k, doc, images=("a.jpg",), json_name="train/_annotations.coco.json"):
    folder = json_name.rsplit("/", 1)[0] + "/" if "/" in json_name else ""
    return k.zip({json_name: doc, **{folder + name: k.image() for name in images}})


def test_invalid_json_reports_the_position(ingest_kit):
    k = ingest_kit
    err = k.error(_zip(k, '{"images": [}'), 422, "train/_annotations.coco.json", "not valid JSON", "line 1")
    assert err.source == "train/_annotations.coco.json"


def test_json_that_is_not_coco(ingest_kit):
    k = ingest_kit
    k.error(
        _zip(k, {"name": "my dataset"}, json_name="meta.json"),
        422,
        "meta.json",
        "not a COCO annotation file",
        "images: Field required",
    )
    k.error(_zip(k, [1, 2, 3], json_name="list.json"), 422, "list.json", "top level")


def test_pydantic_location_is_reported(ingest_kit):
    k = ingest_kit
    doc = k.coco([(1, "a.jpg", 40, 30)], [k.ann(i, 1, bbox=[0, 0, 1, 1]) for i in range(5)])
    del doc["annotations"][3]["category_id"]
    doc["annotations"][4]["bbox"] = [0, 0, 1]
    err = k.error(_zip(k, doc), 422, "annotations[3].category_id: Field required", "annotations[4].bbox")
    assert err.source == "train/_annotations.coco.json"


@pytest.mark.parametrize(
    ("segmentation", "where"),
    [([[1, 2, "x", 4, 5, 6]], "annotations[0].segmentation[0][2]"), ({"size": [30, 40]}, "counts")],
)
def test_malformed_segmentation_location(ingest_kit, segmentation, where):
    k = ingest_kit
    doc = k.coco([(1, "a.jpg", 40, 30)], [k.ann(1, 1, segmentation=segmentation)])
    k.error(_zip(k, doc), 422, where)


def test_non_finite_numbers_are_rejected(ingest_kit):
    k = ingest_kit
    text = '{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 1, "image_id": 1, '
    text += '"category_id": 1, "bbox": [0, 0, NaN, 1]}], "categories": [{"id": 1, "name": "c"}]}'
    # NaN is not JSON (RFC 8259): the streaming parser stops at it and says where.
    k.error(_zip(k, text), 422, "not valid JSON", f"line 1 column {text.index('NaN') + 1}")


def test_annotation_pointing_at_a_missing_image(ingest_kit):
    k = ingest_kit
    doc = k.coco([(1, "a.jpg", 40, 30)], [k.ann(17, 99)])
    k.error(
        _zip(k, doc),
        422,
        "train/_annotations.coco.json: annotation 17 points at image_id 99, which is not in the file",
    )


def test_annotation_with_an_unknown_category(ingest_kit):
    k = ingest_kit
    doc = k.coco([(1, "a.jpg", 40, 30)], [k.ann(3, 1, category_id=42, bbox=[0, 0, 2, 2])])
    k.error(_zip(k, doc), 422, "annotation 3", "category_id 42")


def test_duplicate_ids(ingest_kit):
    k = ingest_kit
    doc = k.coco([(1, "a.jpg", 40, 30), (1, "b.jpg", 40, 30)])
    k.error(_zip(k, doc, images=("a.jpg", "b.jpg")), 422, "image id 1 is used twice")
    doc = k.coco([(1, "a.jpg", 40, 30)], categories=[(1, "x"), ("1", "y")])
    k.error(_zip(k, doc), 422, "category id '1' is used twice")


def test_image_file_missing_from_the_zip(ingest_kit):
    k = ingest_kit
    doc = k.coco([(1, "a.jpg", 40, 30), (2, "gone.jpg", 40, 30)])
    err = k.error(_zip(k, doc), 422, "train/_annotations.coco.json", "'gone.jpg'", "not in the zip")
    assert err.source == "train/_annotations.coco.json"


def test_string_ids_and_missing_sizes_are_fine(ingest_kit):
    k = ingest_kit
    doc = {
        "images": [{"id": "img-1", "file_name": "a.jpg"}],
        "annotations": [{"id": "x", "image_id": "img-1", "category_id": "c1", "bbox": [1, 1, 2, 2]}],
        "categories": [{"id": "c1", "name": "  thing "}],
    }
    upload = k.ingest(_zip(k, doc))
    assert upload.categories == ["thing"]
    assert upload.images[0].annotations[0].category == "thing"


def test_annotation_file_over_the_json_limit(ingest_kit):
    k = ingest_kit
    doc = k.coco([(1, "a.jpg", 40, 30)])
    doc["info"]["padding"] = "x" * 5000
    k.error(_zip(k, doc), 413, "train/_annotations.coco.json", limits=IngestLimits(max_json_bytes=1000))


def test_json_with_byte_order_mark(ingest_kit):
    k = ingest_kit
    text = "\ufeff" + json.dumps(k.coco([(1, "a.jpg", 40, 30)]))
    path = k.zip({"train.json": text.encode("utf-8"), "a.jpg": k.image()})
    assert len(k.ingest(path).images) == 1
