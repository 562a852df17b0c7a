"""What a notification says, for each channel, within each channel's limits.

Everything in it comes from the trader's alert or the platform, so it is escaped for Telegram's HTML and
cut to fit: a Telegram caption holds 1,024 characters and a message 4,096; a Discord embed's title 256,
its description 4,096. Cuts happen on the raw values, before escaping, so an entity is never split.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from typing import Any

TELEGRAM_CAPTION_LIMIT = 1_024
TELEGRAM_TEXT_LIMIT = 4_096
DISCORD_TITLE_LIMIT = 256
DISCORD_DESCRIPTION_LIMIT = 4_096
_FIELD_LIMIT = 120
_NOTES_MIN = 20
_WIN, _LOSS = 0x26A69A, 0xEF5350


@dataclass(frozen=True)
class Notice:
    signal_id: str
    indicator: str
    signal_type: str
    ticker: str
    price: str
    interval: str
    alert_time: datetime | None
    result: str = ""
    profit_loss: str = ""
    notes: str = ""


def _cut(value: str, limit: int) -> str:
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: max(0, limit - 1)] + "…"


def _lines(notice: Notice) -> list[tuple[str, str]]:
    when = notice.alert_time.strftime("%Y-%m-%d %H:%M UTC") if notice.alert_time else ""
    rows = [
        ("📈", notice.signal_type),
        ("🪙", notice.ticker),
        ("💰", notice.price),
        ("⏱️", notice.interval),
        ("🕒", when),
    ]
    return [(icon, _cut(value, _FIELD_LIMIT)) for icon, value in rows if value]


def _outcome(notice: Notice) -> str:
    if not notice.result:
        return ""
    mark = {"win": "✅", "loss": "❌"}.get(notice.result.lower(), "➖")
    pnl = f" · P/L {_cut(notice.profit_loss, 40)}" if notice.profit_loss else ""
    return f"{mark} Result: {notice.result.upper()}{pnl}"


def telegram_text(notice: Notice, *, limit: int) -> str:
    """The HTML message (or caption, with ``limit=TELEGRAM_CAPTION_LIMIT``)."""
    parts = [f"🚨 <b>{html.escape(_cut(notice.indicator or 'Alert', _FIELD_LIMIT))}</b>"]
    parts += [f"{icon} {html.escape(value)}" for icon, value in _lines(notice)]
    outcome = _outcome(notice)
    if outcome:
        parts.append(html.escape(outcome))
    text = "\n".join(parts)
    if notice.notes:
        room = limit - len(text) - 2
        if room >= _NOTES_MIN:
            notes = _cut(notice.notes, room)
            while len(html.escape(notes)) > room:
                notes = _cut(notes, len(notes) - 8)
            text += "\n\n" + html.escape(notes)
    return text[:limit]


def discord_embed(notice: Notice) -> dict[str, Any]:
    description = "\n".join(f"{icon} {value}" for icon, value in _lines(notice))
    outcome = _outcome(notice)
    if outcome:
        description += "\n" + outcome
    if notice.notes:
        description += "\n\n" + notice.notes
    embed: dict[str, Any] = {
        "title": _cut(f"🚨 {notice.indicator or 'Alert'}", DISCORD_TITLE_LIMIT),
        "description": _cut_keep_lines(description, DISCORD_DESCRIPTION_LIMIT),
        "footer": {"text": f"signal {notice.signal_id}"},
    }
    if notice.result.lower() in ("win", "loss"):
        embed["color"] = _WIN if notice.result.lower() == "win" else _LOSS
    if notice.alert_time:
        embed["timestamp"] = notice.alert_time.isoformat()
    return embed


def _cut_keep_lines(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def webhook_event(notice: Notice, kind: str, screenshot_url: str) -> dict[str, Any]:
    """The JSON body of a signed webhook: ``{"type": "signal.<kind>", "data": {...}}``."""
    return {
        "type": f"signal.{kind}",
        "data": {
            "signal_id": notice.signal_id,
            "indicator": notice.indicator,
            "signal_type": notice.signal_type,
            "ticker": notice.ticker,
            "price": notice.price,
            "interval": notice.interval,
            "alert_time": notice.alert_time.isoformat() if notice.alert_time else None,
            "result": notice.result or None,
            "profit_loss": notice.profit_loss or None,
            "screenshot_url": screenshot_url or None,
        },
    }
