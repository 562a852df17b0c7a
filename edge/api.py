"""The platform's REST and Server-Sent Events API: thin translations to SignalService calls.

The caller's own ``Authorization: Bearer <key>`` header is forwarded as the gRPC call's metadata, so the
signal service authorises the real caller: a platform key reads every user, a user-scoped key only its
user. The edge decides nothing itself beyond refusing a request that has no bearer key at all (401).

JSON mirrors the proto field names (snake_case); decimals are strings, times ISO 8601 UTC, enum values
lowercase names without their prefix ("completed", "win"), and unknown values null.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar, get_args

import grpc
import msgspec
from google.protobuf import json_format, timestamp_pb2
from litestar import Request, Router, get, patch
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIFormat, OpenAPIType, Schema
from litestar.params import HeaderParameter, JSONBody, KwargDefinition, Parameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2, signal_service_pb2_grpc
from edge.errors import error_responses
from edge.openapi import EdgeOperation, absent_or
from mesh.errors import (
    InvalidArgumentError,
    NotFoundError,
    UnauthenticatedError,
    UnavailableError,
    from_rpc_error,
)

SSE_HEARTBEAT_SECONDS = 15.0
# How long the browser waits before reconnecting after the stream ends.
SSE_RETRY_MILLISECONDS = 2000
_UNARY_TIMEOUT_SECONDS = 5.0
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_EventCall = grpc.aio.UnaryStreamCall[signal_service_pb2.SubscribeSignalsRequest, resources_pb2.SignalEvent]
_STREAM_OPEN_TIMEOUT_SECONDS = 10.0
# Events per gRPC message of a stream the edge follows: a reconnect far behind catches up in pages, not
# one message per event (the SSE side still sends one message per event).
_STREAM_EVENTS_PER_MESSAGE = 500
_BEARER = re.compile(r"^[Bb]earer [\x21-\x7e]+$")

ScreenshotStatusName = Literal[
    "unspecified", "pending", "processing", "completed", "failed", "skipped", "expired"
]
ResultName = Literal["pending", "win", "loss", "skip"]
ParseStatusName = Literal["unspecified", "complete", "partial", "failed"]
EventTypeName = Literal[
    "unspecified", "created", "screenshot_updated", "outcome_updated", "tradingview_session_updated"
]


def _enum_name(enum: Any, number: int, prefix: str) -> Any:
    return enum.Name(number).removeprefix(prefix).lower()


def _result_number(name: str) -> resources_pb2.SignalResult.ValueType:
    return resources_pb2.SignalResult.Value("SIGNAL_RESULT_" + name.upper())


def _screenshot_status_number(name: str) -> resources_pb2.ScreenshotStatus.ValueType:
    return resources_pb2.ScreenshotStatus.Value("SCREENSHOT_STATUS_" + name.upper())


def _time(message: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    return message.ToDatetime(tzinfo=UTC) if present else None


# --- JSON shapes -------------------------------------------------------------------------------------


@dataclass
class DeliveryOut:
    """One notification delivery of the signal: its channel, what it sent (alert, photo, outcome), how."""

    channel: str
    kind: str
    status: str
    attempts: int
    last_error: str | None
    with_photo: bool
    delivered_at: datetime | None


@dataclass
class SignalOut:
    signal_id: str
    user_id: str
    chart_id: str
    # As the alert named it; indicator_key is the catalog's name for it, null when not in the catalog.
    indicator: str
    indicator_key: str | None
    ticker: str
    exchange: str
    symbol: str
    price: str | None
    signal_type: str
    interval: str
    alert_time: datetime | None
    # TradingView's {{time}} (the bar's open) and {{timenow}} (when the alert fired); null unless the
    # message says which time it is.
    bar_time: datetime | None
    fired_at: datetime | None
    # The exchange is a delayed feed ("NASDAQ_DLY"): the price was not live.
    delayed_feed: bool
    parse_status: ParseStatusName
    parse_problems: list[str]
    extra: dict[str, Any]
    raw_text: str
    content_type: str
    screenshot_status: ScreenshotStatusName
    screenshot_url: str | None
    screenshot_error: str | None
    screenshot_completed_at: datetime | None
    result: ResultName
    profit_loss: str | None
    notes: str
    created_at: datetime | None
    updated_at: datetime | None
    deliveries: list[DeliveryOut]


@dataclass
class SignalPageOut:
    signals: list[SignalOut]
    # Pass back as page_token for the next page; null on the last page.
    next_page_token: str | None


@dataclass
class UserStatsOut:
    user_id: str
    total_signals: int
    this_month: int
    screenshots_pending: int
    win_rate: float
    wins: int
    losses: int
    storage_bytes: int
    storage_objects: int


# Litestar declares `Literal[...] | None` as one enum holding null, which generated clients misread.
_NULL_OR_RESULT = {
    "type": None,
    "enum": None,
    "one_of": [
        Schema(type=OpenAPIType.STRING, enum=list(get_args(ResultName))),
        Schema(type=OpenAPIType.NULL),
    ],
}


@dataclass
class OutcomeIn:
    """Fields left out (or null) keep their value; an empty string clears profit_loss or notes."""

    result: Annotated[ResultName | None, KwargDefinition(schema_extra=_NULL_OR_RESULT)] = None
    # Exact decimal string, e.g. "-12.50".
    profit_loss: str | None = None
    notes: str | None = None


@dataclass
class TradingViewSessionOut:
    """The state of the user's TradingView cookies; `valid` means something only when `checked`."""

    configured: bool
    checked: bool
    valid: bool
    checked_at: datetime | None
    changed_at: datetime | None


