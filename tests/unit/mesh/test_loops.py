from __future__ import annotations

import asyncio
import logging
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.loops import BackgroundLoop, backoff_delay

# A guard against a hung test, not a measurement: every wait below ends on an event long before it.
_GUARD_SECONDS = 10.0
_NEVER = 3600.0


@given(
    failures=st.integers(min_value=1, max_value=10_000),
    base=st.floats(min_value=0.001, max_value=10.0),
    cap=st.floats(min_value=0.001, max_value=600.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_is_exponential_capped_and_jittered_in_the_upper_half(
    failures: int, base: float, cap: float, seed: int
) -> None:
    ceiling = min(cap, base * 2 ** min(failures - 1, 64))
    delay = backoff_delay(failures, base_seconds=base, max_seconds=cap, rng=random.Random(seed))
    assert ceiling / 2 <= delay <= ceiling


def test_no_failure_means_no_wait() -> None:
    assert backoff_delay(0, base_seconds=1.0, max_seconds=5.0) == 0.0


def test_backoff_doubles_until_the_cap() -> None:
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    delays = [backoff_delay(n, base_seconds=0.25, max_seconds=5.0, rng=Top()) for n in range(1, 8)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


async def test_a_step_with_work_left_runs_again_at_once() -> None:
    runs = 0
    done = asyncio.Event()

    async def step() -> bool:
        nonlocal runs
        runs += 1
        if runs == 3:
            done.set()
        return runs < 3

    loop = BackgroundLoop("test-more", step, interval_seconds=_NEVER)
    loop.start()
    await asyncio.wait_for(done.wait(), _GUARD_SECONDS)
    await loop.stop()
    assert runs == 3


async def test_wake_runs_the_next_step_before_the_interval_ends() -> None:
    ran = asyncio.Queue[int]()
    runs = 0

    async def step() -> None:
        nonlocal runs
        runs += 1
        ran.put_nowait(runs)

    loop = BackgroundLoop("test-wake", step, interval_seconds=_NEVER)
    loop.start()
    assert await asyncio.wait_for(ran.get(), _GUARD_SECONDS) == 1
    loop.wake()
    assert await asyncio.wait_for(ran.get(), _GUARD_SECONDS) == 2
    await loop.stop()
    assert not loop.running


async def test_failures_are_counted_logged_and_cleared_by_a_success(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mesh.loops")
    outcomes = iter([ConnectionError("down"), ValueError("bug"), None])
    seen_failures: list[int] = []
    recovered = asyncio.Event()
    loop: BackgroundLoop

    async def step() -> None:
        seen_failures.append(loop.failures)
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome
        recovered.set()

    loop = BackgroundLoop(
        "test-failures",
        step,
        interval_seconds=_NEVER,
        min_backoff_seconds=0.001,
        max_backoff_seconds=0.002,
        expected_errors=(ConnectionError,),
    )
    loop.start()
    await asyncio.wait_for(recovered.wait(), _GUARD_SECONDS)
    await asyncio.sleep(0)
    assert seen_failures == [0, 1, 2]
    assert loop.failures == 0
    await loop.stop()
    records = [r for r in caplog.records if getattr(r, "loop", None) == "test-failures"]
    # The expected error is one line; the unexpected one carries its traceback.
    assert [getattr(r, "error", None) for r in records] == ["ConnectionError('down')", "ValueError('bug')"]
    assert [bool(r.exc_info) for r in records] == [False, True]


async def test_reset_backoff_clears_the_count_from_inside_a_long_step() -> None:
    loop: BackgroundLoop
    counts: list[int] = []
    done = asyncio.Event()

    async def step() -> None:
        if len(counts) < 2:
            counts.append(loop.failures)
            raise ConnectionError("connect failed")
        loop.reset_backoff()
        counts.append(loop.failures)
        done.set()
        await asyncio.Event().wait()

    loop = BackgroundLoop("test-reset", step, interval_seconds=_NEVER, min_backoff_seconds=0.001)
    loop.start()
    await asyncio.wait_for(done.wait(), _GUARD_SECONDS)
    await loop.stop()
    assert counts == [0, 1, 0]


async def test_stop_cancels_a_step_where_it_waits_and_start_twice_is_refused() -> None:
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def step() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    loop = BackgroundLoop("test-stop", step, interval_seconds=_NEVER)
    await loop.stop()
    loop.start()
    with pytest.raises(RuntimeError, match="already running"):
        loop.start()
    await asyncio.wait_for(entered.wait(), _GUARD_SECONDS)
    await loop.stop()
    assert cancelled.is_set()
    assert not loop.running


async def test_a_loop_told_to_wait_first_runs_its_first_step_only_after_an_interval_or_a_wake() -> None:
    ran = asyncio.Event()

    async def step() -> None:
        ran.set()

    loop = BackgroundLoop("test-wait-first", step, interval_seconds=_NEVER, first_run_after_interval=True)
    loop.start()
    for _ in range(10):
        await asyncio.sleep(0)
    assert not ran.is_set()
    loop.wake()
    await asyncio.wait_for(ran.wait(), _GUARD_SECONDS)
    await loop.stop()
