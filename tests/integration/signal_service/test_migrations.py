"""The migrations build exactly the tables the models describe, and the newest one can be undone."""

from __future__ import annotations

import asyncio
import re
import uuid

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import signal_service.models  # noqa: F401 (registers the tables on SQLModel.metadata)
from signal_service.migrate import alembic_config
from tests.e2e.stacks import fresh_database


def _not_a_partition(name: str | None, type_: str, parent_names: object) -> bool:
    """audit_logs' monthly partitions (and their indexes) are the database's, not the models'."""
    return not (type_ == "table" and name is not None and re.fullmatch(r"audit_logs_(p\d{6}|default)", name))


async def test_the_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"include_name": _not_a_partition}),
                    SQLModel.metadata,
                )
            )
    finally:
        await engine.dispose()
    assert differences == []


def _ingest_arguments_and_column(database_url: str, table: str, column: str) -> tuple[int | None, bool]:
    """How many arguments ingest_webhook() takes (None: there is none), and whether `table` has `column`."""

    async def read() -> tuple[int | None, bool]:
        connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        try:
            arguments = await connection.fetchval(
                "SELECT pronargs FROM pg_proc WHERE proname = 'ingest_webhook'"
            )
            has_column = await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM information_schema.columns"
                " WHERE table_name = $1 AND column_name = $2)",
                table,
                column,
            )
        finally:
            await connection.close()
        return arguments, has_column

    return asyncio.run(read())


@pytest.mark.parametrize(
    ("revision", "previous", "table", "column", "arguments", "arguments_before"),
    [
        ("0004_ingest_rate_limit", "0003_sessions", "users", "rate_tat", 41, 39),
        (
            "0009_client_certificate",
            "0007_scale",
            "user_config",
            "require_tradingview_client_certificate",
            46,
            45,
        ),
    ],
    ids=["rate_limit", "client_certificate"],
)
def test_a_migration_adding_an_ingest_argument_goes_down_and_up_again(
    database_url: str,
    revision: str,
    previous: str,
    table: str,
    column: str,
    arguments: int,
    arguments_before: int,
) -> None:
    """The migration adds `table`.`column` and an ingest_webhook() argument; undone, both are gone."""
    with fresh_database(database_url) as url:
        command.downgrade(alembic_config(url), revision)
        assert _ingest_arguments_and_column(url, table, column) == (arguments, True)
        command.downgrade(alembic_config(url), previous)
        assert _ingest_arguments_and_column(url, table, column) == (arguments_before, False)
        command.upgrade(alembic_config(url), revision)
        assert _ingest_arguments_and_column(url, table, column) == (arguments, True)


_SIGNAL_PARSE_COLUMNS = ("bar_time", "delayed_feed", "fired_at", "indicator_key")


def _signals_before_parse_fields(url: str) -> dict[str, str | None]:
    """At 0004: one user with a signal per indicator below, as 0004's intake stored them (the catalog's
    name, or the name as written when the catalog did not know it). Returns signal id -> indicator."""
    indicators = ("ADX DEF [APIDEVS]", "RSI PRO+ [APIDEVS]", "adx def", "My Own Indicator", None)

    async def write() -> dict[str, str | None]:
        connection = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            user_id = uuid.uuid4()
            await connection.execute(
                "INSERT INTO users (id, plan, webhook_token_hash, webhook_enabled, signals_quota,"
                " signals_used, quota_reset_at, event_seq) VALUES ($1, 'free', $2, true, 100, 0, now(), 0)",
                user_id,
                uuid.uuid4().hex,
            )
            written: dict[str, str | None] = {}
            for indicator in indicators:
                signal_id = uuid.uuid4()
                await connection.execute(
                    "INSERT INTO signals (id, user_id, indicator, alert_time, parse_status, raw_body,"
                    " body_sha256, result, screenshot_status, created_at) VALUES"
                    " ($1, $2, $3, now(), 'partial', ''::bytea, ''::bytea, 'pending', 'skipped', now())",
                    signal_id,
                    user_id,
                    indicator,
                )
                written[str(signal_id)] = indicator
            return written
        finally:
            await connection.close()

    return asyncio.run(write())


