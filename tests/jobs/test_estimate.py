"""The pre-run estimate (app/jobs/estimate.py): decoder mode's caching phase is counted and named."""

from __future__ import annotations

import pytest

from app.jobs.estimate import estimate
from trainer.base_model import EMBEDDED_BASE

COMMON = {"total_steps": 100, "batch_size": 4, "eval_images": 20, "epochs": 5}


@pytest.mark.parametrize("base", [EMBEDDED_BASE, "facebook/sam3"])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_decoder_mode_adds_the_caching_phase_for_every_image(base: str, device: str) -> None:
    without = estimate(base, device, "decoder", **COMMON)
    with_cache = estimate(base, device, "decoder", **COMMON, cache_images=120)
    twice = estimate(base, device, "decoder", **COMMON, cache_images=240)
    assert with_cache.steps == without.steps == 100
    caching = with_cache.seconds - without.seconds
    assert caching > 0
    assert twice.seconds - without.seconds == pytest.approx(2 * caching, abs=0.2), "linear in the images"
    assert "caching image embeddings" in with_cache.basis and "120 images" in with_cache.basis
    assert "bench/" in with_cache.basis.split("caching image embeddings")[1], "the figure's source is named"
    assert "caching" not in without.basis


def test_full_mode_caches_nothing() -> None:
    full = estimate("facebook/sam3", "cpu", "full", **COMMON, cache_images=120)
    assert full.seconds == estimate("facebook/sam3", "cpu", "full", **COMMON).seconds
    assert "caching" not in full.basis


def test_sam3_on_a_cpu_caches_far_slower_than_the_tiny_base() -> None:
    def caching(base: str) -> float:
        return (
            estimate(base, "cpu", "decoder", **COMMON, cache_images=100).seconds
            - estimate(base, "cpu", "decoder", **COMMON).seconds
        )

    assert caching("facebook/sam3") > 100 * caching(EMBEDDED_BASE)
