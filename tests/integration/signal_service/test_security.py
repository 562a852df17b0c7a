"""Security properties of the signal service that need its insides: tokens refused before any database
work, TradingView cookies that never appear in plain text anywhere, and audit rows that survive bad
neighbours and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import grpc
import pytest
import sqlalchemy as sa
from asyncpg.connection import LoggedQuery
from redis.asyncio import Redis

from apidevs.alerts.v1 import user_service_pb2
from mesh.errors import NotFoundError, ResourceExhaustedError, UnavailableError
from signal_service.audit.service import AuditWriter
from signal_service.database import Database, create_engine
from signal_service.intake.ratelimit import RateLimiter
from signal_service.intake.service import IngestCommand, QueueBacklog, WebhookIngestor
from signal_service.models import AuditLog
from signal_service.parsing import load_indicator_catalog
from signal_service.settings import SignalSettings
from tests.support import SAMPLE, create_user, ingest_request

MALFORMED_TOKENS = [
    "",
    "not-a-token",
    "../../etc/passwd",
    "whk_" + "A" * 42,
    "whk_" + "A" * 44,
    "whk_" + "Ａ" * 43,
    "whk_" + "A" * 42 + "'",
    "WHK_" + "A" * 43,
    "whk_" + "A" * 42 + "\x00",
]


def settings_for(service_env: dict[str, str], **overrides: object) -> SignalSettings:
    values = {key.removeprefix("ALERTS_").lower(): value for key, value in service_env.items()}
    return SignalSettings(**values | overrides)


def ingestor_on(database: Database, settings: SignalSettings, redis: Redis) -> WebhookIngestor:
    return WebhookIngestor(
        database=database,
        settings=settings,
        catalog=load_indicator_catalog(None),
        rate_limiter=RateLimiter(redis, f"{settings.redis_namespace}-{uuid.uuid4().hex[:6]}"),
        audit=AuditWriter(database),
        backlog=QueueBacklog(),
    )


def command(token: str) -> IngestCommand:
    return IngestCommand(
        webhook_token=token, body=SAMPLE, received_at=datetime.now(UTC), source_ip="192.0.2.1"
    )


async def test_malformed_tokens_are_refused_with_the_database_unreachable(service_env, redis) -> None:
    settings = settings_for(service_env)
    # Nothing listens on port 1: any query would fail to connect.
    database = Database(create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/nothing"))
    ingestor = ingestor_on(database, settings, redis)
    try:
        for token in MALFORMED_TOKENS:
            with pytest.raises(NotFoundError) as refused:
                await ingestor.ingest(command(token))
            assert refused.value.reason == "UNKNOWN_TOKEN"
        # A well-formed token does need the database, and here that fails: the check above is real.
        with pytest.raises((UnavailableError, OSError)):
            await ingestor.ingest(command("whk_" + "A" * 43))
    finally:
        await database.dispose()


async def test_malformed_tokens_cost_no_statement_and_well_formed_ones_one(service_env, redis) -> None:
    settings = settings_for(service_env)
    database = Database(create_engine(settings.database_url, pool_size=1))
    statements: list[str] = []
    sa.event.listen(
        database.engine.sync_engine,
        "before_cursor_execute",
        lambda conn, cursor, statement, *rest: statements.append(statement),
    )
    plain_connection = database.connection

    @contextlib.asynccontextmanager
    async def recorded_connection() -> AsyncIterator[asyncpg.Connection]:
        async with plain_connection() as connection:

            def record(query: LoggedQuery) -> None:
                statements.append(query.query)

            connection.add_query_logger(record)
            try:
                yield connection
            finally:
                connection.remove_query_logger(record)

    database.connection = recorded_connection  # type: ignore[method-assign]
    ingestor = ingestor_on(database, settings, redis)
    try:
        for token in MALFORMED_TOKENS:
            with pytest.raises(NotFoundError):
                await ingestor.ingest(command(token))
        assert statements == []
        with pytest.raises(NotFoundError):
            await ingestor.ingest(command("whk_" + "B" * 43))
        assert len(statements) == 1
        assert "webhook_token_hash" in statements[0]
    finally:
        await database.dispose()


async def redis_dump(redis: Redis, namespace: str) -> bytes:
    """Every value under the namespace, whatever its type, concatenated."""
    dumped = bytearray()
    async for key in redis.scan_iter(match=f"{namespace}*", count=500):
        kind = (await redis.type(key)).decode()
        dumped += key
        if kind == "string":
            dumped += await redis.get(key) or b""
        elif kind == "list":
            dumped += b"".join(await redis.lrange(key, 0, -1))
        elif kind == "hash":
            dumped += b"".join(b"".join(pair) for pair in (await redis.hgetall(key)).items())
        elif kind == "set":
            dumped += b"".join(await redis.smembers(key))
        elif kind == "zset":
            dumped += b"".join(await redis.zrange(key, 0, -1))
        elif kind == "stream":
            for _, fields in await redis.xrange(key):
                dumped += b"".join(b"".join(pair) for pair in fields.items())
    return bytes(dumped)


async def test_tradingview_session_plaintext_appears_nowhere(
    signals, users, redis, redis_namespace, database_url, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    marker = uuid.uuid4().hex
    sessionid, sessionid_sign = f"PLAINSID{marker}", f"PLAINSIGN{marker}"
    created = await create_user(users, default_chart_id="chart42")
    user_id = created.user.user_id
    configured = await users.SetTradingViewSession(
        user_service_pb2.SetTradingViewSessionRequest(
            user_id=user_id, sessionid=sessionid, sessionid_sign=sessionid_sign
        )
    )
    assert configured.tradingview_session.configured
    answers = [
        await signals.IngestWebhook(ingest_request(created.webhook_token, SAMPLE + b"\n" * n))
        for n in range(3)
    ]

    # Refused calls carrying the plaintext must not echo it back either.
    refusals = [
        user_service_pb2.SetTradingViewSessionRequest(
            user_id=str(uuid.uuid4()), sessionid=sessionid, sessionid_sign=sessionid_sign
        ),
        user_service_pb2.SetTradingViewSessionRequest(
            user_id=user_id, sessionid=sessionid * 200, sessionid_sign=sessionid_sign
        ),
        user_service_pb2.SetTradingViewSessionRequest(
            user_id=user_id, sessionid=sessionid, sessionid_sign=""
        ),
        user_service_pb2.SetTradingViewSessionRequest(
            user_id=f"not-a-uuid-{sessionid}", sessionid=sessionid, sessionid_sign=sessionid_sign
        ),
    ]
    error_texts = []
    for request in refusals:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await users.SetTradingViewSession(request)
        error_texts.append(
            f"{caught.value.details()} {caught.value.trailing_metadata()} {caught.value.debug_error_string()}"
        )

    # The capture messages go through the outbox relay into Redis: wait until all three are there.
    namespace_dump = b""
    for _ in range(200):
        namespace_dump = await redis_dump(redis, redis_namespace)
        if all(answer.signal_id.encode() in namespace_dump for answer in answers):
            break
        await asyncio.sleep(0.05)
    assert all(answer.signal_id.encode() in namespace_dump for answer in answers)

    fetched = await users.GetUser(user_service_pb2.GetUserRequest(user_id=user_id))
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        audit = await connection.fetch("SELECT * FROM audit_logs WHERE user_id = $1", uuid.UUID(user_id))
        config = await connection.fetchrow("SELECT * FROM user_config WHERE user_id = $1", uuid.UUID(user_id))
    finally:
        await connection.close()
    assert len(audit) == 3
    assert config["tv_session_ciphertext"]

    for secret in (sessionid, sessionid_sign):
        assert secret not in caplog.text
        assert secret.encode() not in namespace_dump
        assert secret not in repr([dict(row) for row in audit])
        assert secret.encode() not in config["tv_session_ciphertext"]
        assert secret.encode() not in configured.SerializeToString()
        assert secret.encode() not in fetched.SerializeToString()
        assert not any(secret in text for text in error_texts)
    assert caplog.records, "the logs under test must not be empty"


async def test_audit_writer_keeps_good_rows_when_one_is_refused(service_env, database_url) -> None:
    settings = settings_for(service_env)
    database = Database(create_engine(settings.database_url, pool_size=2))
    writer = AuditWriter(database)
    agent = f"batch-{uuid.uuid4()}"
    now = datetime.now(UTC)
    good = [
        AuditLog(created_at=now, outcome="refused", reason="UNKNOWN_TOKEN", user_agent=agent)
        for _ in range(3)
    ]
    # A body size past bigint's range: the one row of the batch that cannot be stored.
    poisoned = AuditLog(created_at=now, outcome="refused", reason="X", user_agent=agent)
    poisoned.body_size = 2**70
    for entry in (good[0], poisoned, *good[1:]):
        writer.record(entry)
    await writer.stop()
    await database.dispose()
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        count = await connection.fetchval("SELECT count(*) FROM audit_logs WHERE user_agent = $1", agent)
    finally:
        await connection.close()
    assert count == 3


async def test_audit_writer_stop_writes_what_it_holds(service_env, database_url) -> None:
    settings = settings_for(service_env)
    database = Database(create_engine(settings.database_url, pool_size=2))
    writer = AuditWriter(database, batch_size=7)
    writer.start()
    agent = f"shutdown-{uuid.uuid4()}"
    for _ in range(50):
        writer.record(
            AuditLog(created_at=datetime.now(UTC), outcome="refused", reason="RATE_LIMITED", user_agent=agent)
        )
    # Stop while batches are being written: none may be lost to the cancellation.
    await asyncio.sleep(0)
    await writer.stop()
    await database.dispose()
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        count = await connection.fetchval("SELECT count(*) FROM audit_logs WHERE user_agent = $1", agent)
    finally:
        await connection.close()
    assert count == 50


# --- refusals anyone can repeat: summarised, merged per minute, limited per source (IPv6 by /64) -------


def unknown_command(source_ip: str, agent: str, body: bytes = SAMPLE) -> IngestCommand:
    return IngestCommand(
        webhook_token="whk_" + uuid.uuid4().hex + "Q" * 11,
        body=body,
        received_at=datetime.now(UTC),
        source_ip=source_ip,
        user_agent=agent,
    )


async def audit_of(database_url: str, where: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        return await connection.fetch(f"SELECT * FROM audit_logs WHERE {where} ORDER BY id", *args)  # noqa: S608
    finally:
        await connection.close()


async def test_unknown_token_refusals_keep_the_body_hash_and_merge_per_source_and_minute(
    service_env, redis, database_url
) -> None:
    settings = settings_for(service_env, unknown_token_burst=1000)
    database = Database(create_engine(settings.database_url, pool_size=2))
    ingestor = ingestor_on(database, settings, redis)
    writer = ingestor._audit
    first_source, second_source = "198.51.100.7", "198.51.100.8"
    body = b"junk " * 10_000
    try:
        # Two batches: repeats merge in the queue, and the second batch into the stored row.
        for batch in range(2):
            for _ in range(20):
                for source in (first_source, second_source):
                    with pytest.raises(NotFoundError):
                        await ingestor.ingest(unknown_command(source, f"agent-{batch}", body))
            await writer.flush()
    finally:
        await database.dispose()
    rows = await audit_of(
        database_url,
        "source_ip = ANY($1::text[]) AND reason = 'UNKNOWN_TOKEN'",
        [first_source, second_source],
    )
    by_source = {}
    for row in rows:
        by_source.setdefault(row["source_ip"], []).append(row)
    # One row per source and minute (two when the minute turned during the test).
    assert set(by_source) == {first_source, second_source}
    for source_rows in by_source.values():
        assert len(source_rows) <= 2
        assert sum(row["repeat_count"] for row in source_rows) == 40
    for row in rows:
        assert row["body"] is None
        assert row["body_size"] == len(body)
        assert row["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert row["repeat_window"] == row["created_at"].replace(second=0, microsecond=0)


async def test_unknown_tokens_from_one_ipv6_64_share_one_budget_and_one_audit_row(
    service_env, redis, database_url
) -> None:
    settings = settings_for(service_env, unknown_token_burst=3, unknown_token_rate_per_second=0.001)
    database = Database(create_engine(settings.database_url, pool_size=2))
    ingestor = ingestor_on(database, settings, redis)
    prefix = f"2001:db8:{uuid.uuid4().int % 0xFFFF:x}:1"
    rotating = [f"{prefix}:{index:x}::{index + 1:x}" for index in range(4)]
    try:
        for address in rotating[:3]:
            with pytest.raises(NotFoundError):
                await ingestor.ingest(unknown_command(address, "rotating"))
        with pytest.raises(ResourceExhaustedError) as limited:
            await ingestor.ingest(unknown_command(rotating[3], "rotating"))
        assert limited.value.reason == "RATE_LIMITED"
        # The next /64 has a budget of its own.
        with pytest.raises(NotFoundError):
            await ingestor.ingest(unknown_command(f"{prefix[:-1]}2::1", "rotating"))
        await ingestor._audit.flush()
    finally:
        await database.dispose()
    network = f"{prefix}::/64"
    rows = await audit_of(database_url, "source_ip = $1", network)
    assert sum(row["repeat_count"] for row in rows if row["reason"] == "UNKNOWN_TOKEN") == 3
    assert sum(row["repeat_count"] for row in rows if row["reason"] == "RATE_LIMITED") == 1
    assert not await audit_of(database_url, "source_ip = ANY($1::text[])", rotating)


async def test_refusals_of_a_known_user_that_anyone_could_not_repeat_keep_their_body(
    signals, users, database_url
) -> None:
    created = await create_user(users, ip_allowlist=["192.0.2.0/24"])
    body = SAMPLE + b"\nnote: kept"
    with pytest.raises(grpc.aio.AioRpcError):
        await signals.IngestWebhook(ingest_request(created.webhook_token, body, source_ip="203.0.113.9"))
    rows: list[asyncpg.Record] = []
    for _ in range(200):
        rows = await audit_of(database_url, "user_id = $1", uuid.UUID(created.user.user_id))
        if rows:
            break
        await asyncio.sleep(0.05)
    [row] = rows
    assert (row["reason"], row["body"], row["repeat_window"], row["repeat_count"]) == (
        "IP_NOT_ALLOWED",
        body,
        None,
        1,
    )
