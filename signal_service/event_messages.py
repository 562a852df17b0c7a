"""SubscribeSignals' outgoing messages: a page of events as the stream sends them.

Each message is built from plain fields in one constructor call (or in place in a batch's `events`), so
protobuf builds the nested signal and timestamps in C: a replay builds a thousand events a page, and
building each Signal, then copying it into its event and the event into its batch, was most of a page's
proto work (docs/perf/analysis.md, "Round 4: replay").
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from apidevs.alerts.v1 import resources_pb2
from signal_service.events.service import StoredEvent, format_cursor
from signal_service.models import EventType
from signal_service.proto_mapping import EVENT_TYPE_TO_PROTO, session_state_to_proto, timestamp_fields

# A repeated message field's entry costs its tag and length prefix on top of the message.
REPEATED_ENTRY_OVERHEAD = 6


def event_fields(
    stored: StoredEvent, user_id: str, signals: Mapping[uuid.UUID, dict[str, Any]]
) -> dict[str, Any]:
    """One SignalEvent's fields; `signals` holds the page's signals' fields by id, `user_id` is the
    stream's user (every event of the stream is theirs)."""
    event = stored.event
    fields: dict[str, Any] = {
        "cursor": format_cursor(event.seq),
        "type": EVENT_TYPE_TO_PROTO[EventType(event.type)],
        "occurred_at": timestamp_fields(event.created_at),
        "user_id": user_id,
    }
    if stored.row is not None:
        fields["signal"] = signals[stored.row.signal.id]
    if event.type == EventType.TRADINGVIEW_SESSION_UPDATED:
        fields["tradingview_session"] = session_state_to_proto(event.payload or {})
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
