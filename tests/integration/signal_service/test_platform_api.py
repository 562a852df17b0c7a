"""The platform API through a real gRPC server on real PostgreSQL: stats, outcomes, scoped keys, streams."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.protobuf import timestamp_pb2

from apidevs.alerts.v1 import (
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)
from mesh.auth import generate_key, hash_key
from mesh.errors import AlertsError, from_rpc_error
from mesh.grpc import open_channel
from signal_service.database import Database, create_engine
from signal_service.events import service as events_service
from signal_service.events.repository import replay_page
from signal_service.events.service import EventFeed, EventHub, StoredEvent, listener_dsn
from tests.conftest import settings_from
from tests.support import complete_capture

STREAM_GUARD_SECONDS = 30  # a broken stream fails the test instead of hanging it


def alert(index: int, ticker: str = "BINANCE:BTCUSDT") -> bytes:
    return f"Ticker: {ticker}\nPrice: {100 + index}.25\nSignal: buy\nid: {uuid.uuid4()}".encode()


def stamp(moment: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment)
    return message


async def create_user(users: user_service_pb2_grpc.UserServiceStub) -> user_service_pb2.CreateUserResponse:
    return await users.CreateUser(user_service_pb2.CreateUserRequest(plan=resources_pb2.PLAN_PREMIUM))


async def ingest(
    signals: signal_service_pb2_grpc.SignalServiceStub,
    token: str,
    body: bytes,
    received_at: datetime | None = None,
) -> str:
    answer = await signals.IngestWebhook(
        signal_service_pb2.IngestWebhookRequest(
            webhook_token=token,
            body=body,
            content_type="text/plain",
            source_ip="203.0.113.7",
            received_at=stamp(received_at or datetime.now(UTC)),
        )
    )
    return answer.signal_id


async def set_outcome(
    signals: signal_service_pb2_grpc.SignalServiceStub,
    signal_id: str,
    result: int,
    profit_loss: str = "",
    notes: str = "",
) -> resources_pb2.Signal:
    return await signals.UpdateSignalOutcome(
        signal_service_pb2.UpdateSignalOutcomeRequest(
            signal_id=signal_id, result=result, profit_loss=profit_loss, notes=notes
        )
    )


async def refused(call: object) -> AlertsError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return from_rpc_error(caught.value)


async def read_events(call: grpc.aio.UnaryStreamCall, count: int) -> list[resources_pb2.SignalEvent]:
    events = []
    async with asyncio.timeout(STREAM_GUARD_SECONDS):
        while len(events) < count:
            message = await call.read()
            assert message is not grpc.aio.EOF, "stream ended early"
            events.append(message)
    return events


async def as_read(page: list[StoredEvent]) -> list[StoredEvent]:
    """Subscription.batches' preparation of a page where a test looks at the events themselves."""
    return page


async def start_cursor(call: grpc.aio.UnaryStreamCall) -> str:
    return dict(await call.initial_metadata())["x-start-cursor"]


@contextlib.asynccontextmanager
async def signal_server_with(service_env: dict[str, str], **overrides: object) -> AsyncIterator[str]:
    """Another real signal server on the same database, with settings overridden; yields its address."""
    from mesh import grpc as mesh_grpc
    from signal_service.main import SERVICE_NAMES, register, signal_app
    from signal_service.settings import SignalSettings

    settings = settings_from(service_env, SignalSettings, signal_addr="127.0.0.1:0", **overrides)
    async with signal_app(settings) as app:
        server = mesh_grpc.create_server(settings)
        register(server, app)
        app.start_background()
        port, _ = await mesh_grpc.start(server, address="127.0.0.1:0", service_names=SERVICE_NAMES)
        try:
            yield f"127.0.0.1:{port}"
        finally:
            await server.stop(1)


# --- stats and outcomes ------------------------------------------------------------------------------


