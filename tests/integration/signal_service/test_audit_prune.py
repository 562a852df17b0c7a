"""Audit pruning against real PostgreSQL: batch after batch until nothing old is left, the newer rows kept."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import asyncpg
import pytest

from signal_service.audit.service import ensure_audit_partitions, prune_audit_log
from signal_service.database import Database, create_engine
from signal_service.events.service import listener_dsn
from tests.e2e.stacks import fresh_database

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
def own_database_url(database_url: str) -> Iterator[str]:
    with fresh_database(database_url) as url:
        yield url


async def test_a_backlog_larger_than_a_batch_is_pruned_whole_and_nothing_newer(own_database_url: str) -> None:
    connection = await asyncpg.connect(listener_dsn(own_database_url))
    try:
        await connection.execute(
            """
            INSERT INTO audit_logs (created_at, outcome)
            SELECT now() - make_interval(days => 100 + g), 'accepted' FROM generate_series(1, 25) g
            UNION ALL
            SELECT now() - make_interval(days => 89), 'accepted' FROM generate_series(1, 5)
            """
        )
        database = Database(create_engine(own_database_url, pool_size=1))
        try:
            deleted = await prune_audit_log(database, retention_days=90, batch_size=10, pause_ratio=0)
        finally:
            await database.dispose()
        left = await connection.fetchval("SELECT count(*) FROM audit_logs")
    finally:
        await connection.close()
    assert (deleted, left) == (25, 5)


@pytest.fixture(scope="module")
def another_database_url(database_url: str) -> Iterator[str]:
    with fresh_database(database_url) as url:
        yield url


async def test_months_wholly_past_the_retention_are_dropped_and_the_rest_deleted(
    another_database_url: str,
) -> None:
    """A month's partition past the cutoff goes whole; the month the cutoff falls in loses only its
    older rows; the coming months' partitions are created ahead."""
    connection = await asyncpg.connect(listener_dsn(another_database_url))
    database = Database(create_engine(another_database_url, pool_size=1))
    try:
        await connection.execute("SELECT ensure_audit_log_partitions(now() - interval '150 days', now())")
        coming = _coming_months(3)
        for name in coming[1:]:
            await connection.execute(f'DROP TABLE IF EXISTS "{name}"')
        await connection.execute(
            """
            INSERT INTO audit_logs (created_at, outcome)
            SELECT now() - make_interval(days => d), 'accepted' FROM generate_series(60, 150) d
            """
        )
        months_before = await _month_partitions(connection)
        deleted = await prune_audit_log(database, retention_days=90, batch_size=7, pause_ratio=0)
        created = await ensure_audit_partitions(database)
        left = await connection.fetchval("SELECT count(*) FROM audit_logs")
        oldest_days = await connection.fetchval(
            "SELECT extract(day FROM now() - min(created_at)) FROM audit_logs"
        )
        months_after = await _month_partitions(connection)
    finally:
        await database.dispose()
        await connection.close()
    assert (deleted, left) == (61, 30)
    assert oldest_days < 90
    gone = [month for month in months_before if month not in months_after]
    assert gone
    assert all(month < months_after[0] for month in gone)
    assert created == 2
    assert months_after[-3:] == coming


async def _month_partitions(connection: asyncpg.Connection) -> list[str]:
    return [
        row["relname"]
        for row in await connection.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'audit_logs'::regclass AND c.relname <> 'audit_logs_default'"
            " ORDER BY c.relname"
        )
    ]


def _coming_months(count: int) -> list[str]:
    """The partition names of this month and the next ones."""
    now = datetime.now(UTC)
    months = [(now.year * 12 + now.month - 1 + offset) for offset in range(count)]
    return [f"audit_logs_p{month // 12}{month % 12 + 1:02d}" for month in months]
