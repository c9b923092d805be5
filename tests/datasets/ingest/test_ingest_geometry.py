"""Segmentations, boxes and EXIF orientation, through the pipeline (the geometry itself: tests/images/)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from app.images.geometry import rle_to_mask
from app.images.orientation import TRANSPOSE

W, H = 40, 30


def _upload_one(k, annotations, categories=None, size=(W, H)):
    doc = k.coco([(1, "a.png", *size)], annotations, categories)
    upload = k.ingest(k.zip({"train.json": doc, "a.png": k.image(size=size, fmt="PNG")}))
    return upload, upload.images[0].annotations


def _rect(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def test_polygon_with_several_parts_and_derived_box(ingest_kit):
    k = ingest_kit
    parts = [_rect(2, 2, 10, 10), _rect(20, 5, 30, 25)]
    upload, anns = _upload_one(k, [k.ann(1, 1, segmentation=parts)])
    (ann,) = anns
    assert ann.segmentation == [[float(v) for v in p] for p in parts]
    assert ann.bbox == (2.0, 2.0, 28.0, 23.0)
    assert ann.area == pytest.approx(64 + 200, abs=1)
    assert ann.iscrowd is False
    assert upload.warnings == []


def test_flat_polygon_is_accepted_as_one_part(ingest_kit):
    _, (ann,) = _upload_one(ingest_kit, [ingest_kit.ann(1, 1, segmentation=_rect(1, 1, 5, 5))])
    assert ann.segmentation == [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]]


def test_polygon_points_are_clipped_with_a_warning(ingest_kit):
    k = ingest_kit
    upload, (ann,) = _upload_one(
        k, [k.ann(1, 1, segmentation=[_rect(-5, -5, 50, 10)], bbox=[-5, -5, 55, 15])]
    )
    assert ann.segmentation == [[0.0, 0.0, 40.0, 0.0, 40.0, 10.0, 0.0, 10.0]]
    assert ann.bbox == (0.0, 0.0, 40.0, 10.0)
    assert ann.area == pytest.approx(400, abs=1)
    assert "train.json: 1 polygon had points outside the image; they were clipped to it" in upload.warnings
    assert "train.json: 1 box was clipped to the image" in upload.warnings


def test_degenerate_parts_are_dropped_and_counted(ingest_kit):
    k = ingest_kit
    good = _rect(2, 2, 10, 10)
    parts = [good, [1, 1, 5, 5], [1, 1, 2, 2, 3], [0, 0, 5, 5, 10, 10], _rect(45, 0, 50, 5)]
    upload, (ann,) = _upload_one(k, [k.ann(1, 1, segmentation=parts)])
    assert ann.segmentation == [[float(v) for v in good]]
    assert "train.json: 4 degenerate polygon parts were dropped" in " ".join(upload.warnings)


def test_all_parts_degenerate_keeps_the_box_or_drops_the_annotation(ingest_kit):
    k = ingest_kit
    anns = [
        k.ann(1, 1, segmentation=[[1, 1, 5, 5]], bbox=[1, 1, 4, 4]),
        k.ann(2, 1, segmentation=[[1, 1, 5, 5]]),
        k.ann(3, 1, bbox=[50, 50, 10, 10]),
        k.ann(4, 1),
    ]
    upload, kept = _upload_one(k, anns)
    assert len(kept) == 1
    assert kept[0].segmentation is None
    assert kept[0].bbox == (1.0, 1.0, 4.0, 4.0)
    text = " ".join(upload.warnings)
    assert "1 annotation was kept as a box only" in text
    assert "3 annotations were dropped because they have no valid box or mask" in text


def _mask():
    m = np.zeros((H, W), dtype=np.uint8)
    m[5:15, 10:30] = 1
    m[20:25, 2:6] = 1
    return m


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_uncompressed_rle_becomes_compressed_with_derived_box(ingest_kit):
    k = ingest_kit
    m = _mask()
    runs = []
    flat = m.flatten(order="F")
    value, count = 0, 0
    for v in flat:
        if v == value:
            count += 1
        else:
            runs.append(count)
            value, count = v, 1
    runs.append(count)
    upload, (ann,) = _upload_one(k, [k.ann(1, 1, segmentation={"size": [H, W], "counts": runs}, iscrowd=1)])
    assert ann.iscrowd is True
    assert isinstance(ann.segmentation, dict) and isinstance(ann.segmentation["counts"], str)
    assert ann.segmentation["size"] == [H, W]
    assert np.array_equal(mask_utils.decode(ann.segmentation), m)
    assert ann.bbox == (2.0, 5.0, 28.0, 20.0)
    assert ann.area == float(m.sum())


def test_compressed_rle_is_kept(ingest_kit):
    k = ingest_kit
    rle = mask_utils.encode(np.asfortranarray(_mask()))
    counts = rle["counts"].decode()
    _, (ann,) = _upload_one(k, [k.ann(1, 1, segmentation={"size": [H, W], "counts": counts}, area=7.0)])
    assert ann.segmentation == {"size": [H, W], "counts": counts}
    assert ann.area == 7.0  # given by the file and nothing was changed


def test_rle_of_the_wrong_size_names_the_annotation(ingest_kit):
    k = ingest_kit
    counts = mask_utils.encode(np.asfortranarray(np.ones((10, 10), dtype=np.uint8)))["counts"].decode()
    doc = k.coco([(1, "a.png", W, H)], [k.ann(17, 1, segmentation={"size": [10, 10], "counts": counts})])
    path = k.zip({"train.json": doc, "a.png": k.image(fmt="PNG")})
    err = k.error(path, 422, "train.json", "annotation 17", "10x10")
    assert err.source == "train.json"


@pytest.mark.parametrize(
    "seg",
    [
        {"size": [H, W], "counts": [5, 10]},  # covers too few pixels
        {"size": [H, W], "counts": "0000"},  # compressed, wrong total
        {"size": [H, W], "counts": "a\x7f"},  # not an RLE string
    ],
)
def test_malformed_rle_is_rejected(ingest_kit, seg):
    k = ingest_kit
    doc = k.coco([(1, "a.png", W, H)], [k.ann(5, 1, segmentation=seg)])
    k.error(k.zip({"train.json": doc, "a.png": k.image(fmt="PNG")}), 422, "annotation 5")


def test_empty_rle_mask_keeps_the_box(ingest_kit):
    k = ingest_kit
    seg = {"size": [H, W], "counts": [H * W]}
    upload, (ann,) = _upload_one(k, [k.ann(1, 1, segmentation=seg, bbox=[1, 2, 3, 4])])
    assert ann.segmentation is None and ann.bbox == (1.0, 2.0, 3.0, 4.0) and ann.area == 12.0


def test_rle_drawn_on_the_stored_image_follows_exif_rotation(ingest_kit):
    k = ingest_kit
    raw = _mask()  # drawn on the stored 40x30 pixels
    counts = mask_utils.encode(np.asfortranarray(raw))["counts"].decode()
    image = k.image(size=(W, H), fmt="PNG", exif_orientation=8)
    doc = k.coco([(1, "a.png", W, H)], [k.ann(1, 1, segmentation={"size": [H, W], "counts": counts})])
    upload = k.ingest(k.zip({"train.json": doc, "a.png": image}))
    (img,) = upload.images
    assert (img.width, img.height) == (H, W)
    (ann,) = img.annotations
    expected = np.asarray(Image.fromarray(raw * 255).transpose(TRANSPOSE[8])) // 255
    assert ann.segmentation["size"] == [W, H]
    assert np.array_equal(rle_to_mask(ann.segmentation), expected)
    ys, xs = np.nonzero(expected)
    assert ann.bbox == (xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min())
    assert any("EXIF-rotated" in w for w in upload.warnings)
