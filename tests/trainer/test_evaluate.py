"""trainer.evaluate: post-processing of one query's outputs and COCO bbox/segm evaluation."""

from __future__ import annotations

import copy
import json
import math
import time

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from trainer.evaluate import Detection, EvalResult, coco_evaluate, limit_per_image, postprocess

# pycocotools' decode trips numpy 2's __array__(copy=...) deprecation; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# ---------------------------------------------------------------------------------------------------------------
# Ground truth: Roboflow-style (ids from 0, an unused "supercategory" class 0), polygons, compressed RLE,
# uncompressed RLE, a multi-part polygon, a crowd instance, an annotation without iscrowd/area keys.
# ---------------------------------------------------------------------------------------------------------------


def _rle_of(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _uncompressed_rle_of(mask: np.ndarray) -> dict:
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def _box_mask(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def _ann(
    image: dict, category_id: int, segmentation, *, iscrowd: int | None = 0, with_area: bool = True
) -> dict:
    h, w = image["height"], image["width"]
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, h, w)
    else:
        rle = segmentation
    ann = {
        "image_id": image["id"],
        "category_id": category_id,
        "segmentation": segmentation,
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
    }
    if with_area:
        ann["area"] = float(mask_utils.area(rle))
    if iscrowd is not None:
        ann["iscrowd"] = iscrowd
    return ann


def make_gt() -> dict:
    images = [
        {"id": 0, "file_name": "a.jpg", "height": 100, "width": 120},
        {"id": 1, "file_name": "b.jpg", "height": 80, "width": 60},
        {"id": 2, "file_name": "c.jpg", "height": 64, "width": 64},
    ]
    a, b, c = images
    anns = [
        _ann(a, 1, [[10, 10, 50, 10, 50, 40, 10, 40]]),  # cat: polygon
        _ann(a, 2, _rle_of(_disk(100, 120, 70, 40, 15))),  # dog: compressed RLE
        _ann(a, 1, _rle_of(_box_mask(100, 120, 70, 95, 80, 115)), iscrowd=1),  # crowd of cats
        _ann(b, 2, [[5, 5, 25, 5, 25, 30], [30, 40, 55, 40, 55, 70, 30, 70]]),  # dog: two-part polygon
        _ann(b, 1, _uncompressed_rle_of(_box_mask(80, 60, 50, 75, 2, 20))),  # cat: uncompressed RLE
        _ann(c, 1, [[8, 8, 40, 12, 30, 50, 6, 40]], iscrowd=None, with_area=False),  # no iscrowd/area keys
        _ann(c, 2, [[42, 40, 62, 40, 62, 62, 42, 62]]),
    ]
    for i, ann in enumerate(anns):
        ann["id"] = i  # Roboflow numbers annotations from 0
    categories = [
        {"id": 0, "name": "animals", "supercategory": "none"},
        {"id": 1, "name": "cat", "supercategory": "animals"},
        {"id": 2, "name": "dog", "supercategory": "animals"},
        {"id": 3, "name": "bird", "supercategory": "animals"},
    ]
    return {"info": {}, "images": images, "annotations": anns, "categories": categories}


def perfect_detections(gt: dict, *, skip_category: int | None = None) -> list[Detection]:
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    coco.createIndex()
    dets = []
    for ann in coco.dataset["annotations"]:
        if ann.get("iscrowd") or ann["category_id"] == skip_category:
            continue
        rle = coco.annToRLE(ann)
        counts = rle["counts"].decode("ascii") if isinstance(rle["counts"], bytes) else rle["counts"]
        dets.append(
            Detection(
                image_id=ann["image_id"],
                category_id=ann["category_id"],
                score=0.9,
                bbox=tuple(float(v) for v in ann["bbox"]),
                rle={"size": [int(v) for v in rle["size"]], "counts": counts},
            )
        )
    return dets


# ---------------------------------------------------------------------------------------------------------------
# coco_evaluate
# ---------------------------------------------------------------------------------------------------------------


def test_perfect_predictions_score_one_and_gt_is_untouched():
    gt = make_gt()
    before = copy.deepcopy(gt)
    dets = perfect_detections(gt)
    result = coco_evaluate(gt, dets)

    assert gt == before  # COCOeval rewrites segmentations in place: ours must work on a copy
    for kind in (result.bbox, result.segm):
        assert kind["AP"] == pytest.approx(1.0)
        assert kind["AP50"] == pytest.approx(1.0)
        assert kind["AP75"] == pytest.approx(1.0)
        assert kind["AR100"] == pytest.approx(1.0)
    assert set(result.per_class) == {"animals", "cat", "dog", "bird"}
    for name in ("cat", "dog"):
        assert result.per_class[name] == pytest.approx(
            {"bbox_AP": 1.0, "bbox_AP50": 1.0, "segm_AP": 1.0, "segm_AP50": 1.0}
        )
    for name in ("animals", "bird"):  # no GT -> undefined
        assert result.per_class[name] == {
            "bbox_AP": None,
            "bbox_AP50": None,
            "segm_AP": None,
            "segm_AP50": None,
        }
    assert result.num_images == 3
    assert result.num_detections == len(dets) == 6
    assert result.summary == pytest.approx(
        {
            "bbox_AP": 1.0,
            "bbox_AP50": 1.0,
            "bbox_AP75": 1.0,
            "segm_AP": 1.0,
            "segm_AP50": 1.0,
            "segm_AP75": 1.0,
        }
    )
    as_dict = result.to_dict()
    assert set(as_dict) == {"bbox", "segm", "per_class", "num_images", "num_detections", "summary"}
    assert as_dict["summary"] == result.summary
    json.dumps(as_dict, allow_nan=False)
    assert set(as_dict["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"}
    for value in [*result.bbox.values(), *result.segm.values()]:
        assert value is None or 0.0 <= value <= 1.0


def test_accepts_a_coco_object():
    gt = make_gt()
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    coco.createIndex()
    result = coco_evaluate(coco, perfect_detections(gt))
    assert result.segm["AP"] == pytest.approx(1.0)
    assert result.bbox["AP"] == pytest.approx(1.0)


def test_shifted_boxes_lower_bbox_ap_only():
    gt = make_gt()
    dets = perfect_detections(gt)
    for det in dets:
        x, y, w, h = det.bbox
        det.bbox = (x + 0.2 * w, y, w, h)  # IoU 0.8/1.2 = 0.67: matched at 0.5..0.65, missed above
    result = coco_evaluate(gt, dets)
    assert 0.0 < result.bbox["AP"] < 1.0
    assert result.bbox["AP50"] == pytest.approx(1.0)
    assert result.bbox["AP75"] == pytest.approx(0.0)
    # the masks are untouched: segm is evaluated on the RLEs, not on the boxes
    assert result.segm["AP"] == pytest.approx(1.0)


def test_missing_class_lowers_only_that_class():
    gt = make_gt()
    result = coco_evaluate(gt, perfect_detections(gt, skip_category=2))
    assert result.per_class["dog"] == pytest.approx(
        {"bbox_AP": 0.0, "bbox_AP50": 0.0, "segm_AP": 0.0, "segm_AP50": 0.0}
    )
    assert result.per_class["cat"] == pytest.approx(
        {"bbox_AP": 1.0, "bbox_AP50": 1.0, "segm_AP": 1.0, "segm_AP50": 1.0}
    )
    assert 0.0 < result.bbox["AP"] < 1.0
    assert 0.0 < result.segm["AP"] < 1.0


def test_no_detections_gives_zeros():
    gt = make_gt()
    result = coco_evaluate(gt, [])
    assert isinstance(result, EvalResult)
    assert result.num_detections == 0
    for kind in (result.bbox, result.segm):
        for name in ("AP", "AP50", "AP75", "AR100"):
            assert kind[name] == 0.0
        for value in kind.values():
            assert value is None or value == 0.0
    assert result.per_class["cat"] == {"bbox_AP": 0.0, "bbox_AP50": 0.0, "segm_AP": 0.0, "segm_AP50": 0.0}
    assert result.per_class["bird"]["segm_AP"] is None
    assert result.summary == {k: 0.0 for k in result.summary}


def test_unknown_image_id_is_an_error():
    gt = make_gt()
    det = perfect_detections(gt)[0]
    det.image_id = 99
    with pytest.raises(ValueError, match="99"):
        coco_evaluate(gt, [det])


def test_false_positives_and_crowd_region():
    gt = make_gt()
    dets = perfect_detections(gt)
    # a detection on the crowd region is ignored, not a false positive
    crowd = next(a for a in gt["annotations"] if a["iscrowd"])
    dets.append(
        Detection(0, 1, 0.95, tuple(crowd["bbox"]), crowd["segmentation"])  # compressed RLE already
    )
    assert coco_evaluate(gt, dets).segm["AP"] == pytest.approx(1.0)
    # a confident detection on empty background is a false positive ranked first
    empty = _rle_of(_box_mask(64, 64, 0, 5, 50, 60))
    dets.append(Detection(2, 1, 0.99, (50.0, 0.0, 10.0, 5.0), empty))
    result = coco_evaluate(gt, dets)
    assert result.segm["AP"] < 1.0
    assert result.per_class["dog"]["segm_AP"] == pytest.approx(1.0)


def test_degenerate_gt_annotations():
    gt = make_gt()
    img = gt["images"][2]
    gt["annotations"].append(  # a 2-point "polygon" next to a real one, and a flat (unnested) polygon
        {"id": 50, "image_id": 2, "category_id": 2, "bbox": [0, 44, 10, 10], "area": 100.0,
         "segmentation": [[0, 44, 10, 44], [0, 44, 10, 44, 10, 54, 0, 54]], "iscrowd": 0}
    )  # fmt: skip
    gt["annotations"].append(
        {"id": 51, "image_id": 2, "category_id": 2, "bbox": [20, 54, 10, 10], "area": 100.0,
         "segmentation": [], "iscrowd": 0}  # box only: the box stands in for the mask
    )  # fmt: skip
    dets = perfect_detections({**gt, "annotations": gt["annotations"][:-2]})
    for x, y in ((0, 44), (20, 54)):
        m = _box_mask(img["height"], img["width"], y, y + 10, x, x + 10)
        dets.append(Detection(2, 2, 0.8, (float(x), float(y), 10.0, 10.0), _rle_of(m)))
    result = coco_evaluate(gt, dets)
    assert result.bbox["AP"] == pytest.approx(1.0)
    assert result.segm["AP50"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------------------------
# postprocess
# ---------------------------------------------------------------------------------------------------------------

Q, MH, MW = 6, 32, 32


def _outputs(q: int = Q):
    logits = torch.linspace(-2.0, 3.0, q)
    presence = torch.tensor(0.3)
    boxes = torch.tensor([[0.5, 0.5, 0.5, 0.5]]).repeat(q, 1)
    masks = torch.full((q, MH, MW), -10.0)
    return logits, presence, boxes, masks


def _decode(det: Detection) -> np.ndarray:
    return mask_utils.decode({"size": det.rle["size"], "counts": det.rle["counts"].encode("ascii")})


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum()))


def test_scores_are_sigmoid_products_sorted_and_limited():
    logits, presence, boxes, masks = _outputs()
    dets = postprocess(logits, presence, boxes, masks, image_id=7, category_id=3, orig_size=(480, 640))
    expected = sorted((torch.sigmoid(logits) * torch.sigmoid(presence)).tolist(), reverse=True)
    assert [d.score for d in dets] == pytest.approx(expected)
    assert all(d.image_id == 7 and d.category_id == 3 for d in dets)
    assert all(isinstance(d.score, float) for d in dets)

    top2 = postprocess(
        logits, presence, boxes, masks, image_id=7, category_id=3, orig_size=(480, 640), top_k=2
    )
    assert [d.score for d in top2] == pytest.approx(expected[:2])

    thr = expected[3]
    kept = postprocess(
        logits,
        presence.reshape(1),
        boxes,
        masks,
        image_id=7,
        category_id=3,
        orig_size=(480, 640),
        score_threshold=thr,
    )
    assert [d.score for d in kept] == pytest.approx(expected[:4])
    none = postprocess(
        logits, presence, boxes, masks, image_id=7, category_id=3, orig_size=(480, 640), score_threshold=1.0
    )
    assert none == []


def test_presence_scales_every_score():
    logits, _, boxes, masks = _outputs()
    low = postprocess(logits, torch.tensor(-8.0), boxes, masks, image_id=0, category_id=1, orig_size=(10, 10))
    assert max(d.score for d in low) < 1e-3


def test_boxes_to_original_pixels():
    logits, presence, _, masks = _outputs(2)
    boxes = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.95, 0.05, 0.2, 0.2]])
    logits = torch.tensor([2.0, 1.0])
    dets = postprocess(logits, presence, boxes, masks, image_id=0, category_id=1, orig_size=(480, 640))
    assert dets[0].bbox == pytest.approx((160.0, 120.0, 320.0, 240.0))
    # clipped to the image: x in [0.85, 1.05] * 640, y in [-0.05, 0.15] * 480
    assert dets[1].bbox == pytest.approx((544.0, 0.0, 96.0, 72.0), abs=1e-3)
    assert all(isinstance(v, float) for v in dets[0].bbox)


