"""Audit pruning against real PostgreSQL: batch after batch until nothing old is left, the newer rows kept."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest

from signal_service.audit.service import prune_audit_log
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
