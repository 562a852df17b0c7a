"""SubscribeSignals' outgoing messages: a page of events as the stream sends them.

Each message is built from plain fields in one constructor call (or in place in a batch's `events`), so
protobuf builds the nested signal and timestamps in C: a replay builds a thousand events a page, and
building each Signal, then copying it into its event and the event into its batch, was most of a page's
proto work (docs/perf/analysis.md, "Round 4: replay"). The fields come straight from the page's positional
records (signal_service.events.repository.REPLAY_PAGE_SQL, notifications.repository
.DELIVERIES_FOR_MESSAGES_SQL): no row objects, attribute lookups or datetimes in between, each signal's
fields built once a page however many of its events the page holds (docs/perf/scale.md, "Round 5 (branch
replay)").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from apidevs.alerts.v1 import resources_pb2
from signal_service.events.service import StoredEvent, format_cursor
from signal_service.models import EventType, ScreenshotStatus
from signal_service.proto_mapping import (
    CHANNEL_TO_PROTO,
    DELIVERY_STATUS_TO_PROTO,
    EVENT_TYPE_TO_PROTO,
    KIND_TO_PROTO,
    PARSE_TO_PROTO,
    RESULT_TO_PROTO,
    SCREENSHOT_TO_PROTO,
    session_state_to_proto,
    struct,
)

# A repeated message field's entry costs its tag and length prefix on top of the message.
REPEATED_ENTRY_OVERHEAD = 6

# Positions in REPLAY_PAGE_SQL's records of what is read before the whole record is unpacked.
_SIGNAL_ID = 4
_SCREENSHOT_STATUS = 29
_SCREENSHOT_KEY = 30
_SESSION_UPDATED = EventType.TRADINGVIEW_SESSION_UPDATED.value
_COMPLETED = ScreenshotStatus.COMPLETED.value


def timestamp_from_micros(micros: int) -> dict[str, int]:
    """A Timestamp's fields for microseconds since the epoch (signal_service.rows.epoch_micros)."""
    seconds, micros = divmod(micros, 1_000_000)
    return {"seconds": seconds, "nanos": micros * 1000}


def _optional_timestamp(micros: int | None) -> dict[str, int] | None:
    return None if micros is None else timestamp_from_micros(micros)


def page_signal_ids(page: Iterable[StoredEvent]) -> list[str]:
    """The ids of the signals the page's events show, each once, in the page's order."""
    return list(dict.fromkeys(record[_SIGNAL_ID] for record in page if record[_SIGNAL_ID] is not None))


def page_screenshot_keys(page: Iterable[StoredEvent]) -> list[str]:
    """The object keys of the COMPLETED screenshots the page's events show: the ones a message links."""
    return [
        record[_SCREENSHOT_KEY]
        for record in page
        if record[_SCREENSHOT_STATUS] == _COMPLETED and record[_SCREENSHOT_KEY]
    ]


