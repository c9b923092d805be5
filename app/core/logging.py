"""Logging set-up. API keys can arrive in the query string (`?api_key=`, as Roboflow's clients send
them); they must never reach a log line."""

from __future__ import annotations

import logging
import re

_SECRET_PARAM = re.compile(r"((?:^|[?&])(?:api_key|token)=)[^&\s\"]*", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)


def redact(text: str) -> str:
    return _BEARER.sub(r"\1[redacted]", _SECRET_PARAM.sub(r"\1[redacted]", text))


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def install_redaction() -> None:
    """Attach the filter to the loggers that print request lines (uvicorn's access log and ours)."""
    flt = RedactSecrets()
    for name in ("uvicorn.access", "uvicorn.error", "samtune"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(flt)
