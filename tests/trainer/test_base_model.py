"""Loading a base model offline: from a saved directory, a plain save_pretrained one, the hub cache, with
errors that say where it looked. And the bundled base model, samtune/sam3-tiny-shapes: it loads offline by
name, says what it is, finds the concepts it was pretrained on (in images it never saw) and misses a
held-out domain until fine-tuned."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import Sam3Model

from tests.trainer.tiny import CARD, PROMPTS, forward_prompts
from trainer.architecture import TINY_IMAGE_SIZE, tiny_sam3_config
from trainer.base_model import EMBEDDED_BASE, EMBEDDED_BASE_DIR, BaseModelNotFound, load_base_model
from trainer.config import TrainConfig
from trainer.recipe import FineTuneRecipe
from trainer.synth import HELD_OUT_DOMAINS, PRETRAIN_CONCEPTS, write_dataset
from trainer.tokenizer import tokenize

# Not the pretraining corpus's seed (0): these scenes are new to the model.
HELD_OUT_SEED = 20261127


def _test_summary(tmp_path: Path, concepts: list, *, images: int = 40) -> dict[str, float]:
    data = write_dataset(
        tmp_path / "data", concepts, {"train": 1, "test": images}, size=112, seed=HELD_OUT_SEED
    )
    cfg = TrainConfig(base_model=EMBEDDED_BASE, data_dir=data, output_dir=tmp_path / "run", mode="full",
                      epochs=1, batch_size=1, eval_base_model=False, progress_bar=False)  # fmt: skip
    recipe = FineTuneRecipe(cfg)
    recipe.setup()
    try:
        return recipe.evaluate("test").summary
    finally:
        recipe.cleanup()


def test_bundled_weights_are_small_safetensors() -> None:
    weights = EMBEDDED_BASE_DIR / "model.safetensors"
    assert weights.exists()
    assert weights.stat().st_size <= 25 * 2**20
    for name in ("config.json", "processor_config.json", "tokenizer.json", "README.md"):
        assert (EMBEDDED_BASE_DIR / name).exists(), name


def test_loads_offline_by_name_and_says_what_it_is() -> None:
    loaded = load_base_model(EMBEDDED_BASE)
    assert loaded.image_size == 112
    assert loaded.description.startswith(EMBEDDED_BASE)
    assert "not Meta's weights" in loaded.description
    assert loaded.card is not None and loaded.card["classes"] == [c.name for c in PRETRAIN_CONCEPTS]


def test_finds_its_pretraining_concepts_in_new_images(tmp_path: Path) -> None:
    summary = _test_summary(tmp_path, list(PRETRAIN_CONCEPTS))
    assert summary["segm_AP50"] >= 0.5, summary


@pytest.mark.parametrize("domain", ["new-colours"])
def test_misses_a_held_out_domain(tmp_path: Path, domain: str) -> None:
    summary = _test_summary(tmp_path, list(HELD_OUT_DOMAINS[domain]), images=20)
    assert summary["segm_AP50"] < 0.25, summary


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
    a = forward_prompts(tiny_model, tokenizer, TINY_IMAGE_SIZE)
    b = forward_prompts(loaded.model, loaded.tokenizer, TINY_IMAGE_SIZE)
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
