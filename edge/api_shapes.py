"""The JSON shapes of the platform's REST and SSE API (edge/api.py) and their mapping from the proto
messages: proto field names, decimals as strings, times ISO 8601 UTC, enum values lowercase without their
prefix, unknown values null."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from google.protobuf import json_format, timestamp_pb2
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import KwargDefinition

from apidevs.alerts.v1 import resources_pb2

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


def result_number(name: str) -> resources_pb2.SignalResult.ValueType:
    return resources_pb2.SignalResult.Value("SIGNAL_RESULT_" + name.upper())


def screenshot_status_number(name: str) -> resources_pb2.ScreenshotStatus.ValueType:
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
