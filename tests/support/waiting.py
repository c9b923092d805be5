"""The one way the tests wait for something to happen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T | None],
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    message: str = "the condition",
) -> T:
    """Call `predicate` every `interval` seconds until it returns something truthy, and return that.

    It is called once more after the deadline, so a slow last sleep cannot turn a success into a timeout.
    Raises AssertionError naming `message` when `timeout` passes first; an exception of `predicate` (an
    assertion that a process is still alive, say) ends the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}")
        time.sleep(interval)
