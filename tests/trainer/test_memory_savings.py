"""What the recipe does to keep SAM 3 at 1008 px inside a worker's memory gives the same results as before:
recomputed head activations give the same gradients, and the base model evaluated in place (decoder mode)
scores as a freshly loaded copy of it does, leaving the fine-tuned weights as they were."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import Sam3Model

from trainer.architecture import tiny_sam3_config
from trainer.base_model import load_base_model
from trainer.forward import QueryModel, recompute_head_activations
from trainer.losses import LossWeights, SetCriterion
from trainer.matcher import HungarianMatcher
from trainer.recipe import FineTuneRecipe
from trainer.types import ModelOutputs, QueryTargets


def _gradients(model: Sam3Model) -> dict[str, torch.Tensor]:
    qm = QueryModel(model).train()
    torch.manual_seed(5)  # dropout draws the same masks in both runs
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(2, 3, 112, 112, generator=generator)
    ids = torch.randint(1, 49000, (3, 32), generator=generator)
    attn = torch.ones(3, 32, dtype=torch.long)
    masks = torch.zeros(1, 32, 32)
    masks[0, 4:12, 4:12] = 1
    target = QueryTargets(boxes=torch.tensor([[0.25, 0.25, 0.25, 0.25]]), masks=masks)
    empty = QueryTargets(boxes=torch.zeros(0, 4), masks=torch.zeros(0, 32, 32))
    out = qm(pixels, torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2]), ids, attn)
    loss, _ = SetCriterion(HungarianMatcher(), LossWeights())(ModelOutputs(*out), [target, empty, target])
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_recomputed_head_activations_give_the_same_gradients() -> None:
    torch.manual_seed(0)
    model = Sam3Model(tiny_sam3_config(image_size=112))
    kept = _gradients(model)
    model.zero_grad(set_to_none=True)
    recompute_head_activations(model)
    recompute_head_activations(model)  # idempotent: wrapping twice would recompute twice
    assert getattr(model.detr_decoder.forward, "samtune_recomputed", False)
    recomputed = _gradients(model)
    assert kept.keys() == recomputed.keys()
    heads = [n for n in kept if n.startswith(("detr_encoder.", "detr_decoder.", "mask_decoder."))]
    assert heads and any(kept[n].abs().sum() > 0 for n in heads)
    for name in kept:
        torch.testing.assert_close(recomputed[name], kept[name], rtol=1e-4, atol=1e-6, msg=name)


def test_the_recipe_runs_rows_in_passes_and_recomputes_when_configured_and_says_so(small_config) -> None:
    recipe = FineTuneRecipe(
        small_config(mode="decoder", epochs=1, recompute_activations=True, rows_per_pass=1)
    )
    recipe.setup()
    assert getattr(recipe.model.mask_decoder.forward, "samtune_recomputed", False)
    assert recipe.rows_per_pass == 1
    (said,) = [e for e in recipe.events if e["kind"] == "head_passes"]
    assert "1 query row(s) at a time" in said["message"] and "recomputed" in said["message"], said

    # 112 px is far below the size where either pays: off by default, and nothing said.
    default = FineTuneRecipe(small_config(mode="decoder", epochs=1, output_dir=recipe.out.parent / "default"))
    default.setup()
    assert default.rows_per_pass is None
    assert not getattr(default.model.mask_decoder.forward, "samtune_recomputed", False)
    assert not any(e["kind"] == "head_passes" for e in default.events)


def _first_step(small_config, tmp_path: Path, **overrides: object) -> dict[str, float]:
    cfg = small_config(
        mode="decoder", max_steps=1, batch_size=2, output_dir=tmp_path / str(overrides), **overrides
    )
    recipe = FineTuneRecipe(cfg)
    recipe.setup()
    # Dropout draws per pass (from the pass's seed), so with it the two runs would differ by design.
    for module in recipe.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    recipe.train()
    first = json.loads((recipe.out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 1
    return first


def test_a_step_in_passes_of_one_row_equals_the_step_at_once(small_config, tmp_path: Path) -> None:
    """Same loss, same loss terms, same gradient norm: the passes' losses are scaled by their share of the
    rows and normalised by the whole step's instance count, so their summed gradient is the step's."""
    at_once = _first_step(small_config, tmp_path)
    in_passes = _first_step(small_config, tmp_path, rows_per_pass=1)
    assert at_once.keys() == in_passes.keys()
    for key in at_once:
        if key.startswith(("loss", "grad_norm")):
            assert in_passes[key] == pytest.approx(at_once[key], rel=1e-4, abs=1e-6), key
    assert at_once["grad_norm"] > 0


def test_the_base_evaluated_in_place_scores_as_a_loaded_copy(small_config, tiny_base) -> None:
    recipe = FineTuneRecipe(small_config(mode="decoder", epochs=1, lr_heads=1e-3))
    recipe.setup()
    recipe.train()  # decoder mode: the heads moved away from the base
    trained = {n: p.detach().clone() for n, p in recipe.model.named_parameters() if p.requires_grad}

    in_place = recipe._evaluate_base("test")
    fresh = load_base_model(str(tiny_base), device="cpu").model
    loaded = recipe.evaluate("test", model=fresh).to_dict()  # the same cached ViT output, as before
    assert in_place["summary"] == loaded["summary"]
    # ... and the fine-tuned weights are back, not the base's.
    for name, p in recipe.model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.detach(), trained[name]), name
    moved = [n for n, p in fresh.named_parameters() if n in trained and not torch.equal(p, trained[n])]
    assert moved, "the run did not change the heads, so this test would prove nothing"


def test_the_estimate_counts_the_rows_of_one_pass() -> None:
    """SAM 3 at 1008 px on a CPU: 2 images x 3 queries at once would need about 20 GB; in passes of one row the
    step fits a 24 GB machine's free memory, and the estimate says so (the API's 422 and the worker's fit)."""
    from trainer.architecture import full_size_sam3_config
    from trainer.memory import architecture, default_rows_per_pass, estimate

    arch = architecture(full_size_sam3_config())
    rows, _ = default_rows_per_pass("cpu", 1008)
    assert (
        rows == 1
        and default_rows_per_pass("cuda", 1008)[0] is None
        and default_rows_per_pass("cpu", 224)[0] is None
    )
    shape = {"mode": "decoder", "batch_size": 2, "image_size": 1008, "queries_per_image": 3}
    at_once = estimate(arch, **shape).total
    in_passes = estimate(arch, **shape, rows_per_pass=rows).total
    assert in_passes < at_once - 5 * 10**9, (in_passes, at_once)
    assert in_passes < 12 * 10**9
    assert estimate(arch, **shape, rows_per_pass=6).total == at_once  # a pass as large as the step: no change
