"""Logging set-up, one configuration for every samtune process (API, worker, beat, `samtune up`).

API keys can arrive in the query string (`?api_key=`, as Roboflow's clients send them); they must never reach
a log line, so the redaction filter sits on every handler: a record that reaches output has passed through it,
whichever logger it came from.
"""

from __future__ import annotations

import logging
import logging.config
import re
from typing import Any
from urllib.parse import unquote_plus

# uvicorn's own level below DEBUG (uvicorn.config.TRACE_LOG_LEVEL); not imported, so that a worker that
# configures logging does not import uvicorn.
TRACE = 5
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
# Loggers that follow SAMTUNE_LOG_LEVEL all the way down; every other library stops at INFO, because at DEBUG
# some print each request's headers (botocore) or every statement's parameters (SQLAlchemy).
_OWN_LOGGERS = ("samtune", "app", "worker", "trainer", "uvicorn", "celery")

# A parameter in a query string, or in the repr of one (uvicorn's TRACE log prints the scope's query string as
# bytes: b'api_key=...'). The name is matched after decoding: Starlette decodes it before the key is read, so
# `?api%5Fkey=` authenticates like `?api_key=`.
_PARAM = re.compile(r"(?P<lead>^|[?&'\"\s])(?P<name>[^=&\s\"'?]+)=(?P<value>[^&\s\"']*)")
_SECRET_NAMES = frozenset({"api_key", "token"})
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)


def _is_secret_name(name: str) -> bool:
    # Decoded more than once: a name encoded twice does not authenticate, but it is still a key in clear.
    for _ in range(3):
        decoded = unquote_plus(name)
        if decoded == name:
            break
        name = decoded
    return name.strip().lower() in _SECRET_NAMES


def _redact_param(match: re.Match[str]) -> str:
    if not _is_secret_name(match["name"]):
        return match[0]
    return f"{match['lead']}{match['name']}=[redacted]"


def redact(text: str) -> str:
    if "=" in text:
        text = _PARAM.sub(_redact_param, text)
    return _BEARER.sub(r"\1[redacted]", text)


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
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def level_number(level: str | int) -> int:
    """SAMTUNE_LOG_LEVEL as a number: a standard name in any case, uvicorn's `trace`, or a number."""
    if isinstance(level, int):
        return level
    name = level.strip().upper()
    if name == "TRACE":
        return TRACE
    if name.isdigit():
        return int(name)
    number = logging.getLevelName(name)
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}")
    return number


def logging_config(level: str | int) -> dict[str, Any]:
    """The `logging.config.dictConfig` of a samtune process: one handler (stderr, one format, redacting) on the
    root logger; uvicorn's and Celery's loggers keep no handlers of their own and propagate to it."""
    number = level_number(level)
    own = {"level": number, "handlers": [], "propagate": True}
    return {
        "version": 1,
        # Loggers created at import time (app.*, celery.*) must keep logging.
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": "app.core.logging.RedactSecrets"}},
        "formatters": {"samtune": {"format": FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "samtune",
                "filters": ["redact"],
            }
        },
        "root": {"level": max(number, logging.INFO), "handlers": ["stderr"]},
        "loggers": {
            **{name: dict(own) for name in _OWN_LOGGERS},
            # uvicorn's default configuration gives these handlers and propagate=False; undone explicitly, since
            # dictConfig leaves a logger it is not told about as it was.
            "uvicorn.error": dict(own),
            "uvicorn.access": dict(own),
            "uvicorn.asgi": dict(own),
            "celery.task": dict(own),
            "celery.redirected": dict(own),
        },
    }


def configure_logging(level: str | int) -> None:
    logging.addLevelName(TRACE, "TRACE")
    logging.config.dictConfig(logging_config(level))
    # Python's warnings (a library's DeprecationWarning, Celery's SecurityWarning) in the same format and through
    # the same redaction, instead of raw on stderr.
    logging.captureWarnings(True)
    install_redaction()


def install_redaction() -> None:
    """Put the filter on every handler there is now, whoever configured it (`uvicorn --log-config`, Celery's
    own set-up when the worker is started with `celery -A worker.celery_app`, a test harness)."""
    flt = RedactSecrets()
    handlers = list(logging.getLogger().handlers)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            handlers.extend(logger.handlers)
    if logging.lastResort is not None:  # what prints a warning when nothing is configured
        handlers.append(logging.lastResort)
    for handler in handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(flt)
