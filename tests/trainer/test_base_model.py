"""The bundled base model, samtune/sam3-tiny-shapes: it loads offline by name, says what it is, finds the
concepts it was pretrained on (in images it never saw) and misses a held-out domain until fine-tuned."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.base_model import EMBEDDED_BASE, EMBEDDED_BASE_DIR, load_base_model
from trainer.config import TrainConfig
from trainer.recipe import FineTuneRecipe
from trainer.synth import HELD_OUT_DOMAINS, PRETRAIN_CONCEPTS, write_dataset

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
