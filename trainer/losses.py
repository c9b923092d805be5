"""Set-prediction losses for SAM 3 fine-tuning (the recipe of Meta's SAM 3 fine-tuning configs).

Per decoder layer, the Hungarian matcher pairs prediction slots with target instances; then

* boxes:    L1 on cxcywh and 1 - GIoU on xyxy of the matched pairs, summed / num_boxes;
* classes:  IoU-aware BCE-with-logits over *all* Q slots of every query: unmatched slots (and every slot
            of a query with no targets) have target 0, a matched slot has the soft target
            sigmoid(logit)^alpha * IoU(pred, gt)^(1 - alpha) (both detached), summed / num_boxes;
* presence: BCE-with-logits of the per-query presence logit against "the query has >= 1 target",
            mean over queries (averaged over all layers when `aux`, else the last layer's);
* masks:    final layer only: sigmoid focal loss (mean over pixels) and dice loss of the matched
            masks, summed over instances / num_boxes;
* optional one-to-many term (`one_to_many` > 0), final layer only: besides its Hungarian slot, each
  target also claims up to `o2m_topk` slots whose score sigmoid(logit) * IoU exceeds `o2m_threshold`,
  and those pairs get the box and class losses once more, weighted by `one_to_many`.

num_boxes is the number of target instances in the batch (or the caller's all-reduced count under DDP),
clamped to >= 1, so a batch without targets has zero box and mask losses and no NaN. Everything is
computed in float32 whatever the input dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_convert, box_iou, generalized_box_iou_loss, sigmoid_focal_loss

from trainer.matcher import HungarianMatcher, pad_target_boxes
from trainer.types import Match, ModelOutputs, QueryTargets


@dataclass
class LossWeights:
    bbox_l1: float = 5.0
    giou: float = 2.0
    cls: float = 20.0
    presence: float = 20.0
    mask_focal: float = 200.0
    mask_dice: float = 10.0
    iou_aware_alpha: float = 0.25  # target = p^alpha * IoU^(1-alpha) for matched slots
    focal_alpha: float = 0.25  # of the mask focal loss
    focal_gamma: float = 2.0
    # Classification normalised as Meta's IABCEMdetr: mean over all slots, positives x10, negatives weighted by
    # p^2 (easy negatives barely count), and no per-slot loss on queries whose concept is absent (the presence
    # head answers those). Summing over slots / num_boxes instead lets 200 negative slots drown the box terms.
    cls_pos_weight: float = 10.0
    cls_neg_gamma: float = 2.0
    cls_min_target: float = 0.01
    # Meta leaves negative queries to the presence head, which suits a model that already knows concepts.
    # A model trained from scratch learns to tell prompts apart much sooner when every slot of a negative
    # query is also pushed down (pretraining turns this on).
    cls_negative_queries: bool = False
    aux: bool = True  # box + class (+ presence) losses on every decoder layer, not only the last
    one_to_many: float = 0.0  # weight of the extra one-to-many term (0 = off)


@dataclass
class _Pairs:
    """Matched (slot, target) pairs of one layer, flattened over the batch."""

    batch: Tensor  # [K] query index
    slot: Tensor  # [K] prediction slot within the query
    target: Tensor  # [K] target index within the query

    @classmethod
    def from_matches(cls, matches: Sequence[Match], device: torch.device) -> _Pairs:
        if not matches:
            empty = torch.empty(0, dtype=torch.long, device=device)
            return cls(empty, empty, empty)
        batch = torch.cat([torch.full_like(m.pred, b) for b, m in enumerate(matches)]).to(device)
        slot = torch.cat([m.pred for m in matches]).to(device)
        target = torch.cat([m.target for m in matches]).to(device)
        return cls(batch, slot, target)

    def __len__(self) -> int:
        return self.batch.numel()


def paired_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of boxes1[i] with boxes2[i] (both [K, 4] xyxy) -> [K]; NaN (degenerate boxes) becomes 0."""
    iou = box_iou(boxes1.unsqueeze(1), boxes2.unsqueeze(1))[:, 0, 0]
    return iou.nan_to_num(0.0).clamp(0.0, 1.0)


def dice_loss(mask_logits: Tensor, mask_targets: Tensor) -> Tensor:
    """Per-instance dice loss [K] of mask logits vs binary targets, both [K, P] (P = flattened pixels):
    1 - (2 sum(p t) + 1) / (sum p + sum t + 1), p = sigmoid(logit)."""
    prob = mask_logits.sigmoid()
    numerator = 2 * (prob * mask_targets).sum(-1) + 1
    denominator = prob.sum(-1) + mask_targets.sum(-1) + 1
    return 1 - numerator / denominator