def test_mask_upsampled_to_original_size():
    logits, presence, boxes, masks = _outputs(1)
    masks[0, : MH // 2, : MW // 2] = 10.0
    (det,) = postprocess(logits, presence, boxes, masks, image_id=0, category_id=1, orig_size=(480, 640))
    assert det.rle["size"] == [480, 640]
    assert isinstance(det.rle["counts"], str)
    decoded = _decode(det)
    assert decoded.shape == (480, 640)
    expected = _box_mask(480, 640, 0, 240, 0, 320)
    assert _iou(decoded, expected) > 0.95


def test_mask_threshold_and_half_precision():
    logits, presence, boxes, masks = _outputs(1)
    masks[0, :, : MW // 2] = 1.0  # left half at logit 1, right half at -10
    masks = masks.to(torch.bfloat16)
    (on,) = postprocess(logits, presence, boxes, masks, image_id=0, category_id=1, orig_size=(40, 60))
    (off,) = postprocess(
        logits, presence, boxes, masks, image_id=0, category_id=1, orig_size=(40, 60), mask_threshold=2.0
    )
    assert _iou(_decode(on), _box_mask(40, 60, 0, 40, 0, 30)) > 0.9
    assert _decode(off).sum() == 0  # an empty mask is still a detection (the box may be right)


def test_mask_nms_removes_duplicate_keeps_distinct():
    logits = torch.tensor([3.0, 2.0, 1.0])
    presence = torch.tensor(5.0)
    boxes = torch.tensor([[0.25, 0.25, 0.5, 0.5]] * 3)
    masks = torch.full((3, MH, MW), -10.0)
    masks[0, :16, :16] = 10.0
    masks[1, :16, :15] = 10.0  # near-duplicate of slot 0, lower score
    masks[2, 16:, 16:] = 10.0  # a distinct instance
    kw = {"image_id": 0, "category_id": 1, "orig_size": (96, 128)}
    assert len(postprocess(logits, presence, boxes, masks, **kw)) == 3
    kept = postprocess(logits, presence, boxes, masks, nms_iou=0.5, **kw)
    assert [d.score for d in kept] == pytest.approx(
        [torch.sigmoid(torch.tensor(v)).item() * torch.sigmoid(presence).item() for v in (3.0, 1.0)]
    )
    assert _iou(_decode(kept[1]), _box_mask(96, 128, 48, 96, 64, 128)) > 0.95


def test_postprocess_then_evaluate_end_to_end():
    gt = {
        "images": [{"id": 0, "height": 480, "width": 640, "file_name": "x.jpg"}],
        "annotations": [
            {"id": 0, "image_id": 0, "category_id": 1, "bbox": [0, 0, 320, 240], "area": 76800.0, "iscrowd": 0,
             "segmentation": [[0, 0, 320, 0, 320, 240, 0, 240]]}
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }  # fmt: skip
    logits, presence, boxes, masks = _outputs()
    boxes[-1] = torch.tensor([0.25, 0.25, 0.5, 0.5])  # the best slot is the right one
    masks[-1, :16, :16] = 10.0
    dets = postprocess(
        logits, presence, boxes, masks, image_id=0, category_id=1, orig_size=(480, 640), top_k=1
    )
    result = coco_evaluate(gt, dets)
    assert result.bbox["AP"] == pytest.approx(1.0)
    assert result.segm["AP"] == pytest.approx(1.0)


def test_postprocess_empty_and_large_is_cheap():
    _, presence, _, _ = _outputs()
    empty = torch.zeros(0)
    assert (
        postprocess(
            empty,
            presence,
            torch.zeros(0, 4),
            torch.zeros(0, MH, MW),
            image_id=0,
            category_id=1,
            orig_size=(8, 8),
        )
        == []
    )
    q = 200
    logits = torch.randn(q)
    boxes = torch.rand(q, 4)
    masks = torch.randn(q, 288, 288)
    start = time.perf_counter()
    dets = postprocess(
        logits, presence, boxes, masks, image_id=0, category_id=1, orig_size=(720, 1280), top_k=100
    )
    assert len(dets) == 100
    assert time.perf_counter() - start < 10.0


# ---------------------------------------------------------------------------------------------------------------
# limit_per_image
# ---------------------------------------------------------------------------------------------------------------


def test_limit_per_image_across_categories():
    rng = np.random.default_rng(0)
    dets = [
        Detection(image_id=i % 2 if i < 300 else 5, category_id=int(rng.integers(1, 4)), score=float(rng.random()),
                  bbox=(0.0, 0.0, 1.0, 1.0), rle={})
        for i in range(310)
    ]  # fmt: skip
    limited = limit_per_image(dets, top_k=100)
    for image_id, expected_count in ((0, 100), (1, 100), (5, 10)):
        mine = [d for d in dets if d.image_id == image_id]
        kept = [d for d in limited if d.image_id == image_id]
        assert len(kept) == expected_count
        assert sorted(d.score for d in kept) == sorted(d.score for d in mine)[-expected_count:]
    # order preserved
    positions = [dets.index(d) for d in limited]
    assert positions == sorted(positions)
    assert limit_per_image([], 100) == []


def test_metric_values_are_json_safe():
    result = coco_evaluate(make_gt(), perfect_detections(make_gt()))
    flat = [*result.bbox.values(), *result.segm.values()]
    flat += [v for m in result.per_class.values() for v in m.values()]
    assert all(v is None or (isinstance(v, float) and not math.isnan(v)) for v in flat)


def test_ground_truth_without_annotations():
    gt = {**make_gt(), "annotations": []}
    dets = perfect_detections(make_gt())
    result = coco_evaluate(gt, dets)
    assert result.bbox["AP"] is None  # undefined, not a fake score
    assert result.summary["segm_AP"] == 0.0  # but the flat summary stays comparable
    assert coco_evaluate(gt, []).summary == {k: 0.0 for k in result.summary}
