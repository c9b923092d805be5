"""bench/load.py's clients, briefly, against the seeded server: every route of its mix answers, the run ends by
itself on time, and nothing fails (the full run, on the production topology, is `python -m bench.load`)."""

from __future__ import annotations

import asyncio
import time

import pytest

from bench.load import ROUTES, Targets, run_load, table
from tests.factories import jpeg_bytes
from tests.hardening.seed import Seeded


def test_a_short_load_run_has_no_errors(seeded: Seeded) -> None:
    ids = seeded.ids
    targets = Targets(ids["dataset_id"], ids["job_id"], ids["model_id"], jpeg_bytes(112, 112, seed=5))
    started = time.monotonic()
    stats, elapsed = asyncio.run(run_load(seeded.url, seeded.key, targets, clients=6, duration=4))
    assert time.monotonic() - started < 4 + 30, "the run did not stop by itself"
    assert stats.error_count == 0, dict(stats.errors)
    assert {label for label, _, _ in ROUTES} == set(stats.latencies), set(stats.latencies)
    assert "| all |" in table(stats, elapsed)


def test_load_refuses_any_host_but_loopback() -> None:
    targets = Targets("d", "j", "m", b"")
    with pytest.raises(AssertionError, match="127.0.0.1 only"):
        asyncio.run(run_load("http://localhost:1", "k", targets, clients=1, duration=0.1))
