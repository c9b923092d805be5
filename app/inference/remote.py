"""Predictions forwarded to inference services (SAMTUNE_INFERENCE_URLS): each request goes to the least busy
healthy one, and a request whose service fails to answer (refused, reset, killed mid-request) is sent once more
to another. Predictions change nothing, so sending one twice is safe.

Health is learned from traffic: a service that failed is left alone for `DOWN_FOR_S`, then tried again. With a
single URL (a load balancer in front of many replicas, as docs/deploy.md shows) this is plain forwarding with
one retry.

The client is aiohttp's, not httpx's (which the rest of samtune uses): this call is on every forwarded
prediction's path, and on loopback aiohttp's round trip took 0.29 ms at p50 against httpx's 0.64 ms (and
httpcore's own 0.46 ms), the same uvicorn app answering (bench/internal_hop.py, bench/RESULTS.md)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from anyio import from_thread

from app.inference.calls import Answer, InferenceUnavailable, ModelSpec, PredictCall, encode_call
from app.settings import Settings

logger = logging.getLogger("samtune.inference.remote")

INTERNAL_TOKEN_HEADER = "X-Samtune-Internal-Token"
INTERNAL_PREDICT = "/internal/v1/predict"
DOWN_FOR_S = 5.0
ATTEMPTS = 2  # the first service, then one other


@dataclass
class Replica:
    url: str
    in_flight: int = 0
    down_until: float = 0.0

    def healthy(self, now: float) -> bool:
        return now >= self.down_until


@dataclass
class _Reply:
    status: int
    headers: Mapping[str, str]  # aiohttp's own, names case-insensitive
    content: bytes


class _Slow(Exception):
    """The service took the request and did not answer within the timeout."""


class _Gone(Exception):
    """The service refused the request, reset it or closed it mid-answer: it is gone or going."""


class RemoteInference:
    def __init__(self, settings: Settings) -> None:
        urls = settings.inference_urls_list
        if not urls:
            raise ValueError("RemoteInference needs at least one URL in SAMTUNE_INFERENCE_URLS")
        self.replicas = [Replica(url) for url in urls]
        self._order = itertools.count()
        self._headers = {INTERNAL_TOKEN_HEADER: settings.internal_token}
        # No total: a batch may queue behind others; what must not pass is a silence this long.
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=5.0, sock_read=settings.inference_timeout_seconds
        )
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _client(self) -> aiohttp.ClientSession:
        """The session of the running event loop, made on first use: aiohttp binds one to its loop, and a test
        may run this app's lifespan on one loop and its requests on another."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(
                limit=256,
                # Idle connections close before the service's keep-alive ends (75 s, `samtune inference`),
                # so the API never writes to one the service is closing.
                keepalive_timeout=15,
                ttl_dns_cache=10,  # a replica behind a DNS name (a Kubernetes Service) may move
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=False,  # relayed as the service sent it, headers and all
                trust_env=False,  # internal traffic goes straight to the services, never through a proxy
            )
            self._loop = loop
        return self._session

    async def _post(
        self, url: str, content: bytes, headers: dict[str, str], timeout: float | None = None
    ) -> _Reply:
        session = self._client()
        limit = self._timeout if timeout is None else aiohttp.ClientTimeout(total=timeout, sock_connect=5.0)
        try:
            async with session.post(url, data=content, headers=headers, timeout=limit) as r:
                body = await r.read()
                return _Reply(r.status, r.headers, body)
        except aiohttp.SocketTimeoutError:
            raise _Slow from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _Gone(type(exc).__name__) from exc

    def pick(self, tried: set[str]) -> Replica | None:
        """The least busy healthy replica not tried yet (ties taken in turn); a down one only if none is up."""
        now = time.monotonic()
        left = [r for r in self.replicas if r.url not in tried]
        if not left:
            return None
        up = [r for r in left if r.healthy(now)] or left
        turn = next(self._order)
        return min(up, key=lambda r: (r.in_flight, (self.replicas.index(r) - turn) % len(self.replicas)))

    async def _send(self, path: str, content: bytes, media_type: str) -> _Reply:
        tried: set[str] = set()
        failures: list[str] = []
        for _ in range(ATTEMPTS):
            replica = self.pick(tried)
            if replica is None and len(self.replicas) == 1:
                replica = self.replicas[
                    0
                ]  # one URL (a load balancer, say): asked again, it may send elsewhere
            if replica is None:
                break
            tried.add(replica.url)
            replica.in_flight += 1
            try:
                answer = await self._post(
                    replica.url + path, content, self._headers | {"Content-Type": media_type}
                )
            except _Slow:
                # Alive but slow: sending the work to another would only double it.
                raise InferenceUnavailable(
                    "the inference service did not answer within SAMTUNE_INFERENCE_TIMEOUT_SECONDS"
                ) from None
            except _Gone as exc:
                replica.down_until = time.monotonic() + DOWN_FOR_S
                logger.warning("inference service %s failed (%s); trying another", replica.url, exc)
                failures.append(f"{replica.url}: {exc}")
                continue
            finally:
                replica.in_flight -= 1
            if answer.status in (502, 504):  # a proxy in front of it found it gone
                replica.down_until = time.monotonic() + DOWN_FOR_S
                failures.append(f"{replica.url}: HTTP {answer.status}")
                continue
            if answer.status == 401 and path.startswith("/internal/"):
                # Never the client's fault (its key was checked here): the two sides hold different tokens.
                logger.error("inference service %s refused this API's internal token", replica.url)
                raise InferenceUnavailable(
                    "the inference service refused this API's internal token: set the same SAMTUNE_SECRET_KEY "
                    "(or SAMTUNE_INFERENCE_TOKEN) on the API and every inference service"
                )
            return answer
        raise InferenceUnavailable("no inference service answered (" + "; ".join(failures) + ")")

    async def predict(self, call: PredictCall, data: bytes) -> Answer:
        answer = await self._send(INTERNAL_PREDICT, encode_call(call, data), "application/octet-stream")
        return Answer(
            answer.content,
            answer.headers.get("content-type", "application/octet-stream"),
            answer.headers.get("server-timing", ""),
            answer.status,
        )

    async def load(self, model: ModelSpec) -> None:
        answer = await self._send("/internal/v1/load", model.model_dump_json().encode(), "application/json")
        if answer.status >= 400:
            raise InferenceUnavailable(
                f"the inference service could not load model {model.key}: "
                + answer.content.decode(errors="replace")
            )

    def evict(self, key: str) -> None:
        """A deleted model leaves every service's memory now (an 840M model holds 3.4 GB of GPU memory), not
        when LRU gets to it. Called from a synchronous route's worker thread; best effort: a service that does
        not answer lost its cache anyway, or drops the model in its own time."""
        from_thread.run(self._evict_everywhere, key)

    async def _evict_everywhere(self, key: str) -> None:
        body = json.dumps({"key": key}).encode()
        for replica in self.replicas:
            try:
                answer = await self._post(
                    replica.url + "/internal/v1/evict",
                    body,
                    self._headers | {"Content-Type": "application/json"},
                    timeout=5.0,
                )
            except (_Gone, _Slow) as exc:
                logger.warning("could not evict %s from %s (%s)", key, replica.url, type(exc).__name__)
                continue
            if answer.status != 200:
                logger.warning("%s did not evict %s: HTTP %s", replica.url, key, answer.status)

    async def aclose(self) -> None:
        if self._session is not None and self._loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = None
