"""Predictions forwarded to inference services (SAMTUNE_INFERENCE_URLS): each request goes to the least busy
healthy one, and a request whose service fails to answer (refused, reset, killed mid-request) is sent once more
to another. Predictions change nothing, so sending one twice is safe.

Health is learned from traffic: a service that failed is left alone for `DOWN_FOR_S`, then tried again. With a
single URL (a load balancer in front of many replicas, as docs/deploy.md shows) this is plain forwarding with
one retry."""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import dataclass

import httpx
from anyio import from_thread

from app.inference.calls import Answer, InferenceUnavailable, ModelSpec, PredictCall, encode_call
from app.settings import Settings

logger = logging.getLogger("samtune.inference.remote")

INTERNAL_TOKEN_HEADER = "X-Samtune-Internal-Token"
DOWN_FOR_S = 5.0
ATTEMPTS = 2  # the first service, then one other


@dataclass
class Replica:
    url: str
    in_flight: int = 0
    down_until: float = 0.0

    def healthy(self, now: float) -> bool:
        return now >= self.down_until


class RemoteInference:
    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        urls = settings.inference_urls_list
        if not urls:
            raise ValueError("RemoteInference needs at least one URL in SAMTUNE_INFERENCE_URLS")
        self.replicas = [Replica(url) for url in urls]
        self._order = itertools.count()
        self._headers = {INTERNAL_TOKEN_HEADER: settings.internal_token}
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.inference_timeout_seconds, connect=5.0),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            transport=transport,
            trust_env=False,  # internal traffic goes straight to the services, never through a proxy
        )

    def pick(self, tried: set[str]) -> Replica | None:
        """The least busy healthy replica not tried yet (ties taken in turn); a down one only if none is up."""
        now = time.monotonic()
        left = [r for r in self.replicas if r.url not in tried]
        if not left:
            return None
        up = [r for r in left if r.healthy(now)] or left
        turn = next(self._order)
        return min(up, key=lambda r: (r.in_flight, (self.replicas.index(r) - turn) % len(self.replicas)))

    async def _send(self, path: str, content: bytes, media_type: str) -> httpx.Response:
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
                answer = await self.client.post(
                    replica.url + path,
                    content=content,
                    headers=self._headers | {"Content-Type": media_type},
                )
            except httpx.ReadTimeout:
                # Alive but slow: sending the work to another would only double it.
                raise InferenceUnavailable(
                    "the inference service did not answer within SAMTUNE_INFERENCE_TIMEOUT_SECONDS"
                ) from None
            except httpx.TransportError as exc:
                replica.down_until = time.monotonic() + DOWN_FOR_S
                logger.warning(
                    "inference service %s failed (%s); trying another", replica.url, type(exc).__name__
                )
                failures.append(f"{replica.url}: {type(exc).__name__}")
                continue
            finally:
                replica.in_flight -= 1
            if answer.status_code in (502, 504):  # a proxy in front of it found it gone
                replica.down_until = time.monotonic() + DOWN_FOR_S
                failures.append(f"{replica.url}: HTTP {answer.status_code}")
                continue
            if answer.status_code == 401 and path.startswith("/internal/"):
                # Never the client's fault (its key was checked here): the two sides hold different tokens.
                logger.error("inference service %s refused this API's internal token", replica.url)
                raise InferenceUnavailable(
                    "the inference service refused this API's internal token: set the same SAMTUNE_SECRET_KEY "
                    "(or SAMTUNE_INFERENCE_TOKEN) on the API and every inference service"
                )
            return answer
        raise InferenceUnavailable("no inference service answered (" + "; ".join(failures) + ")")

    async def predict(self, call: PredictCall, data: bytes) -> Answer:
        answer = await self._send("/internal/v1/predict", encode_call(call, data), "application/octet-stream")
        return Answer(
            answer.content,
            answer.headers.get("content-type", "application/octet-stream"),
            answer.headers.get("server-timing", ""),
            answer.status_code,
        )

    async def load(self, model: ModelSpec) -> None:
        answer = await self._send("/internal/v1/load", model.model_dump_json().encode(), "application/json")
        if answer.status_code >= 400:
            raise InferenceUnavailable(
                f"the inference service could not load model {model.key}: {answer.text}"
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
                answer = await self.client.post(
                    replica.url + "/internal/v1/evict",
                    content=body,
                    headers=self._headers | {"Content-Type": "application/json"},
                    timeout=5.0,
                )
            except httpx.TransportError as exc:
                logger.warning("could not evict %s from %s (%s)", key, replica.url, type(exc).__name__)
                continue
            if answer.status_code != 200:
                logger.warning("%s did not evict %s: HTTP %s", replica.url, key, answer.status_code)

    async def aclose(self) -> None:
        await self.client.aclose()
