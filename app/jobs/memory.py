"""Whether a job's configuration fits its worker's memory, decided at preview and creation (422 when it cannot).

The API is not necessarily the worker's machine, so the budget comes from, in order:
1. `SAMTUNE_WORKER_MEMORY_BYTES`, the memory one training worker may use (its GPU's, or its RAM on a CPU worker);
2. on a CPU worker (`SAMTUNE_WORKER_DEVICE=cpu`, or `auto` on a machine without a GPU), this machine's free RAM,
   the right figure when the worker runs beside the API (the default single-machine installation);
3. otherwise (GPU workers, size not configured) nothing is checked here: the worker fits the batch to its own
   GPU when the job starts, and fails the job with the same message if nothing fits.

The worker repeats the check on its own device with the exact number of queries its images make; the preview's
count of queries per image is an estimate from the version's counts (the classes, and at most max_negatives
absent ones beside the average annotations per image).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from app.jobs.base_models import BaseModelInfo, catalog
from app.settings import Settings
from trainer.architecture import full_size_sam3_config
from trainer.base_model import META_BASE
from trainer.config import TrainConfig
from trainer.memory import (
    Budget,
    MemoryPlan,
    architecture,
    available_ram,
    config_image_size,
    default_rows_per_pass,
)


def _config(base: BaseModelInfo) -> Any | None:
    """The base model's Sam3Config: Meta's is known; another is read from its directory's config.json."""
    from transformers import Sam3Config

    if base.name == META_BASE:
        return full_size_sam3_config()
    if base.location is None or not (Path(base.location) / "config.json").is_file():
        return None
    if json.loads((Path(base.location) / "config.json").read_text()).get("model_type") != "sam3":
        return None
    return Sam3Config.from_pretrained(base.location)


def _architecture_of(settings: Settings, base: BaseModelInfo) -> BaseModelInfo:
    """The catalog base whose architecture `base` has: itself, or for a workspace model (whose files are in
    object storage, not here) the base model at the root of its lineage, since fine-tuning keeps the
    architecture."""
    if base.model_id is None or not base.lineage:
        return base
    return next((m for m in catalog(settings) if m.name == base.lineage[-1]), base)


def worker_budget(settings: Settings, device: str) -> Budget | None:
    if settings.worker_memory_bytes is not None:
        return Budget(settings.worker_memory_bytes, "SAMTUNE_WORKER_MEMORY_BYTES")
    if device == "cpu":
        return Budget(available_ram(), "free RAM on this machine (MemAvailable)")
    return None


def memory_plan(
    settings: Settings,
    base: BaseModelInfo,
    cfg: TrainConfig,
    device: str,
    *,
    classes: int,
    counts: dict[str, Any],
) -> MemoryPlan | None:
    """What `trainer.config.resolve` fits the batch with, or None where nothing can be checked here."""
    budget = worker_budget(settings, device)
    config = _config(_architecture_of(settings, base)) if budget is not None else None
    if budget is None or config is None:
        return None
    train = counts.get("train") or {}
    per_image = math.ceil(int(train.get("annotations", 0)) / max(1, int(train.get("images", 0)) or 1))
    queries = max(1, min(classes, max(1, per_image) + cfg.max_negatives)) if classes else 1
    image_size = cfg.image_size or config_image_size(config)
    rows_per_pass = cfg.rows_per_pass
    if rows_per_pass is None:
        rows_per_pass, _ = default_rows_per_pass(device, image_size)
    return MemoryPlan(
        arch=architecture(config),
        image_size=image_size,
        queries_per_image=queries,
        prompts=max(1, classes),
        budget=budget,
        device_type=device,
        rows_per_pass=rows_per_pass,
    )
