"""Group commit: concurrent webhooks share transactions, and each still gets exactly its own answer."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from prometheus_client import REGISTRY

from apidevs.alerts.v1 import signal_service_pb2, user_service_pb2
from signal_service.clock import next_month_start
from signal_service.database import Database, create_engine
from signal_service.ids import uuid7
from signal_service.intake.group_commit import GroupCommit
from signal_service.intake.repository import WebhookIngest, WebhookOutcome
from signal_service.users.tokens import hash_token
from tests.support import create_user, ingest_request


def _batched_rows() -> tuple[float, float]:
    return (
        REGISTRY.get_sample_value("alerts_ingest_batch_size_sum") or 0.0,
        REGISTRY.get_sample_value("alerts_ingest_batch_size_count") or 0.0,
    )


async def test_concurrent_webhooks_share_transactions_and_keep_per_user_order(signals, users) -> None:
    created = [await create_user(users) for _ in range(3)]
    rows_before, batches_before = _batched_rows()

    answers = await asyncio.gather(
        *(
            signals.IngestWebhook(ingest_request(user.webhook_token, f"BINANCE:BTCUSDT {n} {i}".encode()))
            for i in range(20)
            for n, user in enumerate(created)
        )
    )

    rows_after, batches_after = _batched_rows()
    assert rows_after - rows_before == 60
    # Fewer transactions than webhooks: some shared one.
    assert batches_after - batches_before < 60
    assert len({answer.signal_id for answer in answers}) == 60
    assert not any(answer.duplicate for answer in answers)
    for user in created:
        listed = await signals.ListSignals(
            signal_service_pb2.ListSignalsRequest(user_id=user.user.user_id, page_size=100)
        )
        assert len(listed.signals) == 20
        fetched = await users.GetUser(_get_user(user.user.user_id))
        assert fetched.signals_used == 20


def _get_user(user_id: str) -> user_service_pb2.GetUserRequest:
    return user_service_pb2.GetUserRequest(user_id=user_id)


async def test_an_identical_body_in_the_same_batch_is_a_duplicate_of_the_first(signals, users) -> None:
    created = await create_user(users)
    answers = await asyncio.gather(
        *(
            signals.IngestWebhook(ingest_request(created.webhook_token, b"BINANCE:ETHUSDT same"))
            for _ in range(8)
        )
    )
    assert len({answer.signal_id for answer in answers}) == 1
    assert sorted(answer.duplicate for answer in answers) == [False] + [True] * 7


@pytest.fixture
async def database(service_env: dict[str, str]) -> AsyncIterator[Database]:
    database = Database(create_engine(service_env["ALERTS_DATABASE_URL"]))
    yield database
    await database.dispose()


def _row(user_id: uuid.UUID, token: str, body: bytes) -> WebhookIngest:
    now = datetime.now(UTC)
    return WebhookIngest(
        user_id=user_id,
        token_hash=hash_token(token),
        plan="premium",
        ip_allowlist=(),
        require_tradingview_client_certificate=False,
        now=now,
        next_quota_reset=next_month_start(now),
        idempotency_key=None,
        body_sha256=uuid.uuid4().bytes * 2,
        dedupe_since=now - timedelta(seconds=60),
        dedupe_until=now + timedelta(seconds=60),
        signal_id=uuid7(),
        chart_id="",
        indicator=None,
        indicator_key=None,
        ticker=None,
        exchange=None,
        symbol=None,
        price=None,
        signal_type=None,
        interval=None,
        alert_time=now,
        bar_time=None,
        fired_at=None,
        delayed_feed=False,
        parse_status="failed",
        parse_problems="[]",
        extra="{}",
        raw_body=body,
        content_type="text/plain",
        source_ip="203.0.113.7",
        received_at=now,
        screenshot_status="skipped",
        outbox_queue=None,
        outbox_actor=None,
        outbox_args=None,
        outbox_options=None,
        request_id=None,
        user_agent=None,
        latency_ms=1.0,
        body_size=len(body),
        rate_interval=None,
        rate_burst=1,
    )


async def test_a_row_the_database_refuses_fails_alone(database, users) -> None:
    created = await create_user(users)
    user_id = uuid.UUID(created.user.user_id)
    group = GroupCommit(database, max_batch=16, max_inflight=1)
    good = [_row(user_id, created.webhook_token, f"good {i}".encode()) for i in range(4)]
    # The same signal id twice: the second insert violates the primary key, inside the shared transaction.
    clash = dataclasses.replace(_row(user_id, created.webhook_token, b"clash"), signal_id=good[0].signal_id)
    blocker = _row(user_id, created.webhook_token, b"first, alone")

    outcomes = await asyncio.gather(
        group.ingest(blocker), *(group.ingest(row) for row in [*good, clash]), return_exceptions=True
    )

    assert isinstance(outcomes[0], WebhookOutcome)
    assert outcomes[0].outcome == "accepted"
    assert [outcome.outcome for outcome in outcomes[1:5]] == ["accepted"] * 4
    assert [outcome.signal_id for outcome in outcomes[1:5]] == [row.signal_id for row in good]
    assert isinstance(outcomes[5], asyncpg.UniqueViolationError)
    fetched = await users.GetUser(_get_user(created.user.user_id))
    assert fetched.signals_used == 5
