"""The staged forward pass equals `Sam3Model.forward` on its final layer, with and without box prompts."""

from __future__ import annotations

import torch
from transformers import Sam3Model
from transformers.models.sam3.modeling_sam3 import box_cxcywh_to_xyxy

from trainer.architecture import tiny_sam3_config
from trainer.forward import forward_queries, text_backbone, vision_backbone


def test_staged_forward_matches_sam3model() -> None:
    torch.manual_seed(0)
    model = Sam3Model(tiny_sam3_config()).eval()
    pixels = torch.randn(2, 3, 224, 224)
    ids = torch.randint(1, 49000, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2]], [[0.3, 0.4, 0.1, 0.3]]])
    with torch.no_grad():
        for input_boxes in (None, boxes):
            ref = model(pixel_values=pixels, input_ids=ids, attention_mask=mask, input_boxes=input_boxes)
            ours = forward_queries(
                model, pixels, torch.arange(2), text_backbone(model, ids, mask), mask, input_boxes=input_boxes
            )
            assert ours.logits.shape[0] == 2  # every decoder layer is returned
            torch.testing.assert_close(ours.logits[-1], ref.pred_logits)
            torch.testing.assert_close(box_cxcywh_to_xyxy(ours.boxes[-1]), ref.pred_boxes)
            torch.testing.assert_close(ours.presence[-1], ref.presence_logits.squeeze(-1))
            torch.testing.assert_close(ours.masks, ref.pred_masks)

        # Cached backbone output (decoder mode) gives the same answer as pixels.
        cached = vision_backbone(model, pixels)
        a = forward_queries(
            model,
            pixels,
            torch.tensor([1, 0, 1]),
            text_backbone(model, ids[[0, 1, 0]], mask[[0, 1, 0]]),
            mask[[0, 1, 0]],
        )
        b = forward_queries(
            model,
            None,
            torch.tensor([1, 0, 1]),
            text_backbone(model, ids[[0, 1, 0]], mask[[0, 1, 0]]),
            mask[[0, 1, 0]],
            backbone_hidden=cached,
        )
        torch.testing.assert_close(a.masks, b.masks)
        torch.testing.assert_close(a.logits, b.logits)
