"""The dynamic batcher: concurrent requests for one model share a call, up to max_batch; each gets its own
result or its own error; requests for different models never share a batch."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.models.batching import DynamicBatcher


class Recorder:
    """A batch function that doubles numbers, records each batch with the thread that ran it, and fails
    the items that are negative (their own error) or every item of a batch holding 13 (the batch's)."""

    def __init__(self) -> None:
        self.batches: list[tuple[Hashable, list[int], str]] = []

    def __call__(self, key: Hashable, items: list[int]) -> Sequence[int | BaseException]:
        self.batches.append((key, list(items), threading.current_thread().name))
        if 13 in items:
            raise RuntimeError("the whole batch failed")
        return [ValueError(f"{i} is negative") if i < 0 else i * 2 for i in items]


def _batcher(
    max_batch: int, max_wait_s: float
) -> tuple[DynamicBatcher[int, int], Recorder, ThreadPoolExecutor]:
    recorder = Recorder()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    return DynamicBatcher(recorder, executor, max_batch=max_batch, max_wait_s=max_wait_s), recorder, executor


def test_concurrent_requests_share_one_batch_and_get_their_own_results() -> None:
    batcher, recorder, executor = _batcher(max_batch=8, max_wait_s=5.0)

    async def main() -> list[int]:
        # A full batch does not wait out max_wait_s: this returns long before 5 s.
        return await asyncio.wait_for(asyncio.gather(*(batcher.submit("m", i) for i in range(8))), 4.0)

    assert asyncio.run(main()) == [i * 2 for i in range(8)]
    assert [(k, items) for k, items, _ in recorder.batches] == [("m", list(range(8)))]
    assert recorder.batches[0][2].startswith("inference")
    executor.shutdown()


def test_a_lone_request_waits_at_most_max_wait() -> None:
    batcher, recorder, executor = _batcher(max_batch=8, max_wait_s=0.05)
    assert asyncio.run(asyncio.wait_for(batcher.submit("m", 21), 4.0)) == 42
    assert list(batcher.batch_sizes) == [1]
    executor.shutdown()


Run = Callable[[Hashable, list[int]], Sequence[int | BaseException]]


def _held_first_batch() -> tuple[threading.Event, threading.Event, Run]:
    """A batch function whose first batch runs until `release` is set (`started` says it began)."""
    started, release = threading.Event(), threading.Event()
    recorder = Recorder()

    def run(key: Hashable, items: list[int]) -> Sequence[int | BaseException]:
        if not recorder.batches:
            started.set()
            release.wait(10)
        return recorder(key, items)

    return started, release, run


def test_an_idle_thread_runs_a_lone_request_at_once() -> None:
    """With a 5 s window, a lone request that waited for company would take 5 s: with nothing else in flight
    lately, it finds the inference thread idle and runs at once."""
    batcher, _, executor = _batcher(max_batch=8, max_wait_s=5.0)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await batcher.submit("m", 21) == 42
        return loop.time() - t0

    took = asyncio.run(main())
    assert took < 2.5, f"{took:.2f} s: a lone request waited out the 5 s window"
    executor.shutdown()


def test_requests_arriving_while_a_batch_runs_gather_into_the_next() -> None:
    started, release, run = _held_first_batch()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    batcher: DynamicBatcher[int, int] = DynamicBatcher(run, executor, max_batch=8, max_wait_s=0.2)

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        first = asyncio.ensure_future(batcher.submit("m", 1))
        await loop.run_in_executor(None, started.wait, 10)  # the first batch is running
        later = [asyncio.ensure_future(batcher.submit("m", i)) for i in (2, 3, 4)]
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.wait_for(asyncio.gather(first, *later), 5.0)

    assert asyncio.run(main()) == [2, 4, 6, 8]
    assert list(batcher.batch_sizes) == [1, 3]
    executor.shutdown()


def test_clients_taking_turns_are_not_split_into_a_batch_of_one_and_the_rest() -> None:
    """Four clients, each asking again as soon as it is answered. The first ran alone while the other three
    queued; when it is answered, the three wait (up to the window) for its next request instead of running
    without it, so the clients share one batch from then on. After the burst, the first lone request finds
    out that nobody else is coming back (it may wait the window once); the next lone one runs at once."""
    started, release, run = _held_first_batch()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    batcher: DynamicBatcher[int, int] = DynamicBatcher(run, executor, max_batch=8, max_wait_s=1.0)

    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()

        async def first_client() -> int:
            await batcher.submit("m", 1)
            return await batcher.submit("m", 5)  # at once, like a client in a loop

        t0 = loop.time()
        first = asyncio.ensure_future(first_client())
        await loop.run_in_executor(None, started.wait, 10)
        others = [asyncio.ensure_future(batcher.submit("m", i)) for i in (2, 3, 4)]
        await asyncio.sleep(0.05)
        release.set()
        assert await asyncio.wait_for(asyncio.gather(first, *others), 10.0) == [10, 4, 6, 8]
        took = loop.time() - t0
        assert await batcher.submit("m", 20) == 40  # alone: the burst's company does not come back
        t1 = loop.time()
        assert await batcher.submit("m", 21) == 42
        return took, loop.time() - t1

    took, lone = asyncio.run(main())
    assert list(batcher.batch_sizes) == [1, 4, 1, 1]
    assert took < 0.9, f"{took:.2f} s: the three waited out the window although the fourth came back at once"
    assert lone < 0.5, f"{lone:.2f} s: a lone request waited for a burst that had ended"
    executor.shutdown()


def test_batches_hold_at_most_max_batch_and_models_never_mix() -> None:
    batcher, recorder, executor = _batcher(max_batch=4, max_wait_s=0.2)

    async def main() -> list[int]:
        asks = [batcher.submit("a" if i % 2 else "b", i) for i in range(100, 120)]
        return await asyncio.gather(*asks)

    assert asyncio.run(main()) == [i * 2 for i in range(100, 120)]
    assert all(len(items) <= 4 for _, items, _ in recorder.batches)
    for key, items, _ in recorder.batches:
        assert all(("a" if i % 2 else "b") == key for i in items), (key, items)
    assert sorted(i for _, items, _ in recorder.batches for i in items) == list(range(100, 120))
    assert len(recorder.batches) == 6  # 10 per model in batches of at most 4: 4 + 4 + 2, twice


def test_an_item_error_fails_only_its_request_and_a_batch_error_fails_its_batch() -> None:
    batcher, recorder, executor = _batcher(max_batch=3, max_wait_s=1.0)

    async def main() -> list[int | BaseException]:
        first = await asyncio.gather(*(batcher.submit("m", i) for i in (1, -2, 3)), return_exceptions=True)
        second = await asyncio.gather(*(batcher.submit("m", i) for i in (13, 4, 5)), return_exceptions=True)
        third = await batcher.submit("m", 6)
        return [*first, *second, third]

    out = asyncio.run(main())
    assert out[0] == 2 and out[2] == 6 and isinstance(out[1], ValueError) and "-2 is negative" in str(out[1])
    assert all(isinstance(e, RuntimeError) and "whole batch" in str(e) for e in out[3:6])
    assert out[6] == 12, "the batcher goes on after a failed batch"
    executor.shutdown()


def test_a_result_count_that_does_not_match_fails_the_batch() -> None:
    executor = ThreadPoolExecutor(max_workers=1)
    batcher: DynamicBatcher[int, int] = DynamicBatcher(lambda key, items: [1], executor, max_batch=2)

    async def main() -> list[int | BaseException]:
        return await asyncio.gather(batcher.submit("m", 1), batcher.submit("m", 2), return_exceptions=True)

    assert all(isinstance(e, RuntimeError) and "2" in str(e) for e in asyncio.run(main()))
    executor.shutdown()


@pytest.mark.parametrize("bad", [{"max_batch": 0}, {"max_wait_s": -1.0}])
def test_settings_out_of_range_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DynamicBatcher(lambda key, items: items, ThreadPoolExecutor(max_workers=1), **bad)  # type: ignore[arg-type]
