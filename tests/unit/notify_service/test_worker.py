"""The notify job's pure parts: the retry backoff and the notice."""

from __future__ import annotations

from datetime import UTC, datetime

from apidevs.alerts.v1 import resources_pb2
from notify_service.worker import notice_of


def test_the_notice_carries_the_outcome() -> None:
    signal = resources_pb2.Signal(
        signal_id="s1",
        indicator="ADX DEF",
        ticker="BINANCE:BTCUSDT",
        price="67890.50",
        result=resources_pb2.SIGNAL_RESULT_WIN,
        profit_loss="12.50",
    )
    signal.alert_time.FromDatetime(datetime(2026, 11, 27, 14, 30, tzinfo=UTC))
    notice = notice_of(signal)
    assert (notice.result, notice.profit_loss, notice.price) == ("win", "12.50", "67890.50")
    assert notice.alert_time == datetime(2026, 11, 27, 14, 30, tzinfo=UTC)
    assert notice_of(resources_pb2.Signal(signal_id="s2")).result == ""
