"""Write a signal's fields in the APIDevs standard alert format (the inverse of ``parse_alert``).

Used to show users the message to paste into TradingView, by demos, and by the round-trip tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

_LABELS = {
    "es": {
        "signal_type": "Señal",
        "ticker": "Ticker",
        "price": "Precio",
        "interval": "Timeframe",
        "time": "Hora",
    },
    "en": {
        "signal_type": "Signal",
        "ticker": "Ticker",
        "price": "Price",
        "interval": "Timeframe",
        "time": "Time",
    },
}
_EMOJI = {
    "indicator": "🚨",
    "signal_type": "📈",
    "ticker": "🪙",
    "price": "💰",
    "interval": "⏱️",
    "time": "🕒",
}


def render_standard_alert(
    *,
    indicator: str | None,
    signal_type: str | None,
    ticker: str | None,
    price: Decimal | None,
    interval: str | None = None,
    alert_time: datetime | None = None,
    extra: Mapping[str, str] | None = None,
    language: Literal["es", "en"] = "es",
    emoji: bool = True,
    grouped_price: bool = True,
) -> str:
    """The standard format: indicator on the first line, then ``label: value`` lines; ``None`` is left out."""
    labels = _LABELS[language]
    lines: list[str] = []

    def add(field_name: str, text: str) -> None:
        lines.append(f"{_EMOJI[field_name]} {text}" if emoji else text)

    if indicator is not None:
        add("indicator", indicator)
    if signal_type is not None:
        add("signal_type", f"{labels['signal_type']}: {signal_type}")
    if ticker is not None:
        add("ticker", f"{labels['ticker']}: {ticker}")
    if price is not None:
        add("price", f"{labels['price']}: {format_price(price, grouped=grouped_price)}")
    if interval is not None:
        add("interval", f"{labels['interval']}: {interval}")
    if alert_time is not None:
        moment = alert_time.astimezone(UTC).isoformat().replace("+00:00", "Z")
        add("time", f"{labels['time']}: {moment}")
    for label, value in (extra or {}).items():
        lines.append(f"{label}: {value}")
    return "\n".join(lines)


def format_price(price: Decimal, *, grouped: bool = True) -> str:
    """``$67,890.50`` (grouped) or ``67890.50``; exact digits, never through a float."""
    sign = "-" if price.is_signed() and price != 0 else ""
    digits = format(abs(price), ",f" if grouped else "f")
    return f"{sign}${digits}" if grouped else f"{sign}{digits}"
