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
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar, get_args

import grpc
import msgspec
from google.protobuf import timestamp_pb2
from litestar import Request, Router, get, patch
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIFormat, OpenAPIType
from litestar.params import HeaderParameter, JSONBody, Parameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2, signal_service_pb2_grpc
from edge.api_shapes import (
    EventMessage,
    OutcomeIn,
    ResultName,
    ScreenshotStatusName,
    SignalOut,
    SignalPageOut,
    StreamErrorMessage,
    UserStatsOut,
    event_out,
    result_number,
    screenshot_status_number,
    signal_out,
)
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
        query.result = result_number(result)
    if screenshot_status is not None:
        query.screenshot_status = screenshot_status_number(screenshot_status)
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
        result=result_number(data.result)
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
