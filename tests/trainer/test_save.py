"""Saving a model directory: it reloads bit for bit with transformers' own classes, carries its card as
JSON and as a README, and is never left half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import Sam3Model, Sam3Processor

from tests.trainer.tiny import CARD, forward_prompts
from trainer.architecture import TINY_IMAGE_SIZE
from trainer.save import save_model


def test_save_then_from_pretrained_identical(saved_dir: Path, tiny_model: Sam3Model, tokenizer) -> None:
    names = {p.name for p in saved_dir.iterdir()}
    assert {"config.json", "model.safetensors", "samtune_model_card.json", "README.md"} <= names
    assert {"processor_config.json", "preprocessor_config.json", "tokenizer_config.json"} <= names
    assert not list(saved_dir.parent.glob(".*tmp-*"))  # written in a temporary sibling, then renamed
    assert saved_dir.stat().st_mode & 0o777 == 0o755  # not mkdtemp's private 0700
    assert (saved_dir / "model.safetensors").stat().st_size < 25 * 2**20

    reloaded = Sam3Model.from_pretrained(saved_dir).eval()
    want, got = tiny_model.state_dict(), reloaded.state_dict()
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    a, b = (
        forward_prompts(tiny_model, tokenizer, TINY_IMAGE_SIZE),
        forward_prompts(reloaded, tokenizer, TINY_IMAGE_SIZE),
    )
    # Same weights; outputs equal up to float rounding (the reloaded tensors sit at other memory alignments,
    # which can change the CPU kernels' summation order: ~1e-10 seen on the 1-wide presence head).
    for field in ("pred_masks", "pred_boxes", "pred_logits", "presence_logits", "semantic_seg"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=0, atol=1e-6, msg=field)

    processor = Sam3Processor.from_pretrained(saved_dir)
    assert processor.target_size == TINY_IMAGE_SIZE
    assert processor.image_processor.size.height == TINY_IMAGE_SIZE
    assert processor.image_processor.mask_size.height == 64


def test_card_and_readme(saved_dir: Path) -> None:
    assert json.loads((saved_dir / "samtune_model_card.json").read_text()) == CARD
    readme = (saved_dir / "README.md").read_text()
    assert readme.startswith("---\n") and 'base_model: "facebook/sam3"' in readme
    for text in ("sha256:0123abcd", "mask_mAP", "0.4213", "lr", "0.0001", "batch_size", "224x224"):
        assert text in readme, text


def test_save_rejects_wrong_image_size(tmp_path: Path, tiny_model: Sam3Model, tokenizer) -> None:
    with pytest.raises(ValueError, match="image size"):
        save_model(tiny_model, tokenizer, tmp_path / "x", image_size=1008, card={})
    assert not (tmp_path / "x").exists()
