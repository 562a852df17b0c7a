"""The TradingView session lifecycle in the signal service, over gRPC against real PostgreSQL and Redis:
check claims and reports, session results from captures, renewal with re-queued captures, the
scheduler (on its own database, several schedulers at once)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa

from apidevs.alerts.v1 import (
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)
from mesh import grpc as mesh_grpc
from mesh.crypto import CookieCipher
from mesh.settings import CommonSettings
from signal_service.database import Database, create_engine
from signal_service.events.service import listener_dsn
from signal_service.main import SERVICE_NAMES, SignalApp, register, signal_app
from signal_service.sessions.service import SessionCheckScheduler
from signal_service.settings import SignalSettings
from tests.conftest import settings_from
from tests.e2e.stacks import fresh_database
from tests.keys import open_system_channel
from tests.support import create_user, ingest_request

pytestmark = pytest.mark.asyncio(loop_scope="session")

SESSION_EVENT = resources_pb2.SIGNAL_EVENT_TYPE_TRADINGVIEW_SESSION_UPDATED
FAILED = resources_pb2.SCREENSHOT_STATUS_FAILED
PENDING = resources_pb2.SCREENSHOT_STATUS_PENDING
INVALID = "tradingview_session_invalid"


def alert(ticker: str = "BINANCE:BTCUSDT") -> bytes:
    return f"Ticker: {ticker}\nPrice: 1.5\nSignal: buy\nid: {uuid.uuid4()}".encode()


async def set_session(users, user_id: str, sessionid: str, sign: str = "sign") -> resources_pb2.User:
    return await users.SetTradingViewSession(
        user_service_pb2.SetTradingViewSessionRequest(
            user_id=user_id, sessionid=sessionid, sessionid_sign=sign
        )
    )


async def session_events(signals, user_id: str) -> list[resources_pb2.SignalEvent]:
    """Every TRADINGVIEW_SESSION_UPDATED event of the user so far, in order."""
    found: list[resources_pb2.SignalEvent] = []
    head = signals.SubscribeSignals(signal_service_pb2.SubscribeSignalsRequest(user_id=user_id))
    cursor = dict(await head.initial_metadata())["x-start-cursor"]
    head.cancel()
    if cursor == "0":
        return found
    stream = signals.SubscribeSignals(
        signal_service_pb2.SubscribeSignalsRequest(user_id=user_id, after_cursor="0")
    )
    async for event in stream:
        if event.type == SESSION_EVENT:
            found.append(event)
        if event.cursor == cursor:
            break
    stream.cancel()
    return found


async def capture_failing(signals, token: str, error: str) -> str:
    answer = await signals.IngestWebhook(ingest_request(token, alert()))
    await signals.ClaimCapture(signal_service_pb2.ClaimCaptureRequest(signal_id=answer.signal_id))
    await signals.ReportCapture(
        signal_service_pb2.ReportCaptureRequest(signal_id=answer.signal_id, status=FAILED, error=error)
    )
    return answer.signal_id


async def queued_args(redis_url: str, namespace: str, queue: str) -> list[list]:
    """The args of the messages waiting on a Dramatiq queue, in queue order."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        prefix = f"{namespace}:dramatiq:{queue}"
        ids = await client.lrange(prefix, 0, -1)
        bodies = await client.hmget(f"{prefix}.msgs", ids) if ids else []
    finally:
        await client.aclose()
    return [json.loads(body)["args"] for body in bodies if body is not None]


async def eventually_queued(redis_url: str, namespace: str, queue: str, wanted: list[list]) -> list[list]:
    """The queue's args once every `wanted` entry is on it (the outbox relay sends after commit)."""
    for _ in range(100):
        args = await queued_args(redis_url, namespace, queue)
        if all(entry in args for entry in wanted):
            return args
        await asyncio.sleep(0.1)
    raise AssertionError(f"{wanted} never reached {queue}: {args}")


