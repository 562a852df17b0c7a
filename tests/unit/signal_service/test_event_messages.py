"""SubscribeSignals' outgoing messages built from plain fields: batches by count and by bytes, every event
once and in order; timestamps as fields, exactly what Timestamp.FromDatetime gives."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from apidevs.alerts.v1 import resources_pb2
from signal_service.event_messages import REPEATED_ENTRY_OVERHEAD, event_messages
from signal_service.proto_mapping import timestamp_fields


def fields(seq: int, text_bytes: int = 10) -> dict[str, object]:
    return {
        "cursor": str(seq),
        "type": resources_pb2.SIGNAL_EVENT_TYPE_CREATED,
        "occurred_at": {"seconds": 1_700_000_000 + seq, "nanos": 5000},
        "user_id": "u",
        "signal": {"signal_id": f"s{seq}", "raw_text": "x" * text_bytes, "created_at": {"seconds": seq}},
    }


def cursors(message: resources_pb2.SignalEvent) -> list[str]:
    return [event.cursor for event in message.events]


def test_one_event_per_message_unless_batches_are_asked_for() -> None:
    messages = event_messages([fields(1), fields(2)], per_message=0, max_bytes=1 << 20)
    assert [message.cursor for message in messages] == ["1", "2"]
    assert messages[1] == resources_pb2.SignalEvent(
        cursor="2",
        type=resources_pb2.SIGNAL_EVENT_TYPE_CREATED,
        occurred_at=timestamp_pb2.Timestamp(seconds=1_700_000_002, nanos=5000),
        user_id="u",
        signal=resources_pb2.Signal(
            signal_id="s2", raw_text="x" * 10, created_at=timestamp_pb2.Timestamp(seconds=2)
        ),
    )
    assert not any(message.events for message in messages)


def test_batches_hold_up_to_the_count_and_carry_their_last_cursor() -> None:
    messages = event_messages([fields(seq) for seq in range(1, 6)], per_message=2, max_bytes=1 << 20)
    assert [cursors(message) for message in messages] == [["1", "2"], ["3", "4"], ["5"]]
    assert [message.cursor for message in messages] == ["2", "4", "5"]
    assert not any(message.HasField("signal") or message.type or message.user_id for message in messages)


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=40),
    per_message=st.integers(min_value=1, max_value=8),
    max_bytes=st.integers(min_value=500, max_value=8000),
)
def test_batches_end_before_the_byte_budget_and_lose_nothing(
    sizes: list[int], per_message: int, max_bytes: int
) -> None:
    events = [fields(seq, size) for seq, size in enumerate(sizes, start=1)]
    messages = event_messages(events, per_message=per_message, max_bytes=max_bytes)
    assert [cursor for message in messages for cursor in cursors(message)] == [
        str(seq) for seq, _ in enumerate(sizes, 1)
    ]
    for message in messages:
        assert 1 <= len(message.events) <= per_message
        used = sum(event.ByteSize() + REPEATED_ENTRY_OVERHEAD for event in message.events)
        # Over the budget only as a message's only event.
        assert used <= max_bytes or len(message.events) == 1
    for message, following in itertools.pairwise(messages):
        if len(message.events) < per_message:
            # Ended early: the next event would not have fitted.
            used = sum(event.ByteSize() + REPEATED_ENTRY_OVERHEAD for event in message.events)
            assert used + following.events[0].ByteSize() + REPEATED_ENTRY_OVERHEAD > max_bytes


@given(
    st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
        ),
    )
)
def test_timestamp_fields_are_what_from_datetime_gives(moment: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(moment)
    assert timestamp_pb2.Timestamp(**timestamp_fields(moment)) == expected
