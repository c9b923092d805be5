"""How the trainer reports: a small protocol the worker implements (database, Redis) and the command
line implements (a progress bar). The trainer knows nothing of either."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

StopRequest = Literal["stop", "cancel"] | None


class TrainerCallbacks(Protocol):
    def on_setup(self, hyperparameters: dict[str, dict[str, Any]], start_step: int) -> None:
        """Once the run is set up: the resolved hyperparameters ({name: {value, reason}}) and the step it
        starts from (non-zero when it resumed from a checkpoint)."""
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

    def on_metrics(self, step: int, epoch: float, metrics: dict[str, float]) -> None:
        pass

    def on_checkpoint(self, step: int, path: Path, is_best: bool) -> None:
        pass

    def on_event(self, kind: str, message: str, data: dict[str, Any]) -> None:
        pass

    def should_stop(self) -> StopRequest:
        return None
