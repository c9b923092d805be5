"""The inference service answers the API's predict call ahead of its middleware stack and router
(app/inference/internal_router.py, InternalPredict). What those layers did for the call must still hold: the
internal token, the body limit while the body streams in, problem+json errors with the security headers, and
the request metrics, under the route's own name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.inference.calls import PredictCall, encode_call
from app.inference.remote import INTERNAL_PREDICT, INTERNAL_TOKEN_HEADER
from app.inference.service import _CALL_OVERHEAD_BYTES, create_inference_app
from app.models import service
from app.models.schemas import PredictOptions
from app.settings import Settings
from trainer.base_model import EMBEDDED_BASE


@pytest.fixture
def small_limit(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_predict_bytes": 1000})


@pytest.fixture
def client(small_limit: Settings) -> Iterator[TestClient]:
    app = create_inference_app(small_limit)
    with TestClient(app, client=("127.0.0.1", 40000), raise_server_exceptions=False) as c:
        yield c


def _image(tmp_path: Path) -> bytes:
    path = tmp_path / "x.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path)
    return path.read_bytes()


def _call(settings: Settings, image: bytes) -> bytes:
    spec = service.base_spec(settings, EMBEDDED_BASE)
    return encode_call(PredictCall(model=spec, options=PredictOptions(prompts=["red shape"])), image)


def _token(settings: Settings) -> dict[str, str]:
    return {INTERNAL_TOKEN_HEADER: settings.internal_token}


def _problem(r: object, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text  # type: ignore[attr-defined]
    assert r.headers["content-type"] == "application/problem+json", r.headers  # type: ignore[attr-defined]
    assert r.headers["x-content-type-options"] == "nosniff"  # type: ignore[attr-defined]
    body: dict[str, object] = r.json()  # type: ignore[attr-defined]
    return body


def _counted(client: TestClient, status: int) -> float:
    """The service's request count for the internal predict route with this status."""
    label = f'method="POST",route="{INTERNAL_PREDICT}",service="inference",status="{status}"'
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("samtune_http_requests_total{" + label + "}"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_call_with_the_token_is_answered_and_counted(
    client: TestClient, small_limit: Settings, tmp_path: Path
) -> None:
    before = _counted(client, 200), _counted(client, 413)
    r = client.post(
        INTERNAL_PREDICT, content=_call(small_limit, _image(tmp_path)), headers=_token(small_limit)
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["image"] == {"width": 64, "height": 48} and isinstance(answer["predictions"], list)
    assert "forward;dur=" in r.headers["server-timing"]
    assert r.headers["x-content-type-options"] == "nosniff"
    # Refused by the body limit before any byte is read: counted too, under the same route.
    too_long = b"x" * (small_limit.max_predict_bytes + _CALL_OVERHEAD_BYTES + 1)
    assert client.post(INTERNAL_PREDICT, content=too_long, headers=_token(small_limit)).status_code == 413
    assert (_counted(client, 200), _counted(client, 413)) == (before[0] + 1, before[1] + 1)


@pytest.mark.parametrize("headers", [{}, {INTERNAL_TOKEN_HEADER: "wrong"}, {"Authorization": "Bearer st_x"}])
def test_without_the_internal_token_it_is_refused(
    client: TestClient, small_limit: Settings, tmp_path: Path, headers: dict[str, str]
) -> None:
    r = client.post(INTERNAL_PREDICT, content=_call(small_limit, _image(tmp_path)), headers=headers)
    assert INTERNAL_TOKEN_HEADER in str(_problem(r, 401)["detail"])
    assert r.headers["www-authenticate"] == "Bearer"


def test_only_post(client: TestClient, small_limit: Settings) -> None:
    r = client.get(INTERNAL_PREDICT, headers=_token(small_limit))
    _problem(r, 405)
    assert r.headers["allow"] == "POST"


def test_a_body_over_the_limit_is_refused_declared_or_streamed(
    client: TestClient, small_limit: Settings
) -> None:
    too_long = b"x" * (small_limit.max_predict_bytes + _CALL_OVERHEAD_BYTES + 1)
    r = client.post(INTERNAL_PREDICT, content=too_long, headers=_token(small_limit))
    assert "SAMTUNE_MAX_PREDICT_BYTES" in str(_problem(r, 413)["detail"])

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut off where it passes the limit
        for _ in range(len(too_long) // 65536 + 1):
            yield b"x" * 65536

    r = client.post(INTERNAL_PREDICT, content=chunks(), headers=_token(small_limit))
    assert "SAMTUNE_MAX_PREDICT_BYTES" in str(_problem(r, 413)["detail"])


def test_a_malformed_call_is_a_4xx_that_says_so(
    client: TestClient, small_limit: Settings, tmp_path: Path
) -> None:
    r = client.post(INTERNAL_PREDICT, content=b"no newline here", headers=_token(small_limit))
    assert "one line of JSON" in str(_problem(r, 400)["detail"])
    call = json.dumps({"model": {"key": "k"}, "options": {}}).encode() + b"\n" + _image(tmp_path)
    r = client.post(INTERNAL_PREDICT, content=call, headers=_token(small_limit))
    assert "not valid" in str(_problem(r, 422)["detail"])
    # An error of the prediction itself keeps its own status: here, bytes that are no image.
    r = client.post(
        INTERNAL_PREDICT, content=_call(small_limit, b"not an image"), headers=_token(small_limit)
    )
    assert _problem(r, 422)["type"] == "https://samtune.dev/problems/invalid-image"


def test_an_unexpected_error_is_the_500_problem(
    client: TestClient, small_limit: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inference = client.app.state.inference  # type: ignore[attr-defined]

    async def broken(*_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(inference, "predict", broken)
    r = client.post(
        INTERNAL_PREDICT, content=_call(small_limit, _image(tmp_path)), headers=_token(small_limit)
    )
    body = _problem(r, 500)
    assert "boom" not in json.dumps(body), "the error's text stays in the log"
