"""The API's client for its inference services (app/inference/remote.py, aiohttp), against real HTTP servers on
loopback: what it relays, which failures it sends to another service and which it does not, evictions reaching
every service, and a client used from two event loops in turn (as a test's lifespan and requests may be)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.inference.calls import InferenceUnavailable, ModelSpec, PredictCall, decode_call
from app.inference.remote import INTERNAL_TOKEN_HEADER, RemoteInference
from app.models.schemas import PredictOptions
from app.settings import Settings
from tests.support.servers import LiveServer

CALL = PredictCall(model=ModelSpec(key="m", classes=["a"], base_name="b"), options=PredictOptions())


class Service:
    """A stand-in inference service: it records what it was sent and answers as told."""

    def __init__(self, name: str, *, delay: float = 0.0, status: int = 200) -> None:
        self.name, self.delay, self.status = name, delay, status
        self.seen: list[tuple[str, dict[str, str], bytes]] = []

        async def handle(request: Request) -> Response:
            body = await request.body()
            self.seen.append((request.url.path, dict(request.headers), body))
            await asyncio.sleep(self.delay)
            return Response(
                json.dumps({"from": self.name}).encode(),
                status_code=self.status,
                media_type="application/json",
                headers={"Server-Timing": "forward;dur=1.00"},
            )

        self.app = Starlette(routes=[Route("/internal/v1/{what}", handle, methods=["POST"])])


@contextmanager
def _serving(*services: Service) -> Iterator[list[str]]:
    servers = [LiveServer(s.app) for s in services]
    for server in servers:
        server.__enter__()
    try:
        yield [server.url for server in servers]
    finally:
        for server in servers:
            server.__exit__()


@contextmanager
def _hangs_up() -> Iterator[str]:
    """A server that reads the request and closes the connection without a word (a service killed mid-request)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.recv(65536)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nobody listens once it is closed


def _remote(settings: Settings, urls: list[str], **overrides: object) -> RemoteInference:
    return RemoteInference(settings.model_copy(update={"inference_urls": ",".join(urls), **overrides}))


def _predict(remote: RemoteInference) -> tuple[str, str]:
    async def ask() -> tuple[str, str]:
        try:
            answer = await remote.predict(CALL, b"image bytes")
            return json.loads(answer.body)["from"], answer.timing
        finally:
            await remote.aclose()

    return asyncio.run(ask())


def test_the_call_and_the_answer_travel_whole(settings: Settings) -> None:
    service = Service("one")
    with _serving(service) as urls:
        remote = _remote(settings, urls)
        assert _predict(remote) == ("one", "forward;dur=1.00")
        # Another event loop (another test client's) gets a session of its own, and is answered too.
        assert _predict(remote) == ("one", "forward;dur=1.00")
    path, headers, body = service.seen[0]
    assert path == "/internal/v1/predict"
    assert headers[INTERNAL_TOKEN_HEADER.lower()] == settings.internal_token
    assert decode_call(body) == (CALL, b"image bytes")


@pytest.mark.parametrize("broken", ["refused", "hung up"])
def test_a_service_that_fails_is_left_for_another(settings: Settings, broken: str) -> None:
    service = Service("alive")
    with _serving(service) as urls, _hangs_up() as hangs_up:
        dead = _closed_port() if broken == "refused" else hangs_up
        remote = _remote(settings, [dead, *urls])
        for _ in range(4):  # whichever it picks first, the live one answers
            assert _predict(remote)[0] == "alive"
        down = {r.url: r.healthy(time.monotonic()) for r in remote.replicas}
        assert down == {dead: False, urls[0]: True}


def test_with_every_service_gone_it_says_which_failed(settings: Settings) -> None:
    dead = [_closed_port(), _closed_port()]
    with pytest.raises(InferenceUnavailable) as failed:
        _predict(_remote(settings, dead))
    assert all(url in failed.value.detail for url in dead), failed.value.detail


def test_a_slow_service_is_not_asked_twice(settings: Settings) -> None:
    slow, other = Service("slow", delay=3.0), Service("other")
    with _serving(slow, other) as urls:
        remote = _remote(settings, urls, inference_timeout_seconds=0.5)
        remote.replicas[1].in_flight = 1  # so that the slow one is picked first
        started = time.monotonic()
        with pytest.raises(InferenceUnavailable) as failed:
            _predict(remote)
        assert time.monotonic() - started < 2.5, "it waited for the answer instead of the timeout"
    assert "SAMTUNE_INFERENCE_TIMEOUT_SECONDS" in failed.value.detail
    assert len(slow.seen) == 1 and other.seen == [], "the work was sent twice"


@pytest.mark.parametrize("status", [502, 504])
def test_a_proxy_that_lost_its_service_counts_as_a_failure(settings: Settings, status: int) -> None:
    behind, alive = Service("lost", status=status), Service("alive")
    with _serving(behind, alive) as urls:
        remote = _remote(settings, urls)
        remote.replicas[1].in_flight = 1
        assert _predict(remote)[0] == "alive"
    assert len(behind.seen) == 1


def test_an_eviction_reaches_every_service_that_answers(settings: Settings) -> None:
    a, b = Service("a"), Service("b")
    with _serving(a, b) as urls:
        remote = _remote(settings, [urls[0], _closed_port(), urls[1]])

        async def evict() -> None:
            try:
                await remote._evict_everywhere("model-key")
            finally:
                await remote.aclose()

        asyncio.run(evict())
    for service in (a, b):
        assert [(path, json.loads(body)) for path, _, body in service.seen] == [
            ("/internal/v1/evict", {"key": "model-key"})
        ]