def resize_target_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Bring target masks [K, h, w] to the prediction's resolution: F.interpolate(mode="area") then
    threshold at 0.5, so a target pixel is on when at least half of the area it covers was on (for
    upsampling "area" degenerates to nearest neighbour). A no-op when the sizes already agree."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size))
    resized = F.interpolate(masks.unsqueeze(1), size=size, mode="area").squeeze(1)
    return (resized > 0.5).to(masks.dtype)


class SetCriterion:
    o2m_topk: int = 4
    o2m_threshold: float = 0.4

    def __init__(self, matcher: HungarianMatcher, weights: LossWeights) -> None:
        self.matcher = matcher
        self.weights = weights

    # ------------------------------------------------------------------ helpers

    def _box_and_cls_losses(
        self,
        logits: Tensor,
        boxes: Tensor,
        tgt_boxes: Tensor,
        pairs: _Pairs,
        num_boxes: float,
        has_targets: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(L1, 1 - GIoU) summed / num_boxes, and the IoU-aware BCE averaged over slots (see LossWeights).

        logits [B, Q], boxes [B, Q, 4] cxcywh (float32), tgt_boxes [B, N, 4] padded cxcywh."""
        src = boxes[pairs.batch, pairs.slot]  # [K, 4]
        tgt = tgt_boxes[pairs.batch, pairs.target]  # [K, 4]
        src_xyxy = box_convert(src, "cxcywh", "xyxy")
        tgt_xyxy = box_convert(tgt, "cxcywh", "xyxy")

        loss_bbox = (src - tgt).abs().sum() / num_boxes
        loss_giou = generalized_box_iou_loss(src_xyxy, tgt_xyxy, reduction="sum") / num_boxes

        w = self.weights
        with torch.no_grad():
            iou = paired_iou(src_xyxy, tgt_xyxy)
            prob = logits[pairs.batch, pairs.slot].sigmoid()
            cls_target = torch.zeros_like(logits)
            matched = (prob**w.iou_aware_alpha * iou ** (1 - w.iou_aware_alpha)).clamp(min=w.cls_min_target)
            cls_target[pairs.batch, pairs.slot] = matched
            weight = logits.sigmoid() ** w.cls_neg_gamma
            weight[pairs.batch, pairs.slot] = w.cls_pos_weight
            if not w.cls_negative_queries:
                # has_targets comes from the per-query counts, kept on the CPU (pad_target_boxes).
                weight = weight * has_targets.to(device=weight.device, dtype=weight.dtype)[:, None]
        bce = F.binary_cross_entropy_with_logits(logits, cls_target, reduction="none")
        loss_cls = (bce * weight).mean()
        return loss_bbox, loss_giou, loss_cls

    def _mask_losses(
        self, mask_logits: Tensor, targets: Sequence[QueryTargets], matches: Sequence[Match], num_boxes: float
    ) -> tuple[Tensor, Tensor]:
        """(focal, dice) of the final layer's matched masks, each summed over instances / num_boxes."""
        device = mask_logits.device
        pairs = _Pairs.from_matches(matches, device)
        height, width = mask_logits.shape[-2:]
        size = (height, width)
        src = mask_logits[pairs.batch, pairs.slot].float().flatten(1)  # [K, H*W]
        tgt_parts = [
            resize_target_masks(
                t.masks[m.target.to(t.masks.device)].to(device=device, dtype=torch.float32), size
            )
            for t, m in zip(targets, matches, strict=True)
            if m.target.numel()
        ]
        tgt = torch.cat(tgt_parts).flatten(1) if tgt_parts else src.new_zeros(src.shape)

        focal = sigmoid_focal_loss(
            src, tgt, alpha=self.weights.focal_alpha, gamma=self.weights.focal_gamma, reduction="none"
        )
        loss_focal = focal.mean(-1).sum() / num_boxes
        loss_dice = dice_loss(src, tgt).sum() / num_boxes
        return loss_focal, loss_dice

    @torch.no_grad()
    def one_to_many_pairs(self, logits: Tensor, boxes: Tensor, tgt_boxes: Tensor, counts: Tensor) -> _Pairs:
        """Slots claimed by each target under the one-to-many rule: the top-k slots of that target by
        sigmoid(logit) * IoU, kept when the score exceeds the threshold. A slot claimed by several targets
        goes to the one it scores highest with. logits [B, Q], boxes [B, Q, 4], tgt_boxes [B, N, 4]."""
        B, Q = logits.shape
        if tgt_boxes.shape[1] == 0 or Q == 0:
            empty = torch.empty(0, dtype=torch.long, device=logits.device)
            return _Pairs(empty, empty, empty)
        iou = box_iou(box_convert(boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy"))
        score = logits.sigmoid().unsqueeze(-1) * iou.nan_to_num(0.0).clamp(0.0, 1.0)  # [B, Q, N]
        valid_target = (
            torch.arange(tgt_boxes.shape[1], device=logits.device) < counts.to(logits.device)[:, None]
        )
        score = score.masked_fill(~valid_target.unsqueeze(1), -1.0)

        k = min(self.o2m_topk, Q)
        top_score, top_slot = score.topk(k, dim=1)  # [B, k, N]
        claimed = torch.zeros_like(score, dtype=torch.bool)
        claimed.scatter_(1, top_slot, top_score > self.o2m_threshold)
        best_target = score.masked_fill(~claimed, -1.0).argmax(-1)  # [B, Q]
        batch, slot = claimed.any(-1).nonzero(as_tuple=True)
        return _Pairs(batch, slot, best_target[batch, slot])

    # ------------------------------------------------------------------ entry point

    def __call__(
        self, outputs: ModelOutputs, targets: Sequence[QueryTargets], num_boxes: float | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Returns (total weighted loss, unweighted detached components for logging).

        `num_boxes` overrides the local count of target instances (e.g. the DDP all-reduced mean)."""
        L, B, Q = outputs.logits.shape
        if outputs.boxes.shape != (L, B, Q, 4) or outputs.presence.shape != (L, B):
            raise ValueError("ModelOutputs shapes disagree: logits [L,B,Q], boxes [L,B,Q,4], presence [L,B]")
        if outputs.masks.shape[:2] != (B, Q):
            raise ValueError(f"masks {tuple(outputs.masks.shape)} do not match B={B}, Q={Q}")
        if len(targets) != B:
            raise ValueError(f"{len(targets)} targets for a batch of {B} queries")

        # The caller may run the forward pass (and this) under autocast: keep every loss op in float32.
        with torch.autocast(outputs.logits.device.type, enabled=False):
            return self._compute(outputs, targets, num_boxes)

    def _compute(
        self, outputs: ModelOutputs, targets: Sequence[QueryTargets], num_boxes: float | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        w = self.weights
        L = outputs.num_layers
        device = outputs.logits.device
        logits = outputs.logits.float()
        boxes = outputs.boxes.float()
        presence = outputs.presence.float()
        tgt_boxes, counts = pad_target_boxes(targets, device)
        n = float(counts.sum()) if num_boxes is None else float(num_boxes)
        n = max(n, 1.0)

        logs: dict[str, Tensor] = {}
        total = logits.new_zeros(())
        layers = range(L) if w.aux else range(L - 1, L)
        final_matches: list[Match] = []
        for layer in layers:
            matches = self.matcher(logits[layer], boxes[layer], targets)
            pairs = _Pairs.from_matches(matches, device)
            l1, giou, cls = self._box_and_cls_losses(
                logits[layer], boxes[layer], tgt_boxes, pairs, n, counts > 0
            )
            total = total + w.bbox_l1 * l1 + w.giou * giou + w.cls * cls
            suffix = "" if layer == L - 1 else f"_l{layer}"
            logs[f"loss_bbox{suffix}"] = l1
            logs[f"loss_giou{suffix}"] = giou
            logs[f"loss_cls{suffix}"] = cls
            if layer == L - 1:
                final_matches = matches

        is_present = (counts > 0).to(device=device, dtype=torch.float32)
        presence_layers = presence if w.aux else presence[-1:]
        loss_presence = F.binary_cross_entropy_with_logits(
            presence_layers, is_present.expand_as(presence_layers), reduction="none"
        ).mean()  # mean over queries of each layer, then over layers (all layers have B entries)
        total = total + w.presence * loss_presence
        logs["loss_presence"] = loss_presence

        loss_focal, loss_dice = self._mask_losses(outputs.masks, targets, final_matches, n)
        total = total + w.mask_focal * loss_focal + w.mask_dice * loss_dice
        logs["loss_mask_focal"] = loss_focal
        logs["loss_mask_dice"] = loss_dice

        if w.one_to_many > 0:
            o2m = self.one_to_many_pairs(logits[-1], boxes[-1], tgt_boxes, counts)
            l1, giou, cls = self._box_and_cls_losses(logits[-1], boxes[-1], tgt_boxes, o2m, n, counts > 0)
            total = total + w.one_to_many * (w.bbox_l1 * l1 + w.giou * giou + w.cls * cls)
            logs["loss_bbox_o2m"] = l1
            logs["loss_giou_o2m"] = giou
            logs["loss_cls_o2m"] = cls

        return total, {k: v.detach() for k, v in logs.items()}
