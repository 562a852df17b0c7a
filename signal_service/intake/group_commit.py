"""Group commit for webhook intake: concurrent alerts share one transaction, one round trip, one WAL flush.

A caller hands its row over and waits; it is answered only after the transaction holding its row has
committed, exactly as when it stored the row alone. Batches form only under load: while `max_inflight`
transactions are running, new rows wait, and the next transaction takes every row waiting (up to
`max_batch`). A lone alert on a quiet system goes at once, in a batch of one; the items of one
BatchIngestWebhooks call, whose tasks hand their rows over in the same turn of the event loop, go
together rather than their first one or two alone.

The batch function (ingest_webhooks(), intake/sql/) locks its users in id order, so two batches cannot
deadlock each other. When a batch fails for anything but an unreachable database (a deadlock with another
kind of transaction, one row the database refuses), each of its rows is stored again on its own, so one
bad row never costs the others their answer.
"""

from __future__ import annotations

import logging

from prometheus_client import Histogram

from mesh.coalescer import Coalescer
from signal_service.database import Database, database_unreachable
from signal_service.intake.repository import WebhookIngest, WebhookOutcome, WebhookRepository

log = logging.getLogger(__name__)

INGEST_BATCH_SIZE = Histogram(
    "alerts_ingest_batch_size",
    "Webhooks stored per transaction by group commit",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)


class GroupCommit:
    def __init__(self, database: Database, *, max_batch: int = 128, max_inflight: int = 2) -> None:
        self._database = database
        self._batches: Coalescer[WebhookIngest, WebhookOutcome] = Coalescer(
            self._commit, max_batch=max_batch, max_inflight=max_inflight, whole_turn=True
        )

    async def ingest(self, row: WebhookIngest) -> WebhookOutcome:
        return await self._batches.submit(row)

    async def _commit(self, rows: list[WebhookIngest]) -> list[WebhookOutcome | BaseException]:
        INGEST_BATCH_SIZE.observe(len(rows))
        try:
            return list(await self._store(rows))
        except Exception as exc:
            if len(rows) == 1 or database_unreachable(exc):
                raise
            log.warning(
                "group commit failed; storing its webhooks one by one",
                extra={"rows": len(rows), "error": repr(exc)},
            )
            return await self._store_each(rows)

    async def _store(self, rows: list[WebhookIngest]) -> list[WebhookOutcome]:
        async with self._database.connection() as connection:
            return await WebhookRepository(connection).ingest_many(rows)

    async def _store_each(self, rows: list[WebhookIngest]) -> list[WebhookOutcome | BaseException]:
        outcomes: list[WebhookOutcome | BaseException] = []
        for row in rows:
            try:
                outcomes.extend(await self._store([row]))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes
