"""Seconds per image of decoder mode's caching phase: the trainer's own setup (trainer/recipe.py
`_fill_vision_cache`, the code a job runs) over a synthetic dataset, read from its `cache` event.

The figure app/jobs/estimate.py multiplies by a version's image count (all splits) for the bundled tiny base;
SAM 3's real-size figure comes from bench/train_step.py (`cache: ... s per image`).

    .venv/bin/python bench/cache_phase.py --images 120 --size 112
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path and its name would hide the `trainer` package.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

from trainer.base_model import EMBEDDED_BASE  # noqa: E402
from trainer.callbacks import NullCallbacks  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.synth import HELD_OUT_DOMAINS, write_dataset  # noqa: E402


class Phases(NullCallbacks):
    def __init__(self) -> None:
        self.reports: list[tuple[int, int, float | None]] = []
        self.times: list[float] = []
        self.events: dict[str, dict[str, Any]] = {}

    def on_phase_progress(self, phase: str, done: int, total: int, eta_seconds: float | None) -> None:
        self.reports.append((done, total, eta_seconds))
        self.times.append(time.perf_counter())

    def on_event(self, kind: str, message: str, data: dict[str, Any]) -> None:
        self.events[kind] = data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default=EMBEDDED_BASE)
    p.add_argument("--images", type=int, default=120, help="images in all splits (train 60%%, valid, test)")
    p.add_argument("--size", type=int, default=112, help="pixels of the synthetic images")
    args = p.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    from trainer.recipe import FineTuneRecipe

    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    train = max(2, int(args.images * 0.6))
    valid = max(1, (args.images - train) // 2)
    counts = {"train": train, "valid": valid, "test": max(1, args.images - train - valid)}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_dataset(Path(tmp) / "data", list(HELD_OUT_DOMAINS["new-colours"]), counts, size=args.size,
                             seed=0, max_objects=2)  # fmt: skip
        cfg = TrainConfig.model_validate({
            "base_model": args.base, "data_dir": data, "output_dir": Path(tmp) / "run", "mode": "decoder",
            "epochs": 1, "progress_bar": False, "tensorboard": False, "eval_base_model": False,
        })  # fmt: skip
        seen = Phases()
        recipe = FineTuneRecipe(cfg, seen)
        recipe.setup()  # the caching phase runs here, as in a job
        recipe.cleanup()
    cache = seen.events["cache"]
    print(f"base {args.base}, {cache['images']} images ({counts}), {torch.get_num_threads()} threads")
    n = cache["images"]
    first, rest = seen.times[1] - seen.times[0], seen.times[-1] - seen.times[1]
    print(f"caching phase: {cache['seconds']:.1f} s, {cache['seconds'] / n:.4f} s per image over all {n}")
    print(f"first image {first:.2f} s (warm-up), then {rest / max(1, n - 1):.4f} s per image")
    print(f"progress reports: {len(seen.reports)}, last {seen.reports[-1]}")


if __name__ == "__main__":
    main()
