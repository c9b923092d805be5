"""What a checkpoint holds: in `decoder` mode the trainable parameters (and their optimizer state) only, the
frozen encoders coming from the base model on resume; in `full` mode the whole state dict."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from trainer.recipe import FineTuneRecipe


def _state_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def test_a_decoder_checkpoint_holds_only_the_trainable_tensors(small_config) -> None:
    recipe = FineTuneRecipe(small_config(mode="decoder", epochs=1))
    recipe.setup()
    recipe.train()
    last = recipe.out / "checkpoints" / "last"
    weights = load_file(str(last / "model.safetensors"))
    trainable = {name for name, p in recipe.model.named_parameters() if p.requires_grad}
    assert set(weights) == trainable
    assert not any(k.startswith(("vision_encoder.backbone.", "text_encoder.")) for k in weights)
    whole = recipe.model.state_dict()
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, whole[name].cpu(), rtol=0, atol=0)
    # The tiny model's encoders are most of it, as SAM 3's are: the file is a fraction of the state dict.
    file_size = (last / "model.safetensors").stat().st_size
    assert file_size < 0.5 * _state_bytes(whole), (file_size, _state_bytes(whole))
    # The optimizer state covers those parameters and nothing else.
    state = torch.load(last / "trainer_state.pt", weights_only=False)
    assert state["weights"] == "trainable"
    optimizer_params = {i for g in state["optimizer"]["param_groups"] for i in g["params"]}
    assert len(optimizer_params) == len(trainable) and len(state["optimizer"]["state"]) <= len(trainable)
    # So is the best checkpoint; the final model is still complete (what Sam3Model.from_pretrained loads).
    assert set(load_file(str(recipe.out / "checkpoints" / "best" / "model.safetensors"))) == trainable
    final = load_file(str(recipe.out / "model" / "model.safetensors"))
    assert {name for name, _ in recipe.model.named_parameters()} <= set(final)


def test_a_full_checkpoint_holds_the_whole_state_dict(small_config) -> None:
    recipe = FineTuneRecipe(small_config(mode="full", epochs=1))
    recipe.setup()
    recipe.train()
    last = recipe.out / "checkpoints" / "last"
    assert set(load_file(str(last / "model.safetensors"))) == set(recipe.model.state_dict())
    assert torch.load(last / "trainer_state.pt", weights_only=False)["weights"] == "all"
