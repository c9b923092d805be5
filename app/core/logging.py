"""Logging set-up. API keys can arrive in the query string (`?api_key=`, as Roboflow's clients send
them); they must never reach a log line."""

from __future__ import annotations

import logging
import re

# Also after a quote: uvicorn's TRACE log prints the scope's query string as a bytes repr, b'api_key=...'.
_SECRET_PARAM = re.compile(r"((?:^|[?&'\"\s])(?:api_key|token)=)[^&\s\"']*", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)


def redact(text: str) -> str:
    return _BEARER.sub(r"\1[redacted]", _SECRET_PARAM.sub(r"\1[redacted]", text))


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # Argument by argument first: uvicorn's access formatter reads the arguments back (to colour the status).
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        # A secret inside a non-string argument (uvicorn's TRACE log passes the request's scope as a dict): the
        # message is then formatted here and redacted whole.
        message = record.getMessage()
        if redact(message) != message:
            record.msg, record.args = redact(message), ()
        return True


def install_redaction() -> None:
    """Attach the filter to the loggers that print request lines (uvicorn's access log and ours)."""
    flt = RedactSecrets()
    for name in ("uvicorn.access", "uvicorn.error", "uvicorn.asgi", "samtune"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(flt)
