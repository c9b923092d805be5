"""A rough duration for a job before it runs, from measured seconds per image-step and, in `decoder` mode,
seconds per image of the caching phase (bench/RESULTS.md). Shown with its basis so nobody mistakes it for a
promise."""

from __future__ import annotations

from app.jobs.schemas import Estimate
from trainer.base_model import EMBEDDED_BASE

# (base kind, device, mode) -> seconds per image per step, with where the figure comes from.
_SECONDS_PER_IMAGE: dict[tuple[str, str, str], tuple[float, str]] = {
    ("tiny", "cpu", "full"): (0.02, "bench/quality.py, tiny base at 112 px, 2-core CPU"),
    ("tiny", "cpu", "decoder"): (0.01, "bench/quality.py, tiny base at 112 px, 2-core CPU"),
    ("tiny", "cuda", "full"): (0.004, "scaled from the CPU figure; not measured on a GPU"),
    ("tiny", "cuda", "decoder"): (0.002, "scaled from the CPU figure; not measured on a GPU"),
    ("sam3", "cpu", "full"): (110.0, "bench/train_step.py at 504 px on a 2-core CPU, x4 for 1008 px"),
    ("sam3", "cpu", "decoder"): (
        90.0,
        "measured by tests/deploy/test_real_size.py at 1008 px on a 2-core CPU with other work running: 6 steps "
        "at batch 2 in about 1080 s, one query row per pass through the heads (bench/RESULTS.md)",
    ),
    ("sam3", "cuda", "full"): (0.5, "an order of magnitude; not yet measured here (bench/gpu_trainer.py)"),
    ("sam3", "cuda", "decoder"): (0.1, "an order of magnitude; not yet measured here (bench/gpu_trainer.py)"),
}

# (base kind, device) -> seconds per image of decoder mode's caching phase (the frozen ViT over every image of
# every split, once, before step 0: trainer/vision_cache.py), with where the figure comes from.
_CACHE_SECONDS_PER_IMAGE: dict[tuple[str, str], tuple[float, str]] = {
    ("tiny", "cpu"): (0.03, "bench/cache_phase.py, tiny base at 112 px, 2-core CPU: 0.022-0.027 s measured"),
    ("tiny", "cuda"): (0.006, "scaled from the CPU figure of bench/cache_phase.py; not measured on a GPU"),
    ("sam3", "cpu"): (
        85.0,
        "measured by tests/deploy/test_real_size.py at 1008 px on a 2-core CPU with other work running: "
        "81 s and 89 s per image in two runs (bench/RESULTS.md)",
    ),
    ("sam3", "cuda"): (
        0.1,
        "an order of magnitude (about 5 TFLOP per 1008 px image); not yet measured here (bench/gpu_trainer.py)",
    ),
}


def estimate(
    base_model: str,
    device: str,
    mode: str,
    *,
    total_steps: int,
    batch_size: int,
    eval_images: int,
    epochs: int,
    cache_images: int = 0,
) -> Estimate:
    """`cache_images`: the version's images in all splits, which `decoder` mode encodes once before step 0
    (a worker that cached them for an earlier job on the same base skips that; the estimate does not)."""
    kind = "tiny" if base_model == EMBEDDED_BASE else "sam3"
    dev = "cuda" if device == "cuda" else "cpu"
    per_image, basis = _SECONDS_PER_IMAGE[(kind, dev, mode)]
    # Evaluation runs inference only (about a third of a training step) on valid each epoch and test once.
    seconds = total_steps * batch_size * per_image + (epochs + 2) * eval_images * per_image / 3
    parts = [f"{per_image} s per image-step ({basis}), plus evaluation"]
    if mode == "decoder" and cache_images > 0:
        per_encode, cache_basis = _CACHE_SECONDS_PER_IMAGE[(kind, dev)]
        cache_seconds = cache_images * per_encode
        seconds += cache_seconds
        parts.append(
            f"caching image embeddings first: {cache_images} images x {per_encode} s per image = "
            f"{cache_seconds:.0f} s ({cache_basis})"
        )
    return Estimate(
        steps=total_steps,
        seconds=round(seconds, 1),
        basis="; ".join(parts) + "; queue time not included",
    )
