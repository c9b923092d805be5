from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import Sam3Model

from tests.trainer.tiny import CARD
from trainer.architecture import TINY_IMAGE_SIZE, tiny_sam3_config
from trainer.config import TrainConfig
from trainer.pretrain import reinit_for_pretraining
from trainer.save import save_model
from trainer.synth import Concept, write_dataset
from trainer.tokenizer import load_tokenizer


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Nothing may be fetched from a hub; the tokenizer is built into the test's own folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SAMTUNE_TOKENIZER_CACHE", str(tmp_path_factory.getbasetemp() / "clip-bpe"))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return load_tokenizer(tmp_path_factory.getbasetemp() / "clip-bpe")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SAM 3 (same classes, small sizes, 112 px) saved the way a base model directory is."""
    torch.manual_seed(0)
    model = Sam3Model(tiny_sam3_config(image_size=112))
    reinit_for_pretraining(model, seed=0)
    out = tmp_path_factory.mktemp("tiny-base") / "model"
    return save_model(
        model, load_tokenizer(), out, image_size=112, card={"base_model": "random tiny SAM 3 (tests)"}
    )


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    concepts = [Concept("square"), Concept("circle")]
    return write_dataset(root, concepts, {"train": 8, "valid": 3, "test": 2}, size=112, seed=3, max_objects=2)


@pytest.fixture
def small_config(tiny_base: Path, shapes_data: Path, tmp_path: Path):
    def make(**overrides: object) -> TrainConfig:
        values: dict[str, object] = {
            "base_model": str(tiny_base),
            "data_dir": shapes_data,
            "output_dir": tmp_path / "run",
            "mode": "full",
            "batch_size": 2,
            "epochs": 3,
            "checkpoint_every_steps": 4,
            "log_every_steps": 1,
            "eval_base_model": False,
            "progress_bar": False,
        }
        values.update(overrides)
        return TrainConfig.model_validate(values)

    return make


@pytest.fixture(scope="session")
def tiny_model() -> Sam3Model:
    """The default tiny SAM 3 (224 px), seeded; tests only read it."""
    torch.manual_seed(0)
    return Sam3Model(tiny_sam3_config()).eval()


@pytest.fixture(scope="session")
def saved_dir(tiny_model: Sam3Model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tiny_model` written by save_model with the shared card."""
    out = tmp_path_factory.mktemp("saved") / "model"
    tokenizer = load_tokenizer(tmp_path_factory.getbasetemp() / "clip-bpe")
    assert save_model(tiny_model, tokenizer, out, image_size=TINY_IMAGE_SIZE, card=CARD) == out
    return out
