"""Dynamic batching: concurrent requests for the same model are gathered for at most `max_wait_s` (or until
`max_batch` are waiting) and handed to one call of `run`, on the one inference thread; each request gets its
own result back. Nothing waits while the inference thread is idle: a lone request runs at once. A request's own failure (an exception in its slot of the results) is raised to that request
only; an exception of `run` itself fails the whole batch.

While one batch runs, the next gathers: under load, batches fill up by themselves, and a lone request waits
at most `max_wait_s` more than it would alone."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Waiting(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result]


@dataclass
class _Queue(Generic[Item, Result]):
    waiting: list[_Waiting[Item, Result]] = field(default_factory=list)
    full: asyncio.Event = field(default_factory=asyncio.Event)
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
        self.batch_sizes: deque[int] = deque(
            maxlen=1000
        )  # the recent batches' sizes, for status and benchmarks

    async def submit(self, key: Hashable, item: Item) -> Result:
        """`item`'s result, computed in a batch with whatever else asks for `key` meanwhile."""
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(key, _Queue())
        waiting: _Waiting[Item, Result] = _Waiting(item, loop.create_future())
        queue.waiting.append(waiting)
        if len(queue.waiting) >= self.max_batch:
            queue.full.set()
        if not queue.collecting:
            queue.collecting = True
            loop.create_task(self._collect(key, queue))
        return await waiting.future

    async def _collect(self, key: Hashable, queue: _Queue[Item, Result]) -> None:
        loop = asyncio.get_running_loop()
        while queue.waiting:
            # Wait for company only while the inference thread is busy anyway: a request that finds it idle runs
            # at once (waiting would only add latency), and what arrives meanwhile gathers for the next batch.
            if len(queue.waiting) < self.max_batch and self.max_wait_s > 0 and self._running > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.full.wait(), self.max_wait_s)
            batch, queue.waiting = queue.waiting[: self.max_batch], queue.waiting[self.max_batch :]
            queue.full.clear()
            if len(queue.waiting) >= self.max_batch:
                queue.full.set()
            # A request whose client went away is not worth a forward.
            batch = [w for w in batch if not w.future.done()]
            if not batch:
                continue
            self.batch_sizes.append(len(batch))
            self._running += 1
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
