"""Group commit: concurrent webhooks share transactions, and each still gets exactly its own answer."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
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
from signal_service.intake.repository import WebhookIngest, WebhookOutcome, WebhookRepository
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
        # The counters the signals' insert trigger keeps, for every row of a batch's one INSERT.
        stats = await signals.GetUserStats(signal_service_pb2.GetUserStatsRequest(user_id=user.user.user_id))
        assert (stats.total_signals, stats.this_month, stats.screenshots_pending) == (20, 20, 20)


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


async def test_each_row_of_one_batch_gets_the_outcome_it_would_get_alone(database, users) -> None:
    """One ingest_webhooks() call, rows of several users interleaved: each row is decided after the rows
    before it of its user, and the answers come back in the order given."""
    quota_user, rate_user, key_user, moved_user = [
        await create_user(users, signals_quota=2) for _ in range(4)
    ]

    def row(user, body: bytes, **changes) -> WebhookIngest:
        alone = _row(uuid.UUID(user.user.user_id), user.webhook_token, body)
        return dataclasses.replace(alone, body_sha256=hashlib.sha256(body).digest(), **changes)

    hour = timedelta(hours=1)
    rows = [
        row(quota_user, b"first"),
        row(rate_user, b"r1", rate_interval=hour, rate_burst=2),
        row(quota_user, b"first"),  # the same body as the batch's first row: its duplicate
        row(key_user, b"k1", idempotency_key="replay-1"),
        row(moved_user, b"m1", token_hash="not-its-token"),  # the user changed since it was read
        row(quota_user, b"second"),
        row(rate_user, b"r2", rate_interval=hour, rate_burst=2),
        row(key_user, b"k2", idempotency_key="replay-1"),  # same key, other body: still the same alert
        row(quota_user, b"third"),  # over the quota of 2
        row(rate_user, b"r3", rate_interval=hour, rate_burst=2),  # over the burst of 2
    ]
    async with database.connection() as connection:
        outcomes = await WebhookRepository(connection).ingest_many(rows)

    assert [outcome.outcome for outcome in outcomes] == [
        "accepted",
        "accepted",
        "duplicate",
        "accepted",
        "stale",
        "accepted",
        "accepted",
        "duplicate",
        "quota_exceeded",
        "rate_limited",
    ]
    assert outcomes[2].signal_id == rows[0].signal_id
    assert outcomes[7].signal_id == rows[3].signal_id
    assert outcomes[8].quota == 2
    assert outcomes[9].retry_after_seconds is not None
    assert outcomes[9].retry_after_seconds > 3000
    for user, used in ((quota_user, 2), (rate_user, 2), (key_user, 1), (moved_user, 0)):
        fetched = await users.GetUser(_get_user(user.user.user_id))
        assert fetched.signals_used == used
    async with database.connection() as connection:
        seqs = await connection.fetch(
            "SELECT user_id, array_agg(seq ORDER BY seq) AS seqs FROM signal_events GROUP BY user_id"
            " HAVING user_id = ANY($1::uuid[])",
            [uuid.UUID(user.user.user_id) for user in (quota_user, rate_user, key_user)],
        )
        audited = await connection.fetchval(
            "SELECT count(*) FROM audit_logs WHERE signal_id = ANY($1::uuid[])",
            [outcome.signal_id for outcome in outcomes if outcome.signal_id is not None],
        )
    assert sorted(len(record["seqs"]) for record in seqs) == [1, 2, 2]
    assert all(record["seqs"] == list(range(1, len(record["seqs"]) + 1)) for record in seqs)
    # Accepted and duplicate rows are audited with their signal; refusals are audited by the caller.
    assert audited == 7