@dataclass
class EventOut:
    cursor: str
    type: EventTypeName
    user_id: str
    occurred_at: datetime | None
    signal: SignalOut | None
    # Set on tradingview_session_updated events.
    tradingview_session: TradingViewSessionOut | None = None


@dataclass
class StreamErrorOut:
    """Why the service ended the stream, plus the error's details (string values); reconnecting with the
    last event's id loses nothing."""

    # The gRPC status, lowercase ("resource_exhausted" for a stream that fell too far behind).
    error: str
    reason: str


@dataclass
class EventMessage:
    """One Server-Sent Events message: `id: <cursor>` and `data: <EventOut as one line of JSON>`."""

    id: str
    data: EventOut


@dataclass
class StreamErrorMessage:
    """The message that ends a stream the service gave up on: `event: stream-error`, `data: <JSON>`."""

    event: Literal["stream-error"]
    data: StreamErrorOut


def signal_out(signal: resources_pb2.Signal) -> SignalOut:
    return SignalOut(
        signal_id=signal.signal_id,
        user_id=signal.user_id,
        chart_id=signal.chart_id,
        indicator=signal.indicator,
        indicator_key=signal.indicator_key or None,
        ticker=signal.ticker,
        exchange=signal.exchange,
        symbol=signal.symbol,
        price=signal.price or None,
        signal_type=signal.signal_type,
        interval=signal.interval,
        alert_time=_time(signal.alert_time, signal.HasField("alert_time")),
        bar_time=_time(signal.bar_time, signal.HasField("bar_time")),
        fired_at=_time(signal.fired_at, signal.HasField("fired_at")),
        delayed_feed=signal.delayed_feed,
        parse_status=_enum_name(resources_pb2.ParseStatus, signal.parse_status, "PARSE_STATUS_"),
        parse_problems=list(signal.parse_problems),
        extra=json_format.MessageToDict(signal.extra),
        raw_text=signal.raw_text,
        content_type=signal.content_type,
        screenshot_status=_enum_name(
            resources_pb2.ScreenshotStatus, signal.screenshot_status, "SCREENSHOT_STATUS_"
        ),
        screenshot_url=signal.screenshot_url or None,
        screenshot_error=signal.screenshot_error or None,
        screenshot_completed_at=_time(
            signal.screenshot_completed_at, signal.HasField("screenshot_completed_at")
        ),
        result=_enum_name(resources_pb2.SignalResult, signal.result, "SIGNAL_RESULT_")
        if signal.result
        else "pending",
        profit_loss=signal.profit_loss or None,
        notes=signal.notes,
        created_at=_time(signal.created_at, signal.HasField("created_at")),
        updated_at=_time(signal.updated_at, signal.HasField("updated_at")),
        deliveries=[delivery_out(delivery) for delivery in signal.deliveries],
    )


