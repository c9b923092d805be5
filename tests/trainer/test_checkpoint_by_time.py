"""Checkpoints come by time as well as by steps: a run whose step interval is never reached still leaves a
checkpoint after `checkpoint_every_seconds`, and a run killed later resumes from it, not from step 0."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainer.callbacks import NullCallbacks
from trainer.recipe import FineTuneRecipe, run


class Killed(Exception):
    pass


class SlowThenKilled(NullCallbacks):
    """Steps that take a while (as real-size ones do), and a kill at `step`."""

    def __init__(self, step: int, seconds_per_step: float) -> None:
        self.step, self.seconds_per_step = step, seconds_per_step
        self.checkpoints: list[int] = []

    def on_metrics(self, step: int, epoch: float, metrics: dict[str, float]) -> None:
        time.sleep(self.seconds_per_step)
        if step == self.step:
            raise Killed(f"killed at step {step}")

    def on_checkpoint(self, step: int, path: Path, is_best: bool) -> None:
        if path.name == "last":
            self.checkpoints.append(step)


def test_a_run_killed_after_a_while_resumes_from_a_checkpoint_taken_by_time(
    small_config, tmp_path: Path
) -> None:
    # No step-based checkpoint before the end (1000 steps), an epoch validation every 4 steps.
    common = {"mode": "decoder", "checkpoint_every_steps": 1000, "checkpoint_every_seconds": 1}
    straight = small_config(output_dir=tmp_path / "straight", **common)
    run(straight)

    cfg = small_config(output_dir=tmp_path / "killed", **common)
    callbacks = SlowThenKilled(step=9, seconds_per_step=0.4)
    with pytest.raises(Killed):
        run(cfg, callbacks)
    assert callbacks.checkpoints, "no checkpoint by time before the kill"
    assert all(0 < s < 9 for s in callbacks.checkpoints), callbacks.checkpoints
    saved = torch.load(tmp_path / "killed" / "checkpoints" / "last" / "trainer_state.pt", weights_only=False)
    assert saved["step"] == callbacks.checkpoints[-1] > 0

    resumed = FineTuneRecipe(cfg)
    resumed.setup()
    assert resumed.step == saved["step"]
    assert [e["step"] for e in resumed.events if e["kind"] == "resumed"] == [saved["step"]]
    assert resumed.train().steps == 12
    # A checkpoint taken at any step resumes exactly: the same weights as the uninterrupted run.
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "checkpoints" / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_checkpoint_every_seconds_is_a_job_hyperparameter() -> None:
    from app.jobs.service import OVERRIDABLE
    from trainer.config import TrainConfig

    assert "checkpoint_every_seconds" in OVERRIDABLE
    assert TrainConfig.model_fields["checkpoint_every_seconds"].default == 300
