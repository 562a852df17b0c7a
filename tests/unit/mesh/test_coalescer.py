"""Coalescer: every caller gets its own item's outcome; batches and concurrency stay within bounds."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.coalescer import Coalescer


class _Recorder:
    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.running = 0
        self.most_running = 0
        self.delay = delay
        self.gate = asyncio.Event()
        self.gate.set()

    async def flush(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(items)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.gate.wait()
            await asyncio.sleep(self.delay)
        finally:
            self.running -= 1
        return [ValueError(item) if item < 0 else item * 10 for item in items]


async def test_a_lone_item_is_flushed_at_once_in_a_batch_of_one() -> None:
    recorder = _Recorder()
    coalescer = Coalescer(recorder.flush, max_batch=10)
    assert await coalescer.submit(4) == 40
    assert recorder.batches == [[4]]


async def test_items_arriving_during_a_flush_share_the_next_within_max_batch() -> None:
    recorder = _Recorder()
    coalescer = Coalescer(recorder.flush, max_batch=3)
    recorder.gate.clear()
    first = asyncio.create_task(coalescer.submit(0))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(coalescer.submit(n)) for n in range(1, 8)]
    await asyncio.sleep(0)
    assert coalescer.waiting == 7
    recorder.gate.set()
    assert await asyncio.gather(first, *rest) == [n * 10 for n in range(8)]
    assert recorder.batches == [[0], [1, 2, 3], [4, 5, 6], [7]]


async def test_items_submitted_in_one_turn_share_a_flush_when_asked() -> None:
    for whole_turn, batches in ((False, [[0], [1], [2, 3, 4]]), (True, [[0, 1, 2, 3, 4]])):
        recorder = _Recorder()
        coalescer = Coalescer(recorder.flush, max_batch=10, max_inflight=2, whole_turn=whole_turn)
        assert await asyncio.gather(*(coalescer.submit(n) for n in range(5))) == [n * 10 for n in range(5)]
        assert recorder.batches == batches


async def test_each_item_gets_its_own_exception() -> None:
    coalescer = Coalescer(_Recorder().flush, max_batch=10)
    outcomes = await asyncio.gather(*(coalescer.submit(n) for n in (1, -2, 3)), return_exceptions=True)
    assert outcomes[0] == 10
    assert isinstance(outcomes[1], ValueError)
    assert outcomes[2] == 30


async def test_a_failed_flush_fails_every_item_of_its_batch_only() -> None:
    calls = 0

    async def flaky(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 1:
            raise ConnectionError("down")
        return items

    coalescer = Coalescer(flaky, max_batch=10)
    first = asyncio.create_task(coalescer.submit(1))
    await asyncio.sleep(0)
    later = [asyncio.create_task(coalescer.submit(n)) for n in (2, 3)]
    with pytest.raises(ConnectionError):
        await first
    assert await asyncio.gather(*later) == [2, 3]


async def test_a_flush_answering_the_wrong_number_of_items_fails_them() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    with pytest.raises(RuntimeError, match="returned 0 outcomes"):
        await Coalescer(short, max_batch=10).submit(1)


async def test_a_caller_that_gave_up_before_its_flush_is_left_out() -> None:
    recorder = _Recorder()
    coalescer = Coalescer(recorder.flush, max_batch=10)
    recorder.gate.clear()
    first = asyncio.create_task(coalescer.submit(1))
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await coalescer.submit(2)
    patient = asyncio.create_task(coalescer.submit(3))
    await asyncio.sleep(0)
    recorder.gate.set()
    assert [await first, await patient] == [10, 30]
    assert recorder.batches == [[1], [3]]


@settings(max_examples=40, deadline=None)
@given(
    items=st.lists(st.integers(min_value=-5, max_value=1000), min_size=1, max_size=60),
    pauses=st.lists(st.integers(min_value=0, max_value=2), min_size=1, max_size=60),
    max_batch=st.integers(min_value=1, max_value=8),
    max_inflight=st.integers(min_value=1, max_value=3),
)
def test_every_caller_gets_exactly_its_items_outcome(
    items: list[int], pauses: list[int], max_batch: int, max_inflight: int
) -> None:
    async def scenario() -> tuple[list[object], _Recorder]:
        recorder = _Recorder(delay=0.001)
        coalescer = Coalescer(recorder.flush, max_batch=max_batch, max_inflight=max_inflight)
        tasks = []
        for index, item in enumerate(items):
            tasks.append(asyncio.create_task(coalescer.submit(item)))
            for _ in range(pauses[index % len(pauses)]):
                await asyncio.sleep(0)
        return await asyncio.gather(*tasks, return_exceptions=True), recorder

    outcomes, recorder = asyncio.run(scenario())

    for item, outcome in zip(items, outcomes, strict=True):
        if item < 0:
            assert isinstance(outcome, ValueError)
            assert outcome.args == (item,)
        else:
            assert outcome == item * 10
    assert sorted(n for batch in recorder.batches for n in batch) == sorted(items)
    assert all(1 <= len(batch) <= max_batch for batch in recorder.batches)
    assert recorder.most_running <= max_inflight
