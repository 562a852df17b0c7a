"""The runbook's backup and restore (docs/operations.md), run as written: pg_dump in custom format, drop
the database, create it again, pg_restore, `alerts migrate`; every signal and event comes back intact."""

from __future__ import annotations

import asyncio
import hashlib
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from alerts.embedded import postgres_client
from apidevs.alerts.v1 import resources_pb2, signal_service_pb2, user_service_pb2

# What makes a signal and its history: compared row by row before and after.
SIGNALS = """
SELECT id, user_id, ticker, price::text, signal_type, raw_body, result::text, profit_loss::text, created_at
FROM signals WHERE user_id = $1 ORDER BY id
"""
EVENTS = "SELECT seq, signal_id, type::text, created_at FROM signal_events WHERE user_id = $1 ORDER BY seq"


def plain_dsn(url: str, database: str | None = None) -> str:
    """The libpq form of an SQLAlchemy URL, optionally naming another database on the same server."""
    parts = urlsplit(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    path = f"/{database}" if database else parts.path
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


async def fingerprint(dsn: str, user_id: str) -> tuple[int, int, str]:
    connection = await asyncpg.connect(dsn)
    try:
        signals = await connection.fetch(SIGNALS, uuid.UUID(user_id))
        events = await connection.fetch(EVENTS, uuid.UUID(user_id))
        version = await connection.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await connection.close()
    digest = hashlib.sha256(repr([tuple(row) for row in [*signals, *events]]).encode()).hexdigest()
    return len(signals), len(events), f"{version}:{digest}"


async def run(*command: str, env: dict[str, str] | None = None) -> None:
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, errors = await process.communicate()
    assert process.returncode == 0, errors.decode(errors="replace")


async def admin(dsn: str, statement: str) -> None:
    connection = await asyncpg.connect(plain_dsn(dsn, "postgres"))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def test_dump_drop_restore_keeps_every_signal_and_event(
    signals, users, database_url: str, tmp_path: Path, service_env: dict[str, str]
) -> None:
    created = await users.CreateUser(user_service_pb2.CreateUserRequest(plan=resources_pb2.PLAN_PRO))
    user_id = created.user.user_id
    ids = []
    for index in range(5):
        answer = await signals.IngestWebhook(
            signal_service_pb2.IngestWebhookRequest(
                webhook_token=created.webhook_token,
                body=f"Ticker: BINANCE:BTCUSDT\nPrice: {100 + index}.5\nSignal: buy".encode(),
                content_type="text/plain",
                source_ip="203.0.113.9",
            )
        )
        ids.append(answer.signal_id)
    await signals.UpdateSignalOutcome(
        signal_service_pb2.UpdateSignalOutcomeRequest(
            signal_id=ids[0], result=resources_pb2.SIGNAL_RESULT_WIN, profit_loss="12.5"
        )
    )
    before = await fingerprint(plain_dsn(database_url), user_id)
    assert before[:2] == (5, 6)

    dump = tmp_path / "alerts.dump"
    await run(
        postgres_client("pg_dump"), "--format=custom", "--no-owner", f"--file={dump}", plain_dsn(database_url)
    )
    scratch = f"alerts_restore_{uuid.uuid4().hex[:10]}"
    scratch_dsn = plain_dsn(database_url, scratch)
    scratch_url = database_url.replace(urlsplit(database_url).path, f"/{scratch}", 1)
    try:
        for _ in range(2):  # the first restore, then the runbook's drop-and-restore of a damaged database
            await admin(database_url, f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
            await admin(database_url, f'CREATE DATABASE "{scratch}"')
            await run(
                postgres_client("pg_restore"),
                "--no-owner",
                "--exit-on-error",
                f"--dbname={scratch_dsn}",
                str(dump),
            )
            alerts = str(Path(sys.executable).parent / "alerts")
            await run(alerts, "migrate", env={**service_env, "ALERTS_DATABASE_URL": scratch_url})
            assert await fingerprint(scratch_dsn, user_id) == before
    finally:
        await admin(database_url, f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


def test_the_runbook_shows_the_commands_this_test_runs() -> None:
    runbook = (Path(__file__).resolve().parents[3] / "docs" / "operations.md").read_text(encoding="utf-8")

    for command in (
        "pg_dump --format=custom --no-owner",
        "pg_restore --no-owner --exit-on-error",
        "alerts migrate",
    ):
        assert command in runbook
