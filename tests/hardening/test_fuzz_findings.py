"""What the fuzzer and the hand probing of the routes it cannot see found, pinned. Each case answered 500 on
PostgreSQL (or, for the Roboflow query options, 200 on nonsense) before its fix."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.factories import jpeg_bytes
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


def test_a_roboflow_model_id_with_a_version_past_32_bits_is_a_404(seeded: Seeded) -> None:
    """`slug/99999999999999999999` reached PostgreSQL's integer column (500, and the connection dropped)."""
    b64 = base64.b64encode(jpeg_bytes(32, 32)).decode()
    ref = f"{seeded.ids['project']}/{TOO_BIG}"
    with httpx.Client(base_url=seeded.url, headers=seeded.auth, timeout=60) as http:
        for r in (
            http.post(f"/{ref}", content=b64),
            http.post(
                "/infer/instance_segmentation",
                json={"model_id": ref, "image": {"type": "base64", "value": b64}},
            ),
            http.post("/model/add", json={"model_id": ref}),
        ):
            assert r.status_code == 404, r.text
            assert "not found" in r.json()["detail"]
        assert http.post(f"/{seeded.ids['project']}/0", content=b64).status_code == 404


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("confidence=nan", "confidence"),
        ("confidence=inf", "confidence"),
        ("confidence=-5", "confidence"),
        ("confidence=101", "confidence"),
        ("max_detections=0", "max_detections"),
        ("max_detections=-1", "max_detections"),
        ("max_detections=99999999999", "max_detections"),
    ],
)
def test_roboflow_hosted_form_refuses_options_out_of_range(seeded: Seeded, query: str, field: str) -> None:
    b64 = base64.b64encode(jpeg_bytes(32, 32)).decode()
    url = f"{seeded.url}/{seeded.ids['project']}/{seeded.ids['version']}?{query}"
    r = httpx.post(url, content=b64, headers=seeded.auth, timeout=60)
    assert r.status_code == 422, r.text
    assert r.json()["source"] == field and field in r.json()["detail"]


def test_roboflow_hosted_form_still_takes_percent_and_fraction(seeded: Seeded) -> None:
    b64 = base64.b64encode(jpeg_bytes(32, 32)).decode()
    base = f"{seeded.url}/{seeded.ids['project']}/{seeded.ids['version']}"
    for query in ("confidence=40", "confidence=0.4", "confidence=0&max_detections=1000", ""):
        r = httpx.post(f"{base}?{query}", content=b64, headers=seeded.auth, timeout=60)
        assert r.status_code == 200, (query, r.text)
