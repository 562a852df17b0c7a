"""Background loops: one lifecycle (start, wake, stop) and one backoff for every periodic task.

A loop runs its step, then waits its interval or until :meth:`BackgroundLoop.wake` is called. A step
that raises is retried after :func:`backoff_delay`; wake() does not cut that wait short, or a caller
waking the loop on every request would spin it against a dependency that is down; resume() does, for a
caller that knows the dependency is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

# What a step returns: True when work is left over (run again at once), anything else to wait.
LoopStep = Callable[[], Awaitable[bool | None]]


def backoff_delay(
    failures: int, *, base_seconds: float, max_seconds: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after `failures` consecutive failures (1 for the first): exponential from
    `base_seconds`, capped at `max_seconds`, then drawn from the upper half of that ("equal jitter"), so
    processes that failed together do not retry together yet none retries much sooner than planned."""
    if failures < 1:
        return 0.0
    # min() before the power would overflow: 2**1100 is not a float.
    ceiling = min(max_seconds, base_seconds * 2.0 ** min(failures - 1, 64))
    return ceiling * (rng.uniform(0.5, 1.0) if rng is not None else random.uniform(0.5, 1.0))


class BackgroundLoop:
    """Runs `step` as one asyncio task until stopped.

    After a step that returns True the next runs at once; after any other return the loop waits
    `interval_seconds`, or less when woken; with `first_run_after_interval` the first step also waits an
    interval (a periodic job a restart should not run early). A step that raises counts a failure and the
    loop waits :func:`backoff_delay`; the first failure and those at the cap are logged, on one line for
    `expected_errors` (a dependency that is down) and with the traceback for anything else. A success
    (or :meth:`reset_backoff`, for a step that runs long, such as a listener that has just connected)
    clears the count. stop() cancels the step where it waits, and returns once the task has ended.
    """

    def __init__(
        self,
        name: str,
        step: LoopStep,
        *,
        interval_seconds: float,
        min_backoff_seconds: float = 0.25,
        max_backoff_seconds: float = 10.0,
        expected_errors: tuple[type[Exception], ...] = (),
        first_run_after_interval: bool = False,
    ) -> None:
        self.name = name
        self._step = step
        self._interval = interval_seconds
        self._min_backoff = min_backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._expected_errors = expected_errors
        self._first_run_after_interval = first_run_after_interval
        self._woken = asyncio.Event()
        self._resumed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"background loop {self.name} is already running")
        self._task = asyncio.create_task(self._run(), name=self.name)

    def wake(self) -> None:
        """Runs the next step now rather than at the end of the interval (not during a backoff)."""
        self._woken.set()

    def reset_backoff(self) -> None:
        self.failures = 0

    def resume(self) -> None:
        """Ends a backoff now (the dependency the step failed on is known to be back); no-op otherwise."""
        self._resumed.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        if self._first_run_after_interval:
            await self._rest()
        while True:
            self._woken.clear()
            try:
                more = await self._step()
            except Exception as exc:
                self._resumed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._resumed.wait(), timeout=self._failed(exc))
                continue
            self.failures = 0
            if more is True:
                # Yields even when the step did not, so that stop() and other tasks get their turn.
                await asyncio.sleep(0)
                continue
            await self._rest()

    async def _rest(self) -> None:
        """Waits the interval, or until woken."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), timeout=self._interval)

    def _failed(self, exc: Exception) -> float:
        """Counts and logs a failure; returns the seconds to wait before the next step."""
        self.failures += 1
        delay = backoff_delay(self.failures, base_seconds=self._min_backoff, max_seconds=self._max_backoff)
        at_cap = self._min_backoff * 2.0 ** min(self.failures - 1, 64) >= self._max_backoff
        if self.failures == 1 or at_cap:
            log.warning(
                "background loop step failed; retrying",
                exc_info=not isinstance(exc, self._expected_errors),
                extra={
                    "loop": self.name,
                    "failures": self.failures,
                    "retry_in_seconds": round(delay, 3),
                    "error": repr(exc),
                },
            )
        return delay
