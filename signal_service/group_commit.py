"""Group commit for webhook intake: concurrent alerts share one transaction, one round trip, one WAL flush.

A caller hands its row over and waits; it is answered only after the transaction holding its row has
committed, exactly as when it stored the row alone. Batches form only under load: while `max_inflight`
transactions are running, new rows wait, and the next transaction takes every row waiting (up to
`max_batch`). A lone alert on a quiet system goes at once, in a batch of one.

Rows are stored in user-id order, so two batches lock their users in the same order and cannot deadlock
each other. When a batch fails for anything but an unreachable database (a deadlock with another kind of
transaction, one row the database refuses), each of its rows is stored again on its own, so one bad row
never costs the others their answer.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Histogram

from signal_service.database import Database, database_unreachable
from signal_service.repository import WebhookIngest, WebhookOutcome, WebhookRepository

log = logging.getLogger(__name__)

INGEST_BATCH_SIZE = Histogram(
    "alerts_ingest_batch_size",
    "Webhooks stored per transaction by group commit",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)


class GroupCommit:
    def __init__(self, database: Database, *, max_batch: int = 128, max_inflight: int = 2) -> None:
        self._database = database
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._waiting: list[tuple[WebhookIngest, asyncio.Future[WebhookOutcome]]] = []
        self._inflight: set[asyncio.Task[None]] = set()

    async def ingest(self, row: WebhookIngest) -> WebhookOutcome:
        outcome: asyncio.Future[WebhookOutcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((row, outcome))
        self._start_batches()
        return await outcome

    def _start_batches(self) -> None:
        while self._waiting and len(self._inflight) < self._max_inflight:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            task = asyncio.create_task(self._commit(batch))
            self._inflight.add(task)
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._start_batches()

    async def _commit(self, batch: list[tuple[WebhookIngest, asyncio.Future[WebhookOutcome]]]) -> None:
        batch.sort(key=lambda entry: entry[0].user_id.bytes)
        INGEST_BATCH_SIZE.observe(len(batch))
        rows = [row for row, _ in batch]
        try:
            outcomes: list[WebhookOutcome | BaseException] = list(await self._store(rows))
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            if len(rows) == 1 or database_unreachable(exc):
                outcomes = [exc] * len(rows)
            else:
                log.warning(
                    "group commit failed; storing its webhooks one by one",
                    extra={"rows": len(rows), "error": repr(exc)},
                )
                outcomes = await self._store_each(rows)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                # The caller gave up (its deadline passed); its row is stored all the same.
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def _store(self, rows: list[WebhookIngest]) -> list[WebhookOutcome]:
        async with self._database.connection() as connection:
            repository = WebhookRepository(connection)
            if len(rows) == 1:
                return [await repository.ingest(rows[0])]
            return await repository.ingest_many(rows)

    async def _store_each(self, rows: list[WebhookIngest]) -> list[WebhookOutcome | BaseException]:
        outcomes: list[WebhookOutcome | BaseException] = []
        for row in rows:
            try:
                outcomes.append((await self._store([row]))[0])
            except Exception as exc:
                outcomes.append(exc)
        return outcomes
