"""decoder mode's caching phase (the frozen ViT over every image before step 0) reports as a phase: progress
through the callbacks with its own ETA, and events at its start and end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.callbacks import CACHING, NullCallbacks, PhaseProgress
from trainer.recipe import FineTuneRecipe

IMAGES = 8 + 3 + 2  # shapes_data's train, valid and test: every split is cached


class Recorder(NullCallbacks):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def on_phase_progress(self, phase: str, done: int, total: int, eta_seconds: float | None) -> None:
        self.calls.append(("phase", (phase, done, total, eta_seconds)))

    def on_setup(self, hyperparameters: dict[str, dict[str, Any]], start_step: int) -> None:
        self.calls.append(("setup", start_step))

    def on_event(self, kind: str, message: str, data: dict[str, Any]) -> None:
        self.calls.append(("event", (kind, message, data)))

    def phases(self) -> list[tuple[str, int, int, float | None]]:
        return [c[1] for c in self.calls if c[0] == "phase"]

    def events(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [c[1] for c in self.calls if c[0] == "event"]


def _setup(cfg: Any) -> Recorder:
    seen = Recorder()
    recipe = FineTuneRecipe(cfg, seen)
    try:
        recipe.setup()
    finally:
        recipe.cleanup()
    return seen


def test_caching_reports_rising_progress_with_an_eta_between_its_start_and_end_events(
    small_config: Any, tmp_path: Path
) -> None:
    seen = _setup(small_config(mode="decoder", cache_dir=tmp_path / "cache"))

    reports = seen.phases()
    assert {r[0] for r in reports} == {CACHING} and {r[2] for r in reports} == {IMAGES}
    done = [r[1] for r in reports]
    assert done == list(range(IMAGES + 1)), "0 first, then one report per image, ending at the total"
    assert reports[0][3] is None, "no rate measured before the first image"
    etas = [r[3] for r in reports[1:]]
    assert all(isinstance(e, float) and e >= 0 for e in etas), etas
    assert etas[-1] == 0.0

    # Order: the start event, the progress, the end event, and only then setup's end (training begins).
    kinds = [c[0] if c[0] != "event" else c[1][0] for c in seen.calls]
    start, end = kinds.index("cache_start"), kinds.index("cache")
    assert start < kinds.index("phase") and max(i for i, k in enumerate(kinds) if k == "phase") < end
    assert end < kinds.index("setup")
    events = {kind: data for kind, _, data in seen.events()}
    assert events["cache_start"] == {"images": IMAGES}
    assert events["cache"]["images"] == IMAGES and events["cache"]["seconds"] >= 0

    # A second run on the same cache has nothing to encode: no phase, no caching events.
    again = _setup(small_config(mode="decoder", cache_dir=tmp_path / "cache", output_dir=tmp_path / "run2"))
    assert again.phases() == []
    assert not [e for e in again.events() if e[0] in ("cache_start", "cache")]


def test_full_mode_has_no_caching_phase(small_config: Any) -> None:
    seen = _setup(small_config(mode="full"))
    assert seen.phases() == [] and not [e for e in seen.events() if e[0].startswith("cache")]


def test_phase_progress_counts_up_to_the_total_and_finishes_once() -> None:
    seen = Recorder()
    phase = PhaseProgress(seen, CACHING, 5)
    phase.advance(2)
    phase.advance(1)  # never counts back
    phase.advance(4)  # e.g. rank 0's 2 images x 2 ranks
    phase.finish()  # the other rank did the rest: the phase still ends at its total
    phase.finish()  # and says so once
    assert [r[1] for r in seen.phases()] == [0, 2, 2, 4, 5]
    assert seen.phases()[-1][3] == 0.0

    seen = Recorder()
    phase = PhaseProgress(seen, CACHING, 3)
    phase.advance(7)  # never past the total
    phase.finish()
    assert [r[1] for r in seen.phases()] == [0, 3]
