"""SetCriterion: every term against hand-computed values, normalisation, aux layers, gradients,
negative-only batches, the one-to-many term and a tiny optimisation run."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.losses import LossWeights, SetCriterion, resize_target_masks
from trainer.matcher import HungarianMatcher
from trainer.types import ModelOutputs, QueryTargets

ALL_OFF = dict(bbox_l1=0.0, giou=0.0, cls=0.0, presence=0.0, mask_focal=0.0, mask_dice=0.0)


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _bce(x: float, t: float) -> float:
    return -(t * math.log(_sig(x)) + (1 - t) * math.log(1 - _sig(x)))


def _targets(boxes, masks=None, hw=(4, 4)) -> QueryTargets:
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if masks is None:
        masks = torch.zeros(boxes.shape[0], *hw)
    return QueryTargets(boxes=boxes, masks=torch.as_tensor(masks, dtype=torch.float32))


def _outputs(logits, boxes, presence=None, masks=None, hw=(4, 4)) -> ModelOutputs:
    """logits [L, B, Q], boxes [L, B, Q, 4]; presence [L, B] and masks [B, Q, H, W] default to zeros."""
    logits = torch.as_tensor(logits, dtype=torch.float32)
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    L, B, Q = logits.shape
    presence = torch.zeros(L, B) if presence is None else torch.as_tensor(presence, dtype=torch.float32)
    masks = torch.zeros(B, Q, *hw) if masks is None else torch.as_tensor(masks, dtype=torch.float32)
    return ModelOutputs(logits=logits, boxes=boxes, presence=presence, masks=masks)


def _criterion(**weights) -> SetCriterion:
    return SetCriterion(HungarianMatcher(), LossWeights(**weights))


# Two single-slot queries with one target each (so the matching is forced):
#   query 0: pred xyxy [0, 0, .2, .2]  vs gt [.1, 0, .3, .2]  -> inter .02, union .06, hull .06
#            IoU 1/3, GIoU 1/3, L1 = |.1 - .2| = .1
#   query 1: pred xyxy [0, 0, .2, .2]  vs gt [.3, 0, .5, .2]  -> disjoint, union .08, hull .1
#            IoU 0, GIoU -.2, L1 = |.1 - .4| = .3
PRED = [0.1, 0.1, 0.2, 0.2]
GT0 = [0.2, 0.1, 0.2, 0.2]
GT1 = [0.4, 0.1, 0.2, 0.2]


def test_l1_and_giou_hand_values() -> None:
    out = _outputs([[[0.0], [0.0]]], [[[PRED], [PRED]]])
    _, logs = _criterion()(out, [_targets([GT0]), _targets([GT1])])
    num_boxes = 2
    assert logs["loss_bbox"].item() == pytest.approx((0.1 + 0.3) / num_boxes, abs=1e-6)
    assert logs["loss_giou"].item() == pytest.approx(((1 - 1 / 3) + (1 + 0.2)) / num_boxes, abs=1e-5)


def test_iou_aware_bce_target_and_value() -> None:
    # one query, two slots, one target: slot 0 (logit 1, IoU 1/3) is the match, slot 1 is far away
    out = _outputs([[[1.0, -1.0]]], [[[PRED, [0.8, 0.8, 0.1, 0.1]]]])
    _, logs = _criterion()(out, [_targets([GT0])])
    soft = _sig(1.0) ** 0.25 * (1 / 3) ** 0.75
    # Meta's normalisation: the matched slot weighs 10, an unmatched one p^2; mean over the 2 slots.
    want = (10 * _bce(1.0, soft) + _sig(-1.0) ** 2 * _bce(-1.0, 0.0)) / 2
    assert logs["loss_cls"].item() == pytest.approx(want, rel=1e-5)

    # a disjoint match has IoU 0: its target is the floor 0.01, so it is pushed down nearly like a negative
    out = _outputs([[[1.0]]], [[[PRED]]])
    _, logs = _criterion()(out, [_targets([GT1])])
    assert logs["loss_cls"].item() == pytest.approx(10 * _bce(1.0, 0.01), rel=1e-5)


def test_cls_is_left_to_presence_on_negative_queries() -> None:
    # Queries whose concept is absent carry no per-slot loss: the presence head answers them.
    logits = [[[0.5, -2.0, 3.0], [1.0, 1.0, -1.0]]]
    out = _outputs(logits, [[[PRED] * 3, [PRED] * 3]])
    _, logs = _criterion()(out, [_targets(torch.zeros(0, 4)), _targets(torch.zeros(0, 4))])
    assert logs["loss_cls"].item() == 0.0
    assert logs["loss_presence"].item() > 0

    # Mixed batch: only the positive query's slots count, and the mean still runs over every slot.
    # Slot 0 sits exactly on the target with the highest logit, so it is the match.
    logits = [[[3.0, -2.0, 0.5], [1.0, 1.0, -1.0]]]
    out = _outputs(logits, [[[GT0, PRED, PRED], [PRED] * 3]])
    _, logs = _criterion()(out, [_targets([GT0]), _targets(torch.zeros(0, 4))])
    soft = _sig(3.0) ** 0.25 * 1.0**0.75
    want = (10 * _bce(3.0, soft) + _sig(-2.0) ** 2 * _bce(-2.0, 0.0) + _sig(0.5) ** 2 * _bce(0.5, 0.0)) / 6
    assert logs["loss_cls"].item() == pytest.approx(want, rel=1e-5)


def test_presence_bce_last_layer_and_aux_average() -> None:
    tgts = [_targets([GT0]), _targets(torch.zeros(0, 4))]
    boxes = [[[PRED], [PRED]]] * 2
    presence = [[-1.0, 4.0], [0.5, -2.0]]  # layer 0, layer 1 (final)
    last = (_bce(0.5, 1.0) + _bce(-2.0, 0.0)) / 2
    first = (_bce(-1.0, 1.0) + _bce(4.0, 0.0)) / 2

    out = _outputs([[[0.0], [0.0]]] * 2, boxes, presence=presence)
    _, logs = _criterion(aux=False)(out, tgts)
    assert logs["loss_presence"].item() == pytest.approx(last, rel=1e-5)
    _, logs = _criterion(aux=True)(out, tgts)
    assert logs["loss_presence"].item() == pytest.approx((first + last) / 2, rel=1e-5)


def test_mask_focal_and_dice_hand_values() -> None:
    # logits 0 everywhere -> p = .5; target has 2 of 4 pixels on.
    #   focal per pixel = alpha_t * (1 - p_t)^2 * ln 2 with p_t = .5: (.25 or .75) * .25 * ln 2
    #   mean over pixels = (2 * .0625 + 2 * .1875) / 4 * ln 2 = .125 ln 2
    #   dice = 1 - (2 * 1 + 1) / (2 + 2 + 1) = .4
    tgt_mask = [[[1.0, 0.0], [1.0, 0.0]]]
    out = _outputs([[[0.0]]], [[[PRED]]], masks=torch.zeros(1, 1, 2, 2))
    _, logs = _criterion()(out, [_targets([GT0], masks=tgt_mask)])
    assert logs["loss_mask_focal"].item() == pytest.approx(0.125 * math.log(2), rel=1e-5)
    assert logs["loss_mask_dice"].item() == pytest.approx(0.4, rel=1e-5)


def test_mask_focal_and_dice_against_direct_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    mask_logits = torch.randn(1, 1, 3, 3, generator=gen) * 3
    tgt_mask = (torch.rand(1, 3, 3, generator=gen) > 0.5).float()
    out = _outputs([[[0.0]]], [[[PRED]]], masks=mask_logits)
    _, logs = _criterion()(out, [_targets([GT0], masks=tgt_mask)])

    xs, ts = mask_logits.flatten().tolist(), tgt_mask.flatten().tolist()
    focal, inter, psum = 0.0, 0.0, 0.0
    for x, t in zip(xs, ts, strict=True):
        p = _sig(x)
        p_t = p if t else 1 - p
        alpha_t = 0.25 if t else 0.75
        focal += alpha_t * (1 - p_t) ** 2 * -math.log(p_t)
        inter += p * t
        psum += p
    assert logs["loss_mask_focal"].item() == pytest.approx(focal / 9, rel=1e-5)
    assert logs["loss_mask_dice"].item() == pytest.approx(
        1 - (2 * inter + 1) / (psum + sum(ts) + 1), rel=1e-5
    )


def test_target_masks_at_another_resolution_are_area_resized() -> None:
    hi = torch.zeros(1, 4, 4)
    hi[0, :2, :2] = 1.0  # a full quadrant  -> on
    hi[0, 2, 2] = 1.0  # 1/4 of a quadrant -> off
    lo = resize_target_masks(hi, (2, 2))
    assert lo.tolist() == [[[1.0, 0.0], [0.0, 0.0]]]

    mask_logits = torch.randn(1, 1, 2, 2)
    out = _outputs([[[0.0]]], [[[PRED]]], masks=mask_logits)
    _, from_hi = _criterion()(out, [_targets([GT0], masks=hi)])
    _, from_lo = _criterion()(out, [_targets([GT0], masks=lo)])
    assert from_hi["loss_mask_focal"].item() == pytest.approx(from_lo["loss_mask_focal"].item())
    assert from_hi["loss_mask_dice"].item() == pytest.approx(from_lo["loss_mask_dice"].item())


def test_normalisation_by_num_boxes_and_override() -> None:
    # query 0: 2 targets with 2 exactly matching slots + 1 off by .1 in cx; query 1: 1 target, off by .3
    boxes = [[[GT0, GT1, [0.5, 0.5, 0.1, 0.1]], [[0.8, 0.5, 0.1, 0.1]] * 3]]
    tgts = [_targets([GT0, GT1]), _targets([[0.5, 0.5, 0.1, 0.1]])]
    out = _outputs([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], boxes)
    crit = _criterion()
    _, local = crit(out, tgts)
    assert local["loss_bbox"].item() == pytest.approx(0.3 / 3, abs=1e-6)  # 3 targets in the batch
    _, override = crit(out, tgts, num_boxes=6.0)
    for key in ("loss_bbox", "loss_giou", "loss_mask_focal", "loss_mask_dice"):
        assert override[key].item() == pytest.approx(local[key].item() * 3 / 6, rel=1e-5)
    assert override["loss_cls"].item() == pytest.approx(local["loss_cls"].item())  # a mean over slots
    assert override["loss_presence"].item() == pytest.approx(local["loss_presence"].item())  # not per box
    _, clamped = crit(out, tgts, num_boxes=0.25)
    assert clamped["loss_bbox"].item() == pytest.approx(0.3, abs=1e-6)


def _random_batch(seed: int, L=3, B=3, Q=5, hw=(6, 6), counts=(2, 0, 3)):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(L, B, Q, generator=gen)
    centre = torch.rand(L, B, Q, 2, generator=gen) * 0.6 + 0.2
    size = torch.rand(L, B, Q, 2, generator=gen) * 0.3 + 0.05
    boxes = torch.cat([centre, size], -1)
    presence = torch.randn(L, B, generator=gen)
    masks = torch.randn(B, Q, *hw, generator=gen)
    tgts = []
    for n in counts:
        tb = torch.cat(
            [torch.rand(n, 2, generator=gen) * 0.6 + 0.2, torch.rand(n, 2, generator=gen) * 0.3 + 0.05], 1
        )
        tgts.append(_targets(tb, masks=(torch.rand(n, *hw, generator=gen) > 0.5).float()))
    return ModelOutputs(logits, boxes, presence, masks), tgts


def test_total_is_weighted_sum_and_aux_keys() -> None:
    out, tgts = _random_batch(1)
    w = LossWeights()
    total, logs = SetCriterion(HungarianMatcher(), w)(out, tgts)
    expected_keys = {
        "loss_bbox",
        "loss_giou",
        "loss_cls",
        "loss_presence",
        "loss_mask_focal",
        "loss_mask_dice",
    }
    expected_keys |= {f"loss_{k}_l{i}" for k in ("bbox", "giou", "cls") for i in (0, 1)}
    assert set(logs) == expected_keys
    by_kind = {"bbox": w.bbox_l1, "giou": w.giou, "cls": w.cls}
    want = sum(by_kind[k.split("_")[1]] * v for k, v in logs.items() if k.split("_")[1] in by_kind)
    want += w.presence * logs["loss_presence"] + w.mask_focal * logs["loss_mask_focal"]
    want += w.mask_dice * logs["loss_mask_dice"]
    assert total.item() == pytest.approx(want.item(), rel=1e-5)
    assert all(not v.requires_grad for v in logs.values())

    # each aux layer is matched and scored on its own: same numbers as that layer alone as the final one
    single = ModelOutputs(out.logits[:1], out.boxes[:1], out.presence[:1], out.masks)
    _, logs0 = _criterion()(single, tgts)
    assert logs["loss_bbox_l0"].item() == pytest.approx(logs0["loss_bbox"].item(), rel=1e-6)
    assert logs["loss_cls_l0"].item() == pytest.approx(logs0["loss_cls"].item(), rel=1e-6)

    _, no_aux = _criterion(aux=False)(out, tgts)
    assert not any("_l" in k.removeprefix("loss_") for k in no_aux)
    assert no_aux["loss_bbox"].item() == pytest.approx(logs["loss_bbox"].item())


def test_gradients_reach_every_output() -> None:
    out, tgts = _random_batch(2)
    for t in (out.logits, out.boxes, out.presence, out.masks):
        t.requires_grad_(True)
    total, _ = _criterion()(out, tgts)
    total.backward()
    for name in ("logits", "boxes", "presence", "masks"):
        grad = getattr(out, name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    # every decoder layer's boxes get a gradient (aux losses)
    assert (out.boxes.grad.abs().sum(dim=(1, 2, 3)) > 0).all()


def test_negative_only_batch() -> None:
    out, tgts = _random_batch(3, counts=(0, 0, 0))
    for t in (out.logits, out.boxes, out.presence, out.masks):
        t.requires_grad_(True)
    total, logs = _criterion()(out, tgts)
    for key in (
        "loss_bbox",
        "loss_giou",
        "loss_mask_focal",
        "loss_mask_dice",
        "loss_bbox_l0",
        "loss_giou_l1",
    ):
        assert logs[key].item() == 0.0, key
    assert logs["loss_cls"].item() == 0.0 and logs["loss_presence"].item() > 0
    assert torch.isfinite(total)
    total.backward()
    assert torch.isfinite(out.boxes.grad).all() and torch.isfinite(out.masks.grad).all()
    assert out.presence.grad.abs().sum() > 0


@pytest.mark.parametrize(("B", "Q", "counts"), [(1, 1, (1,)), (1, 1, (3,)), (1, 4, (2,)), (2, 1, (0, 2))])
def test_small_shapes(B: int, Q: int, counts: tuple[int, ...]) -> None:
    out, tgts = _random_batch(4, L=2, B=B, Q=Q, counts=counts)
    total, logs = _criterion()(out, tgts)
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in logs.values())


def test_bf16_inputs_are_computed_in_float32() -> None:
    out, tgts = _random_batch(5)
    bf16 = ModelOutputs(
        out.logits.bfloat16(), out.boxes.bfloat16(), out.presence.bfloat16(), out.masks.bfloat16()
    )
    total, logs = _criterion()(bf16, tgts)
    assert total.dtype == torch.float32 and all(v.dtype == torch.float32 for v in logs.values())
    ref, _ = _criterion()(out, tgts)
    assert total.item() == pytest.approx(ref.item(), rel=0.05)


def test_float32_under_autocast() -> None:
    out, tgts = _random_batch(6)
    ref, _ = _criterion()(out, tgts)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, logs = _criterion()(out, tgts)
    assert total.dtype == torch.float32
    assert total.item() == pytest.approx(ref.item(), rel=1e-6)


def test_one_to_many_adds_positives() -> None:
    tgt = [0.5, 0.5, 0.2, 0.2]
    # slots 0-4 sit close to the target with a high score, slot 5 is far away
    near = [
        [0.5, 0.5, 0.2, 0.2],
        [0.51, 0.5, 0.2, 0.2],
        [0.5, 0.49, 0.2, 0.2],
        [0.5, 0.5, 0.21, 0.2],
        [0.5, 0.5, 0.2, 0.19],
    ]
    boxes = [[near + [[0.1, 0.1, 0.05, 0.05]]]]
    logits = [[[3.0, 2.5, 2.0, 1.5, 1.0, 3.0]]]
    out = _outputs(logits, boxes)
    tgts = [_targets([tgt])]

    crit = _criterion(one_to_many=2.0)
    pairs = crit.one_to_many_pairs(out.logits[-1], out.boxes[-1], tgts[0].boxes[None], torch.tensor([1]))
    assert sorted(pairs.slot.tolist()) == [0, 1, 2, 3]  # top-4 only; the far slot 5 scores ~0
    assert pairs.target.tolist() == [0, 0, 0, 0]

    total_on, logs_on = crit(out, tgts)
    total_off, logs_off = _criterion()(out, tgts)
    assert set(logs_on) - set(logs_off) == {"loss_bbox_o2m", "loss_giou_o2m", "loss_cls_o2m"}
    assert logs_on["loss_bbox_o2m"].item() > logs_on["loss_bbox"].item()  # more positive pairs
    # slots 1-3 have soft positive targets (weight 10) in the o2m term, 0 in the one-to-one term
    assert logs_on["loss_cls_o2m"].item() != pytest.approx(logs_on["loss_cls"].item(), rel=1e-3)
    w = LossWeights()
    extra = 2.0 * (
        w.bbox_l1 * logs_on["loss_bbox_o2m"]
        + w.giou * logs_on["loss_giou_o2m"]
        + w.cls * logs_on["loss_cls_o2m"]
    )
    assert (total_on - total_off).item() == pytest.approx(extra.item(), rel=1e-5)


def test_one_to_many_threshold_and_slot_conflicts() -> None:
    crit = _criterion(one_to_many=1.0)
    tgt = torch.tensor([[[0.3, 0.5, 0.2, 0.2], [0.4, 0.5, 0.2, 0.2]]])  # two overlapping targets
    boxes = torch.tensor(
        [[[0.3, 0.5, 0.2, 0.2], [0.4, 0.5, 0.2, 0.2], [0.35, 0.5, 0.2, 0.2], [0.3, 0.5, 0.2, 0.2]]]
    )
    logits = torch.tensor([[4.0, 4.0, 4.0, -4.0]])  # slot 3 fits target 0 but its score is below .4
    pairs = crit.one_to_many_pairs(logits, boxes, tgt, torch.tensor([2]))
    got = sorted(zip(pairs.slot.tolist(), pairs.target.tolist(), strict=True))
    # slot 2 (IoU .6 with both) is claimed by both targets and kept once; slot 3 is below threshold
    assert [s for s, _ in got] == [0, 1, 2]
    assert dict(got)[0] == 0 and dict(got)[1] == 1

    # padded (absent) targets never claim slots; negative queries get nothing
    pairs = crit.one_to_many_pairs(logits, boxes, tgt, torch.tensor([0]))
    assert pairs.slot.numel() == 0


def test_tiny_optimisation_converges() -> None:
    torch.manual_seed(0)
    Q, hw = 4, (8, 8)
    gt_boxes = torch.tensor([[0.3, 0.3, 0.2, 0.3], [0.7, 0.6, 0.3, 0.2]])
    gt_masks = torch.zeros(2, *hw)
    gt_masks[0, 1:4, 1:3] = 1
    gt_masks[1, 4:6, 4:7] = 1
    tgts = [_targets(gt_boxes, masks=gt_masks)]

    raw_boxes = torch.randn(1, 1, Q, 4, requires_grad=True)  # boxes = sigmoid(raw): stay in (0, 1)
    logits = torch.zeros(1, 1, Q, requires_grad=True)
    presence = torch.zeros(1, 1, requires_grad=True)
    masks = torch.zeros(1, Q, *hw, requires_grad=True)
    opt = torch.optim.Adam([raw_boxes, logits, presence, masks], lr=0.05)
    crit = _criterion()
    for _ in range(200):
        out = ModelOutputs(logits, raw_boxes.sigmoid(), presence, masks)
        total, _ = crit(out, tgts)
        opt.zero_grad()
        total.backward()
        opt.step()

    with torch.no_grad():
        boxes = raw_boxes.sigmoid()
        (match,) = crit.matcher(logits[-1], boxes[-1], tgts)
        assert sorted(match.target.tolist()) == [0, 1]
        l1 = (boxes[0, 0, match.pred] - gt_boxes[match.target]).abs().sum(-1)
        assert (l1 < 0.02).all(), l1
        assert (logits[0, 0, match.pred].sigmoid() > 0.5).all()
        assert presence.sigmoid().item() > 0.9
        pred_masks = masks[0, match.pred] > 0
        assert (pred_masks == gt_masks[match.target].bool()).all()


def test_cls_on_negative_queries_for_pretraining() -> None:
    # With cls_negative_queries (pretraining), a negative query's slots are pushed down too, weighted by p^2.
    logits = [[[0.5, -2.0, 3.0]]]
    out = _outputs(logits, [[[PRED] * 3]])
    _, logs = _criterion(cls_negative_queries=True)(out, [_targets(torch.zeros(0, 4))])
    want = sum(_sig(x) ** 2 * _bce(x, 0.0) for x in logits[0][0]) / 3
    assert logs["loss_cls"].item() == pytest.approx(want, rel=1e-5)
