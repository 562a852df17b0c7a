"""GetObjectUrls' expiry fields, computed by integer arithmetic: exactly what Timestamp.FromDatetime gives."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from storage_service.servicer import timestamp_fields


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)))
def test_timestamp_fields_are_what_from_datetime_gives(moment: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(moment)
    assert timestamp_pb2.Timestamp(**timestamp_fields(moment)) == expected


def test_no_expiry_is_no_field() -> None:
    assert timestamp_fields(None) is None
