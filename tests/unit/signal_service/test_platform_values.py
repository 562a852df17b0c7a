"""Property tests for the platform API's small parsers: event cursors and profit/loss decimals."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.errors import InvalidArgumentError
from signal_service.events.service import format_cursor, listener_dsn, parse_cursor
from signal_service.signals.service import parse_profit_loss


@given(st.integers(min_value=0, max_value=10**18 - 1))
def test_every_cursor_we_issue_parses_back(seq: int) -> None:
    assert parse_cursor(format_cursor(seq)) == seq


@given(st.one_of(st.text(max_size=30), st.from_regex(r"\A[0-9]{1,20}\Z")))
def test_any_text_is_a_cursor_or_invalid_argument(text: str) -> None:
    issued_by_us = text.isascii() and text.isdigit() and len(text) <= 18
    if text and not issued_by_us:
        with pytest.raises(InvalidArgumentError) as caught:
            parse_cursor(text)
        assert caught.value.reason == "INVALID_CURSOR"
    else:
        assert parse_cursor(text) == (int(text) if text else None)


def test_empty_cursor_means_from_now_on() -> None:
    assert parse_cursor("") is None


@pytest.mark.parametrize("text", ["-1", "+1", " 1", "1.0", "١", "1" * 19, "0x10"])
def test_cursors_we_never_issue_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgumentError):
        parse_cursor(text)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-(10**12), max_value=10**12))
def test_profit_loss_keeps_the_exact_decimal(amount: Decimal) -> None:
    assert parse_profit_loss(str(amount)) == amount
    assert str(parse_profit_loss(str(amount))) == str(amount)


@given(st.one_of(st.text(max_size=40), st.from_regex(r"\A-?[0-9]{0,40}(\.[0-9]{0,40})?(e-?[0-9]{1,3})?\Z")))
def test_any_profit_loss_text_is_a_decimal_or_invalid_argument(text: str) -> None:
    try:
        parsed = parse_profit_loss(text)
    except InvalidArgumentError as error:
        refusal = error.reason
    else:
        refusal = ""
        assert (parsed is None) == (text.strip() == "")
        assert parsed is None or (parsed.is_finite() and parsed == Decimal(text.strip()))
    assert refusal in ("", "INVALID_PROFIT_LOSS")


def test_listener_dsn_is_the_engine_url_without_the_driver() -> None:
    assert listener_dsn("postgresql+asyncpg://alerts:s3cr%40t@db:5432/alerts") == (
        "postgresql://alerts:s3cr%40t@db:5432/alerts"
    )
    # The embedded server's socket directory travels percent-encoded; asyncpg decodes query values.
    assert listener_dsn("postgresql+asyncpg://postgres@/alerts?host=/tmp/pg") == (
        "postgresql://postgres@/alerts?host=%2Ftmp%2Fpg"
    )
