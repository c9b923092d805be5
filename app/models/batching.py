"""Dynamic batching: concurrent requests for the same model are gathered for at most `max_wait_s` (or until
`max_batch` are waiting) and handed to one call of `run`, on the one inference thread; each request gets its
own result back. A request's own failure (an exception in its slot of the results) is raised to that request
only; an exception of `run` itself fails the whole batch.

While one batch runs, the next gathers: under load, batches fill up by themselves. When the inference thread
is idle, a request waits for company only if that many requests were in flight while the last batch ran: a
lone client never waits, and clients that take turns stop splitting into a batch of one and a batch of the
rest, which on a CPU cost nearly two forwards for one batch's work (bench/predict.py). Either way a request
waits at most `max_wait_s` more than it would alone."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

# How long after a batch its company is expected back: longer than clients take to ask again, short enough
# that a client left alone after a burst does not wait for company that is gone.
PEAK_WINDOW_S = 1.0

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Waiting(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result]


@dataclass
class _Queue(Generic[Item, Result]):
    waiting: list[_Waiting[Item, Result]] = field(default_factory=list)
    grown: asyncio.Event = field(default_factory=asyncio.Event)  # set when a request joins
    collecting: bool = False


class DynamicBatcher(Generic[Item, Result]):
    def __init__(
        self,
        run: Callable[[Hashable, list[Item]], Sequence[Result | BaseException]],
        executor: Executor,
        *,
        max_batch: int = 8,
        max_wait_s: float = 0.005,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must not be negative, not {max_wait_s}")
        self.run, self.executor = run, executor
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self._queues: dict[Hashable, _Queue[Item, Result]] = {}
        self._running = 0  # batches handed to the executor and not yet back
        self._pending = 0  # requests submitted and not yet answered
        # The most requests in flight at once while the last batch ran, and when it ended: how many requests an
        # idle inference thread waits for (within PEAK_WINDOW_S of that end). Measured per batch, so that once
        # a burst is over, one lone request finds it out and the next ones run at once again.
        self._run_peak, self._last_peak, self._last_end = 0, 0, 0.0
        self.batch_sizes: deque[int] = deque(
            maxlen=1000
        )  # the recent batches' sizes, for status and benchmarks

    async def submit(self, key: Hashable, item: Item) -> Result:
        """`item`'s result, computed in a batch with whatever else asks for `key` meanwhile."""
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(key, _Queue())
        waiting: _Waiting[Item, Result] = _Waiting(item, loop.create_future())
        queue.waiting.append(waiting)
        queue.grown.set()
        self._pending += 1
        self._run_peak = max(self._run_peak, self._pending)
        if not queue.collecting:
            queue.collecting = True
            loop.create_task(self._collect(key, queue))
        try:
            return await waiting.future
        finally:
            self._pending -= 1

    def _company(self) -> int:
        """How many requests a batch should wait for: all it can take while a batch runs (the wait costs
        nothing then); with the thread idle, as many as were in flight at once while the last batch ran (if it
        ended within PEAK_WINDOW_S): the clients it answered, expected back."""
        if self._running > 0:
            return self.max_batch
        recent = asyncio.get_running_loop().time() - self._last_end <= PEAK_WINDOW_S
        return max(1, min(self.max_batch, self._last_peak if recent else 1))

    async def _gather(self, queue: _Queue[Item, Result]) -> None:
        """Wait at most `max_wait_s` for the queue to hold `_company()` requests."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(queue.waiting) < self._company():
            left = deadline - loop.time()
            if left <= 0:
                return
            queue.grown.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(queue.grown.wait(), left)

    async def _collect(self, key: Hashable, queue: _Queue[Item, Result]) -> None:
        loop = asyncio.get_running_loop()
        while queue.waiting:
            if self.max_wait_s > 0:
                await self._gather(queue)
            batch, queue.waiting = queue.waiting[: self.max_batch], queue.waiting[self.max_batch :]
            # A request whose client went away is not worth a forward.
            batch = [w for w in batch if not w.future.done()]
            if not batch:
                continue
            self.batch_sizes.append(len(batch))
            self._running += 1
            self._run_peak = self._pending
            try:
                results = await loop.run_in_executor(self.executor, self.run, key, [w.item for w in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"the batch function returned {len(results)} results for {len(batch)}")
            except BaseException as exc:  # noqa: BLE001 - handed to every request of the batch
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(exc)
                continue
            finally:
                self._running -= 1
                self._last_peak, self._last_end = self._run_peak, loop.time()
            for w, result in zip(batch, results, strict=True):
                if w.future.done():
                    continue
                if isinstance(result, BaseException):
                    w.future.set_exception(result)
                else:
                    w.future.set_result(result)
        queue.collecting = False
        if self._queues.get(key) is queue and not queue.waiting:
            del self._queues[key]