async def test_stats_on_a_known_data_set(signals, users) -> None:
    created = await create_user(users)
    token, user_id = created.webhook_token, created.user.user_id
    month_start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = await ingest(signals, token, alert(0), received_at=month_start - timedelta(days=1))
    current = [await ingest(signals, token, alert(index)) for index in range(1, 8)]
    unparsed = await ingest(signals, token, b"nothing a parser can use")  # SKIPPED: no capture
    await signals.ClaimCapture(signal_service_pb2.ClaimCaptureRequest(signal_id=current[0], worker_id="w1"))
    for signal_id, size in ((current[1], 1000), (current[2], 2345)):
        await complete_capture(signals, signal_id, worker_id="w1", size_bytes=size)
    await signals.ReportCapture(
        signal_service_pb2.ReportCaptureRequest(
            signal_id=current[3], status=resources_pb2.SCREENSHOT_STATUS_FAILED, error="timeout"
        )
    )
    for signal_id, result in (
        (last_month, resources_pb2.SIGNAL_RESULT_WIN),
        (current[0], resources_pb2.SIGNAL_RESULT_WIN),
        (current[1], resources_pb2.SIGNAL_RESULT_WIN),
        (current[2], resources_pb2.SIGNAL_RESULT_LOSS),
        (unparsed, resources_pb2.SIGNAL_RESULT_SKIP),
    ):
        await set_outcome(signals, signal_id, result)

    stats = await signals.GetUserStats(signal_service_pb2.GetUserStatsRequest(user_id=user_id))

    assert stats.user_id == user_id
    assert stats.total_signals == 9
    assert stats.this_month == 8
    # PROCESSING: current[0]; PENDING: last_month, current[4:7]; COMPLETED: current[1:3]; FAILED: current[3]
    assert stats.screenshots_pending == 5
    assert (stats.wins, stats.losses) == (3, 1)
    assert stats.win_rate == pytest.approx(75.0)
    assert (stats.storage_bytes, stats.storage_objects) == (3345, 2)


_RECOUNT = """
SELECT (SELECT count(*) FROM signals WHERE user_id = $1) AS total_signals,
       (SELECT count(*) FROM signals WHERE user_id = $1
        AND created_at >= date_trunc('month', now(), 'UTC')) AS this_month,
       (SELECT count(*) FROM signals WHERE user_id = $1
        AND screenshot_status IN ('pending', 'processing')) AS screenshots_pending,
       (SELECT count(*) FROM signals WHERE user_id = $1 AND result = 'win') AS wins,
       (SELECT count(*) FROM signals WHERE user_id = $1 AND result = 'loss') AS losses,
       (SELECT coalesce(sum(size_bytes), 0) FROM screenshots WHERE user_id = $1
        AND status = 'completed') AS storage_bytes,
       (SELECT count(*) FROM screenshots WHERE user_id = $1 AND status = 'completed') AS storage_objects
"""


async def test_stats_counters_follow_every_write_even_by_hand(signals, users, database_url: str) -> None:
    """GetUserStats reads counters kept by triggers; after service writes and hand-written multi-row
    statements alike they equal a count of the rows themselves."""
    created = await create_user(users)
    token, user_id = created.webhook_token, created.user.user_id
    month_start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    old = [
        await ingest(signals, token, alert(index), received_at=month_start - timedelta(days=40 + index))
        for index in range(3)
    ]
    current = [await ingest(signals, token, alert(index)) for index in range(3, 9)]
    for signal_id, size in ((old[0], 500), (current[0], 700), (current[1], 900)):
        await complete_capture(signals, signal_id, worker_id="w", size_bytes=size)
    await set_outcome(signals, old[1], resources_pb2.SIGNAL_RESULT_LOSS)
    await set_outcome(signals, current[2], resources_pb2.SIGNAL_RESULT_WIN)
    await set_outcome(signals, current[2], resources_pb2.SIGNAL_RESULT_LOSS)

    owner = uuid.UUID(user_id)
    connection = await asyncpg.connect(listener_dsn(database_url))
    try:
        await connection.execute(
            "UPDATE signals SET result = 'win' WHERE user_id = $1 AND id = ANY($2::uuid[])",
            owner,
            [uuid.UUID(value) for value in (current[3], current[4], old[2])],
        )
        await connection.execute(
            "UPDATE screenshots SET size_bytes = size_bytes * 2 WHERE user_id = $1 AND status = 'completed'",
            owner,
        )
        # A signal moved to another month, and one deleted with its screenshot.
        await connection.execute(
            "UPDATE signals SET created_at = created_at - interval '60 days' WHERE id = $1",
            uuid.UUID(current[5]),
        )
        await connection.execute("DELETE FROM signals WHERE id = $1", uuid.UUID(current[0]))
        expected = dict(await connection.fetchrow(_RECOUNT, owner))
    finally:
        await connection.close()

    stats = await signals.GetUserStats(signal_service_pb2.GetUserStatsRequest(user_id=user_id))
    counted = {name: getattr(stats, name) for name in expected}
    assert counted == expected
    assert expected == {
        "total_signals": 8,
        "this_month": 4,
        "screenshots_pending": 6,
        "wins": 3,
        "losses": 2,
        "storage_bytes": 2 * (500 + 900),
        "storage_objects": 2,
    }


