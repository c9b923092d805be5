"""The memory estimate against measured peaks, the batch it fits to a budget, and gradient accumulation: two
micro-batches of one image give the gradients of one batch of two."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.memory_estimate import run_case
from trainer.architecture import tiny_sam3_config
from trainer.config import TrainConfig, resolve
from trainer.memory import SAFETY, Budget, MemoryPlan, architecture, estimate
from trainer.preflight import DoesNotFit
from trainer.recipe import FineTuneRecipe, TrainingFailed


@pytest.mark.parametrize(("mode", "batch", "size"), [("decoder", 2, 224), ("full", 2, 224)])
def test_the_estimate_bounds_the_measured_peak_of_the_tiny_model(mode: str, batch: int, size: int) -> None:
    """Measured in a fresh process (bench/memory_estimate.py): two real AdamW steps on the CPU."""
    r = run_case("tiny", mode, batch, size, 2)
    assert r["measured"] <= r["total"] <= 6 * r["measured"], r


def test_full_mode_costs_more_than_decoder_mode_and_grows_with_batch_and_size() -> None:
    arch = architecture(tiny_sam3_config(224))
    at = lambda **kw: estimate(arch, **({"mode": "decoder", "batch_size": 1, "image_size": 224,  # noqa: E731
                                         "queries_per_image": 2} | kw))  # fmt: skip
    assert at(mode="full").optimizer > at().optimizer  # AdamW state for the encoders too
    assert at(batch_size=4).activations > 2 * at(batch_size=1).activations
    assert at(image_size=448).activations > 3 * at().activations
    assert at().weights == arch.params * 4 and at(mode="full").gradients == arch.params * 4


def _plan(budget: int, queries: int = 2) -> MemoryPlan:
    return MemoryPlan(
        arch=architecture(tiny_sam3_config(224)), image_size=224, queries_per_image=queries, prompts=queries,
        budget=Budget(budget, "test budget"), device_type="cpu",
    )  # fmt: skip


def _between_batch_1_and_2(mode: str = "decoder") -> int:
    probe = _plan(10**12)
    one, two = (probe.estimate(mode, b, "fp32").total for b in (1, 2))
    return int((one + two) / 2 / SAFETY)


def test_a_small_budget_fits_a_smaller_batch_and_accumulates_to_keep_the_effective_batch(
    tmp_path: Path,
) -> None:
    cfg = TrainConfig(base_model="x", data_dir=tmp_path, output_dir=tmp_path, mode="decoder")
    roomy = resolve(cfg, num_train_images=20, device_type="cpu", memory=_plan(10**12))
    assert roomy["batch_size"].value == 2 and roomy["grad_accumulation"].value == 1
    assert "estimated" in roomy["batch_size"].reason and "at batch 2" in roomy["batch_size"].reason

    tight = resolve(cfg, num_train_images=20, device_type="cpu", memory=_plan(_between_batch_1_and_2()))
    assert tight["batch_size"].value == 1 and tight["grad_accumulation"].value == 2
    assert "accumulating 2 to keep 2" in tight["grad_accumulation"].reason
    assert "at batch 1" in tight["batch_size"].reason and "usable" in tight["batch_size"].reason
    # A step is still an optimizer step over the same images: the schedule does not change.
    assert tight["total_steps"].value == roomy["total_steps"].value == 10 * roomy["epochs"].value


def test_a_batch_the_configuration_sets_that_cannot_fit_fails_naming_the_numbers(tmp_path: Path) -> None:
    cfg = TrainConfig(base_model="x", data_dir=tmp_path, output_dir=tmp_path, mode="decoder", batch_size=2)
    with pytest.raises(DoesNotFit) as caught:
        resolve(cfg, num_train_images=20, device_type="cpu", memory=_plan(_between_batch_1_and_2()))
    message = str(caught.value)
    assert "at batch 2" in message and "needs an estimated" in message and "GB is usable" in message
    assert "batch_size 1 (with grad_accumulation 2" in message
    with pytest.raises(DoesNotFit, match="needs an estimated .* GB .* 0.00 GB is usable"):
        resolve(cfg.model_copy(update={"batch_size": None}), num_train_images=20, device_type="cpu",
                memory=_plan(1000))  # fmt: skip


def test_a_run_that_cannot_fit_fails_before_its_first_step(small_config: Callable[..., TrainConfig]) -> None:
    recipe = FineTuneRecipe(small_config(mode="decoder", batch_size=None, memory_budget_bytes=10**6))
    with pytest.raises(TrainingFailed, match="needs an estimated"):
        recipe.setup()
    assert not (recipe.out / "cache").exists(), "nothing was cached for a run that cannot start"


def _no_dropout(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name in ("dropout", "attention_dropout", "dropout_p"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)


def _first_step_gradients(config: TrainConfig) -> dict[str, torch.Tensor]:
    recipe = FineTuneRecipe(config)
    recipe.setup()
    _no_dropout(recipe.model)  # dropout draws differ between one batch and two micro-batches
    grads: dict[str, torch.Tensor] = {}
    step = recipe.optimizer.step

    def record(*args: Any, **kwargs: Any) -> Any:
        if not grads:
            grads.update(
                {n: p.grad.clone() for n, p in recipe.model.named_parameters() if p.grad is not None}
            )
        return step(*args, **kwargs)

    recipe.optimizer.step = record  # type: ignore[method-assign]
    recipe.train()
    return grads


@pytest.mark.parametrize("mode", ["decoder", "full"])
def test_two_micro_batches_of_one_give_the_gradients_of_one_batch_of_two(
    small_config: Callable[..., TrainConfig], tmp_path: Path, mode: str
) -> None:
    # max_negatives covers every class, so the queries do not depend on the random draws; fp32 on the CPU.
    common = {"mode": mode, "max_steps": 1, "epochs": 1, "max_negatives": 8, "scale_jitter": False}
    whole = _first_step_gradients(small_config(batch_size=2, output_dir=tmp_path / "whole", **common))
    split = _first_step_gradients(
        small_config(batch_size=1, grad_accumulation=2, output_dir=tmp_path / "split", **common)
    )
    assert whole.keys() == split.keys() and whole
    for name, g in whole.items():
        torch.testing.assert_close(split[name], g, rtol=1e-4, atol=1e-6, msg=name)
