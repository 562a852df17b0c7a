"""ListSignals' statement names only the filters given: each combination is its own prepared statement,
whose plan can use that filter's index, rather than one statement comparing every column with a
parameter that may be NULL (whose generic plan could use none of them)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from signal_service.signals.repository import SignalFilter, page_statement

USER = uuid.UUID("00000000-0000-0000-0000-000000000001")


def test_no_filter_is_the_users_newest_signals() -> None:
    text, arguments = page_statement(SignalFilter(user_id=USER), after=None, limit=21)
    assert "s.user_id = $1" in text
    assert "AND" not in text
    assert text.endswith("ORDER BY s.created_at DESC, s.id DESC LIMIT $2::int")
    assert arguments == [USER, 21]


def test_filters_and_the_page_token_are_numbered_in_order() -> None:
    after = datetime(2026, 1, 2, tzinfo=UTC)
    before = datetime(2026, 2, 3, tzinfo=UTC)
    last = (datetime(2026, 1, 20, tzinfo=UTC), uuid.UUID(int=7))
    where = SignalFilter(
        user_id=USER, ticker="BINANCE:BTCUSDT", result="win", created_after=after, created_before=before
    )
    text, arguments = page_statement(where, after=last, limit=11)
    assert "AND s.ticker = $2::text" in text
    assert "AND s.result = $3::text" in text
    assert "AND s.created_at > $4::timestamptz" in text
    assert "AND s.created_at < $5::timestamptz" in text
    assert "AND (s.created_at, s.id) < ($6::timestamptz, $7::uuid)" in text
    assert text.count("AND") == 5
    assert arguments == [USER, "BINANCE:BTCUSDT", "win", after, before, *last, 11]