async def test_a_check_claims_the_stored_session_and_records_its_result_with_an_event(
    signals, users, service_env
) -> None:
    created = await create_user(users, plan=resources_pb2.PLAN_PRO, default_chart_id="layout-d")
    user_id = created.user.user_id
    stored = await set_session(users, user_id, "sess-check", "sign-check")
    state = stored.tradingview_session
    assert state.configured
    assert not state.checked
    assert not state.valid
    assert state.HasField("changed_at")
    assert not state.HasField("checked_at")

    claim = await signals.ClaimSessionCheck(
        signal_service_pb2.ClaimSessionCheckRequest(user_id=user_id, check_id="job-1")
    )
    assert claim.proceed
    assert claim.session_version
    assert (claim.chart_id, claim.ticker) == ("layout-d", "")
    cipher = CookieCipher.from_settings(CommonSettings(data_dir=service_env["ALERTS_DATA_DIR"]))
    assert json.loads(cipher.decrypt(claim.tradingview_session_ciphertext)) == {
        "sessionid": "sess-check",
        "sessionid_sign": "sign-check",
    }
    await signals.IngestWebhook(
        ingest_request(created.webhook_token, alert("NASDAQ:MSFT"), chart_id="layout-s")
    )
    # The same job, retried, claims again and now opens the latest signal's chart.
    claim = await signals.ClaimSessionCheck(
        signal_service_pb2.ClaimSessionCheckRequest(user_id=user_id, check_id="job-1")
    )
    assert (claim.chart_id, claim.ticker) == ("layout-s", "NASDAQ:MSFT")
    # Another job for the same user waits its turn: one check of a user at a time.
    busy = await signals.ClaimSessionCheck(
        signal_service_pb2.ClaimSessionCheckRequest(user_id=user_id, check_id="job-2")
    )
    assert not busy.proceed
    assert not busy.tradingview_session_ciphertext

    report = signal_service_pb2.ReportSessionCheckRequest(
        user_id=user_id, session_version=claim.session_version, valid=False, reason=INVALID
    )
    first = (await signals.ReportSessionCheck(report)).tradingview_session
    assert first.checked
    assert not first.valid
    assert first.changed_at.ToDatetime() > state.changed_at.ToDatetime()
    again = (await signals.ReportSessionCheck(report)).tradingview_session
    assert again.checked_at.ToDatetime() > first.checked_at.ToDatetime()
    assert again.changed_at == first.changed_at

    events = await session_events(signals, user_id)
    # Stored (unchecked), then found invalid; the repeated result changed nothing and wrote no event.
    assert [(e.tradingview_session.checked, e.tradingview_session.valid) for e in events] == [
        (False, False),
        (True, False),
    ]
    assert events[1].tradingview_session.changed_at == first.changed_at
    assert all(b"sess-check" not in e.SerializeToString() for e in events)
    assert all(b"sign-check" not in e.SerializeToString() for e in events)
    fetched = await users.GetUser(user_service_pb2.GetUserRequest(user_id=user_id))
    assert fetched.tradingview_session == again

    # A redelivered job after the answer has nothing to do.
    late = await signals.ClaimSessionCheck(
        signal_service_pb2.ClaimSessionCheckRequest(user_id=user_id, check_id="job-2")
    )
    assert not late.proceed
    assert not late.tradingview_session_ciphertext


async def test_a_result_about_replaced_cookies_is_refused(signals, users) -> None:
    created = await create_user(users)
    user_id = created.user.user_id
    await set_session(users, user_id, "sess-old")
    claim = await signals.ClaimSessionCheck(
        signal_service_pb2.ClaimSessionCheckRequest(user_id=user_id, check_id="job-old")
    )
    await set_session(users, user_id, "sess-new")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await signals.ReportSessionCheck(
            signal_service_pb2.ReportSessionCheckRequest(
                user_id=user_id, session_version=claim.session_version, valid=False
            )
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    fetched = await users.GetUser(user_service_pb2.GetUserRequest(user_id=user_id))
    assert not fetched.tradingview_session.checked


async def test_a_user_without_cookies_has_nothing_to_check(signals, users) -> None:
    created = await create_user(users)
    claim = await signals.ClaimSessionCheck(
        signal_service_pb2.ClaimSessionCheckRequest(user_id=created.user.user_id)
    )
    assert not claim.proceed
    assert not created.user.tradingview_session.configured
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await signals.ClaimSessionCheck(
            signal_service_pb2.ClaimSessionCheckRequest(user_id=str(uuid.uuid4()))
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_captures_record_the_session_state(signals, users) -> None:
    created = await create_user(users)
    user_id = created.user.user_id
    await set_session(users, user_id, "sess-cap")

    answer = await signals.IngestWebhook(ingest_request(created.webhook_token, alert()))
    claim = await signals.ClaimCapture(signal_service_pb2.ClaimCaptureRequest(signal_id=answer.signal_id))
    await signals.ReportCapture(
        signal_service_pb2.ReportCaptureRequest(
            signal_id=answer.signal_id,
            status=resources_pb2.SCREENSHOT_STATUS_COMPLETED,
            object_key=claim.object_key,
        )
    )
    valid = (await users.GetUser(user_service_pb2.GetUserRequest(user_id=user_id))).tradingview_session
    assert valid.checked
    assert valid.valid

    failed_id = await capture_failing(signals, created.webhook_token, INVALID)
    failed = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=failed_id))
    assert (failed.screenshot_status, failed.screenshot_error) == (FAILED, INVALID)
    invalid = (await users.GetUser(user_service_pb2.GetUserRequest(user_id=user_id))).tradingview_session
    assert invalid.checked
    assert not invalid.valid
    assert invalid.changed_at.ToDatetime() > valid.changed_at.ToDatetime()
    states = [
        (e.tradingview_session.checked, e.tradingview_session.valid)
        for e in await session_events(signals, user_id)
    ]
    assert states == [(False, False), (True, True), (True, False)]