def delivery_out(delivery: resources_pb2.NotificationDelivery) -> DeliveryOut:
    return DeliveryOut(
        channel=_enum_name(resources_pb2.NotificationChannel, delivery.channel, "NOTIFICATION_CHANNEL_"),
        kind=_enum_name(resources_pb2.NotificationKind, delivery.kind, "NOTIFICATION_KIND_"),
        status=_enum_name(resources_pb2.DeliveryStatus, delivery.status, "DELIVERY_STATUS_"),
        attempts=delivery.attempts,
        last_error=delivery.last_error or None,
        with_photo=delivery.with_photo,
        delivered_at=_time(delivery.delivered_at, delivery.HasField("delivered_at")),
    )


def event_out(event: resources_pb2.SignalEvent) -> EventOut:
    return EventOut(
        cursor=event.cursor,
        type=_enum_name(resources_pb2.SignalEventType, event.type, "SIGNAL_EVENT_TYPE_"),
        user_id=event.user_id,
        occurred_at=_time(event.occurred_at, event.HasField("occurred_at")),
        signal=signal_out(event.signal) if event.HasField("signal") else None,
        tradingview_session=session_out(event.tradingview_session)
        if event.HasField("tradingview_session")
        else None,
    )


def session_out(session: resources_pb2.TradingViewSession) -> TradingViewSessionOut:
    return TradingViewSessionOut(
        configured=session.configured,
        checked=session.checked,
        valid=session.valid,
        checked_at=_time(session.checked_at, session.HasField("checked_at")),
        changed_at=_time(session.changed_at, session.HasField("changed_at")),
    )


# --- calls -------------------------------------------------------------------------------------------


def caller_metadata(request: Request[Any, Any, Any]) -> tuple[tuple[str, str], ...]:
    """The caller's own bearer key, to present to the signal service instead of the edge's key."""
    authorization = request.headers.get("authorization", "").strip()
    if not _BEARER.match(authorization):
        raise UnauthenticatedError("missing bearer API key")
    return (("authorization", authorization),)


def _signals(request: Request[Any, Any, Any]) -> signal_service_pb2_grpc.SignalServiceAsyncStub:
    stub: signal_service_pb2_grpc.SignalServiceAsyncStub = request.app.state.signal_stub
    return stub


async def _unary(
    request: Request[Any, Any, Any],
    method: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response],
    message: _Request,
) -> _Response:
    """Calls the signal service with the caller's own key; a refusal is raised as the domain error."""
    try:
        return await method(message, metadata=caller_metadata(request), timeout=_UNARY_TIMEOUT_SECONDS)
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from exc


async def _owned_signal(
    request: Request[Any, Any, Any], user_id: str, signal_id: str
) -> resources_pb2.Signal:
    signal = await _unary(
        request, _signals(request).GetSignal, signal_service_pb2.GetSignalRequest(signal_id=signal_id)
    )
    if signal.user_id != user_id:
        # Same answer as an unknown id: the path names a user, and this signal is not theirs.
        raise NotFoundError("no such signal", reason="SIGNAL_NOT_FOUND")
    return signal


def _utc(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    message = timestamp_pb2.Timestamp()
    try:
        message.FromDatetime(moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC))
    except (OverflowError, ValueError) as exc:
        raise InvalidArgumentError("time out of range", reason="INVALID_TIME") from exc
    return message


# What every call to the signal service can answer besides 200: a bad parameter, refused keys, another
# user's or an unknown id, a rate limit, the service away, and an answer too large for gRPC to carry.
_ERRORS = error_responses(
    (400, 401, 403, 404, 429, 502, 503),
    {403: "The key may not read this user (forbidden)", 404: "No such user or signal (not_found)"},
)


# The signal service refuses any id that is not a UUID (400), and answers 404 for one that names nothing.
UserId = Annotated[str, Parameter(schema_extra={"format": OpenAPIFormat.UUID})]
SignalId = Annotated[str, Parameter(schema_extra={"format": OpenAPIFormat.UUID})]
_TEXT = absent_or(OpenAPIType.STRING)
_MOMENT = absent_or(OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME)


# --- routes ------------------------------------------------------------------------------------------


