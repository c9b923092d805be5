"""The trainer's log lines during one attempt, held in memory until the heartbeat writes them to the job."""

from __future__ import annotations

import logging
import threading

from app.core.logging import RedactSecrets


class LogBuffer(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.lines: list[str] = []
        self._lines_lock = threading.Lock()  # not `self.lock`: logging.Handler holds that one around emit()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        # These lines are stored and served by the API (GET /jobs/{id}/logs): redacted like every log output.
        self.addFilter(RedactSecrets())

    def emit(self, record: logging.LogRecord) -> None:
        with self._lines_lock:
            self.lines.append(self.format(record))

    def take(self) -> list[str]:
        with self._lines_lock:
            lines, self.lines = self.lines, []
        return lines

    def put_back(self, lines: list[str]) -> None:
        with self._lines_lock:
            self.lines[:0] = lines