async def test_a_capture_claimed_before_new_cookies_is_queued_again_instead_of_failing(
    signals, users, redis_url, redis_namespace
) -> None:
    created = await create_user(users, plan=resources_pb2.PLAN_PREMIUM)
    user_id = created.user.user_id
    await set_session(users, user_id, "sess-before")
    answer = await signals.IngestWebhook(ingest_request(created.webhook_token, alert()))
    await signals.ClaimCapture(signal_service_pb2.ClaimCaptureRequest(signal_id=answer.signal_id))
    await set_session(users, user_id, "sess-after")

    reported = await signals.ReportCapture(
        signal_service_pb2.ReportCaptureRequest(signal_id=answer.signal_id, status=FAILED, error=INVALID)
    )
    assert reported.screenshot_status == PENDING
    state = (await users.GetUser(user_service_pb2.GetUserRequest(user_id=user_id))).tradingview_session
    assert not state.checked
    await eventually_queued(redis_url, redis_namespace, "capture.premium", [[answer.signal_id]])


async def test_new_cookies_requeue_recent_session_failures_oldest_first_and_queue_one_check(
    signals, users, redis_url, redis_namespace, database_url
) -> None:
    created = await create_user(users, plan=resources_pb2.PLAN_BASIC)
    user_id, token = created.user.user_id, created.webhook_token
    await set_session(users, user_id, "expired-1")
    too_old = await capture_failing(signals, token, INVALID)
    first = await capture_failing(signals, token, INVALID)
    other_reason = await capture_failing(signals, token, "timeout")
    second = await capture_failing(signals, token, INVALID)
    connection = await asyncpg.connect(listener_dsn(database_url))
    try:
        await connection.execute(
            "UPDATE signals SET created_at = now() - interval '25 hours' WHERE id = $1", uuid.UUID(too_old)
        )
    finally:
        await connection.close()

    captures_before = await queued_args(redis_url, redis_namespace, "capture.basic")
    checks_before = await eventually_queued(redis_url, redis_namespace, "capture.session_check", [[user_id]])
    renewed = await set_session(users, user_id, "sess-fresh")
    # No capture worker is alive in this test session: the answer does not wait for the check.
    assert renewed.tradingview_session.configured
    assert not renewed.tradingview_session.checked

    statuses = {}
    for signal_id in (too_old, first, other_reason, second):
        signal = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
        statuses[signal_id] = signal.screenshot_status
    assert statuses == {too_old: FAILED, first: PENDING, other_reason: FAILED, second: PENDING}
    # Nothing consumes these queues here: what the renewal sent is their tail, in sending order.
    queued = await eventually_queued(redis_url, redis_namespace, "capture.basic", [[first], [second]])
    assert queued[len(captures_before) :] == [[first], [second]]
    checks = await queued_args(redis_url, redis_namespace, "capture.session_check")
    assert checks[len(checks_before) :] == [[user_id]]


# --- the scheduler, on a database of its own -----------------------------------------------------


@pytest.fixture(scope="module")
def own_database_url(database_url: str) -> Iterator[str]:
    with fresh_database(database_url) as url:
        yield url


@pytest.fixture(scope="module")
async def own_signal(
    own_database_url: str, service_env: dict[str, str]
) -> AsyncIterator[
    tuple[SignalApp, user_service_pb2_grpc.UserServiceStub, signal_service_pb2_grpc.SignalServiceStub]
]:
    """A signal server on a fresh database with no background tasks: outbox rows stay in the table."""
    settings = settings_from(
        {**service_env, "ALERTS_DATABASE_URL": own_database_url},
        SignalSettings,
        session_check_interval_seconds=3600,
        session_check_min_spacing_seconds=600,
        session_check_lease_seconds=2400,
        session_check_active_days=7,
    )
    async with signal_app(settings) as app:
        server = mesh_grpc.create_server(settings)
        register(server, app)
        port, _ = await mesh_grpc.start(server, address="127.0.0.1:0", service_names=SERVICE_NAMES)
        channel = open_system_channel(f"127.0.0.1:{port}")
        yield (
            app,
            user_service_pb2_grpc.UserServiceStub(channel),
            signal_service_pb2_grpc.SignalServiceStub(channel),
        )
        await channel.close()
        await server.stop(1)


async def outbox_checks(app: SignalApp) -> list[str]:
    async with app.database.session() as session:
        rows = await session.execute(
            sa.text("SELECT args->>0 FROM outbox WHERE queue_name = 'capture.session_check' ORDER BY id")
        )
        return [row[0] for row in rows]


