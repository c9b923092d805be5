"""What a hot route would otherwise ask the database on every request (an API key's principal, a model's
serving spec), remembered by this process for a few seconds.

At SAM 3's real size a prediction is tens of milliseconds of GPU; at the bundled model's it is a few of CPU,
and a trip through the thread pool to SQLite or PostgreSQL for the key and another for the model was a
fifth of a prediction's latency (bench/predict.py). Each entry carries a tag (the key's id, the model's id):
`forget(tag)` drops what this process holds under it at once and refuses to hold it again for a TTL, so a
revocation or a deletion made here cannot be undone by a concurrent request that read the row before it
was committed. Other processes see the change within `ttl_s`, the documented bound (SAMTUNE_AUTH_CACHE_SECONDS).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from typing import Generic, TypeVar

from cachetools import TTLCache

V = TypeVar("V")


class ShortCache(Generic[V]):
    """A thread-safe TTL cache of values with tags; `ttl_s=0` holds nothing."""

    def __init__(self, ttl_s: float, maxsize: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        ttl = max(ttl_s, 1e-9)  # TTLCache wants a positive TTL; with 0 nothing is put in
        self._entries: TTLCache[Hashable, tuple[Hashable, V]] = TTLCache(maxsize, ttl, timer=time.monotonic)
        self._forgotten: TTLCache[Hashable, bool] = TTLCache(maxsize, ttl, timer=time.monotonic)

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] in self._forgotten:
                return None
            return entry[1]

    def put(self, key: Hashable, tag: Hashable, value: V) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if tag not in self._forgotten:
                self._entries[key] = (tag, value)

    def forget(self, tag: Hashable) -> None:
        """Drop every entry tagged `tag`, and hold none for it until the TTL has passed."""
        with self._lock:
            self._forgotten[tag] = True
            for key in [k for k, (t, _) in self._entries.items() if t == tag]:
                del self._entries[key]
