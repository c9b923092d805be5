"""What the fuzzer found, pinned: each case answered 500 on PostgreSQL before its fix."""

from __future__ import annotations

import httpx

from tests.hardening.seed import Seeded

TOO_BIG = str(2**64)  # past PostgreSQL's bigint


def test_job_logs_after_past_64_bits_is_a_422_naming_the_parameter(seeded: Seeded) -> None:
    r = httpx.get(
        f"{seeded.url}/api/v1/jobs/{seeded.ids['job_id']}/logs?after={TOO_BIG}", headers=seeded.auth
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "after" in r.json()["detail"]
    assert httpx.get(f"{seeded.url}/api/v1/jobs/{seeded.ids['job_id']}/logs?after={2**63 - 1}",
                     headers=seeded.auth).json() == []  # fmt: skip


def test_event_stream_with_a_last_event_id_past_64_bits(seeded: Seeded) -> None:
    """A forged Last-Event-ID beyond any id means "after everything": the finished job's stream says so."""
    headers = seeded.auth | {"Last-Event-ID": f"db-{TOO_BIG}-{TOO_BIG}"}
    r = httpx.get(f"{seeded.url}/api/v1/jobs/{seeded.ids['job_id']}/events", headers=headers, timeout=30)
    assert r.status_code == 204, r.text