def _signal_parse_state(url: str) -> tuple[int, list[str], dict[str, tuple[str | None, bool]]]:
    """ingest_webhook()'s argument count, which of the new signals columns exist, and each signal's
    indicator_key and delayed_feed when they do."""

    async def read() -> tuple[int, list[str], dict[str, tuple[str | None, bool]]]:
        connection = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            arguments = await connection.fetchval(
                "SELECT pronargs FROM pg_proc WHERE proname = 'ingest_webhook'"
            )
            columns = await connection.fetch(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'signals' AND column_name = ANY($1::text[]) ORDER BY column_name",
                list(_SIGNAL_PARSE_COLUMNS),
            )
            keys = {}
            if columns:
                rows = await connection.fetch("SELECT id, indicator_key, delayed_feed FROM signals")
                keys = {str(row["id"]): (row["indicator_key"], row["delayed_feed"]) for row in rows}
        finally:
            await connection.close()
        return arguments, [column["column_name"] for column in columns], keys

    return asyncio.run(read())


def test_the_parse_fields_migration_goes_down_and_up_again_keying_catalog_names(database_url: str) -> None:
    with fresh_database(database_url) as url:
        command.downgrade(alembic_config(url), "0005_signal_parse_fields")
        assert _signal_parse_state(url) == (45, list(_SIGNAL_PARSE_COLUMNS), {})
        command.downgrade(alembic_config(url), "0004_ingest_rate_limit")
        assert _signal_parse_state(url) == (41, [], {})
        written = _signals_before_parse_fields(url)
        command.upgrade(alembic_config(url), "0005_signal_parse_fields")
        arguments, columns, stored = _signal_parse_state(url)
        assert (arguments, columns) == (45, list(_SIGNAL_PARSE_COLUMNS))
        keys = {
            "ADX DEF [APIDEVS]": "ADX DEF [APIDEVS]",
            "RSI PRO+ [APIDEVS]": "RSI PRO+ [APIDEVS]",
            "adx def": None,
            "My Own Indicator": None,
            None: None,
        }
        assert stored == {signal_id: (keys[indicator], False) for signal_id, indicator in written.items()}


def _audit_state(database_url: str) -> tuple[bool, list[tuple[str, int]], int]:
    """Whether audit_logs is partitioned, its rows (outcome, id) and the id a new row gets."""

    async def read() -> tuple[bool, list[tuple[str, int]], int]:
        connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        try:
            partitioned = await connection.fetchval(
                "SELECT relkind = 'p' FROM pg_class WHERE relname = 'audit_logs'"
            )
            rows = await connection.fetch("SELECT outcome, id FROM audit_logs ORDER BY id")
            fresh = await connection.fetchval(
                "INSERT INTO audit_logs (created_at, outcome) VALUES (now(), 'probe') RETURNING id"
            )
            await connection.execute("DELETE FROM audit_logs WHERE outcome = 'probe'")
        finally:
            await connection.close()
        return partitioned, [(row["outcome"], row["id"]) for row in rows], fresh

    return asyncio.run(read())


def _insert_audit_rows(database_url: str) -> None:
    async def insert() -> None:
        connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        try:
            await connection.execute(
                "INSERT INTO audit_logs (created_at, outcome) VALUES"
                " (now() - interval '200 days', 'old'), (now(), 'new')"
            )
        finally:
            await connection.close()

    asyncio.run(insert())


def test_the_partitions_migration_keeps_the_rows_both_ways(database_url: str) -> None:
    """audit_logs becomes partitioned with its rows and ids, and plain again on the way down; a new row
    never reuses an id."""
    with fresh_database(database_url) as url:
        command.downgrade(alembic_config(url), "0011_platform_access")
        _insert_audit_rows(url)
        partitioned, rows, fresh = _audit_state(url)
        assert not partitioned
        assert [outcome for outcome, _ in rows] == ["old", "new"]
        for step, target, expected in (
            (command.upgrade, "0014_partitions", True),
            (command.downgrade, "0011_platform_access", False),
            (command.upgrade, "0014_partitions", True),
        ):
            step(alembic_config(url), target)
            partitioned, after, next_fresh = _audit_state(url)
            assert (partitioned, after) == (expected, rows)
            assert next_fresh > fresh
            fresh = next_fresh


def test_the_one_row_ingest_function_is_dropped_and_comes_back_on_the_way_down(database_url: str) -> None:
    certificate_rule = ("user_config", "require_tradingview_client_certificate")
    with fresh_database(database_url) as url:
        assert _ingest_arguments_and_column(url, *certificate_rule) == (None, True)
        command.downgrade(alembic_config(url), "0014_partitions")
        assert _ingest_arguments_and_column(url, *certificate_rule) == (46, True)
        command.upgrade(alembic_config(url), "head")
        assert _ingest_arguments_and_column(url, *certificate_rule) == (None, True)


