"""Notifications fit every channel's limits and never let an alert's text become markup."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from notify_service.render import (
    DISCORD_DESCRIPTION_LIMIT,
    DISCORD_TITLE_LIMIT,
    TELEGRAM_CAPTION_LIMIT,
    TELEGRAM_TEXT_LIMIT,
    Notice,
    discord_embed,
    telegram_text,
)

ALERT = Notice(
    signal_id="s-1",
    indicator="ADX DEF [APIDEVS]",
    signal_type="Divergencia Alcista",
    ticker="BINANCE:BTCUSDT",
    price="67890.50",
    interval="15",
    alert_time=datetime(2026, 11, 27, 14, 30, tzinfo=UTC),
)

notices = st.builds(
    Notice,
    signal_id=st.uuids().map(str),
    indicator=st.text(max_size=3_000),
    signal_type=st.text(max_size=3_000),
    ticker=st.text(max_size=3_000),
    price=st.text(max_size=100),
    interval=st.text(max_size=100),
    alert_time=st.none() | st.datetimes(timezones=st.just(UTC)),
    result=st.sampled_from(["", "win", "loss", "skip"]),
    profit_loss=st.text(max_size=200),
    notes=st.text(max_size=10_000),
)


def test_the_standard_alert_reads_like_the_bot_sent_it() -> None:
    assert telegram_text(ALERT, limit=TELEGRAM_CAPTION_LIMIT) == (
        "🚨 <b>ADX DEF [APIDEVS]</b>\n📈 Divergencia Alcista\n🪙 BINANCE:BTCUSDT\n💰 67890.50\n⏱️ 15\n"
        "🕒 2026-11-27 14:30 UTC"
    )


def test_the_outcome_is_appended() -> None:
    marked = Notice(**{**ALERT.__dict__, "result": "win", "profit_loss": "+3.2%"})

    assert telegram_text(marked, limit=TELEGRAM_TEXT_LIMIT).endswith("\n✅ Result: WIN · P/L +3.2%")


@given(notices)
def test_telegram_texts_fit_and_carry_no_markup_from_the_alert(notice: Notice) -> None:
    for limit in (TELEGRAM_CAPTION_LIMIT, TELEGRAM_TEXT_LIMIT):
        text = telegram_text(notice, limit=limit)
        assert len(text) <= limit
        # html.escape turned every "<" of the alert into "&lt;": the bold title is the only markup.
        assert re.findall(r"<[^>]*>", text) == ["<b>", "</b>"]


@given(notices)
def test_discord_embeds_fit(notice: Notice) -> None:
    embed = discord_embed(notice)

    assert len(embed["title"]) <= DISCORD_TITLE_LIMIT
    assert len(embed["description"]) <= DISCORD_DESCRIPTION_LIMIT
