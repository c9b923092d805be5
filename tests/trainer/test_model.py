"""Tiny SAM 3 config, loading a base model offline, saving a fine-tuned one, re-init for pretraining."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import Sam3Model, Sam3Processor

from trainer.architecture import TINY_IMAGE_SIZE, count_parameters, tiny_sam3_config
from trainer.base_model import BaseModelNotFound, load_base_model
from trainer.pretrain import reinit_for_pretraining
from trainer.save import save_model
from trainer.tokenizer import tokenize

# The default tiny model (image 224, hidden 64, 2 ViT / 2 text / 2 decoder layers, 20 queries) has
# 4,184,298 parameters, 3,162,112 of them CLIP's token embedding (49408 x 64); model.safetensors ~16.8 MB.
TINY_PARAMS = 4_184_298
PROMPTS = ["red circle", "traffic light"]
CARD = {
    "base_model": "facebook/sam3",
    "data_version": "sha256:0123abcd",
    "metrics": {"mask_mAP": 0.4213, "box_mAP": 0.5},
    "hyperparameters": {"lr": 1e-4, "epochs": 3, "batch_size": 8},
}


@pytest.fixture(scope="module")
def tiny_model() -> Sam3Model:
    torch.manual_seed(0)
    return Sam3Model(tiny_sam3_config()).eval()


@pytest.fixture(scope="module")
def saved_dir(tiny_model: Sam3Model, tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("saved") / "model"
    assert save_model(tiny_model, tokenizer, out, image_size=TINY_IMAGE_SIZE, card=CARD) == out
    return out


def _forward(model: Sam3Model, tokenizer, image_size: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randn(len(PROMPTS), 3, image_size, image_size, generator=gen)
    with torch.no_grad():
        return model(pixel_values=pixels, **tokenize(tokenizer, PROMPTS))


def test_tiny_forward_shapes(tiny_model: Sam3Model, tokenizer) -> None:
    assert count_parameters(tiny_model) == TINY_PARAMS
    out = _forward(tiny_model, tokenizer, TINY_IMAGE_SIZE)
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
    out = _forward(Sam3Model(cfg).eval(), tokenizer, image_size)
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
    a, b = _forward(tiny_model, tokenizer, TINY_IMAGE_SIZE), _forward(reloaded, tokenizer, TINY_IMAGE_SIZE)
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


def test_load_base_model_from_saved_dir(saved_dir: Path, tiny_model: Sam3Model, tokenizer) -> None:
    loaded = load_base_model(str(saved_dir))
    assert loaded.image_size == TINY_IMAGE_SIZE
    assert loaded.source == str(saved_dir.resolve())
    assert "samtune fine-tuned model" in loaded.description and str(saved_dir.resolve()) in loaded.description
    assert loaded.card == CARD
    assert loaded.image_mean == (0.5, 0.5, 0.5) and loaded.image_std == (0.5, 0.5, 0.5)
    assert next(loaded.model.parameters()).dtype == torch.float32
    ours, theirs = tokenize(loaded.tokenizer, PROMPTS), tokenize(tokenizer, PROMPTS)
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
    a = _forward(tiny_model, tokenizer, TINY_IMAGE_SIZE)
    b = _forward(loaded.model, loaded.tokenizer, TINY_IMAGE_SIZE)
    torch.testing.assert_close(a.pred_logits, b.pred_logits, rtol=0, atol=1e-6)


def test_plain_save_pretrained_dir_without_tokenizer(tmp_path: Path, tiny_model: Sam3Model) -> None:
    tiny_model.save_pretrained(tmp_path / "plain")
    loaded = load_base_model(str(tmp_path / "plain"))
    assert loaded.description.startswith(f"local: {(tmp_path / 'plain').resolve()}")
    assert loaded.card is None
    assert len(loaded.tokenizer) == 49408  # the offline CLIP BPE


def test_repo_id_from_hub_cache(tmp_path: Path, saved_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A repo id resolves through the Hugging Face cache layout, offline."""
    cache = tmp_path / "hub"
    repo = cache / "models--samtune-test--tiny-sam3"
    commit = "0" * 40
    shutil.copytree(saved_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    loaded = load_base_model("samtune-test/tiny-sam3")
    assert loaded.source.startswith("samtune-test/tiny-sam3 (hub cache at ") and str(repo) in loaded.source
    assert loaded.image_size == TINY_IMAGE_SIZE


def test_missing_hub_repo_names_repo_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "empty-hub-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    with pytest.raises(BaseModelNotFound) as err:
        load_base_model("facebook/sam3")
    message = str(err.value)
    assert "facebook/sam3" in message
    assert str(cache / "models--facebook--sam3") in message
    # The commands of huggingface_hub 1.x (its `huggingface-cli` is gone).
    assert "hf auth login" in message and "hf download facebook/sam3" in message


def test_missing_local_dirs(tmp_path: Path) -> None:
    nowhere = tmp_path / "does-not-exist"
    with pytest.raises(BaseModelNotFound, match="does not exist") as err:
        load_base_model(str(nowhere))
    assert str(nowhere) in str(err.value)

    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps(tiny_sam3_config().to_dict()))
    with pytest.raises(BaseModelNotFound, match="model.safetensors") as err:
        load_base_model(str(no_weights))
    assert str(no_weights) in str(err.value)

    (no_weights / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (no_weights / "model.safetensors").write_bytes(b"")
    with pytest.raises(BaseModelNotFound, match="not a SAM 3 config"):
        load_base_model(str(no_weights))

    a_file = tmp_path / "weights.safetensors"
    a_file.write_bytes(b"")
    with pytest.raises(BaseModelNotFound, match="is a file"):
        load_base_model(str(a_file))


def test_save_rejects_wrong_image_size(tmp_path: Path, tiny_model: Sam3Model, tokenizer) -> None:
    with pytest.raises(ValueError, match="image size"):
        save_model(tiny_model, tokenizer, tmp_path / "x", image_size=1008, card={})
    assert not (tmp_path / "x").exists()


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
