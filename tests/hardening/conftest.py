"""Fixtures of the hardening suites: one seeded service (a real server process) shared by the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hardening.seed import Seeded, start_seeded
from tests.support.databases import drop_postgres_database, fresh_postgres_database


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory, postgres_url: str, s3_endpoint: str) -> Iterator[Seeded]:
    url = fresh_postgres_database(postgres_url, "samtune_hardening")
    service = start_seeded(tmp_path_factory.mktemp("hardening"), url, s3_endpoint)
    yield service
    service.server.stop()
    drop_postgres_database(url)
