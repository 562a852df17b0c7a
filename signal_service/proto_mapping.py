"""Proto <-> domain values shared by the signal service's servicers (enums, timestamps, signals, users)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, overload

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from apidevs.alerts.v1 import resources_pb2
from signal_service.models import (
    DeliveryStatus,
    EventType,
    NotificationDelivery,
    ScreenshotStatus,
    SignalResult,
)
from signal_service.signals.repository import SignalRow
from signal_service.users.service import UserView

PLAN_TO_PROTO = {
    "free": resources_pb2.PLAN_FREE,
    "basic": resources_pb2.PLAN_BASIC,
    "pro": resources_pb2.PLAN_PRO,
    "premium": resources_pb2.PLAN_PREMIUM,
}


PLAN_FROM_PROTO = {value: key for key, value in PLAN_TO_PROTO.items()}
SCREENSHOT_TO_PROTO = {
    ScreenshotStatus.PENDING: resources_pb2.SCREENSHOT_STATUS_PENDING,
    ScreenshotStatus.PROCESSING: resources_pb2.SCREENSHOT_STATUS_PROCESSING,
    ScreenshotStatus.COMPLETED: resources_pb2.SCREENSHOT_STATUS_COMPLETED,
    ScreenshotStatus.FAILED: resources_pb2.SCREENSHOT_STATUS_FAILED,
    ScreenshotStatus.SKIPPED: resources_pb2.SCREENSHOT_STATUS_SKIPPED,
    ScreenshotStatus.EXPIRED: resources_pb2.SCREENSHOT_STATUS_EXPIRED,
}


SCREENSHOT_FROM_PROTO = {value: key for key, value in SCREENSHOT_TO_PROTO.items()}
RESULT_TO_PROTO = {
    SignalResult.PENDING: resources_pb2.SIGNAL_RESULT_PENDING,
    SignalResult.WIN: resources_pb2.SIGNAL_RESULT_WIN,
    SignalResult.LOSS: resources_pb2.SIGNAL_RESULT_LOSS,
    SignalResult.SKIP: resources_pb2.SIGNAL_RESULT_SKIP,
}


RESULT_FROM_PROTO = {value: key for key, value in RESULT_TO_PROTO.items()}
EVENT_TYPE_TO_PROTO = {
    EventType.CREATED: resources_pb2.SIGNAL_EVENT_TYPE_CREATED,
    EventType.SCREENSHOT_UPDATED: resources_pb2.SIGNAL_EVENT_TYPE_SCREENSHOT_UPDATED,
    EventType.OUTCOME_UPDATED: resources_pb2.SIGNAL_EVENT_TYPE_OUTCOME_UPDATED,
    EventType.TRADINGVIEW_SESSION_UPDATED: resources_pb2.SIGNAL_EVENT_TYPE_TRADINGVIEW_SESSION_UPDATED,
}


PARSE_TO_PROTO = {
    "complete": resources_pb2.PARSE_STATUS_COMPLETE,
    "partial": resources_pb2.PARSE_STATUS_PARTIAL,
    "failed": resources_pb2.PARSE_STATUS_FAILED,
}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@overload
def timestamp(moment: datetime) -> timestamp_pb2.Timestamp: ...
@overload
def timestamp(moment: None) -> None: ...
def timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    return timestamp_pb2.Timestamp(**timestamp_fields(moment))


@overload
def timestamp_fields(moment: datetime) -> dict[str, int]: ...
@overload
def timestamp_fields(moment: None) -> None: ...
def timestamp_fields(moment: datetime | None) -> dict[str, int] | None:
    """A Timestamp's fields, computed with exact integer arithmetic in C instead of
    Timestamp.FromDatetime's Python; given to a message's constructor as they are, protobuf sets them in C,
    where a Timestamp object would cost a Python object and a copy (about 1 us each: a replay page holds
    thousands). A naive datetime is local time, as datetime.astimezone takes it."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.astimezone(UTC)
    seconds, micros = divmod((moment - _EPOCH) // _MICROSECOND, 1_000_000)
    return {"seconds": seconds, "nanos": micros * 1000}


def from_timestamp(message: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    return message.ToDatetime(tzinfo=UTC) if present else None


def struct(values: dict) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    json_format.ParseDict(values, message)
    return message


def signal_to_proto(row: SignalRow, url: str = "") -> resources_pb2.Signal:
    return resources_pb2.Signal(**signal_fields(row, url))


def signal_fields(row: SignalRow, url: str = "") -> dict[str, Any]:
    """The Signal message's fields, for its constructor or for a SignalEvent's (which then builds the
    signal in place, in C: a replay builds a thousand a page)."""
    signal, screenshot = row.signal, row.screenshot
    fields = {
        "signal_id": str(signal.id),
        "user_id": str(signal.user_id),
        "chart_id": signal.chart_id or "",
        "indicator": signal.indicator or "",
        "indicator_key": signal.indicator_key or "",
        "ticker": signal.ticker or "",
        "exchange": signal.exchange or "",
        "symbol": signal.symbol or "",
        "price": "" if signal.price is None else str(signal.price),
        "signal_type": signal.signal_type or "",
        "interval": signal.interval or "",
        "alert_time": timestamp_fields(signal.alert_time),
        "bar_time": timestamp_fields(signal.bar_time),
        "fired_at": timestamp_fields(signal.fired_at),
        "delayed_feed": signal.delayed_feed,
        "parse_status": PARSE_TO_PROTO.get(signal.parse_status, resources_pb2.PARSE_STATUS_UNSPECIFIED),
        "parse_problems": signal.parse_problems or (),
        "extra": struct(signal.extra) if signal.extra else None,
        "raw_text": signal.raw_body.decode("utf-8", errors="replace").replace("\x00", ""),
        "content_type": signal.content_type or "",
        "screenshot_status": SCREENSHOT_TO_PROTO[ScreenshotStatus(signal.screenshot_status)],
        "result": RESULT_TO_PROTO[SignalResult(signal.result)],
        "profit_loss": "" if signal.profit_loss is None else str(signal.profit_loss),
        "notes": signal.notes or "",
        "created_at": timestamp_fields(signal.created_at),
        "updated_at": timestamp_fields(signal.updated_at),
    }
    if screenshot is not None:
        fields["screenshot_object_key"] = screenshot.object_key or ""
        fields["screenshot_error"] = screenshot.error or ""
        if screenshot.status == ScreenshotStatus.COMPLETED:
            fields["screenshot_completed_at"] = timestamp_fields(screenshot.completed_at)
            fields["screenshot_url"] = url
    return fields


def user_to_proto(view: UserView) -> resources_pb2.User:
    user, config = view.user, view.config
    return resources_pb2.User(
        user_id=str(user.id),
        external_id=user.external_id or "",
        plan=PLAN_TO_PROTO[user.plan],
        webhook_enabled=user.webhook_enabled,
        default_chart_id=config.default_chart_id or "",
        ip_allowlist=list(config.ip_allowlist or ()),
        require_tradingview_client_certificate=config.require_tradingview_client_certificate,
        notification_preferences=struct(config.notification_preferences or {}),
        signals_quota=user.signals_quota,
        signals_used=user.signals_used,
        quota_reset_at=timestamp(user.quota_reset_at),
        tradingview_session=resources_pb2.TradingViewSession(
            configured=config.tv_session_ciphertext is not None,
            checked=config.tv_cookies_checked_at is not None,
            valid=bool(config.tv_cookies_valid) and config.tv_cookies_checked_at is not None,
            checked_at=timestamp(config.tv_cookies_checked_at),
            changed_at=timestamp(config.tv_cookies_changed_at),
        ),
        created_at=timestamp(user.created_at),
        updated_at=timestamp(user.updated_at),
    )


def session_state_to_proto(state: dict) -> resources_pb2.TradingViewSession:
    """A TRADINGVIEW_SESSION_UPDATED event's payload (signal_service.sessions.service.session_state)."""
    message = resources_pb2.TradingViewSession(
        configured=bool(state.get("configured")),
        checked=bool(state.get("checked")),
        valid=bool(state.get("valid")),
    )
    for name in ("checked_at", "changed_at"):
        if state.get(name):
            getattr(message, name).CopyFrom(timestamp(datetime.fromisoformat(state[name])))
    return message


def plan_from_proto(plan: resources_pb2.Plan.ValueType) -> str:
    return PLAN_FROM_PROTO.get(plan, "")


CHANNEL_TO_PROTO = {
    "telegram": resources_pb2.NOTIFICATION_CHANNEL_TELEGRAM,
    "discord": resources_pb2.NOTIFICATION_CHANNEL_DISCORD,
    "webhook": resources_pb2.NOTIFICATION_CHANNEL_WEBHOOK,
}
KIND_TO_PROTO = {
    "alert": resources_pb2.NOTIFICATION_KIND_ALERT,
    "photo": resources_pb2.NOTIFICATION_KIND_PHOTO,
    "outcome": resources_pb2.NOTIFICATION_KIND_OUTCOME,
}
DELIVERY_STATUS_TO_PROTO = {
    DeliveryStatus.PENDING: resources_pb2.DELIVERY_STATUS_PENDING,
    DeliveryStatus.SENDING: resources_pb2.DELIVERY_STATUS_SENDING,
    DeliveryStatus.DELIVERED: resources_pb2.DELIVERY_STATUS_DELIVERED,
    DeliveryStatus.SKIPPED: resources_pb2.DELIVERY_STATUS_SKIPPED,
    DeliveryStatus.FAILED: resources_pb2.DELIVERY_STATUS_FAILED,
    DeliveryStatus.DEAD: resources_pb2.DELIVERY_STATUS_DEAD,
}


def delivery_to_proto(delivery: NotificationDelivery) -> resources_pb2.NotificationDelivery:
    return resources_pb2.NotificationDelivery(
        signal_id=str(delivery.signal_id),
        channel=CHANNEL_TO_PROTO.get(delivery.channel, resources_pb2.NOTIFICATION_CHANNEL_UNSPECIFIED),
        kind=KIND_TO_PROTO.get(delivery.kind, resources_pb2.NOTIFICATION_KIND_UNSPECIFIED),
        status=DELIVERY_STATUS_TO_PROTO.get(
            DeliveryStatus(delivery.status), resources_pb2.DELIVERY_STATUS_UNSPECIFIED
        ),
        attempts=delivery.attempts,
        last_error=delivery.last_error or "",
        provider_message_id=delivery.provider_message_id or "",
        with_photo=delivery.with_photo,
        created_at=timestamp(delivery.created_at),
        updated_at=timestamp(delivery.updated_at),
        delivered_at=timestamp(delivery.delivered_at),
    )
