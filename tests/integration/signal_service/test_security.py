"""Security properties of the signal service that need its insides: tokens refused before any database
work, TradingView cookies that never appear in plain text anywhere, and audit rows that survive bad
neighbours and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
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
from mesh.errors import NotFoundError, UnavailableError
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


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


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