def delivery_fields_by_signal(records: Iterable[Sequence[Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each signal's NotificationDelivery fields, oldest first, by signal id (as text)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for (
        signal_id,
        channel,
        kind,
        status,
        attempts,
        last_error,
        provider_message_id,
        with_photo,
        created_micros,
        updated_micros,
        delivered_micros,
    ) in records:
        found.setdefault(signal_id, []).append(
            {
                "signal_id": signal_id,
                "channel": CHANNEL_TO_PROTO.get(channel, resources_pb2.NOTIFICATION_CHANNEL_UNSPECIFIED),
                "kind": KIND_TO_PROTO.get(kind, resources_pb2.NOTIFICATION_KIND_UNSPECIFIED),
                "status": DELIVERY_STATUS_TO_PROTO.get(status, resources_pb2.DELIVERY_STATUS_UNSPECIFIED),
                "attempts": attempts,
                "last_error": last_error or "",
                "provider_message_id": provider_message_id or "",
                "with_photo": with_photo,
                "created_at": _optional_timestamp(created_micros),
                "updated_at": _optional_timestamp(updated_micros),
                "delivered_at": _optional_timestamp(delivered_micros),
            }
        )
    return found


def page_event_fields(
    page: Iterable[StoredEvent],
    *,
    user_id: str,
    urls: Mapping[str, str],
    deliveries: Mapping[str, list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """Each event's SignalEvent fields, in the page's order. `user_id` is the stream's user (every event
    of the stream is theirs, and so is every signal the page shows), `urls` the screenshot URLs by object
    key (none when the stream asked for none), `deliveries` each signal's (delivery_fields_by_signal)."""
    signals: dict[str, dict[str, Any]] = {}
    events: list[dict[str, Any]] = []
    for record in page:
        seq, event_type, occurred_micros, payload, signal_id = record[:5]
        fields: dict[str, Any] = {
            "cursor": format_cursor(seq),
            "type": EVENT_TYPE_TO_PROTO[event_type],
            "occurred_at": timestamp_from_micros(occurred_micros),
            "user_id": user_id,
        }
        if signal_id is not None:
            signal = signals.get(signal_id)
            if signal is None:
                signal = signals[signal_id] = _signal_fields(record, user_id, urls, deliveries)
            fields["signal"] = signal
        if event_type == _SESSION_UPDATED:
            fields["tradingview_session"] = session_state_to_proto(json.loads(payload) if payload else {})
        events.append(fields)
    return events


def _signal_fields(
    record: StoredEvent, user_id: str, urls: Mapping[str, str], deliveries: Mapping[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """The Signal's fields from its event's record: what proto_mapping.signal_fields gives for a SignalRow
    (with its deliveries), field for field."""
    (
        _seq,
        _type,
        _occurred,
        _payload,
        signal_id,
        chart_id,
        indicator,
        indicator_key,
        ticker,
        exchange,
        symbol,
        price,
        signal_type,
        interval,
        alert_micros,
        bar_micros,
        fired_micros,
        delayed_feed,
        parse_status,
        parse_problems,
        extra,
        raw_body,
        content_type,
        screenshot_status,
        result,
        profit_loss,
        notes,
        created_micros,
        updated_micros,
        shot_status,
        shot_key,
        shot_error,
        shot_completed_micros,
    ) = record
    fields = {
        "signal_id": signal_id,
        "user_id": user_id,
        "chart_id": chart_id or "",
        "indicator": indicator or "",
        "indicator_key": indicator_key or "",
        "ticker": ticker or "",
        "exchange": exchange or "",
        "symbol": symbol or "",
        "price": "" if price is None else str(price),
        "signal_type": signal_type or "",
        "interval": interval or "",
        "alert_time": timestamp_from_micros(alert_micros),
        "bar_time": _optional_timestamp(bar_micros),
        "fired_at": _optional_timestamp(fired_micros),
        "delayed_feed": delayed_feed,
        "parse_status": PARSE_TO_PROTO.get(parse_status, resources_pb2.PARSE_STATUS_UNSPECIFIED),
        "parse_problems": json.loads(parse_problems) if parse_problems else (),
        "extra": struct(json.loads(extra)) if extra else None,
        "raw_text": raw_body.decode("utf-8", errors="replace").replace("\x00", ""),
        "content_type": content_type or "",
        "screenshot_status": SCREENSHOT_TO_PROTO[screenshot_status],
        "result": RESULT_TO_PROTO[result],
        "profit_loss": "" if profit_loss is None else str(profit_loss),
        "notes": notes or "",
        "created_at": timestamp_from_micros(created_micros),
        "updated_at": timestamp_from_micros(updated_micros),
        "deliveries": deliveries.get(signal_id, ()),
    }
    if shot_status is not None:
        fields["screenshot_object_key"] = shot_key or ""
        fields["screenshot_error"] = shot_error or ""
        if shot_status == _COMPLETED:
            fields["screenshot_completed_at"] = _optional_timestamp(shot_completed_micros)
            fields["screenshot_url"] = urls.get(shot_key or "", "")
    return fields


def event_messages(
    events: list[dict[str, Any]], *, per_message: int, max_bytes: int
) -> list[resources_pb2.SignalEvent]:
    """The events (their fields) in order: one per message when `per_message` is 0, else up to
    `per_message` of them in each message's SignalEvent.events, each message also ending before it would
    grow past `max_bytes` (but carrying at least one event). A batch's cursor is its last event's."""
    if not per_message:
        return [resources_pb2.SignalEvent(**fields) for fields in events]
    messages: list[resources_pb2.SignalEvent] = []
    carrier = resources_pb2.SignalEvent()
    used = 0
    for fields in events:
        size = carrier.events.add(**fields).ByteSize() + REPEATED_ENTRY_OVERHEAD
        if len(carrier.events) > 1 and (len(carrier.events) > per_message or used + size > max_bytes):
            del carrier.events[-1]
            messages.append(_closed(carrier))
            carrier = resources_pb2.SignalEvent()
            carrier.events.add(**fields)
            used = 0
        used += size
    if carrier.events:
        messages.append(_closed(carrier))
    return messages


def _closed(carrier: resources_pb2.SignalEvent) -> resources_pb2.SignalEvent:
    carrier.cursor = carrier.events[-1].cursor
    return carrier
