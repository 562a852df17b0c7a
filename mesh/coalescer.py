"""Calls that arrive while others are being served go together in the next batch.

The one batching pattern behind group commit (signal_service/intake/group_commit.py), the edge's
BatchIngestWebhooks calls (edge/batching.py), the spool's appends (edge/spool.py) and rate-limit checks
(signal_service/intake/ratelimit.py). While `max_inflight` flushes run, new items wait; when one ends, the
next flush takes every item waiting, up to `max_batch`. A lone item on a quiet process is flushed at once,
in a batch of one, so no timer ever delays it: batches grow only as fast as the work behind them is slow."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# Per item, in the order given: its result, or the exception its caller should see.
Flush = Callable[[list[Item]], Awaitable[Sequence[Result | BaseException]]]


class Coalescer(Generic[Item, Result]):
    def __init__(
        self, flush: Flush[Item, Result], *, max_batch: int, max_inflight: int = 1, whole_turn: bool = False
    ) -> None:
        """``whole_turn``: a flush starts once the event loop's current turn is over rather than at the
        first submit, so that items submitted by tasks that run in the same turn (one gathered task per
        item of a batch RPC) share it instead of the first one or two going alone."""
        if max_batch < 1 or max_inflight < 1:
            raise ValueError("max_batch and max_inflight must be at least 1")
        self._flush = flush
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._whole_turn = whole_turn
        self._start_scheduled = False
        self._waiting: deque[tuple[Item, asyncio.Future[Result], float]] = deque()
        self._inflight: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        """Items not yet handed to a flush."""
        return len(self._waiting)

    def oldest_wait_seconds(self) -> float:
        """How long the oldest item still waited for has been waiting for a flush; 0 when none is."""
        while self._waiting and self._waiting[0][1].done():
            self._waiting.popleft()
        return time.monotonic() - self._waiting[0][2] if self._waiting else 0.0

    async def submit(self, item: Item) -> Result:
        """The result of `item`'s flush. A caller that stops waiting before its item was flushed (its
        deadline passed, it was cancelled) takes the item out; once flushed, the item's work is done
        whether or not anybody still waits for it."""
        result: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, result, time.monotonic()))
        if not self._whole_turn:
            self._start_flushes()
        elif not self._start_scheduled:
            self._start_scheduled = True
            asyncio.get_running_loop().call_soon(self._start_scheduled_flushes)
        return await result

    def _start_scheduled_flushes(self) -> None:
        self._start_scheduled = False
        self._start_flushes()

    def _start_flushes(self) -> None:
        while len(self._inflight) < self._max_inflight:
            batch: list[tuple[Item, asyncio.Future[Result]]] = []
            while self._waiting and len(batch) < self._max_batch:
                item, future, _ = self._waiting.popleft()
                if not future.done():
                    batch.append((item, future))
            if not batch:
                return
            task = asyncio.create_task(self._run(batch))
            self._inflight.add(task)
            task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._start_flushes()

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            outcomes: Sequence[Result | BaseException] = await self._flush([item for item, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"a flush of {len(batch)} items returned {len(outcomes)} outcomes")
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            outcomes = [exc] * len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