async def test_the_scheduler_queues_due_users_once_even_with_schedulers_racing(own_signal) -> None:
    app, users, signals = own_signal
    settings = app.settings

    async def user(*, cookies: bool, active: bool) -> str:
        created = await create_user(users)
        if cookies:
            await set_session(users, created.user.user_id, f"sess-{uuid.uuid4().hex[:6]}")
        if active:
            body = f"no ticker here {uuid.uuid4()}".encode()
            await signals.IngestWebhook(ingest_request(created.webhook_token, body))
        return created.user.user_id

    due = [await user(cookies=True, active=True) for _ in range(5)]
    inactive = await user(cookies=True, active=False)
    no_cookies = await user(cookies=False, active=True)
    renewal_checks = await outbox_checks(app)
    assert sorted(renewal_checks) == sorted([*due, inactive])

    # Just stored cookies were queued for a check at once and are not due again within the spacing.
    now = datetime.now(UTC)
    assert await app.session_scheduler.schedule_due(now) == 0

    # Past the spacing, still unchecked: due, and schedulers racing in two "replicas" queue each once.
    later = now + timedelta(seconds=settings.session_check_min_spacing_seconds + 1)
    other_database = Database(create_engine(settings.database_url, pool_size=4))
    other = SessionCheckScheduler(database=other_database, settings=settings)
    try:
        counts = await asyncio.gather(
            *(scheduler.schedule_due(later) for _ in range(4) for scheduler in (app.session_scheduler, other))
        )
    finally:
        await other_database.dispose()
    assert sum(counts) == len(due)
    periodic = (await outbox_checks(app))[len(renewal_checks) :]
    assert sorted(periodic) == sorted(due)
    assert inactive not in periodic
    assert no_cookies not in periodic

    # A result resets the clock: checked users are next due one interval after their result.
    for user_id in due[:2]:
        claim = await signals.ClaimSessionCheck(
            signal_service_pb2.ClaimSessionCheckRequest(user_id=user_id, check_id=f"job-{user_id}")
        )
        await signals.ReportSessionCheck(
            signal_service_pb2.ReportSessionCheckRequest(
                user_id=user_id, session_version=claim.session_version, valid=True
            )
        )
    checked_at = datetime.now(UTC)
    # A claimed check without a result is running: not asked again until its lease is over.
    running = due[2]
    claim = await signals.ClaimSessionCheck(
        signal_service_pb2.ClaimSessionCheckRequest(user_id=running, check_id="job-running")
    )
    assert claim.proceed
    claimed_at = datetime.now(UTC)

    spacing = timedelta(seconds=settings.session_check_min_spacing_seconds)
    again = later + spacing + timedelta(seconds=1)
    before = len(await outbox_checks(app))
    # Unanswered, unclaimed checks are asked again after the spacing; answered ones wait for the interval.
    assert await app.session_scheduler.schedule_due(again) == len(due) - 3
    assert sorted((await outbox_checks(app))[before:]) == sorted(due[3:])
    assert await app.session_scheduler.schedule_due(again + timedelta(seconds=1)) == 0

    lease_over = claimed_at + timedelta(seconds=settings.session_check_lease_seconds + 1)
    assert lease_over > again + spacing
    before = len(await outbox_checks(app))
    assert await app.session_scheduler.schedule_due(lease_over) == len(due) - 2
    assert sorted((await outbox_checks(app))[before:]) == sorted(due[2:])

    interval = timedelta(seconds=settings.session_check_interval_seconds)
    assert checked_at + interval > lease_over + spacing
    before = len(await outbox_checks(app))
    assert await app.session_scheduler.schedule_due(checked_at + interval + timedelta(seconds=1)) == len(due)
    assert sorted((await outbox_checks(app))[before:]) == sorted(due)


@pytest.mark.parametrize(
    ("sessionid", "sign", "field"),
    [
        ("abc;def", "sign", "sessionid"),
        ("abc\tdef", "sign", "sessionid"),
        ("abc", "si gn", "sessionid_sign"),
        ("abc", 'si"gn', "sessionid_sign"),
        ("abc", "", "sessionid_sign"),
        ("a" * 4097, "sign", "sessionid"),
    ],
)
async def test_cookie_values_chromium_would_refuse_are_invalid_at_once(
    signals, users, sessionid: str, sign: str, field: str
) -> None:
    created = await create_user(users)
    user_id = created.user.user_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await set_session(users, user_id, sessionid, sign)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details() or ""
    assert field in details
    refused_value = sessionid if field == "sessionid" else sign
    assert not refused_value or refused_value not in details
    user = await users.GetUser(user_service_pb2.GetUserRequest(user_id=user_id))
    assert not user.tradingview_session.configured
    assert await session_events(signals, user_id) == []
