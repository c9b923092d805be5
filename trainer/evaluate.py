"""Evaluation: one query's raw predictions -> COCO detections, and COCO bbox/segm metrics.

`postprocess` turns the outputs of one query (an image and one class prompt, see `trainer.types`) into
`Detection`s in the pixels of the ORIGINAL image; `coco_evaluate` scores a split's detections against its
COCO ground truth with pycocotools. All metric values are fractions in [0, 1]; a metric that is undefined
(pycocotools' -1: no ground truth in that class or area range) is reported as None.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

from trainer.mask_iou import pairwise_iou

# Upsampling K slots to a large original image costs K*H*W floats; do it in chunks of at most this many
# output pixels so that 100 slots at 4K stay at ~128 MB of float32 instead of several GB.
_UPSAMPLE_CHUNK_PIXELS = 32 * 1024 * 1024

_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
_AR100_INDEX = 8  # COCOeval.stats: AR@1, AR@10, AR@100 are 6, 7, 8


@dataclass
class Detection:
    """One predicted instance, in ORIGINAL image pixels."""

    image_id: int
    category_id: int
    score: float
    bbox: tuple[float, float, float, float]  # xywh
    rle: dict  # compressed RLE: {'size': [h, w] of the original image, 'counts': str}


# --------------------------------------------------------------------------------------------------------------
# Post-processing
# --------------------------------------------------------------------------------------------------------------


def _encode_masks(mask_logits: Tensor, size: tuple[int, int], threshold: float) -> list[dict]:
    """[K, h, w] mask logits -> K compressed RLEs of binary masks at `size` (h, w); counts as str."""
    height, width = size
    chunk = max(1, _UPSAMPLE_CHUNK_PIXELS // max(1, height * width))
    rles: list[dict] = []
    for start in range(0, mask_logits.shape[0], chunk):
        part = mask_logits[start : start + chunk].float().unsqueeze(0)  # [1, k, h, w]
        up = F.interpolate(part, size=(height, width), mode="bilinear", align_corners=False)[0]
        # pycocotools wants [H, W, K] uint8 in Fortran order: that is exactly the memory of a C-contiguous
        # [K, W, H] array, so transpose on the (possibly GPU) device and view it back without a copy.
        binary = (up > threshold).transpose(1, 2).contiguous().to(torch.uint8).cpu().numpy()
        encoded = mask_utils.encode(binary.transpose(2, 1, 0))
        for rle in encoded:
            rles.append(
                {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}
            )
    return rles


def mask_nms(rles: Sequence[dict], iou_threshold: float, groups: Sequence[int] | None = None) -> list[int]:
    """Greedy mask NMS over masks already sorted by descending score: a mask is dropped when its mask IoU with
    a kept, higher-scored mask of the same group exceeds `iou_threshold` (so 1.0 keeps everything). `groups`
    (one label per mask, e.g. its prompt) confines suppression to masks of one group; None: all compete
    (class-agnostic). Returns the indices kept, in input order. The IoUs are exact (`pairwise_iou`: on the
    compressed RLEs, or on decoded masks where that is cheaper). Evaluation (`postprocess`) and serving
    (`trainer.predict`) both use this."""
    labels = list(groups) if groups is not None else [0] * len(rles)
    if len(labels) != len(rles):
        raise ValueError(f"{len(rles)} masks but {len(labels)} group labels")
    members: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        members.setdefault(label, []).append(i)
    kept: list[int] = []
    for indices in members.values():
        if len(indices) == 1:
            kept += indices
            continue
        subset = [rles[i] for i in indices]
        ious = pairwise_iou(subset)
        chosen: list[int] = []
        for j in range(len(indices)):
            if not chosen or ious[j, chosen].max() <= iou_threshold:
                chosen.append(j)
        kept += [indices[j] for j in chosen]
    return sorted(kept)


@torch.no_grad()
def postprocess(
    logits: Tensor,
    presence: Tensor,
    boxes: Tensor,
    masks: Tensor,
    *,
    image_id: int,
    category_id: int,
    orig_size: tuple[int, int],
    score_threshold: float = 0.0,
    top_k: int = 100,
    mask_threshold: float = 0.0,
    nms_iou: float | None = None,
) -> list[Detection]:
    """One query's predictions -> detections, best score first.

    logits [Q] slot logits, presence a scalar (or [1]) presence logit, boxes [Q, 4] cxcywh in [0, 1] of the
    model input frame, masks [Q, h, w] mask logits. orig_size is (h, w) of the original image.

    Score = sigmoid(logit) * sigmoid(presence). The top_k best slots whose score is >= score_threshold are kept;
    only those are decoded. Boxes become pixels of the original image (clipped to it), returned as xywh. Mask
    logits are upsampled bilinearly (align_corners=False) straight to the original size (the input frame is the
    image stretched to a square, so this also undoes the stretch) and thresholded at mask_threshold (logit 0 =
    probability 0.5). A slot whose mask is empty is still returned (its box may be fine).

    nms_iou (off by default at evaluation, `TrainConfig.eval_nms_iou`): `mask_nms`, dropping a mask whose mask
    IoU with a higher-scored kept one exceeds nms_iou. NMS runs on the top_k slots, so fewer than top_k may
    remain.
    """
    height, width = int(orig_size[0]), int(orig_size[1])
    logits = logits.reshape(-1)
    num_slots = logits.shape[0]
    if num_slots == 0 or top_k <= 0:
        return []
    presence_prob = torch.sigmoid(presence.detach().float().reshape(-1)[0])
    scores = torch.sigmoid(logits.detach().float()) * presence_prob
    top_scores, top_idx = torch.topk(scores, min(int(top_k), num_slots), sorted=True)
    keep = top_scores >= score_threshold
    top_scores, top_idx = top_scores[keep], top_idx[keep]
    if top_idx.numel() == 0:
        return []

    cx, cy, bw, bh = boxes.detach()[top_idx].float().unbind(-1)
    x0 = ((cx - 0.5 * bw) * width).clamp(0, width)
    y0 = ((cy - 0.5 * bh) * height).clamp(0, height)
    x1 = ((cx + 0.5 * bw) * width).clamp(0, width)
    y1 = ((cy + 0.5 * bh) * height).clamp(0, height)
    xywh = torch.stack([x0, y0, x1 - x0, y1 - y0], dim=-1).cpu().tolist()

    rles = _encode_masks(masks.detach()[top_idx], (height, width), mask_threshold)
    order = mask_nms(rles, nms_iou) if nms_iou is not None else range(len(rles))
    score_list = top_scores.cpu().tolist()
    return [
        Detection(
            image_id=int(image_id),
            category_id=int(category_id),
            score=float(score_list[i]),
            bbox=(float(xywh[i][0]), float(xywh[i][1]), float(xywh[i][2]), float(xywh[i][3])),
            rle=rles[i],
        )
        for i in order
    ]


def limit_per_image(dets: list[Detection], top_k: int = 100) -> list[Detection]:
    """Keep the top_k scores per image across all categories (the COCO protocol's 100 detections per image).

    pycocotools' maxDets only caps detections per (image, category); apply this before `coco_evaluate` to
    follow the official rule. The detections kept stay in their input order; ties keep the earlier one.
    """
    by_image: dict[int, list[int]] = {}
    for i, det in enumerate(dets):
        by_image.setdefault(det.image_id, []).append(i)
    kept: set[int] = set()
    for indices in by_image.values():
        if len(indices) <= top_k:
            kept.update(indices)
        else:
            kept.update(sorted(indices, key=lambda i: -dets[i].score)[: max(0, top_k)])
    return [det for i, det in enumerate(dets) if i in kept]


# --------------------------------------------------------------------------------------------------------------
# COCO evaluation
# --------------------------------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    """COCO metrics as fractions in [0, 1]; None where pycocotools says undefined (-1: no GT there)."""

    bbox: dict[str, float | None]  # {'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR100'}
    segm: dict[str, float | None]
    # class name -> {'bbox_AP', 'bbox_AP50', 'segm_AP', 'segm_AP50'}; None for a class without ground truth
    per_class: dict[str, dict[str, float | None]]
    num_images: int
    num_detections: int

    def to_dict(self) -> dict:
        """JSON-ready: the fields plus 'summary'."""
        return {**asdict(self), "summary": self.summary}

    @property
    def summary(self) -> dict[str, float]:
        """Flat {'bbox_AP', 'bbox_AP50', 'bbox_AP75', 'segm_AP', 'segm_AP50', 'segm_AP75'}, always floats: an
        undefined value (only when the ground truth has no annotation at all) reads 0.0 so it can be compared."""
        return {
            f"{kind}_{name}": float(metrics[name] or 0.0)
            for kind, metrics in (("bbox", self.bbox), ("segm", self.segm))
            for name in ("AP", "AP50", "AP75")
        }


def _segm_to_rle(segm: Any, height: int, width: int) -> dict:
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(segm, height, width)
    return segm


def _clean_polygons(segm: list) -> list[list[float]]:
    """Polygons usable by pycocotools: a flat list is one polygon; drop those with < 3 points (pycocotools
    reads a 4-number polygon as a box and crashes on shorter ones) and a trailing odd coordinate."""
    if segm and not isinstance(segm[0], list | tuple):
        segm = [segm]
    polys = []
    for poly in segm:
        coords = [float(v) for v in poly]
        coords = coords[: len(coords) // 2 * 2]
        if len(coords) >= 6:
            polys.append(coords)
    return polys


def _normalise_gt(dataset: dict) -> dict:
    """A copy of a COCO ground-truth dict that pycocotools evaluates correctly.

    - Annotation ids are renumbered 1..N: COCOeval treats a matched GT id of 0 as "unmatched", so a GT with
      id 0 (Roboflow exports start at 0) would make its true positive count as a false positive.
    - Missing iscrowd -> 0; missing area -> mask area (else box area); missing bbox -> mask's box.
    - Degenerate polygons are dropped; an annotation without a usable mask gets its box as a mask.
    The caller's dict is not modified (COCOeval rewrites segmentations in place).
    """
    images = {img["id"]: img for img in dataset.get("images", [])}
    annotations = []
    for new_id, ann in enumerate(dataset.get("annotations", []), start=1):
        ann = dict(ann)
        img = images.get(ann["image_id"])
        ann["id"] = new_id
        ann["iscrowd"] = int(ann.get("iscrowd") or 0)
        segm = ann.get("segmentation")
        if isinstance(segm, list):
            segm = _clean_polygons(segm) or None
        elif isinstance(segm, dict) and not segm.get("counts"):
            segm = None
        bbox = ann.get("bbox")
        if segm is None and bbox is not None and len(bbox) == 4:
            x, y, w, h = (float(v) for v in bbox)
            segm = [[x, y, x, y + h, x + w, y + h, x + w, y]]
        needs_mask = bbox is None or len(bbox) != 4 or ann.get("area") is None
        rle = None
        if needs_mask and segm is not None and img is not None:  # only then: COCOeval decodes masks itself
            rle = _segm_to_rle(segm, int(img["height"]), int(img["width"]))
        if bbox is None or len(bbox) != 4:
            bbox = mask_utils.toBbox(rle).tolist() if rle is not None else [0.0, 0.0, 0.0, 0.0]
        ann["bbox"] = [float(v) for v in bbox]
        ann["segmentation"] = segm if segm is not None else [[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
        if ann.get("area") is None:
            ann["area"] = float(mask_utils.area(rle)) if rle is not None else ann["bbox"][2] * ann["bbox"][3]
        annotations.append(ann)
    return {
        "info": dataset.get("info", {}),
        "images": list(images.values()),
        "annotations": annotations,
        "categories": list(dataset.get("categories", [])),
    }


def _coco_from_dataset(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _load_results(coco_gt: COCO, results: list[dict]) -> COCO:
    if results:
        return coco_gt.loadRes(results)
    # loadRes crashes on an empty list; an empty result set evaluates fine (every metric is 0 or undefined).
    return _coco_from_dataset(
        {"images": coco_gt.dataset["images"], "annotations": [], "categories": coco_gt.dataset["categories"]}
    )


def _metric(value: float) -> float | None:
    value = float(value)
    return None if value < 0 or math.isnan(value) else value


def _mean_valid(precision: np.ndarray) -> float | None:
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else None


def _run_cocoeval(
    coco_gt: COCO, coco_dt: COCO, iou_type: str
) -> tuple[dict, dict[int, dict[str, float | None]]]:
    evaluator = COCOeval(coco_gt, coco_dt, iou_type)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    overall = {name: _metric(stats[i]) for i, name in enumerate(_STAT_NAMES)}
    overall["AR100"] = _metric(stats[_AR100_INDEX])

    params = evaluator.params
    precision = evaluator.eval[
        "precision"
    ]  # [T iou thresholds, R recall points, K classes, A areas, M maxDets]
    area = params.areaRngLbl.index("all")
    max_det = params.maxDets.index(100)
    iou50 = int(np.argmin(np.abs(params.iouThrs - 0.5)))
    per_class = {}
    for k, cat_id in enumerate(params.catIds):
        p = precision[:, :, k, area, max_det]
        per_class[cat_id] = {"AP": _mean_valid(p), "AP50": _mean_valid(p[iou50])}
    return overall, per_class


def _class_names(categories: list[dict]) -> dict[int, str]:
    """Category id -> name; a name shared by several categories gets '#<id>' appended to stay unique."""
    names = {cat["id"]: str(cat.get("name", cat["id"])) for cat in categories}
    shared = {name for name in names.values() if list(names.values()).count(name) > 1}
    return {cat_id: f"{name}#{cat_id}" if name in shared else name for cat_id, name in names.items()}


def coco_evaluate(gt: dict | COCO, detections: Sequence[Detection]) -> EvalResult:
    """COCO bbox and segm metrics of `detections` against a split's ground truth.

    gt is a COCO dict (e.g. a split's `_annotations.coco.json`: polygons or RLE masks, iscrowd) or a COCO
    object; it is not modified. Detections must refer to image ids of gt (ValueError otherwise). Every image of
    gt is evaluated. pycocotools' maxDets=100 caps detections per (image, category): use `limit_per_image`
    first for the official 100-per-image rule.

    Per-class AP / AP50 come from COCOeval.eval['precision'] at area 'all', maxDets 100, averaged over the IoU
    thresholds (AP) or at IoU 0.5 (AP50), ignoring -1 entries. A class without GT, or an area range without GT,
    gets None. No detections -> 0 wherever GT exists.
    """
    dataset = gt.dataset if isinstance(gt, COCO) else gt
    coco_gt = _coco_from_dataset(_normalise_gt(dataset))

    known = set(coco_gt.getImgIds())
    unknown = {d.image_id for d in detections} - known
    if unknown:
        raise ValueError(f"detections refer to image ids not in the ground truth: {sorted(unknown)[:10]}")

    # Separate result sets: loadRes replaces the mask of a result that has a bbox with its box rectangle.
    bbox_results = [
        {
            "image_id": d.image_id,
            "category_id": d.category_id,
            "bbox": [float(v) for v in d.bbox],
            "score": d.score,
        }
        for d in detections
    ]
    segm_results = [
        {"image_id": d.image_id, "category_id": d.category_id, "segmentation": dict(d.rle), "score": d.score}
        for d in detections
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        bbox_dt = _load_results(coco_gt, bbox_results)
        segm_dt = _load_results(coco_gt, segm_results)
    bbox_overall, bbox_classes = _run_cocoeval(coco_gt, bbox_dt, "bbox")
    segm_overall, segm_classes = _run_cocoeval(coco_gt, segm_dt, "segm")

    names = _class_names(coco_gt.dataset["categories"])
    per_class = {
        names[cat_id]: {
            "bbox_AP": bbox_classes[cat_id]["AP"],
            "bbox_AP50": bbox_classes[cat_id]["AP50"],
            "segm_AP": segm_classes[cat_id]["AP"],
            "segm_AP50": segm_classes[cat_id]["AP50"],
        }
        for cat_id in sorted(names)
        if cat_id in bbox_classes
    }
    return EvalResult(
        bbox=bbox_overall,
        segm=segm_overall,
        per_class=per_class,
        num_images=len(known),
        num_detections=len(detections),
    )