@get(
    "/users/{user_id:str}/stats",
    operation_id="getUserStats",
    summary="A user's signal counters and win rate",
    description="win_rate = wins / (wins + losses) * 100, 0 when nothing is resolved; this_month is the "
    "current calendar month in UTC; screenshots_pending counts PENDING and PROCESSING captures.",
    responses=_ERRORS,
    operation_class=EdgeOperation,
)
async def get_user_stats(request: Request[Any, Any, Any], user_id: UserId) -> UserStatsOut:
    stats = await _unary(
        request, _signals(request).GetUserStats, signal_service_pb2.GetUserStatsRequest(user_id=user_id)
    )
    return UserStatsOut(
        user_id=stats.user_id,
        total_signals=stats.total_signals,
        this_month=stats.this_month,
        screenshots_pending=stats.screenshots_pending,
        win_rate=stats.win_rate,
        wins=stats.wins,
        losses=stats.losses,
        storage_bytes=stats.storage_bytes,
        storage_objects=stats.storage_objects,
    )


@get(
    "/users/{user_id:str}/signals",
    operation_id="listSignals",
    summary="A user's signals, newest first",
    description="Cursor-paginated: pass next_page_token back as page_token. created_after and "
    "created_before are exclusive bounds (ISO 8601; a time without offset is UTC).",
    responses=_ERRORS,
    operation_class=EdgeOperation,
)
async def list_signals(
    request: Request[Any, Any, Any],
    user_id: UserId,
    ticker: Annotated[str | None, QueryParameter(schema_extra=_TEXT)] = None,
    indicator: Annotated[
        str | None,
        QueryParameter(
            description="An indicator the catalog knows, in any of its spellings, matches every signal "
            "with that indicator_key; any other name matches the indicator exactly as stored",
            schema_extra=_TEXT,
        ),
    ] = None,
    signal_type: Annotated[str | None, QueryParameter(schema_extra=_TEXT)] = None,
    result: Annotated[
        ResultName | None,
        QueryParameter(schema_extra=absent_or(OpenAPIType.STRING, enum=list(get_args(ResultName)))),
    ] = None,
    screenshot_status: Annotated[
        ScreenshotStatusName | None,
        QueryParameter(schema_extra=absent_or(OpenAPIType.STRING, enum=list(get_args(ScreenshotStatusName)))),
    ] = None,
    created_after: Annotated[datetime | None, QueryParameter(schema_extra=_MOMENT)] = None,
    created_before: Annotated[datetime | None, QueryParameter(schema_extra=_MOMENT)] = None,
    page_size: Annotated[int, QueryParameter(ge=0, le=100, description="At most 100; 0 means 20")] = 0,
    page_token: Annotated[
        str | None, QueryParameter(description="A page's next_page_token", schema_extra=_TEXT)
    ] = None,
) -> SignalPageOut:
    query = signal_service_pb2.ListSignalsRequest(
        user_id=user_id,
        ticker=ticker or "",
        indicator=indicator or "",
        signal_type=signal_type or "",
        page_size=page_size,
        page_token=page_token or "",
        created_after=_utc(created_after),
        created_before=_utc(created_before),
    )
    if result is not None:
        query.result = _result_number(result)
    if screenshot_status is not None:
        query.screenshot_status = _screenshot_status_number(screenshot_status)
    page = await _unary(request, _signals(request).ListSignals, query)
    return SignalPageOut(
        signals=[signal_out(signal) for signal in page.signals], next_page_token=page.next_page_token or None
    )


@get(
    "/users/{user_id:str}/signals/{signal_id:str}",
    operation_id="getSignal",
    summary="One signal",
    responses=_ERRORS,
    operation_class=EdgeOperation,
)
async def get_signal(request: Request[Any, Any, Any], user_id: UserId, signal_id: SignalId) -> SignalOut:
    return signal_out(await _owned_signal(request, user_id, signal_id))


@patch(
    "/users/{user_id:str}/signals/{signal_id:str}",
    operation_id="updateSignalOutcome",
    summary="Record a signal's outcome",
    description="Sets result, profit_loss and notes; omitted fields keep their value. Emits an "
    "outcome_updated event.",
    responses=_ERRORS,
    operation_class=EdgeOperation,
)
async def update_signal_outcome(
    request: Request[Any, Any, Any],
    user_id: UserId,
    signal_id: SignalId,
    data: JSONBody[OutcomeIn],
) -> SignalOut:
    current = await _owned_signal(request, user_id, signal_id)
    update = signal_service_pb2.UpdateSignalOutcomeRequest(
        signal_id=signal_id,
        result=_result_number(data.result)
        if data.result is not None
        else current.result or resources_pb2.SIGNAL_RESULT_PENDING,
        profit_loss=current.profit_loss if data.profit_loss is None else data.profit_loss,
        notes=current.notes if data.notes is None else data.notes,
    )
    return signal_out(await _unary(request, _signals(request).UpdateSignalOutcome, update))


