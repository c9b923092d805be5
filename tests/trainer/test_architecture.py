"""The tiny SAM 3 configuration: its shapes at several input sizes, its windows, what it refuses."""

from __future__ import annotations

import pytest
import torch
from transformers import Sam3Model

from tests.trainer.tiny import TINY_PARAMS, forward_prompts
from trainer.architecture import TINY_IMAGE_SIZE, count_parameters, tiny_sam3_config


def test_tiny_forward_shapes(tiny_model: Sam3Model, tokenizer) -> None:
    assert count_parameters(tiny_model) == TINY_PARAMS
    out = forward_prompts(tiny_model, tokenizer, TINY_IMAGE_SIZE)
    assert out.pred_masks.shape == (2, 20, 64, 64)  # 4x the 16x16 patch grid
    assert out.pred_boxes.shape == (2, 20, 4)
    assert out.pred_logits.shape == (2, 20)
    assert out.presence_logits.shape == (2, 1)
    assert out.semantic_seg.shape == (2, 1, 64, 64)
    assert torch.isfinite(out.pred_masks).all() and torch.isfinite(out.pred_logits).all()


@pytest.mark.parametrize(("image_size", "mask"), [(112, 32), (154, 44)])
def test_other_image_sizes(image_size: int, mask: int, tokenizer) -> None:
    cfg = tiny_sam3_config(image_size, num_queries=5, decoder_layers=1)
    assert cfg.image_size == image_size
    assert cfg.vision_config.backbone_feature_sizes[-1] == [image_size // 14] * 2
    out = forward_prompts(Sam3Model(cfg).eval(), tokenizer, image_size)
    assert out.pred_masks.shape == (2, 5, mask, mask)


def test_window_sizes_and_validation() -> None:
    windows = {
        s: tiny_sam3_config(s).vision_config.backbone_config.window_size for s in (112, 224, 336, 1008)
    }
    assert windows == {112: 4, 224: 8, 336: 12, 1008: 24}  # 1008 -> SAM 3's own 24
    big = tiny_sam3_config(224, hidden=96, vit_layers=8).vision_config.backbone_config
    assert big.global_attn_indexes == [1, 3, 5, 7] and big.num_attention_heads == 3
    for bad in (100, 98, 1022, 230):
        with pytest.raises(ValueError):
            tiny_sam3_config(bad)
    with pytest.raises(ValueError):
        tiny_sam3_config(hidden=60)
