"""Fixtures for training jobs. Jobs are run by `app.jobs.runner.run_job`, which opens its own engine, and the
event stream reads through the app's own sessionmaker: so these tests use a committed database per test
module (SQLite file and a fresh PostgreSQL database), not the rolled-back connection of tests/conftest.py.

`jobs_kit` (module scope, SQLite and PostgreSQL; in tests/support/jobs.py, shared with the models tests)
gives an API client whose task queue records messages instead of sending them, a ready 112 px version of a
small synthetic dataset, and helpers to create and run jobs. Nothing here depends on a particular test file.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.support.jobs import FEED_REDIS_URL
from tests.support.webhooks import WebhookReceiver


@pytest.fixture(scope="module")
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """One receiver per module (jobs keep its URL); call `reset(...)` at the start of a test."""
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def feed_redis() -> str:
    """The Redis database of the live feed, emptied once per module (only this DB: the server is shared)."""
    client = redis.Redis.from_url(FEED_REDIS_URL)
    client.flushdb()
    client.close()
    return FEED_REDIS_URL