async def test_stats_of_a_user_without_resolved_signals(signals, users) -> None:
    created = await create_user(users)
    empty = await signals.GetUserStats(signal_service_pb2.GetUserStatsRequest(user_id=created.user.user_id))
    assert (empty.total_signals, empty.win_rate, empty.storage_bytes) == (0, 0.0, 0)

    skipped = await ingest(signals, created.webhook_token, alert(1))
    await set_outcome(signals, skipped, resources_pb2.SIGNAL_RESULT_SKIP)
    only_skips = await signals.GetUserStats(
        signal_service_pb2.GetUserStatsRequest(user_id=created.user.user_id)
    )
    assert (only_skips.total_signals, only_skips.wins, only_skips.losses, only_skips.win_rate) == (
        1,
        0,
        0,
        0.0,
    )


async def test_stats_of_unknown_or_malformed_user(signals) -> None:
    missing = await refused(
        signals.GetUserStats(signal_service_pb2.GetUserStatsRequest(user_id=str(uuid.uuid4())))
    )
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")
    malformed = await refused(signals.GetUserStats(signal_service_pb2.GetUserStatsRequest(user_id="42")))
    assert malformed.code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("field", ["ticker", "indicator", "signal_type"])
async def test_a_filter_holding_nul_is_refused(signals, users, field: str) -> None:
    """Found by schemathesis through the edge: PostgreSQL refused the query, and the caller got a 500."""
    created = await create_user(users)
    query = signal_service_pb2.ListSignalsRequest(user_id=created.user.user_id, **{field: "BTC\x00USDT"})
    error = await refused(signals.ListSignals(query))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, f"INVALID_{field.upper()}")


async def test_outcome_is_stored_exactly_and_can_be_cleared(signals, users) -> None:
    created = await create_user(users)
    signal_id = await ingest(signals, created.webhook_token, alert(1))

    won = await set_outcome(signals, signal_id, resources_pb2.SIGNAL_RESULT_WIN, "-0.10", "stopped late")
    assert (won.result, won.profit_loss, won.notes) == (
        resources_pb2.SIGNAL_RESULT_WIN,
        "-0.10",
        "stopped late",
    )
    precise = await set_outcome(
        signals, signal_id, resources_pb2.SIGNAL_RESULT_LOSS, " 12345678901234567890.123 "
    )
    assert precise.profit_loss == "12345678901234567890.123"
    fetched = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
    assert fetched == precise
    assert fetched.updated_at.ToDatetime() >= fetched.created_at.ToDatetime()

    cleared = await set_outcome(signals, signal_id, resources_pb2.SIGNAL_RESULT_PENDING)
    assert (cleared.result, cleared.profit_loss, cleared.notes) == (
        resources_pb2.SIGNAL_RESULT_PENDING,
        "",
        "",
    )


@pytest.mark.parametrize(
    ("result", "profit_loss", "notes", "reason"),
    [
        (resources_pb2.SIGNAL_RESULT_UNSPECIFIED, "", "", "INVALID_RESULT"),
        (resources_pb2.SIGNAL_RESULT_WIN, "12,50", "", "INVALID_PROFIT_LOSS"),
        (resources_pb2.SIGNAL_RESULT_WIN, "NaN", "", "INVALID_PROFIT_LOSS"),
        (resources_pb2.SIGNAL_RESULT_WIN, "Infinity", "", "INVALID_PROFIT_LOSS"),
        (resources_pb2.SIGNAL_RESULT_WIN, "1e40", "", "INVALID_PROFIT_LOSS"),
        (resources_pb2.SIGNAL_RESULT_WIN, "1e-40", "", "INVALID_PROFIT_LOSS"),
        (resources_pb2.SIGNAL_RESULT_WIN, "", "x" * 10_001, "INVALID_NOTES"),
    ],
)
async def test_invalid_outcomes_are_refused_and_change_nothing(
    signals, users, result: int, profit_loss: str, notes: str, reason: str
) -> None:
    created = await create_user(users)
    signal_id = await ingest(signals, created.webhook_token, alert(1))
    error = await refused(set_outcome(signals, signal_id, result, profit_loss, notes))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    unchanged = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
    assert (unchanged.result, unchanged.profit_loss) == (resources_pb2.SIGNAL_RESULT_PENDING, "")


