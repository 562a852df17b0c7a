"""Single-value readers: prices, times, tickers, intervals."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from signal_service.parsing.values import parse_interval, parse_price, parse_time, split_ticker


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("$67,890.50", "67890.50"),
        ("67890.5", "67890.5"),
        ("67.890,50", "67890.50"),
        ("67 890,50", "67890.50"),
        ("1'234.5", "1234.5"),
        ("1.2e-5", "0.000012"),
        ("1.2E+3", "1200"),
        ("0.00001234", "0.00001234"),
        ("-37.63", "-37.63"),
        ("−2.5", "-2.5"),
        ("+3", "3"),
        ("-$1,234.50", "-1234.50"),
        ("$-12", "-12"),
        ("67,890", "67890"),
        ("1,234,567.891", "1234567.891"),
        ("1.234.567", "1234567"),
        ("0,5", "0.5"),
        ("67890,5", "67890.5"),
        ("2,654.315", "2654.315"),
        ("USD 100", "100"),
        ("100 USDT", "100"),
        ("€ 58,12", "58.12"),
        (".5", "0.5"),
    ],
)
def test_price_is_read_exactly(written: str, expected: str) -> None:
    price, problem = parse_price(written)
    assert problem is None
    assert price == Decimal(expected)
    assert isinstance(price, Decimal)


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("{{close}}", "placeholder:{{close}}"),
        ("", "price_missing"),
        ("abc", "price_unparseable"),
        ("NaN", "price_unparseable"),
        ("Infinity", "price_unparseable"),
        ("1e999999", "price_unparseable"),
        ("1.2.3,4", "price_unparseable"),
        ("1,23,4", "price_unparseable"),
        ("12-34", "price_unparseable"),
        ("9" * 100, "price_unparseable"),
    ],
)
def test_price_that_is_not_one_is_refused(written: str, problem: str) -> None:
    assert parse_price(written) == (None, problem)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2026-11-27T14:30:00Z", datetime(2026, 11, 27, 14, 30, tzinfo=UTC)),
        ("2026-11-27T14:30:00.123Z", datetime(2026, 11, 27, 14, 30, 0, 123000, tzinfo=UTC)),
        ("2026-11-27T09:30:00-05:00", datetime(2026, 11, 27, 14, 30, tzinfo=UTC)),
        ("2026-11-27 14:30:00", datetime(2026, 11, 27, 14, 30, tzinfo=UTC)),
        ("2026-11-27 14:30:00 UTC", datetime(2026, 11, 27, 14, 30, tzinfo=UTC)),
        ("2026-11-27", datetime(2026, 11, 27, tzinfo=UTC)),
        ("1795789800", datetime(2026, 11, 27, 14, 30, tzinfo=UTC)),
        ("1795789800000", datetime(2026, 11, 27, 14, 30, tzinfo=UTC)),
        (1795789800, datetime(2026, 11, 27, 14, 30, tzinfo=UTC)),
        (Decimal("1795789800.5"), datetime(2026, 11, 27, 14, 30, 0, 500000, tzinfo=UTC)),
        ("27/11/2026 14:30", datetime(2026, 11, 27, 14, 30, tzinfo=UTC)),
        ("27.11.2026", datetime(2026, 11, 27, tzinfo=UTC)),
    ],
)
def test_time_is_read_as_utc(written: str | int | Decimal, expected: datetime) -> None:
    moment, problem = parse_time(written)
    assert problem is None
    assert moment == expected
    assert moment is not None
    assert moment.tzinfo is UTC


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("14:30", "time_without_date"),
        ("yesterday", "time_unparseable"),
        ("{{timenow}}", "placeholder:{{timenow}}"),
        ("1900-01-01T00:00:00Z", "time_out_of_range"),
        ("99999999999999999", "time_out_of_range"),
        ("31/02/2026", "time_unparseable"),
        (True, "time_unparseable"),
    ],
)
def test_time_that_is_not_one_is_refused(written: str | bool, problem: str) -> None:
    assert parse_time(written) == (None, problem)


@pytest.mark.parametrize(
    ("written", "exchange", "symbol"),
    [
        ("BINANCE:BTCUSDT", "BINANCE", "BTCUSDT"),
        ("BTCUSDT", None, "BTCUSDT"),
        ("NASDAQ_DLY:AAPL", "NASDAQ_DLY", "AAPL"),
        ("CME_MINI:ES1!", "CME_MINI", "ES1!"),
        ("BYBIT:BTCUSDT.P", "BYBIT", "BTCUSDT.P"),
        ("TVC:US10Y", "TVC", "US10Y"),
        ("BMV:GFNORTEO", "BMV", "GFNORTEO"),
    ],
)
def test_ticker_splits_into_exchange_and_symbol(written: str, exchange: str | None, symbol: str) -> None:
    assert split_ticker(written) == (written, exchange, symbol, None)


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("", "ticker_missing"),
        ("{{ticker}}", "placeholder:{{ticker}}"),
        ("BTC USDT", "ticker_invalid"),
        ("A:B:C", "ticker_invalid"),
        ("X" * 100, "ticker_invalid"),
    ],
)
def test_ticker_that_is_not_one_is_refused(written: str, problem: str) -> None:
    assert split_ticker(written) == (None, None, None, problem)


@pytest.mark.parametrize("written", ["15", "60", "240", "1D", "4H", "1W", "1M", "D", "W", "30S", "15m"])
def test_interval_is_kept_as_written(written: str) -> None:
    assert parse_interval(written) == (written, None)


@pytest.mark.parametrize(
    ("written", "problem"),
    [("{{interval}}", "placeholder:{{interval}}"), ("every now and then", "interval_unrecognised")],
)
def test_interval_that_is_not_one_is_refused(written: str, problem: str) -> None:
    assert parse_interval(written) == (None, problem)


@pytest.mark.parametrize("number", ["1e999999", "-1e-999999", "1" + "0" * 5000])
def test_json_prices_beyond_any_real_price_are_unparseable(number: str) -> None:
    from datetime import UTC, datetime

    from signal_service.parsing import parse_alert

    parsed = parse_alert(
        f'{{"ticker": "BINANCE:BTCUSDT", "price": {number}}}'.encode(),
        content_type="application/json",
        received_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert parsed.price is None
    assert "price_unparseable" in parsed.problems
