"""The logging configuration of samtune's processes and its redaction of API keys."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

from app.core.logging import RedactSecrets, install_redaction, level_number, logging_config, redact

SECRET = "st_abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "name",
    [
        "api_key",
        "API_KEY",
        "Api_Key",
        "api%5Fkey",
        "api%5fkey",
        "%61pi_key",
        "%41PI%5FKEY",
        "%61%70%69%5f%6b%65%79",
        "api_key+",  # `+` is a space to a form decoder
        "api%255Fkey",  # encoded twice
        "token",
        "to%6Ben",
        "TOKEN",
    ],
)
def test_redact_decodes_parameter_names(name: str) -> None:
    for text in (
        f"GET /api/v1/datasets?{name}={SECRET} HTTP/1.1",
        f"/api/v1/datasets?limit=5&{name}={SECRET}&x=1",
        f"'query_string': b'{name}={SECRET}'",  # uvicorn's TRACE log of the scope
    ):
        out = redact(text)
        assert SECRET not in out, out
        assert f"{name}=[redacted]" in out


def test_redact_keeps_other_parameters_and_text() -> None:
    text = "/x?apikey=1&my_api_key=2&x=api_key&next=%2Fdatasets&limit=5 a=b"
    assert redact(text) == text
    assert redact(f"Authorization: Bearer {SECRET}") == "Authorization: Bearer [redacted]"


def test_levels() -> None:
    assert level_number("info") == logging.INFO
    assert level_number("WARNING") == logging.WARNING
    assert level_number("trace") == 5
    with pytest.raises(ValueError):
        level_number("loud")


def test_every_handler_of_the_configuration_redacts() -> None:
    config = logging_config("debug")
    assert config["handlers"] and all("redact" in h["filters"] for h in config["handlers"].values())
    # uvicorn's and Celery's loggers keep no handler of their own: their records reach the redacting one.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task"):
        assert config["loggers"][name]["handlers"] == [] and config["loggers"][name]["propagate"]


def test_a_configured_process_logs_in_one_format_and_redacts_any_logger() -> None:
    """In a fresh interpreter (the configuration replaces the root logger's handlers): samtune's INFO lines come
    out formatted, and a key is redacted whatever logger the record comes from, child or stranger."""
    code = textwrap.dedent(
        f"""
        import logging, warnings
        from app.core.logging import configure_logging
        configure_logging("info")
        logging.getLogger("samtune.deep.child.logger").info("GET /x?api%5Fkey={SECRET}")
        logging.getLogger("some.library").warning("GET /x?%61pi_key={SECRET}")
        logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "1.2.3.4", "GET", "/x?to%6Ben={SECRET}", "1.1", 200)
        logging.getLogger("samtune.quiet").debug("not at info")
        logging.getLogger("some.library").info("library info")
        warnings.warn("careful")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    lines = done.stderr.splitlines()
    assert SECRET not in done.stderr
    assert any(
        " INFO samtune.deep.child.logger [" in ln and ln.endswith("api%5Fkey=[redacted]") for ln in lines
    )
    assert any(" WARNING some.library [" in ln and "%61pi_key=[redacted]" in ln for ln in lines)
    assert any(
        " INFO uvicorn.access [" in ln and '"GET /x?to%6Ben=[redacted] HTTP/1.1" 200' in ln for ln in lines
    )
    assert any(" WARNING py.warnings [" in ln and "careful" in ln for ln in lines)
    assert any("library info" in ln for ln in lines)
    assert "not at info" not in done.stderr


def test_install_redaction_reaches_handlers_configured_elsewhere() -> None:
    """`uvicorn --log-config` or Celery's own set-up install handlers samtune did not make: the API's start-up
    and Celery's after_setup_logger signal put the filter on them too."""
    logger = logging.getLogger("samtune.test.foreign")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        install_redaction()
        assert any(isinstance(f, RedactSecrets) for f in handler.filters)
        install_redaction()
        assert sum(isinstance(f, RedactSecrets) for f in handler.filters) == 1
    finally:
        logger.removeHandler(handler)


def test_job_log_lines_are_redacted() -> None:
    """A training attempt keeps its log lines and the API serves them (GET /jobs/{id}/logs)."""
    from app.jobs.logbuffer import LogBuffer

    buffer = LogBuffer()
    logger = logging.getLogger("samtune.trainer.test-job-buffer")
    logger.addHandler(buffer)
    try:
        logger.warning("webhook https://h.example/x?api%5Fkey=st_leak&x=1 failed, Bearer st_leak2")
    finally:
        logger.removeHandler(buffer)
    (line,) = buffer.take()
    assert "st_leak" not in line and "[redacted]" in line and "x=1" in line
