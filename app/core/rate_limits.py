"""Per-key rate limits on three buckets of routes (uploads, work queued for the workers, predictions), counted in
Redis so that every API process shares one count, or in this process's memory when no Redis is configured.

The strategy is the moving window of the `limits` library: a request is allowed when fewer than N requests of
the same key and bucket were allowed in the last window (a minute, say), each request timestamped. Unlike a fixed
window it allows no burst of 2N across a window's edge, and the moment the oldest request leaves the window is
exact, which is what `Retry-After` says. A limit that cannot be counted (Redis unreachable) lets requests through
rather than refusing them all: a warning is logged, and Redis is tried again a few seconds later."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
import weakref
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter as AsyncMovingWindow
from limits.errors import StorageError
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from limits.util import WindowStats

from app.core.errors import AppError

if TYPE_CHECKING:  # app.settings imports this module to check the rates it is given
    from app.settings import Settings

logger = logging.getLogger("samtune.rate_limits")

# After a storage error, requests pass uncounted this long before Redis is asked again: an unreachable Redis
# must not cost every request its connect timeout.
RETRY_STORAGE_SECONDS = 5.0
_REDIS_TIMEOUT_SECONDS = 1.0
_REDIS_KEY_PREFIX = "samtune:ratelimit"


class Bucket(StrEnum):
    UPLOADS = "uploads"
    JOBS = "jobs"
    PREDICT = "predict"

    @property
    def setting(self) -> str:
        return f"SAMTUNE_RATE_LIMIT_{self.name}"


# Which routes each bucket counts: the first pattern that matches the whole path of a POST decides (None: no
# bucket), in the order the routes are matched. Patterns rather than the matched route, because the bucket must
# be known before the app's router runs, as BodySizeLimit's are (app/main.py). tests/core/test_rate_limits.py
# checks every POST route of the API and of the inference service against the bucket it should have.
_ROUTE_PATTERNS: tuple[tuple[str, Bucket | None], ...] = (
    # Data coming in: a dataset zip, Roboflow's one-image upload and its annotation file.
    (r"/api/v1/datasets/[^/]+/uploads", Bucket.UPLOADS),
    (r"/dataset/[^/]+/upload", Bucket.UPLOADS),
    (r"/dataset/[^/]+/annotate/[^/]+", Bucket.UPLOADS),
    # Work queued for the workers: training jobs, version builds and batch predictions (one request, a whole
    # split's predictions on a GPU worker).
    (r"/api/v1/jobs", Bucket.JOBS),
    (r"/api/v1/datasets/[^/]+/versions", Bucket.JOBS),
    (r"/api/v1/models/[^/]+/predict-version/[^/]+", Bucket.JOBS),
    (r"/[^/]+/[^/]+/[^/]+/train", Bucket.JOBS),  # Roboflow's version.train()
    (r"/[^/]+/[^/]+/generate", Bucket.JOBS),  # Roboflow's generate_version()
    # Predictions answered on the spot, native and Roboflow's (and /model/add, which loads a model for them).
    (r"/api/v1/models/[^/]+/predict", Bucket.PREDICT),
    (r"/api/v1/base-models/[^/]+/[^/]+/predict", Bucket.PREDICT),
    (r"/infer/instance_segmentation", Bucket.PREDICT),
    (r"/model/add", Bucket.PREDICT),
    (r"/[^/]+/projects", None),  # Roboflow's create_project, matched before its hosted predict
    (r"/[^/]+/[^/]+", Bucket.PREDICT),  # Roboflow's hosted form, /{project}/{version}: every other such POST
)
_ROUTES = tuple((re.compile(pattern), bucket) for pattern, bucket in _ROUTE_PATTERNS)


def bucket_for(method: str, path: str) -> Bucket | None:
    """The bucket a request to `path` counts in, if any (every bucketed route is a POST)."""
    if method != "POST":
        return None
    return next((bucket for pattern, bucket in _ROUTES if pattern.fullmatch(path)), None)


def parse_rate(value: str, setting: str) -> RateLimitItem | None:
    """A bucket's setting: empty is off, else one rate in the `limits` syntax ("10/minute", "100 per hour")."""
    value = value.strip()
    if not value:
        return None
    if ";" in value or "," in value:
        raise ValueError(f"{setting}: one rate per bucket (like 60/minute), not several: {value!r}")
    try:
        return parse(value)
    except ValueError:
        raise ValueError(
            f"{setting}: {value!r} is not a rate; write N/second, N/minute, N/hour or N/day (like 60/minute)"
        ) from None


def describe(rate: RateLimitItem) -> str:
    """'10 per 1 minute' as the settings say it: '10/minute' (or '10/5 minutes')."""
    unit = rate.GRANULARITY.name
    return f"{rate.amount}/{unit}" if rate.multiples == 1 else f"{rate.amount}/{rate.multiples} {unit}s"