def _retention_bytes_state(database_url: str) -> tuple[list[str] | None, list[str], bool]:
    """signals' storage parameters, the indexes of signals and screenshots that 0016 changes, and whether
    ingest_webhooks() copies an accepted call's body into its audit row."""

    async def read() -> tuple[list[str] | None, list[str], bool]:
        connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        try:
            options = await connection.fetchval("SELECT reloptions FROM pg_class WHERE relname = 'signals'")
            indexes = await connection.fetch(
                "SELECT indexname FROM pg_indexes WHERE indexname = ANY($1::text[]) ORDER BY indexname",
                ["ix_signals_screenshot_open", "ix_screenshots_user_id", "ix_screenshots_failed"],
            )
            source = await connection.fetchval("SELECT prosrc FROM pg_proc WHERE proname = 'ingest_webhooks'")
        finally:
            await connection.close()
        copies_body = "encode(t.body_sha256, 'hex'), substring(t.raw_body" in source
        return options, [row["indexname"] for row in indexes], copies_body

    return asyncio.run(read())


def test_the_retention_bytes_migration_goes_down_and_up_again(database_url: str) -> None:
    with fresh_database(database_url) as url:
        upgraded = (["fillfactor=90"], ["ix_screenshots_failed"], False)
        assert _retention_bytes_state(url) == upgraded
        command.downgrade(alembic_config(url), "0015_drop_ingest_webhook_v4")
        assert _retention_bytes_state(url) == (
            None,
            ["ix_screenshots_user_id", "ix_signals_screenshot_open"],
            True,
        )
        command.upgrade(alembic_config(url), "0016_retention_bytes")
        assert _retention_bytes_state(url) == upgraded


def _stale_pending_index(database_url: str) -> tuple[str, bool] | None:
    """ix_screenshots_stale_pending's definition and whether it is valid (built to the end), if it exists."""

    async def read() -> tuple[str, bool] | None:
        connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        try:
            row = await connection.fetchrow(
                "SELECT pg_get_indexdef(i.indexrelid) AS definition, i.indisvalid AS valid FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'ix_screenshots_stale_pending'"
            )
        finally:
            await connection.close()
        return None if row is None else (row["definition"], row["valid"])

    return asyncio.run(read())


def test_the_stale_pending_index_is_built_concurrently_and_dropped_on_the_way_down(database_url: str) -> None:
    with fresh_database(database_url) as url:
        built = (
            "CREATE INDEX ix_screenshots_stale_pending ON public.screenshots USING btree (updated_at)"
            " WHERE (status = 'pending'::text)",
            True,
        )
        assert _stale_pending_index(url) == built
        command.downgrade(alembic_config(url), "0016_retention_bytes")
        assert _stale_pending_index(url) is None
        command.upgrade(alembic_config(url), "0017_stale_pending_index")
        assert _stale_pending_index(url) == built


def _append_only_state(database_url: str) -> tuple[list[str] | None, list[str]]:
    """screenshots' storage parameters, and which of signals' two body-hash indexes exist."""

    async def read() -> tuple[list[str] | None, list[str]]:
        connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        try:
            options = await connection.fetchval(
                "SELECT reloptions FROM pg_class WHERE relname = 'screenshots'"
            )
            indexes = await connection.fetch(
                "SELECT indexname FROM pg_indexes WHERE indexname = ANY($1::text[]) ORDER BY indexname",
                ["ix_signals_user_body", "ix_signals_user_created_body"],
            )
        finally:
            await connection.close()
        return options, [row["indexname"] for row in indexes]

    return asyncio.run(read())


def test_the_append_only_inserts_migration_goes_down_and_up_again(database_url: str) -> None:
    with fresh_database(database_url) as url:
        upgraded = (["fillfactor=90"], ["ix_signals_user_created_body"])
        assert _append_only_state(url) == upgraded
        command.downgrade(alembic_config(url), "0017_stale_pending_index")
        assert _append_only_state(url) == (None, ["ix_signals_user_body"])
        command.upgrade(alembic_config(url), "0018_append_only_inserts")
        assert _append_only_state(url) == upgraded
