"""The recipe's guarantees on a tiny model, on CPU: resume equals an uninterrupted run, divergence rolls
back with half the learning rate, outputs land where they should, and both modes run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from trainer.callbacks import NullCallbacks
from trainer.recipe import FineTuneRecipe, TrainingFailed, run


class Crash(Exception):
    pass


class CrashAt(NullCallbacks):
    """Callbacks that die at a given step, as a killed worker would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_metrics(self, step: int, epoch: float, metrics: dict[str, float]) -> None:
        if step == self.step:
            raise Crash(f"killed at step {step}")

    def on_checkpoint(self, step: int, path: Path, is_best: bool) -> None:
        pass

    def on_event(self, kind: str, message: str, data: dict) -> None:
        pass

    def should_stop(self) -> None:
        return None


def _last_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / "last" / "model.safetensors"))


@pytest.mark.parametrize("mode", ["full", "decoder"])
def test_resume_equals_uninterrupted_run(small_config, tmp_path: Path, mode: str) -> None:
    straight = small_config(output_dir=tmp_path / "straight", mode=mode)
    run(straight)

    interrupted = small_config(output_dir=tmp_path / "interrupted", mode=mode)
    with pytest.raises(Crash):
        run(interrupted, CrashAt(6))
    state = torch.load(
        tmp_path / "interrupted" / "checkpoints" / "last" / "trainer_state.pt", weights_only=False
    )
    assert state["step"] == 4  # the last checkpoint before the crash
    resumed = FineTuneRecipe(interrupted)
    resumed.setup()
    assert resumed.step == 4 and any(e["kind"] == "resumed" for e in resumed.events)
    result = resumed.train()
    assert result.steps == 12

    a, b = _last_weights(tmp_path / "straight"), _last_weights(tmp_path / "interrupted")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    # Metrics from the redone steps replace nothing: the straight run's last losses are reproduced.
    ma = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(x) for x in (tmp_path / "interrupted" / "metrics.jsonl").read_text().splitlines()]
    last_a = {m["step"]: m["loss"] for m in ma if "loss" in m}
    last_b = {m["step"]: m["loss"] for m in mb if "loss" in m}
    assert all(last_a[s] == pytest.approx(last_b[s], rel=1e-6) for s in range(5, 13))


def test_resume_restores_the_cuda_rng_of_the_gpus_present(
    small_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CUDA run's checkpoint holds one RNG state per GPU; resuming restores those of the GPUs this machine
    has (here, faked: one), and a machine without CUDA leaves them alone."""
    cfg = small_config(device="cpu", epochs=1)
    run(cfg)
    last = cfg.output_dir / "checkpoints" / "last"
    state = torch.load(last / "trainer_state.pt", weights_only=False)
    saved = [torch.full((16,), 1, dtype=torch.uint8), torch.full((16,), 2, dtype=torch.uint8)]
    state["rng"]["cuda"] = saved
    torch.save(state, last / "trainer_state.pt")

    restored: list[tuple[torch.Tensor, int]] = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device: restored.append((s, device)))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    recipe = FineTuneRecipe(cfg)
    recipe.setup()  # resumes from `last`
    assert recipe.step == 4 and restored == []

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    recipe._load_checkpoint(last)
    assert len(restored) == 1 and restored[0][1] == 0 and torch.equal(restored[0][0], saved[0])


class NanAt:
    """Wraps the criterion: the loss is NaN on the given calls (1-based)."""

    def __init__(self, criterion, calls: set[int] | None = None, after: int | None = None) -> None:
        self.criterion, self.calls, self.after, self.n = criterion, calls or set(), after, 0

    def __call__(self, outputs, targets):
        self.n += 1
        loss, parts = self.criterion(outputs, targets)
        if self.n in self.calls or (self.after is not None and self.n > self.after):
            loss = loss * float("nan")
        return loss, parts


def test_divergence_rolls_back_with_half_the_lr(small_config) -> None:
    recipe = FineTuneRecipe(small_config())
    recipe.setup()
    recipe.criterion = NanAt(recipe.criterion, calls={7})  # the 7th step (step index 6)
    result = recipe.train()
    rollbacks = [e for e in result.events if e["kind"] == "divergence_rollback"]
    assert len(rollbacks) == 1
    assert rollbacks[0]["from_step"] == 6 and rollbacks[0]["to_step"] == 4 and rollbacks[0]["lr_scale"] == 0.5
    assert result.steps == 12 and recipe.lr_scale == 0.5
    events = [json.loads(x) for x in (recipe.out / "logs" / "events.jsonl").read_text().splitlines()]
    assert any(e["kind"] == "divergence_rollback" for e in events)


def test_divergence_gives_up_after_max_rollbacks(small_config) -> None:
    recipe = FineTuneRecipe(small_config(max_rollbacks=3))
    recipe.setup()
    recipe.criterion = NanAt(recipe.criterion, after=5)
    with pytest.raises(TrainingFailed, match="diverged"):
        recipe.train()
    assert recipe.rollbacks == 3


def test_run_directory_layout_and_model(small_config, tmp_path: Path) -> None:
    cfg = small_config(mode="auto", eval_base_model=True)
    result = run(cfg)
    out = tmp_path / "run"
    for name in ("config.yaml", "config_resolved.yaml", "metrics.jsonl", "checkpoints/last/model.safetensors",
                 "checkpoints/last/trainer_state.pt", "checkpoints/best/model.safetensors", "logs/events.jsonl",
                 "model/config.json", "model/model.safetensors", "model/samtune_model_card.json", "model/README.md"):  # fmt: skip
        assert (out / name).exists(), name
    assert any((out / "tensorboard").iterdir())
    resolved = yaml.safe_load((out / "config_resolved.yaml").read_text())
    assert resolved["mode"]["value"] == "decoder" and "no GPU" in resolved["mode"]["reason"]
    assert all("reason" in v for v in resolved.values())
    card = json.loads((out / "model" / "samtune_model_card.json").read_text())
    assert card["base_model"] == card["base_model_location"] == cfg.base_model
    assert len(card["annotations_sha256"]) == 64 and card["content_hash"] is None  # not a samtune snapshot
    assert card["requested_mode"] == "auto" and card["resolved_mode"] == "decoder"
    assert card["metrics"]["test"]["fine_tuned"] is not None and card["metrics"]["test"]["base"] is not None
    assert card["metrics"]["best_valid"] == result.best_valid and result.best_valid is not None
    assert result.test["fine_tuned"] is not None and result.test["base"] is not None
    # The fine-tuned model is a directory Sam3Model loads.
    from transformers import Sam3Model

    Sam3Model.from_pretrained(out / "model")