async def test_outcome_of_unknown_signal_is_not_found(signals) -> None:
    error = await refused(set_outcome(signals, str(uuid.uuid4()), resources_pb2.SIGNAL_RESULT_WIN))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "SIGNAL_NOT_FOUND")


# --- user-scoped keys --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScopedSetup:
    stub: signal_service_pb2_grpc.SignalServiceStub
    users: user_service_pb2_grpc.UserServiceStub
    own: user_service_pb2.CreateUserResponse
    other: user_service_pb2.CreateUserResponse


@pytest.fixture(scope="module")
async def scoped(users, service_env: dict[str, str], service_key: str) -> AsyncIterator[ScopedSetup]:
    """A second real server whose keys include one scoped to `own` (configured hashed)."""
    from mesh import grpc as mesh_grpc
    from signal_service.main import SERVICE_NAMES, register, signal_app
    from signal_service.settings import SignalSettings

    own = await create_user(users)
    other = await users.CreateUser(
        user_service_pb2.CreateUserRequest(plan=resources_pb2.PLAN_PRO, external_id=f"ext-{uuid.uuid4()}")
    )
    scoped_key = generate_key()
    env = service_env | {
        "ALERTS_API_KEYS": f"{service_key},sha256:{hash_key(scoped_key)}@user:{own.user.user_id}"
    }
    settings = settings_from(env, SignalSettings, signal_addr="127.0.0.1:0")
    async with signal_app(settings) as app:
        server = mesh_grpc.create_server(settings)
        register(server, app)
        app.start_background()
        port, _ = await mesh_grpc.start(server, address="127.0.0.1:0", service_names=SERVICE_NAMES)
        async with open_channel(f"127.0.0.1:{port}", scoped_key) as channel:
            yield ScopedSetup(
                signal_service_pb2_grpc.SignalServiceStub(channel),
                user_service_pb2_grpc.UserServiceStub(channel),
                own,
                other,
            )
        await server.stop(1)


async def test_scoped_key_reads_its_own_user(signals, scoped: ScopedSetup) -> None:
    signal_id = await ingest(signals, scoped.own.webhook_token, alert(1))
    own_id = scoped.own.user.user_id
    stats = await scoped.stub.GetUserStats(signal_service_pb2.GetUserStatsRequest(user_id=own_id))
    assert stats.total_signals >= 1
    listed = await scoped.stub.ListSignals(signal_service_pb2.ListSignalsRequest(user_id=own_id))
    assert signal_id in [signal.signal_id for signal in listed.signals]
    fetched = await scoped.stub.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
    assert fetched.user_id == own_id
    user = await scoped.users.GetUser(user_service_pb2.GetUserRequest(user_id=own_id))
    assert user.user_id == own_id


async def test_scoped_key_may_not_record_outcomes_even_of_its_own_signals(
    signals, scoped: ScopedSetup
) -> None:
    signal_id = await ingest(signals, scoped.own.webhook_token, alert(3))
    error = await refused(set_outcome(scoped.stub, signal_id, resources_pb2.SIGNAL_RESULT_WIN, "5"))
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE")
    untouched = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
    assert (untouched.result, untouched.profit_loss) == (resources_pb2.SIGNAL_RESULT_PENDING, "")


