"""What the background loops repeat (every few seconds, on every replica) is read through an index: a scan
of a table that grows with the signals, repeated, is what a year of alerts feels as ingest stalls.

Each loop's statements are captured as the loop issues them and explained with sequential scans priced
out, so the plan shows whether any index can serve the statement at all: a sequential scan, or a whole
index walked with no condition, of a growing table fails the test (a partial index, which holds only the
rows its predicate picks, may be walked whole)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from sqlalchemy import event

from mesh.queues import dramatiq_namespace
from mesh.settings import CommonSettings
from signal_service.captures.queued import CaptureMessages
from signal_service.captures.service import CaptureCoordinator
from signal_service.clock import utcnow
from signal_service.database import Database
from signal_service.notifications.service import NotificationLedger
from signal_service.retention.repository import RetentionRepository
from signal_service.retention.service import RetentionJob
from signal_service.settings import SignalSettings
from tests.conftest import settings_from

# The tables that grow with the signals (audit_logs by its monthly partitions).
GROWING_TABLES = ("signals", "screenshots", "signal_events", "audit_logs", "notification_deliveries")

_INDEX_TABLE = """
SELECT table_class.relname AS table_name, index_entry.indpred IS NOT NULL AS partial
FROM pg_index index_entry
JOIN pg_class index_class ON index_class.oid = index_entry.indexrelid
JOIN pg_class table_class ON table_class.oid = index_entry.indrelid
WHERE index_class.relname = $1
"""


def _growing(table: str) -> bool:
    return any(table == name or table.startswith(f"{name}_") for name in GROWING_TABLES)


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


class IssuedStatements:
    """The statements a Database's sessions send, with their parameters, as the driver gets them."""

    def __init__(self, database: Database) -> None:
        self.statements: list[tuple[str, tuple[Any, ...]]] = []
        event.listen(database.engine.sync_engine, "before_cursor_execute", self._capture)

    def _capture(self, _connection: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        self.statements.append((statement, tuple(parameters or ())))

    async def during(self, work: Callable[[], Awaitable[Any]]) -> list[tuple[str, tuple[Any, ...]]]:
        self.statements.clear()
        await work()
        return [
            (statement, parameters)
            for statement, parameters in self.statements
            if statement.lstrip().upper().startswith(("SELECT", "WITH"))
        ]


async def unindexed_scans(
    connection: asyncpg.Connection, statement: str, parameters: tuple[Any, ...]
) -> list[str]:
    """The scans of growing tables in the statement's plan that no index condition or partial index bounds."""
    [plan] = json.loads(await connection.fetchval(f"EXPLAIN (FORMAT JSON) {statement}", *parameters))
    found = []
    for node in _nodes(plan["Plan"]):
        if node["Node Type"] == "Seq Scan" and _growing(node["Relation Name"]):
            found.append(f"Seq Scan on {node['Relation Name']}")
        elif "Index Name" in node and "Index Cond" not in node:
            index = await connection.fetchrow(_INDEX_TABLE, node["Index Name"])
            if _growing(index["table_name"]) and not index["partial"]:
                found.append(f"{node['Node Type']} of all of {node['Index Name']}")
    return found


@pytest.fixture
async def explainer(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    # Priced out, not forbidden: a statement no index can serve still gets its sequential scan.
    await connection.execute("SET enable_seqscan = off")
    yield connection
    await connection.close()


def _loops(
    database: Database, settings: SignalSettings, redis: aioredis.Redis, redis_namespace: str
) -> dict[str, Callable[[], Awaitable[Any]]]:
    """One pass of each loop whose statements read growing tables, by loop name."""
    namespace = dramatiq_namespace(CommonSettings(redis_namespace=redis_namespace))
    sweeper = CaptureCoordinator(
        database=database, settings=settings, messages=CaptureMessages(redis, namespace)
    )
    ledger = NotificationLedger(database)
    retention = RetentionJob(database=database, settings=settings, storage=None)  # type: ignore[arg-type]

    async def expiry_batch() -> None:
        # The statement retention's expiry repeats, batch after batch; storage is not called for none due.
        cutoffs: dict[str, datetime] = retention.cutoffs(utcnow())
        async with database.transaction() as session:
            await RetentionRepository(session).expired(cutoffs, settings.retention_batch_size)

    return {
        "capture-sweeper": sweeper.sweep_stale,
        "notification-metrics": ledger.refresh_metrics,
        "storage-usage": retention.refresh_usage,
        "screenshot-retention": expiry_batch,
    }


@pytest.mark.parametrize(
    "loop", ["capture-sweeper", "notification-metrics", "storage-usage", "screenshot-retention"]
)
async def test_a_background_loop_reads_growing_tables_only_through_indexes(
    loop: str,
    database: Database,
    explainer: asyncpg.Connection,
    service_env: dict[str, str],
    redis: aioredis.Redis,
    redis_namespace: str,
) -> None:
    settings = settings_from(service_env, SignalSettings)
    issued = IssuedStatements(database)
    statements = await issued.during(_loops(database, settings, redis, redis_namespace)[loop])
    assert statements, f"{loop} issued no query"
    scans = {
        statement: found
        for statement, parameters in statements
        if (found := await unindexed_scans(explainer, statement, parameters))
    }
    assert scans == {}
