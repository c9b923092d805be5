"""The pretraining command's pieces that do not need hours: the stage plan and the training curve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from transformers import Sam3Model

from tests.trainer.tiny import PROMPTS
from trainer.architecture import tiny_sam3_config
from trainer.pretrain import STAGES, curve_points, draw_curve, reinit_for_pretraining
from trainer.tokenizer import tokenize


def _metrics(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_stages_continue_at_a_lower_rate_and_cool_down() -> None:
    first, second = STAGES
    assert second.lr < first.lr and second.cooldown > 0 and first.cooldown == 0
    assert all(s.max_steps for s in STAGES)


def test_curve_points_continue_across_stages(tmp_path: Path) -> None:
    a = _metrics(tmp_path / "a.jsonl", [{"step": 10, "loss": 1.0}, {"step": 20, "valid_segm_AP50": 0.2}])
    b = _metrics(
        tmp_path / "b.jsonl", [{"step": 5, "valid_segm_AP50": 0.4}, {"step": 15, "valid_segm_AP50": 0.5}]
    )
    assert curve_points([a, b]) == [(20, 0.2), (25, 0.4), (35, 0.5)]


def test_draw_curve_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "curve.png"
    draw_curve([(0, 0.0), (50, 0.3), (100, 0.6)], out, title="valid mask AP50", boundaries=[50])
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (720, 360)
        # the curve is drawn in red somewhere
        assert (200, 40, 40) in {img.getpixel((x, y)) for x in range(60, 700, 3) for y in range(30, 320, 3)}


def test_reinit_for_pretraining(tokenizer) -> None:
    cfg = tiny_sam3_config(112, num_queries=5, decoder_layers=1)
    torch.manual_seed(1)
    a = Sam3Model(cfg).eval()
    torch.manual_seed(2)
    b = Sam3Model(cfg).eval()
    linear = a.detr_decoder.layers[0].self_attn.q_proj
    assert isinstance(linear, nn.Linear)
    std_before = linear.weight.std().item()

    reinit_for_pretraining(a, seed=0)
    reinit_for_pretraining(b, seed=0)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key  # same seed -> same weights

    fan_in, fan_out = linear.in_features, linear.out_features
    xavier_std = (2.0 / (fan_in + fan_out)) ** 0.5
    assert std_before == pytest.approx(0.02, rel=0.2)
    assert linear.weight.std().item() == pytest.approx(xavier_std, rel=0.1)
    assert torch.all(linear.bias == 0)
    token_embedding = a.text_encoder.text_model.embeddings.token_embedding.weight
    assert token_embedding.std().item() == pytest.approx(1.0, rel=0.05)
    for module in a.modules():
        if isinstance(module, nn.LayerNorm):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)

    reinit_for_pretraining(b, seed=1)
    assert not torch.equal(linear.weight, b.detr_decoder.layers[0].self_attn.q_proj.weight)

    # After the re-init the prompt matters: different prompts, different scores.
    with torch.no_grad():  # the same (blank) image twice, one prompt each
        out = a(pixel_values=torch.zeros(2, 3, 112, 112), **tokenize(tokenizer, PROMPTS))
    assert not torch.allclose(out.pred_logits[0], out.pred_logits[1], atol=1e-4)
    assert not torch.allclose(out.pred_masks[0], out.pred_masks[1], atol=1e-4)
