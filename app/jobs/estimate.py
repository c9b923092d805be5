"""A rough duration for a job before it runs, from measured seconds per image-step (bench/RESULTS.md).
Shown with its basis so nobody mistakes it for a promise."""

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
    ("sam3", "cpu", "decoder"): (9.7, "bench/train_step.py at 504 px on a 2-core CPU, x4 for 1008 px"),
    ("sam3", "cuda", "full"): (0.5, "an order of magnitude; not yet measured here (bench/gpu_trainer.py)"),
    ("sam3", "cuda", "decoder"): (0.1, "an order of magnitude; not yet measured here (bench/gpu_trainer.py)"),
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
) -> Estimate:
    kind = "tiny" if base_model == EMBEDDED_BASE else "sam3"
    per_image, basis = _SECONDS_PER_IMAGE[(kind, "cuda" if device == "cuda" else "cpu", mode)]
    # Evaluation runs inference only (about a third of a training step) on valid each epoch and test once.
    seconds = total_steps * batch_size * per_image + (epochs + 2) * eval_images * per_image / 3
    return Estimate(
        steps=total_steps,
        seconds=round(seconds, 1),
        basis=f"{per_image} s per image-step ({basis}), plus evaluation; queue time not included",
    )
