"""One-to-one Hungarian matching between a query's prediction slots and its target instances.

The cost of assigning slot q to target n is (Deformable-DETR / SAM 3 binary focal matcher):

    cost_class * (pos(q) - neg(q))  +  cost_bbox * |box_q - box_n|_1 (cxcywh)  +  cost_giou * -GIoU(q, n) (xyxy)

with p = sigmoid(logit_q), pos = alpha (1-p)^gamma (-log p) and neg = (1-alpha) p^gamma (-log(1-p)):
the focal loss the slot would pay as a positive, minus the one it pays as a negative. There is a single
class per query (the prompt), so the class cost does not depend on n.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchvision.ops import box_convert, generalized_box_iou

from trainer.types import Match, QueryTargets

# Stand-in for non-finite costs (NaN/inf from NaN/inf predictions or degenerate boxes): large enough to
# lose against any finite cost, small enough that sums of a few of them stay exact in float64.
_BIG_COST = 1e8
# Filler box for padded (absent) targets; any valid box works, its cost columns are never read.
_PAD_BOX = (0.5, 0.5, 1.0, 1.0)


def _empty_match(device: torch.device) -> Match:
    empty = torch.empty(0, dtype=torch.long, device=device)
    return Match(pred=empty, target=empty.clone())


def pad_target_boxes(targets: Sequence[QueryTargets], device: torch.device) -> tuple[Tensor, Tensor]:
    """Stack the queries' target boxes into [B, max N, 4] float32 (padding = a valid dummy box) and
    return it with the per-query counts [B] (long, on CPU)."""
    counts = torch.tensor([t.num for t in targets], dtype=torch.long)
    n_max = int(counts.max()) if len(targets) else 0
    padded = torch.tensor(_PAD_BOX, dtype=torch.float32, device=device).repeat(len(targets), n_max, 1)
    if n_max:
        present = torch.arange(n_max) < counts[:, None]  # [B, max N]
        all_boxes = torch.cat([t.boxes.reshape(-1, 4).to(torch.float32) for t in targets]).to(device)
        padded[present.to(device)] = all_boxes
    return padded, counts


class HungarianMatcher:
    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("at least one matching cost must be non-zero")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    @torch.no_grad()
    def cost_matrix(self, logits: Tensor, boxes: Tensor, tgt_boxes: Tensor) -> Tensor:
        """Matching cost [B, Q, N] of every slot against every (padded) target, float32, may hold
        non-finite entries. logits [B, Q], boxes [B, Q, 4] cxcywh, tgt_boxes [B, N, 4] cxcywh."""
        logits = logits.float()
        boxes = boxes.float()
        tgt_boxes = tgt_boxes.float()

        prob = logits.sigmoid()
        a, g = self.focal_alpha, self.focal_gamma
        # logsigmoid keeps -log p finite far beyond where log(sigmoid(x)) would underflow.
        pos = a * (1 - prob) ** g * -F.logsigmoid(logits)
        neg = (1 - a) * prob**g * -F.logsigmoid(-logits)
        cost_class = (pos - neg).unsqueeze(-1)  # [B, Q, 1], same for every target

        cost_bbox = torch.cdist(boxes, tgt_boxes, p=1)  # [B, Q, N]
        cost_giou = -generalized_box_iou(
            box_convert(boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy")
        )
        return self.cost_class * cost_class + self.cost_bbox * cost_bbox + self.cost_giou * cost_giou

    @torch.no_grad()
    def __call__(self, logits: Tensor, boxes: Tensor, targets: Sequence[QueryTargets]) -> list[Match]:
        """Match one decoder layer's predictions to the targets, query by query.

        logits [B, Q], boxes [B, Q, 4] (cxcywh). Returns B Matches on `logits.device`: min(Q, N) pairs
        for a query with N targets (sorted by slot), an empty Match for a query with none. Non-finite
        costs are replaced by +-1e8 (NaN and +inf count as the worst possible cost)."""
        if logits.dim() != 2 or boxes.shape != (*logits.shape, 4):
            raise ValueError(f"expected logits [B, Q] and boxes [B, Q, 4], got {logits.shape}, {boxes.shape}")
        if len(targets) != logits.shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {logits.shape[0]} queries")
        device = logits.device
        tgt_boxes, counts = pad_target_boxes(targets, device)
        if int(counts.sum()) == 0 or logits.shape[1] == 0:
            return [_empty_match(device) for _ in targets]

        cost = self.cost_matrix(logits, boxes, tgt_boxes)
        cost = torch.nan_to_num(cost, nan=_BIG_COST, posinf=_BIG_COST, neginf=-_BIG_COST)
        costs = cost.to("cpu", torch.float64).numpy()  # one device sync for the whole batch

        matches = []
        for b, n in enumerate(counts.tolist()):
            if n == 0:
                matches.append(_empty_match(device))
                continue
            rows, cols = linear_sum_assignment(costs[b, :, :n])
            matches.append(
                Match(
                    pred=torch.as_tensor(rows.astype(np.int64), device=device),
                    target=torch.as_tensor(cols.astype(np.int64), device=device),
                )
            )
        return matches