@get(
    "/users/{user_id:str}/events",
    operation_id="streamUserEvents",
    summary="A user's signal events as Server-Sent Events",
    description="Each event's id is its cursor and its data an EventOut JSON object. Resumes after the "
    "Last-Event-ID header (sent by EventSource on reconnect) or ?after=; with neither, starts from now. "
    "Comment lines keep idle connections open. A stream that falls too far behind ends with a "
    "`stream-error` event; reconnecting with the last id loses nothing.",
    media_type="text/event-stream",
    responses={
        200: ResponseSpec(
            list[EventMessage | StreamErrorMessage],
            description="The stream, message by message: each message's fields are `field: value` lines "
            "(`data` is its object as one line of JSON), messages are separated by a blank line. The first "
            "line sets the reconnection delay (`retry:`); comment lines (`:`) keep the connection open.",
            media_type="text/event-stream",
            generate_examples=False,
        ),
        **_ERRORS,
    },
    operation_class=EdgeOperation,
)
async def follow_events(
    request: Request[Any, Any, Any],
    user_id: UserId,
    after: Annotated[
        str | None, QueryParameter(description="Resume after this cursor", schema_extra=_TEXT)
    ] = None,
    last_event_id: Annotated[
        str | None,
        HeaderParameter(
            name="Last-Event-ID", description="Resume after this cursor (EventSource)", schema_extra=_TEXT
        ),
    ] = None,
) -> ServerSentEvent:
    cursor = last_event_id or after or ""
    call = _signals(request).SubscribeSignals(
        signal_service_pb2.SubscribeSignalsRequest(
            user_id=user_id, after_cursor=cursor, max_events_per_message=_STREAM_EVENTS_PER_MESSAGE
        ),
        metadata=caller_metadata(request),
    )
    await _await_accepted(call)
    heartbeat = request.app.state.get("sse_heartbeat_seconds", SSE_HEARTBEAT_SECONDS)
    return ServerSentEvent(
        _sse_messages(call, heartbeat),
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _await_accepted(call: _EventCall) -> None:
    """Waits for the service to accept or refuse the stream, so a refusal is an HTTP error, not a 200."""
    try:
        async with asyncio.timeout(_STREAM_OPEN_TIMEOUT_SECONDS):
            await call.initial_metadata()
            if call.done():
                await call.read()
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from exc
    except TimeoutError as exc:
        call.cancel()
        raise UnavailableError("the event stream did not open in time") from exc
    except BaseException:
        call.cancel()
        raise


async def _sse_messages(call: _EventCall, heartbeat_seconds: float) -> AsyncIterator[Any]:
    yield ServerSentEventMessage(data=None, comment="stream open", retry=SSE_RETRY_MILLISECONDS)
    # One read stays pending across heartbeats: cancelling a read would cancel the whole call.
    reading = asyncio.ensure_future(call.read())
    try:
        while True:
            done, _ = await asyncio.wait({reading}, timeout=heartbeat_seconds)
            if not done:
                yield ServerSentEventMessage(data=None, comment="keepalive")
                continue
            try:
                message = reading.result()
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc)
                body = {"error": error.code.name.lower(), "reason": error.reason, **error.metadata}
                yield ServerSentEventMessage(event="stream-error", data=msgspec.json.encode(body).decode())
                return
            if not isinstance(message, resources_pb2.SignalEvent):
                return  # grpc.aio.EOF: the service ended the stream
            for event in message.events:
                yield ServerSentEventMessage(
                    id=event.cursor, data=msgspec.json.encode(event_out(event)).decode()
                )
            reading = asyncio.ensure_future(call.read())
    finally:
        reading.cancel()
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await reading


router = Router(
    path="/api",
    route_handlers=[get_user_stats, list_signals, get_signal, update_signal_outcome, follow_events],
    tags=["platform"],
    security=[{"BearerApiKey": []}],
)