async def _refusal(call: object) -> tuple[grpc.StatusCode, str, tuple[tuple[str, object], ...]]:
    """Everything a caller learns from a refused call: code, message and the status details."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    details = tuple(
        (key, value)
        for key, value in caught.value.trailing_metadata() or ()
        if key == "grpc-status-details-bin"
    )
    return caught.value.code(), caught.value.details() or "", details


def _scoped_calls(scoped: ScopedSetup, user_id: str, signal_id: str, external_id: str) -> dict[str, object]:
    """Every read a scoped key may make, aimed at `user_id`, `signal_id` and `external_id`."""
    stub, users = scoped.stub, scoped.users
    return {
        "GetUserStats": stub.GetUserStats(signal_service_pb2.GetUserStatsRequest(user_id=user_id)),
        "ListSignals": stub.ListSignals(signal_service_pb2.ListSignalsRequest(user_id=user_id)),
        "ListFailedCaptures": stub.ListFailedCaptures(
            signal_service_pb2.ListFailedCapturesRequest(user_id=user_id)
        ),
        "GetSignal": stub.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id)),
        "SubscribeSignals": read_events(
            stub.SubscribeSignals(signal_service_pb2.SubscribeSignalsRequest(user_id=user_id)), 1
        ),
        "GetUser": users.GetUser(user_service_pb2.GetUserRequest(user_id=user_id)),
        "GetUser(external_id)": users.GetUser(user_service_pb2.GetUserRequest(external_id=external_id)),
    }


async def test_another_users_objects_answer_exactly_like_ids_that_do_not_exist(
    signals, scoped: ScopedSetup
) -> None:
    foreign = await ingest(signals, scoped.other.webhook_token, alert(2))
    other_calls = _scoped_calls(scoped, scoped.other.user.user_id, foreign, scoped.other.user.external_id)
    random_calls = _scoped_calls(scoped, str(uuid.uuid4()), str(uuid.uuid4()), f"ext-{uuid.uuid4()}")
    for name, call in other_calls.items():
        other = await _refusal(call)
        assert other[0] == grpc.StatusCode.NOT_FOUND, name
        assert other == await _refusal(random_calls[name]), name
    untouched = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=foreign))
    assert (untouched.result, untouched.profit_loss) == (resources_pb2.SIGNAL_RESULT_PENDING, "")


# --- SubscribeSignals --------------------------------------------------------------------------------


async def test_replay_then_live_in_order(signals, users) -> None:
    created = await create_user(users)
    token, user_id = created.webhook_token, created.user.user_id
    first = [await ingest(signals, token, alert(index)) for index in range(3)]
    call = signals.SubscribeSignals(
        signal_service_pb2.SubscribeSignalsRequest(user_id=user_id, after_cursor="0")
    )
    try:
        assert await start_cursor(call) == "0"
        replayed = await read_events(call, 3)
        assert [event.cursor for event in replayed] == ["1", "2", "3"]
        assert [event.signal.signal_id for event in replayed] == first
        assert {event.type for event in replayed} == {resources_pb2.SIGNAL_EVENT_TYPE_CREATED}
        assert {event.user_id for event in replayed} == {user_id}

        live = await ingest(signals, token, alert(9))
        await set_outcome(signals, first[0], resources_pb2.SIGNAL_RESULT_WIN, "7.5")
        created_event, outcome_event = await read_events(call, 2)
    finally:
        call.cancel()
    assert (created_event.cursor, created_event.signal.signal_id) == ("4", live)
    assert outcome_event.cursor == "5"
    assert outcome_event.type == resources_pb2.SIGNAL_EVENT_TYPE_OUTCOME_UPDATED
    assert (outcome_event.signal.signal_id, outcome_event.signal.profit_loss) == (first[0], "7.5")
    assert outcome_event.occurred_at.ToDatetime() >= created_event.occurred_at.ToDatetime()


async def test_empty_cursor_starts_from_now(signals, users) -> None:
    created = await create_user(users)
    token, user_id = created.webhook_token, created.user.user_id
    for index in range(2):
        await ingest(signals, token, alert(index))
    call = signals.SubscribeSignals(signal_service_pb2.SubscribeSignalsRequest(user_id=user_id))
    try:
        assert await start_cursor(call) == "2"
        fresh = await ingest(signals, token, alert(5))
        (event,) = await read_events(call, 1)
    finally:
        call.cancel()
    assert (event.cursor, event.signal.signal_id) == ("3", fresh)


async def test_resume_from_a_cursor_replays_only_what_followed(signals, users) -> None:
    created = await create_user(users)
    token, user_id = created.webhook_token, created.user.user_id
    ids = [await ingest(signals, token, alert(index)) for index in range(5)]
    call = signals.SubscribeSignals(
        signal_service_pb2.SubscribeSignalsRequest(user_id=user_id, after_cursor="3")
    )
    try:
        events = await read_events(call, 2)
    finally:
        call.cancel()
    assert [(event.cursor, event.signal.signal_id) for event in events] == [("4", ids[3]), ("5", ids[4])]


@pytest.mark.parametrize(
    ("cursor", "code", "reason"),
    [
        ("abc", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CURSOR"),
        ("-1", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CURSOR"),
        ("٣", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CURSOR"),
        ("99", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CURSOR"),
    ],
)
async def test_bad_cursors_are_refused(
    signals, users, cursor: str, code: grpc.StatusCode, reason: str
) -> None:
    created = await create_user(users)
    call = signals.SubscribeSignals(
        signal_service_pb2.SubscribeSignalsRequest(user_id=created.user.user_id, after_cursor=cursor)
    )
    error = await refused(read_events(call, 1))
    assert (error.code, error.reason) == (code, reason)


async def test_subscribing_to_an_unknown_user_is_not_found(signals) -> None:
    call = signals.SubscribeSignals(signal_service_pb2.SubscribeSignalsRequest(user_id=str(uuid.uuid4())))
    error = await refused(read_events(call, 1))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")


async def test_screenshot_events_carry_the_current_signal(signals, users) -> None:
    created = await create_user(users)
    signal_id = await ingest(signals, created.webhook_token, alert(1))
    call = signals.SubscribeSignals(
        signal_service_pb2.SubscribeSignalsRequest(user_id=created.user.user_id, after_cursor="1")
    )
    try:
        await start_cursor(call)
        await signals.ClaimCapture(signal_service_pb2.ClaimCaptureRequest(signal_id=signal_id, worker_id="w"))
        await signals.ReportCapture(
            signal_service_pb2.ReportCaptureRequest(
                signal_id=signal_id, status=resources_pb2.SCREENSHOT_STATUS_FAILED, error="timeout"
            )
        )
        processing, failed = await read_events(call, 2)
    finally:
        call.cancel()
    assert {processing.type, failed.type} == {resources_pb2.SIGNAL_EVENT_TYPE_SCREENSHOT_UPDATED}
    assert (processing.cursor, failed.cursor) == ("2", "3")
    # Each event carries the signal as it is when sent, not as it was when the event happened.
    assert failed.signal.screenshot_status == resources_pb2.SCREENSHOT_STATUS_FAILED
    assert failed.signal.screenshot_error == "timeout"


async def test_stream_survives_the_listener_connection_being_killed(
    signals, users, database_url: str
) -> None:
    created = await create_user(users)
    call = signals.SubscribeSignals(signal_service_pb2.SubscribeSignalsRequest(user_id=created.user.user_id))
    try:
        await start_cursor(call)
        admin = await asyncpg.connect(listener_dsn(database_url))
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'alerts-signal-events' AND datname = current_database()"
            )
        finally:
            await admin.close()
        assert killed >= 1
        after_kill = await ingest(signals, created.webhook_token, alert(3))
        (event,) = await read_events(call, 1)
    finally:
        call.cancel()
    assert (event.cursor, event.signal.signal_id) == ("1", after_kill)


async def test_a_stream_too_far_behind_ends_with_its_cursor(signals, users, database_url: str) -> None:
    """Domain level, so that "behind" does not depend on socket buffer sizes: a stream that has sent
    event 1 and is then asked for more while 4 newer events wait, with max_pending=3, ends."""
    created = await create_user(users)
    user_id = uuid.UUID(created.user.user_id)
    database = Database(create_engine(database_url, pool_size=2))
    hub = EventHub(listener_dsn(database_url))
    hub.listener.start()
    try:
        await asyncio.wait_for(hub.wait_listening(), STREAM_GUARD_SECONDS)
        feed = EventFeed(database=database, hub=hub, page_size=1, max_pending=3)
        async with feed.subscribe(user_id, "", key="test") as subscription:
            batches = subscription.batches(as_read)
            await ingest(signals, created.webhook_token, alert(0))
            first = await asyncio.wait_for(anext(batches), STREAM_GUARD_SECONDS)
            assert [stored["seq"] for stored in first] == [1]
            for index in range(1, 5):
                await ingest(signals, created.webhook_token, alert(index))
            watcher = hub.register(user_id, "watcher")
            async with asyncio.timeout(STREAM_GUARD_SECONDS):
                while hub.head(user_id) < 5:
                    await watcher.woken.wait()
                    watcher.woken.clear()
            hub.unregister(watcher)
            with pytest.raises(AlertsError) as caught:
                await anext(batches)
            await batches.aclose()
    finally:
        await hub.listener.stop()
        await database.dispose()
    error = caught.value
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SUBSCRIBER_TOO_SLOW")
    assert error.metadata["cursor"] == "1"
    assert hub.head(user_id) == 0  # the stream unregistered: nothing is kept for a user without streams


async def test_a_replay_longer_than_a_page_reads_on_without_a_notification(
    signals, users, database_url: str
) -> None:
    """A full page means more may be waiting: the next page is read at once, not after a wake-up that no
    commit will send (the events committed before the stream opened)."""
    created = await create_user(users)
    user_id = uuid.UUID(created.user.user_id)
    for index in range(5):
        await ingest(signals, created.webhook_token, alert(index))
    database = Database(create_engine(database_url, pool_size=2))
    # A re-check far beyond the guard: only a read after a full page can deliver the later pages in time.
    hub = EventHub(listener_dsn(database_url), listening_recheck_seconds=600)
    hub.listener.start()
    try:
        await asyncio.wait_for(hub.wait_listening(), STREAM_GUARD_SECONDS)
        feed = EventFeed(database=database, hub=hub, page_size=2)
        async with feed.subscribe(user_id, "0", key="test") as subscription:
            batches = subscription.batches(as_read)
            pages = [await asyncio.wait_for(anext(batches), 10) for _ in range(3)]
            await batches.aclose()
    finally:
        await hub.listener.stop()
        await database.dispose()
    assert [[stored["seq"] for stored in page] for page in pages] == [[1, 2], [3, 4], [5]]


async def test_a_stream_asking_for_batches_gets_its_events_in_order_in_batches(signals, users) -> None:
    created = await create_user(users)
    token, user_id = created.webhook_token, created.user.user_id
    stored = [await ingest(signals, token, alert(index)) for index in range(5)]
    call = signals.SubscribeSignals(
        signal_service_pb2.SubscribeSignalsRequest(
            user_id=user_id, after_cursor="0", max_events_per_message=2
        )
    )
    try:
        messages = await read_events(call, 3)
        live = await ingest(signals, token, alert(9))
        (live_message,) = await read_events(call, 1)
    finally:
        call.cancel()
    assert [[event.cursor for event in message.events] for message in messages] == [
        ["1", "2"],
        ["3", "4"],
        ["5"],
    ]
    assert [message.cursor for message in messages] == ["2", "4", "5"]
    assert [event.signal.signal_id for message in messages for event in message.events] == stored
    # A batch carries its events and its cursor, nothing else.
    assert not any(message.HasField("signal") or message.type or message.user_id for message in messages)
    assert [(event.cursor, event.signal.signal_id) for event in live_message.events] == [("6", live)]
    assert live_message.cursor == "6"


async def test_a_negative_batch_size_is_refused(signals, users) -> None:
    created = await create_user(users)
    call = signals.SubscribeSignals(
        signal_service_pb2.SubscribeSignalsRequest(
            user_id=created.user.user_id, after_cursor="0", max_events_per_message=-1
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- page size in bytes ------------------------------------------------------------------------------


async def test_list_pages_stop_under_the_byte_budget_and_lose_nothing(
    signals, users, service_env: dict[str, str], service_key: str
) -> None:
    budget = 64 * 1024
    created = await create_user(users)
    user_id = created.user.user_id
    big = [
        await ingest(signals, created.webhook_token, alert(index) + b"\nnote: " + b"x" * 25_000)
        for index in range(7)
    ]
    async with (
        signal_server_with(service_env, list_page_max_bytes=budget) as address,
        open_channel(address, service_key) as channel,
    ):
        stub = signal_service_pb2_grpc.SignalServiceStub(channel)
        seen: list[str] = []
        sizes: list[int] = []
        token = ""
        while True:
            page = await stub.ListSignals(
                signal_service_pb2.ListSignalsRequest(user_id=user_id, page_size=100, page_token=token)
            )
            sizes.append(page.ByteSize())
            seen += [signal.signal_id for signal in page.signals]
            token = page.next_page_token
            if not token:
                break
    assert seen == list(reversed(big))
    assert len(sizes) > 1
    assert max(sizes) <= budget


# --- streams: limits, and one read per wake for all of a user's streams ------------------------------


@contextlib.asynccontextmanager
async def listening_hub(database_url: str, **limits: int) -> AsyncIterator[EventHub]:
    hub = EventHub(listener_dsn(database_url), **limits)
    hub.listener.start()
    try:
        await asyncio.wait_for(hub.wait_listening(), STREAM_GUARD_SECONDS)
        yield hub
    finally:
        await hub.listener.stop()


async def test_streams_of_one_user_share_one_table_read_per_wake(
    signals, users, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await create_user(users)
    user_id = uuid.UUID(created.user.user_id)
    database = Database(create_engine(database_url, pool_size=4))
    event_reads: list[int] = []

    async def counted(connection, user_id: uuid.UUID, after_seq: int, limit: int):
        event_reads.append(after_seq)
        return await replay_page(connection, user_id, after_seq, limit)

    monkeypatch.setattr(events_service, "replay_page", counted)
    received: list[list[int]] = [[] for _ in range(5)]
    progress = asyncio.Event()

    async def follow(subscription, seen: list[int]) -> None:
        async for page in subscription.batches(as_read):
            seen.extend(stored["seq"] for stored in page)
            progress.set()

    async def all_received(seq: int) -> None:
        async with asyncio.timeout(STREAM_GUARD_SECONDS):
            while True:
                progress.clear()
                if all(seq in seen for seen in received):
                    return
                await progress.wait()

    try:
        async with listening_hub(database_url) as hub, contextlib.AsyncExitStack() as streams:
            feed = EventFeed(database=database, hub=hub)
            followers = []
            for seen in received:
                subscription = await streams.enter_async_context(feed.subscribe(user_id, "", key="k"))
                followers.append(asyncio.create_task(follow(subscription, seen)))
            try:
                # Every stream has looked once by now; one that has not would find that look just done.
                await asyncio.sleep(0.3)
                for index in range(3):
                    before = len(event_reads)
                    await ingest(signals, created.webhook_token, alert(index))
                    await all_received(index + 1)
                    assert len(event_reads) - before == 1, f"wake {index}: {len(event_reads) - before} reads"
            finally:
                for follower in followers:
                    follower.cancel()
                await asyncio.gather(*followers, return_exceptions=True)
    finally:
        await database.dispose()
    assert received == [[1, 2, 3]] * 5


async def test_streams_are_limited_per_user_and_per_key(users, database_url: str) -> None:
    first, second, third = [uuid.UUID((await create_user(users)).user.user_id) for _ in range(3)]
    database = Database(create_engine(database_url, pool_size=2))
    try:
        async with (
            listening_hub(database_url, max_streams_per_user=2, max_streams_per_key=3) as hub,
            contextlib.AsyncExitStack() as streams,
        ):
            feed = EventFeed(database=database, hub=hub)
            for _ in range(2):
                await streams.enter_async_context(feed.subscribe(first, "", key="platform"))
            with pytest.raises(AlertsError) as per_user:
                await streams.enter_async_context(feed.subscribe(first, "", key="another"))
            await streams.enter_async_context(feed.subscribe(second, "", key="platform"))
            with pytest.raises(AlertsError) as per_key:
                await streams.enter_async_context(feed.subscribe(third, "", key="platform"))
            async with feed.subscribe(third, "", key="another"):
                pass
        async with listening_hub(database_url, max_streams_per_user=1) as hub:
            feed = EventFeed(database=database, hub=hub)
            # A closed stream gives its place back.
            for _ in range(3):
                async with feed.subscribe(first, "", key="platform"):
                    pass
    finally:
        await database.dispose()
    for error, limit in ((per_user.value, "user"), (per_key.value, "key")):
        assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS")
        assert error.metadata["limit"] == limit
