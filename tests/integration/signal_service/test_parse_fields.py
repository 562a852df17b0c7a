"""What the parser reads beyond the classic fields is stored: the indicator as written beside the
catalog's key, TradingView's bar and fire times, delayed feeds; the indicator filter matches the key."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2
from tests.support import create_user, ingest_request


def _line_alert(indicator: str, ticker: str = "BINANCE:BTCUSDT", price: str = "67,890.50") -> bytes:
    return (
        f"🚨 {indicator}\n📈 Señal: Divergencia Alcista\n🪙 Ticker: {ticker}\n💰 Precio: ${price}\n"
        "⏱️ Timeframe: 15\n"
    ).encode()


async def _stored(signals, token: str, body: bytes, **fields) -> resources_pb2.Signal:
    answer = await signals.IngestWebhook(ingest_request(token, body, **fields))
    return await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=answer.signal_id))


async def _listed(signals, user_id: str, indicator: str) -> set[str]:
    page = await signals.ListSignals(
        signal_service_pb2.ListSignalsRequest(user_id=user_id, indicator=indicator)
    )
    return {signal.signal_id for signal in page.signals}


async def test_an_indicator_the_catalog_does_not_know_is_stored_as_named_without_a_key(
    signals, users
) -> None:
    created = await create_user(users)
    signal = await _stored(signals, created.webhook_token, _line_alert("RSI PRO [APIDEVS]"))
    assert signal.indicator == "RSI PRO [APIDEVS]"
    assert signal.indicator_key == ""


async def test_a_spelling_of_a_catalog_indicator_is_stored_as_written_with_the_catalogs_key(
    signals, users
) -> None:
    created = await create_user(users)
    signal = await _stored(signals, created.webhook_token, _line_alert("adx def"))
    assert signal.indicator == "adx def"
    assert signal.indicator_key == "ADX DEF [APIDEVS]"


async def test_the_indicator_filter_finds_every_spelling_of_a_catalog_indicator(signals, users) -> None:
    created = await create_user(users)
    user_id, token = created.user.user_id, created.webhook_token
    canonical = await _stored(signals, token, _line_alert("ADX DEF [APIDEVS]", price="1"))
    spelled = await _stored(signals, token, _line_alert("adx def", price="2"))
    unknown = await _stored(signals, token, _line_alert("RSI PRO [APIDEVS]", price="3"))
    other = await _stored(signals, token, _line_alert("RSI PRO+ [APIDEVS]", price="4"))
    adx = {canonical.signal_id, spelled.signal_id}

    for written in ("ADX DEF [APIDEVS]", "adx def", "ADX  Definitivo", "adx def apidevs"):
        assert await _listed(signals, user_id, written) == adx, written
    # A name the catalog does not know matches only what was stored under it, and is no spelling of the
    # catalog indicator it resembles.
    assert await _listed(signals, user_id, "RSI PRO [APIDEVS]") == {unknown.signal_id}
    assert await _listed(signals, user_id, "RSI PRO+") == {other.signal_id}
    assert await _listed(signals, user_id, "rsi pro [apidevs]") == set()


async def test_a_json_alert_with_time_and_timenow_stores_the_bar_time_and_the_firing(signals, users) -> None:
    created = await create_user(users)
    body = json.dumps(
        {
            "ticker": "BINANCE:ETHUSDT",
            "price": "3456.78",
            "signal": "Buy",
            "interval": "15",
            "time": "2026-11-27T14:30:00Z",
            "timenow": "2026-11-27T14:44:59Z",
        }
    ).encode()
    signal = await _stored(signals, created.webhook_token, body, content_type="application/json")
    assert signal.bar_time.ToDatetime(tzinfo=UTC) == datetime(2026, 11, 27, 14, 30, tzinfo=UTC)
    assert signal.fired_at.ToDatetime(tzinfo=UTC) == datetime(2026, 11, 27, 14, 44, 59, tzinfo=UTC)
    assert not signal.delayed_feed


async def test_a_time_alone_is_neither_the_bar_time_nor_the_firing(signals, users) -> None:
    created = await create_user(users)
    body = json.dumps({"ticker": "BINANCE:ETHUSDT", "time": "2026-11-27T14:30:00Z"}).encode()
    signal = await _stored(signals, created.webhook_token, body, content_type="application/json")
    assert signal.alert_time.ToDatetime(tzinfo=UTC) == datetime(2026, 11, 27, 14, 30, tzinfo=UTC)
    assert not signal.HasField("bar_time")
    assert not signal.HasField("fired_at")


async def test_a_delayed_feed_is_flagged(signals, users) -> None:
    created = await create_user(users)
    delayed = await _stored(signals, created.webhook_token, _line_alert("ADX DEF", ticker="NASDAQ_DLY:AAPL"))
    live = await _stored(signals, created.webhook_token, _line_alert("ADX DEF", ticker="NASDAQ:AAPL"))
    assert delayed.ticker == "NASDAQ_DLY:AAPL"
    assert delayed.delayed_feed
    assert not live.delayed_feed
