"""The migrations build exactly the tables the models describe, and the newest one can be undone."""

from __future__ import annotations

import asyncio

import asyncpg
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import signal_service.models  # noqa: F401 (registers the tables on SQLModel.metadata)
from signal_service.migrate import alembic_config
from tests.e2e.stacks import fresh_database


async def test_the_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), SQLModel.metadata)
            )
    finally:
        await engine.dispose()
    assert differences == []


def _ingest_function_arguments(database_url: str) -> tuple[int, bool]:
    """How many arguments ingest_webhook() takes, and whether users has rate_tat."""

    async def read() -> tuple[int, bool]:
        connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        try:
            arguments = await connection.fetchval(
                "SELECT pronargs FROM pg_proc WHERE proname = 'ingest_webhook'"
            )
            has_column = await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM information_schema.columns"
                " WHERE table_name = 'users' AND column_name = 'rate_tat')"
            )
        finally:
            await connection.close()
        return arguments, has_column

    return asyncio.run(read())


def test_the_rate_limit_migration_goes_down_and_up_again(database_url: str) -> None:
    with fresh_database(database_url) as url:
        assert _ingest_function_arguments(url) == (41, True)
        command.downgrade(alembic_config(url), "0003_sessions")
        assert _ingest_function_arguments(url) == (39, False)
        command.upgrade(alembic_config(url), "head")
        assert _ingest_function_arguments(url) == (41, True)