@dataclass(frozen=True)
class Verdict:
    """A counted request: allowed or not, and what its key has left of the bucket's rate."""

    bucket: Bucket
    rate: RateLimitItem
    allowed: bool
    remaining: int
    reset_seconds: int  # until the oldest counted request leaves the window (whole seconds, at least 1)

    def headers(self) -> list[tuple[bytes, bytes]]:
        """RateLimit-Policy and RateLimit (draft-ietf-httpapi-ratelimit-headers); Retry-After when refused."""
        name = self.bucket.value
        window = self.rate.get_expiry()
        out = [
            (b"ratelimit-policy", f'"{name}";q={self.rate.amount};w={window}'.encode()),
            (b"ratelimit", f'"{name}";r={self.remaining};t={self.reset_seconds}'.encode()),
        ]
        if not self.allowed:
            out.append((b"retry-after", str(self.reset_seconds).encode()))
        return out


class RateLimited(AppError):
    """Its headers (Retry-After among them) are added by app.core.limits.RateLimitBeforeBody, which sees the
    answer of every rate-limited route go out."""

    status_code = 429
    title = "Too many requests"
    kind = "rate-limited"  # its `type` URI (app/core/errors.py, PROBLEM_TYPES)

    def __init__(self, verdict: Verdict) -> None:
        rate = describe(verdict.rate)
        super().__init__(
            f"this API key has used its {verdict.bucket.value} rate limit of {rate} "
            f"({verdict.bucket.setting}); retry in {verdict.reset_seconds} s",
            extra={"bucket": verdict.bucket.value, "limit": rate, "retry_after": verdict.reset_seconds},
        )


class _Windows(Protocol):
    async def hit(self, rate: RateLimitItem, *identifiers: str) -> bool: ...
    async def stats(self, rate: RateLimitItem, *identifiers: str) -> WindowStats: ...


class _MemoryWindows:
    """This process's counts. The synchronous storage: its lock is a thread lock, so it serves any event loop,
    and each call is a few dictionary operations, too short to be worth a thread hop."""

    def __init__(self) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    async def hit(self, rate: RateLimitItem, *identifiers: str) -> bool:
        return self._limiter.hit(rate, *identifiers)

    async def stats(self, rate: RateLimitItem, *identifiers: str) -> WindowStats:
        return self._limiter.get_window_stats(rate, *identifiers)


class _RedisWindows:
    """Counts in Redis, shared by every process. redis.asyncio's connections belong to the event loop that
    opened them: a server runs one loop per process, but whatever runs the app on several loops (Starlette's
    TestClient opens one per request) gets a client per loop rather than another loop's dead connections."""

    def __init__(self, url: str) -> None:
        self._url = url if url.startswith("async+") else f"async+{url}"
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncMovingWindow] = (
            weakref.WeakKeyDictionary()
        )

    def _limiter(self) -> AsyncMovingWindow:
        loop = asyncio.get_running_loop()
        limiter = self._by_loop.get(loop)
        if limiter is None:
            storage = RedisStorage(
                self._url,
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix=_REDIS_KEY_PREFIX,
                socket_connect_timeout=_REDIS_TIMEOUT_SECONDS,
                socket_timeout=_REDIS_TIMEOUT_SECONDS,
            )
            limiter = self._by_loop[loop] = AsyncMovingWindow(storage)
        return limiter

    async def hit(self, rate: RateLimitItem, *identifiers: str) -> bool:
        return await self._limiter().hit(rate, *identifiers)

    async def stats(self, rate: RateLimitItem, *identifiers: str) -> WindowStats:
        return await self._limiter().get_window_stats(rate, *identifiers)


class RateLimiter:
    """The buckets' rates, from the settings, and where they are counted. `enabled` is False when every bucket is
    off (the default): then nothing is counted, and no storage is made."""

    def __init__(self, rates: dict[Bucket, RateLimitItem], redis_url: str | None) -> None:
        self.rates = rates
        self.storage = "redis" if redis_url else "memory"
        self._windows: _Windows | None = None
        if rates:
            self._windows = _RedisWindows(redis_url) if redis_url else _MemoryWindows()
        self._failing_until = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        configured = {
            Bucket.UPLOADS: settings.rate_limit_uploads,
            Bucket.JOBS: settings.rate_limit_jobs,
            Bucket.PREDICT: settings.rate_limit_predict,
        }
        rates = {b: r for b, v in configured.items() if (r := parse_rate(v, b.setting)) is not None}
        return cls(rates, settings.redis_url)

    @property
    def enabled(self) -> bool:
        return self._windows is not None

    async def hit(self, bucket: Bucket, identity: str) -> Verdict | None:
        """Count one request of `identity` (a key's id) in `bucket`. None: the bucket is off, or the count could
        not be made (the request goes through)."""
        rate = self.rates.get(bucket)
        if rate is None or self._windows is None or time.monotonic() < self._failing_until:
            return None
        try:
            allowed = await self._windows.hit(rate, bucket.value, identity)
            stats = await self._windows.stats(rate, bucket.value, identity)
        except StorageError as exc:
            self._failing_until = time.monotonic() + RETRY_STORAGE_SECONDS
            logger.warning(
                "rate limits not enforced for %.0f s: their storage (%s) failed: %s",
                RETRY_STORAGE_SECONDS,
                self.storage,
                type(exc.storage_error).__name__,
            )
            return None
        reset = max(1, math.ceil(stats.reset_time - time.time()))
        return Verdict(bucket, rate, allowed, max(0, stats.remaining), reset)
