"""Hypothesis properties: the parser never raises, stays bounded, and inverts the standard format."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from signal_service.parsing import (
    ParsedAlert,
    ParseStatus,
    format_price,
    load_indicator_catalog,
    parse_alert,
    render_standard_alert,
)
from signal_service.parsing.values import parse_price

CATALOG = load_indicator_catalog()
RECEIVED_AT = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
INDICATOR_NAMES = [spec.name for spec in CATALOG.indicators]
DELAYED_SUFFIXES = ("_DL", "_DLY")

# Pieces of real alerts, glued at random: labels, values, emoji, JSON syntax, placeholders, separators.
FRAGMENTS = [
    "🚨 ",
    "📈",
    "💰",
    "⏱️",
    "🕒 ",
    "\n",
    "\r\n",
    " ",
    "\t",
    ":",
    "：",
    "=",
    ",",
    ".",
    "-",
    "−",
    "$",
    "@",
    "!",
    "Ticker:",
    "Precio: ",
    "Price:",
    "Señal: ",
    "Signal:",
    "Tipo:",
    "Indicador:",
    "Timeframe:",
    "Hora:",
    "Time: ",
    "Fecha:",
    "Zona:",
    "Nota:",
    "DI+:",
    "{",
    "}",
    "[",
    "]",
    '"',
    '"ticker"',
    '"price":',
    '"signal":',
    '"data":',
    '"strategy":',
    '"order":',
    '"action":',
    '"time":',
    "{{close}}",
    "{{ticker}}",
    "{{timenow}}",
    "{{strategy.order.action}}",
    "BINANCE:BTCUSDT",
    "BTCUSDT",
    "CME_MINI:ES1!",
    "NASDAQ_DLY:AAPL",
    "NYSE_DL:JPM",
    "Time now:",
    "Hora de la alerta: ",
    '"timenow":',
    '"bar_time":',
    "67,890.50",
    "67.890,50",
    "1.2e-5",
    "1e999999",
    "-37.63",
    "0.00001234",
    "9" * 40,
    "2026-11-27T14:30:00Z",
    "1795789800000",
    "27/11/2026 14:30",
    "14:30",
    "ADX DEF [APIDEVS]",
    "RSI PRO+",
    "Divergencia Alcista",
    "buy",
    "sell",
    "Crossing",
    "order buy @ 1 filled on ",
    ". New strategy position is ",
    "\x00",
    "\ufeff",
    "\ufffd",
    "**",
    "- ",
    "null",
    "true",
    "NaN",
]
alert_like_text = st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join)


def check_invariants(result: ParsedAlert, body: bytes) -> None:
    assert isinstance(result, ParsedAlert)
    assert not any(problem.startswith("internal_error") for problem in result.problems), result.problems
    assert result.alert_time.utcoffset() is not None
    assert result.alert_time.utcoffset().total_seconds() == 0
    assert result.price is None or (isinstance(result.price, Decimal) and result.price.is_finite())
    assert result.text == body.decode("utf-8", errors="replace").removeprefix("\ufeff").replace("\x00", "")
    json.dumps(result.extra, allow_nan=False)
    core_known = [result.ticker is not None, result.price is not None, result.signal_type is not None]
    if all(core_known):
        assert result.status is ParseStatus.COMPLETE
    elif any(core_known) or result.indicator is not None:
        assert result.status is ParseStatus.PARTIAL
    else:
        assert result.status is ParseStatus.FAILED
    if result.ticker is not None:
        assert result.symbol is not None
        assert result.ticker.endswith(result.symbol)
        assert (result.exchange is None) == (":" not in result.ticker)
    for field_value in (result.ticker, result.signal_type, result.interval, result.indicator):
        assert field_value is None or "{{" not in field_value
    for moment in (result.bar_time, result.fired_at):
        assert moment is None or moment.utcoffset() == timedelta(0)
    assert result.delayed_feed == (
        result.exchange is not None and result.exchange.upper().endswith(DELAYED_SUFFIXES)
    )
    assert result.indicator is None or result.indicator == " ".join(result.indicator.split())
    assert result.indicator_key is None or (
        result.indicator_key in INDICATOR_NAMES and result.indicator is not None
    )


@given(body=st.binary(max_size=4_096), content_type=st.sampled_from(["", "text/plain", "application/json"]))
def test_never_raises_on_any_bytes(body: bytes, content_type: str) -> None:
    result = parse_alert(body, content_type=content_type, received_at=RECEIVED_AT)
    check_invariants(result, body)


@given(text=st.text(max_size=2_000))
def test_never_raises_on_any_text(text: str) -> None:
    body = text.encode("utf-8", errors="surrogatepass")
    check_invariants(parse_alert(body, received_at=RECEIVED_AT), body)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    text=alert_like_text,
    content_type=st.sampled_from(["", "text/plain", "application/json"]),
    query=st.none()
    | st.fixed_dictionaries({"ticker": st.sampled_from(["BINANCE:ETHUSDT", "{{ticker}}", "", "a b"])}),
)
def test_never_raises_on_alert_like_text(text: str, content_type: str, query: dict[str, str] | None) -> None:
    body = text.encode()
    result = parse_alert(body, content_type=content_type, query=query, received_at=RECEIVED_AT)
    check_invariants(result, body)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "data",
                    "ticker",
                    "price",
                    "close",
                    "signal",
                    "action",
                    "strategy",
                    "order",
                    "time",
                    "interval",
                    "message",
                    "x",
                    "tp",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=40,
)


@given(document=json_values)
def test_never_raises_on_any_json(document: Any) -> None:
    body = json.dumps(document).encode()
    result = parse_alert(body, content_type="application/json", received_at=RECEIVED_AT)
    check_invariants(result, body)
    if not isinstance(document, dict | str):
        assert result.status is ParseStatus.FAILED


@given(depth=st.integers(min_value=1, max_value=20_000), opener=st.sampled_from(['{"data":', "[", '{"a":[']))
def test_nesting_of_any_depth_is_bounded(depth: int, opener: str) -> None:
    closer = {'{"data":': "}", "[": "]", '{"a":[': "]}"}[opener]
    body = (opener * depth + '"x"' + closer * depth).encode()
    check_invariants(parse_alert(body, received_at=RECEIVED_AT), body)


# ---- round trip of the standard format ----------------------------------------------------------------

words = st.from_regex(
    r"[A-Za-zÁÉÍÓÚáéíóúñÑ0-9]([A-Za-zÁÉÍÓÚáéíóúñÑ0-9 +.&()%/-]{0,24}[A-Za-z0-9)])?", fullmatch=True
)
prices = st.integers(min_value=0, max_value=10).flatmap(
    lambda places: st.decimals(
        min_value=Decimal("-1e9"),
        max_value=Decimal("1e12"),
        places=places,
        allow_nan=False,
        allow_infinity=False,
    )
)
tickers = st.builds(
    lambda exchange, symbol: f"{exchange}:{symbol}" if exchange else symbol,
    st.none() | st.from_regex(r"[A-Z][A-Z0-9_]{0,11}", fullmatch=True),
    st.from_regex(r"[A-Z0-9]{1,10}(1!|\.P)?", fullmatch=True),
)
intervals = st.sampled_from(
    ["1", "3", "5", "15", "30", "45", "60", "120", "240", "1D", "D", "1W", "W", "1M", "4H"]
)
alert_times = st.datetimes(
    min_value=datetime(2001, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC)
)
extra_lines = st.dictionaries(
    st.sampled_from(["Take Profit", "Stop Loss", "Nota", "Comentario", "Riesgo"]), words
)


@st.composite
def indicator_and_signal(draw: st.DrawFn) -> tuple[str | None, str | None]:
    indicator = draw(st.none() | st.sampled_from(INDICATOR_NAMES) | words)
    spec = CATALOG.indicator_named(indicator) if indicator else None
    signal_pool = list(spec.signal_types) if spec and spec.signal_types else []
    signal = draw(st.none() | (st.sampled_from(signal_pool) if signal_pool else words) | words)
    return indicator, signal


@given(
    named=indicator_and_signal(),
    ticker=st.none() | tickers,
    price=st.none() | prices,
    interval=st.none() | intervals,
    alert_time=st.none() | alert_times,
    extra=extra_lines,
    language=st.sampled_from(["es", "en"]),
    emoji=st.booleans(),
    grouped_price=st.booleans(),
)
def test_standard_format_round_trip(
    named: tuple[str | None, str | None],
    ticker: str | None,
    price: Decimal | None,
    interval: str | None,
    alert_time: datetime | None,
    extra: dict[str, str],
    language: str,
    emoji: bool,
    grouped_price: bool,
) -> None:
    indicator, signal_type = named
    assume(ticker is not None or price is not None or signal_type is not None)
    if indicator is not None and CATALOG.indicator_named(indicator) is None:
        # A made-up title must not name a catalog indicator in passing ("my RSI PRO alerts").
        assume(CATALOG.indicator_mentioned_in(indicator) is None)
    body = render_standard_alert(
        indicator=indicator,
        signal_type=signal_type,
        ticker=ticker,
        price=price,
        interval=interval,
        alert_time=alert_time,
        extra=extra,
        language=language,
        emoji=emoji,
        grouped_price=grouped_price,
    ).encode()

    result = parse_alert(body, received_at=RECEIVED_AT)

    spec = CATALOG.indicator_named(indicator) if indicator else None
    assert result.indicator == (" ".join(indicator.split()) if indicator else None)
    assert result.indicator_key == (spec.name if spec else None)
    assert result.signal_type == signal_type
    assert result.ticker == ticker
    assert result.price == price
    assert result.interval == interval
    assert result.alert_time == (alert_time or RECEIVED_AT)
    assert result.extra == extra
    expected_status = (
        ParseStatus.COMPLETE if None not in (ticker, price, signal_type) else ParseStatus.PARTIAL
    )
    assert result.status is expected_status


@given(
    ticker=tickers,
    price=prices,
    signal_type=words,
    interval=intervals,
    alert_time=alert_times,
    extra=st.dictionaries(
        st.sampled_from(["tp1", "sl", "leverage", "account", "risk_pct"]), words | st.integers()
    ),
    indicator=st.sampled_from(INDICATOR_NAMES),
)
def test_json_round_trip(
    ticker: str,
    price: Decimal,
    signal_type: str,
    interval: str,
    alert_time: datetime,
    extra: dict[str, Any],
    indicator: str,
) -> None:
    document = {
        "indicator": indicator,
        "ticker": ticker,
        "price": str(price),
        "signal": signal_type,
        "interval": interval,
        "time": alert_time.isoformat(),
        **extra,
    }
    result = parse_alert(
        json.dumps(document).encode(), content_type="application/json", received_at=RECEIVED_AT
    )
    assert result.indicator_key == indicator
    assert (result.indicator, result.ticker, result.price, result.signal_type, result.interval) == (
        indicator,
        ticker,
        price,
        signal_type,
        interval,
    )
    assert result.alert_time == alert_time
    assert result.extra == extra
    assert result.status is ParseStatus.COMPLETE


@given(price=prices, grouped=st.booleans())
def test_price_formatting_round_trip(price: Decimal, grouped: bool) -> None:
    assert parse_price(format_price(price, grouped=grouped)) == (price, None)


@given(price=prices)
def test_european_price_round_trip(price: Decimal) -> None:
    # A lone separator before exactly three digits is ambiguous and read the English way: "1.000" is one
    # and "0,001" is one (thousands comma). With a decimal part and grouping both present it is exact.
    exponent = price.as_tuple().exponent
    assume(exponent < 0 and (exponent != -3 or abs(price) >= 1000))
    european = format_price(price).replace(",", "_").replace(".", ",").replace("_", ".")
    assert parse_price(european) == (price, None)


# ---- the bar's time, the firing time and delayed feeds ------------------------------------------------

delayed_or_live_tickers = st.builds(
    lambda exchange, suffix, symbol: f"{exchange}{suffix}:{symbol}",
    st.from_regex(r"[A-Z][A-Z0-9]{0,9}", fullmatch=True),
    st.sampled_from(["", "_DL", "_DLY", "_dly", "_D", "_DLYX", "_MINI"]),
    st.from_regex(r"[A-Z0-9]{1,10}", fullmatch=True),
)


@given(ticker=delayed_or_live_tickers, price=prices, signal_type=words)
def test_delayed_feed_follows_the_exchange_suffix(ticker: str, price: Decimal, signal_type: str) -> None:
    body = json.dumps({"ticker": ticker, "price": str(price), "signal": signal_type}).encode()

    result = parse_alert(body, content_type="application/json", received_at=RECEIVED_AT)

    exchange = ticker.partition(":")[0]
    assert result.exchange == exchange
    assert result.delayed_feed is exchange.upper().endswith(DELAYED_SUFFIXES)


@given(
    bar_time=alert_times,
    fired_at=alert_times,
    keys=st.permutations(["ticker", "price", "signal", "time", "timenow"]),
    ticker=tickers,
    price=prices,
)
def test_json_time_and_timenow_are_kept_apart(
    bar_time: datetime, fired_at: datetime, keys: list[str], ticker: str, price: Decimal
) -> None:
    values = {
        "ticker": ticker,
        "price": str(price),
        "signal": "buy",
        "time": bar_time.isoformat(),
        "timenow": fired_at.isoformat(),
    }
    body = json.dumps({key: values[key] for key in keys}).encode()

    result = parse_alert(body, content_type="application/json", received_at=RECEIVED_AT)

    assert (result.bar_time, result.fired_at) == (bar_time, fired_at)
    # The alert time keeps its meaning: the first time spelling of the vocabulary ("time") wins.
    assert result.alert_time == bar_time
    assert result.extra == {}


@given(moment=alert_times, key=st.sampled_from(["time", "timestamp", "date", "fecha", "hora"]))
def test_a_time_alone_is_only_the_alert_time(moment: datetime, key: str) -> None:
    body = json.dumps({"ticker": "BINANCE:BTCUSDT", "price": "1", "signal": "buy", key: moment.isoformat()})

    result = parse_alert(body.encode(), content_type="application/json", received_at=RECEIVED_AT)

    assert result.alert_time == moment
    assert (result.bar_time, result.fired_at) == (None, None)


@given(moment=alert_times, key=st.sampled_from(["timenow", "time_now", "alert_time", "alertTime"]))
def test_timenow_alone_is_the_firing_and_the_alert_time(moment: datetime, key: str) -> None:
    body = json.dumps({"ticker": "BINANCE:BTCUSDT", "price": "1", "signal": "buy", key: moment.isoformat()})

    result = parse_alert(body.encode(), content_type="application/json", received_at=RECEIVED_AT)

    assert (result.alert_time, result.fired_at, result.bar_time) == (moment, moment, None)
    assert result.extra == {}


@given(
    bar_time=alert_times,
    fired_at=alert_times,
    fire_label=st.sampled_from(["Time now", "Timenow", "Hora de la alerta", "Alert time", "TIME NOW"]),
    fired_first=st.booleans(),
    language=st.sampled_from(["es", "en"]),
    emoji=st.booleans(),
    ticker=tickers,
)
def test_standard_format_time_and_time_now_are_kept_apart(
    bar_time: datetime,
    fired_at: datetime,
    fire_label: str,
    fired_first: bool,
    language: str,
    emoji: bool,
    ticker: str,
) -> None:
    rendered = render_standard_alert(
        indicator="ADX DEF [APIDEVS]",
        signal_type="Cruce Alcista",
        ticker=ticker,
        price=Decimal("1.5"),
        alert_time=bar_time,
        language=language,
        emoji=emoji,
    )
    fire_line = f"{fire_label}: {fired_at.isoformat()}"
    # Before or after the "Hora"/"Time" line; the indicator's title stays first.
    title, _, rest = rendered.partition("\n")
    body = f"{title}\n{fire_line}\n{rest}" if fired_first else f"{rendered}\n{fire_line}"

    result = parse_alert(body.encode(), received_at=RECEIVED_AT)

    assert (result.bar_time, result.fired_at) == (bar_time, fired_at)
    assert result.alert_time == (fired_at if fired_first else bar_time)
    assert result.extra == {}
    assert result.status is ParseStatus.COMPLETE


def test_a_json_number_beyond_decimals_range_is_invalid_json_not_a_crash() -> None:
    body = b"1.2e-59999999999999999999999999999999999999999"
    result = parse_alert(body, content_type="application/json", query=None, received_at=datetime.now(UTC))

    assert "json_invalid" in result.problems
    check_invariants(result, body)
