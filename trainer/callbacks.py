"""How the trainer reports: a small protocol the worker implements (database, Redis) and the command
line implements (a progress bar). The trainer knows nothing of either."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal, Protocol

StopRequest = Literal["stop", "cancel"] | None

# The phases before the first step that take long enough to be shown (`on_phase_progress`'s `phase`).
# decoder mode: the frozen vision encoder's output for every image (trainer/vision_cache.py).
CACHING = "caching"
# A base model from the Hugging Face Hub that is not in the cache yet: its items are bytes.
DOWNLOADING = "downloading"


class TrainerCallbacks(Protocol):
    def on_setup(self, hyperparameters: dict[str, dict[str, Any]], start_step: int) -> None:
        """Once the run is set up: the resolved hyperparameters ({name: {value, reason}}) and the step it
        starts from (non-zero when it resumed from a checkpoint). Any phase reported before it is over."""
        ...

    def on_phase_progress(self, phase: str, done: int, total: int, eta_seconds: float | None) -> None:
        """A phase before training (e.g. `CACHING`) has done `done` of `total` items; `eta_seconds` comes
        from the rate measured so far in this phase (None before the first item). Called once with done=0,
        then after every item: an implementation that writes somewhere slow throttles itself. The last call
        has done == total."""
        ...

    def on_metrics(self, step: int, epoch: float, metrics: dict[str, float]) -> None: ...
    def on_checkpoint(self, step: int, path: Path, is_best: bool) -> None: ...
    def on_event(self, kind: str, message: str, data: dict[str, Any]) -> None: ...
    def should_stop(self) -> StopRequest:
        """'stop': finish now, keep the best checkpoint, evaluate; 'cancel': leave at once, keep nothing."""
        ...


class NullCallbacks:
    def on_setup(self, hyperparameters: dict[str, dict[str, Any]], start_step: int) -> None:
        pass

    def on_phase_progress(self, phase: str, done: int, total: int, eta_seconds: float | None) -> None:
        pass

    def on_metrics(self, step: int, epoch: float, metrics: dict[str, float]) -> None:
        pass

    def on_checkpoint(self, step: int, path: Path, is_best: bool) -> None:
        pass

    def on_event(self, kind: str, message: str, data: dict[str, Any]) -> None:
        pass

    def should_stop(self) -> StopRequest:
        return None


class PhaseProgress:
    """Counts one phase's items for `on_phase_progress`, with an ETA from this phase's own measured rate
    (elapsed / done x remaining): the training steps' rate says nothing about how fast images encode."""

    def __init__(self, callbacks: TrainerCallbacks, phase: str, total: int) -> None:
        self.callbacks, self.phase, self.total = callbacks, phase, total
        self.done = 0
        self.started = time.monotonic()
        callbacks.on_phase_progress(phase, 0, total, None)

    def advance(self, done: int) -> None:
        """`done` items finished so far (never counts back, never past the total)."""
        self.done = max(self.done, min(done, self.total))
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * (self.total - self.done) if self.done else None
        self.callbacks.on_phase_progress(self.phase, self.done, self.total, eta)

    def finish(self) -> float:
        """Reports the phase complete, if `advance` has not (another rank did the rest), and returns its
        seconds."""
        if self.done < self.total:
            self.advance(self.total)
        return time.monotonic() - self.started
