"""HungarianMatcher: optimality against brute force with an independently written cost, edge cases."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from trainer.matcher import HungarianMatcher
from trainer.types import QueryTargets


def _targets(boxes: list[list[float]] | torch.Tensor) -> QueryTargets:
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return QueryTargets(boxes=boxes, masks=torch.zeros(boxes.shape[0], 4, 4))


def _random_boxes(gen: torch.Generator, n: int) -> torch.Tensor:
    centre = torch.rand(n, 2, generator=gen) * 0.6 + 0.2
    size = torch.rand(n, 2, generator=gen) * 0.3 + 0.05
    return torch.cat([centre, size], dim=1)


# ---- an independent, scalar re-implementation of the cost (plain math, no torchvision) ----


def _xyxy(b: list[float]) -> tuple[float, float, float, float]:
    cx, cy, w, h = b
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def _giou(a: list[float], b: list[float]) -> float:
    ax0, ay0, ax1, ay1 = _xyxy(a)
    bx0, by0, bx1, by1 = _xyxy(b)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    return inter / union - (hull - union) / hull


def _cost(logit: float, box: list[float], tgt: list[float], alpha=0.25, gamma=2.0) -> float:
    p = 1 / (1 + math.exp(-logit))
    pos = alpha * (1 - p) ** gamma * -math.log(p)
    neg = (1 - alpha) * p**gamma * -math.log(1 - p)
    l1 = sum(abs(x - y) for x, y in zip(box, tgt, strict=True))
    return 2.0 * (pos - neg) + 5.0 * l1 + 2.0 * -_giou(box, tgt)


def _brute_force_min(cost: list[list[float]]) -> float:
    q, n = len(cost), len(cost[0])
    if q >= n:  # every target gets a distinct slot
        return min(
            sum(cost[s][t] for t, s in enumerate(slots)) for slots in itertools.permutations(range(q), n)
        )
    # every slot gets a distinct target
    return min(sum(cost[s][t] for s, t in enumerate(tgts)) for tgts in itertools.permutations(range(n), q))


@pytest.mark.parametrize("seed", range(8))
def test_matches_brute_force_optimum(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    matcher = HungarianMatcher()
    shapes = [(q, n) for q in range(1, 6) for n in range(1, 5)]
    # one batch of queries with various Q is impossible (Q is shared), so match each (Q, N) on its own
    for q, n in shapes[seed::8] + [(5, 4), (3, 4)]:
        logits = torch.randn(1, q, generator=gen) * 2
        boxes = _random_boxes(gen, q).unsqueeze(0)
        tgt = _random_boxes(gen, n)
        (match,) = matcher(logits, boxes, [_targets(tgt)])

        cost = [
            [_cost(logits[0, i].item(), boxes[0, i].tolist(), tgt[j].tolist()) for j in range(n)]
            for i in range(q)
        ]
        assert len(match.pred) == len(match.target) == min(q, n)
        assert len(set(match.pred.tolist())) == len(match.pred)
        assert len(set(match.target.tolist())) == len(match.target)
        got = sum(cost[i][j] for i, j in zip(match.pred.tolist(), match.target.tolist(), strict=True))
        assert got == pytest.approx(_brute_force_min(cost), abs=1e-4)


def test_cost_matrix_matches_scalar_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, generator=gen)
    boxes = torch.stack([_random_boxes(gen, 3), _random_boxes(gen, 3)])
    tgt = torch.stack([_random_boxes(gen, 2), _random_boxes(gen, 2)])
    cost = HungarianMatcher().cost_matrix(logits, boxes, tgt)
    assert cost.shape == (2, 3, 2)
    for b, i, j in itertools.product(range(2), range(3), range(2)):
        want = _cost(logits[b, i].item(), boxes[b, i].tolist(), tgt[b, j].tolist())
        assert cost[b, i, j].item() == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_obvious_assignment_and_batch_with_negative_query() -> None:
    tgt = [[0.2, 0.2, 0.1, 0.1], [0.7, 0.7, 0.2, 0.2]]
    # slot 2 sits on target 0, slot 0 on target 1, slot 1 is far from both
    boxes = torch.tensor([[[0.7, 0.7, 0.2, 0.2], [0.5, 0.1, 0.05, 0.05], [0.2, 0.2, 0.1, 0.1]]] * 2)
    logits = torch.zeros(2, 3)
    matches = HungarianMatcher()(logits, boxes, [_targets(tgt), _targets(torch.zeros(0, 4))])
    assert sorted(zip(matches[0].pred.tolist(), matches[0].target.tolist(), strict=True)) == [(0, 1), (2, 0)]
    assert matches[1].pred.numel() == 0 and matches[1].target.numel() == 0
    assert matches[1].pred.dtype == torch.long


def test_fewer_slots_than_targets() -> None:
    tgt = [[0.1, 0.1, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1], [0.9, 0.9, 0.1, 0.1], [0.3, 0.8, 0.1, 0.1]]
    boxes = torch.tensor([[[0.9, 0.9, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1]]])
    (match,) = HungarianMatcher()(torch.zeros(1, 2), boxes, [_targets(tgt)])
    assert sorted(zip(match.pred.tolist(), match.target.tolist(), strict=True)) == [(0, 2), (1, 0)]


def test_all_negative_batch() -> None:
    matches = HungarianMatcher()(torch.randn(3, 4), torch.rand(3, 4, 4), [_targets(torch.zeros(0, 4))] * 3)
    assert [m.pred.numel() for m in matches] == [0, 0, 0]


def test_non_finite_inputs_are_tolerated_and_avoided() -> None:
    tgt = [[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.2, 0.2]]
    boxes = torch.tensor(
        [
            [
                [float("nan"), 0.3, 0.2, 0.2],  # NaN box: never preferable
                [0.3, 0.3, 0.2, 0.2],
                [float("inf"), 0.5, 0.2, 0.2],  # inf box: never preferable
                [0.6, 0.6, 0.2, 0.2],
            ]
        ]
    )
    logits = torch.tensor([[float("nan"), 0.0, float("-inf"), 0.0]])
    matcher = HungarianMatcher()
    (match,) = matcher(logits, boxes, [_targets(tgt)])
    assert sorted(zip(match.pred.tolist(), match.target.tolist(), strict=True)) == [(1, 0), (3, 1)]

    # all slots broken: still a complete, valid assignment
    (match,) = matcher(torch.full((1, 3), float("inf")), torch.full((1, 3, 4), float("nan")), [_targets(tgt)])
    assert len(match.pred) == 2 and set(match.pred.tolist()) <= {0, 1, 2}
    assert sorted(match.target.tolist()) == [0, 1]


def test_bf16_inputs() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 5, generator=gen)
    boxes = _random_boxes(gen, 5).unsqueeze(0)
    tgt = _targets(_random_boxes(gen, 3))
    (m32,) = HungarianMatcher()(logits, boxes, [tgt])
    (m16,) = HungarianMatcher()(logits.bfloat16(), boxes.bfloat16(), [tgt])
    assert len(m16.pred) == 3
    # bf16 rounding may flip near-ties, but the assignment must stay a valid one
    assert sorted(m16.target.tolist()) == sorted(m32.target.tolist())
