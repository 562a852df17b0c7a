"""Readers for single field values: prices, times, tickers, intervals, and text folding.

Each reader takes the value as written and returns the typed value or ``None`` plus a short problem
string; none of them raises.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache

# Unterminated ones ("{{close") count too: a value holding one was not filled in by TradingView.
PLACEHOLDER = re.compile(r"\{\{[^{}\n]{0,80}\}?\}?")

# Values past these sizes are not prices, times or tickers; refusing them early bounds the work.
MAX_PRICE_CHARS = 64
MAX_PRICE_EXPONENT = 60
MAX_TICKER_CHARS = 80
MAX_INTERVAL_CHARS = 12
MAX_TIME_CHARS = 64

_EARLIEST_ALERT = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST_ALERT = datetime(2100, 1, 1, tzinfo=UTC)

_CURRENCY_MARKS = re.compile(r"^(?:[$€£¥₿]|US\$|USD|USDT|EUR)\s*|\s*(?:[$€£¥]|USD|USDT|EUR)$", re.IGNORECASE)
_PLAIN_DECIMAL = re.compile(r"\d+(?:\.\d+)?|\.\d+")
_SCIENTIFIC = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)[eE]([+-]?\d{1,4})")
_GROUPED = re.compile(r"\d{1,3}([,.])\d{3}(?:\1\d{3})*")
_DIGIT_GAP = re.compile(r"(?<=\d)[ \u00a0\u202f'’_](?=\d)")

_TICKER = re.compile(r"(?:([A-Za-z0-9_]{1,40}):)?([A-Za-z0-9][A-Za-z0-9._!&/+^=-]{0,60})")
_INTERVAL = re.compile(r"\d{1,5}[A-Za-z]{0,3}|[A-Za-z]{1,3}|\d{1,5}\s?(?:min|mins|minutes|minutos|h|d|w)")
_TIME_OF_DAY = re.compile(r"\d{1,2}:\d{2}(?::\d{2})?(?:\s?(?:UTC|GMT|Z))?", re.IGNORECASE)
_DAY_FIRST = re.compile(
    r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})(?:[ ,T]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?\s*(?:UTC|GMT|Z)?",
    re.IGNORECASE,
)
_COMBINING = re.compile(r"[\u0300-\u036f]")


def fold(text: str) -> str:
    """Case-, accent- and spacing-insensitive form of ``text`` for comparing labels and names."""
    if len(text) <= 64:
        return _fold_short(text)
    return _fold(text)


@lru_cache(maxsize=4096)
def _fold_short(text: str) -> str:
    return _fold(text)


def _fold(text: str) -> str:
    if not text.isascii():
        text = _COMBINING.sub("", unicodedata.normalize("NFKD", text))
    return " ".join(text.casefold().split())


def placeholders_in(value: str) -> list[str]:
    return PLACEHOLDER.findall(value)


def parse_price(written: str) -> tuple[Decimal | None, str | None]:
    """Read a price as written by a person or TradingView; exact, never through a float.

    Accepts ``$67,890.50``, ``67890.5``, ``67.890,50``, ``1.2e-5``, ``-0.5``, ``+3`` and ``−2`` (minus
    sign). One comma followed by exactly three digits (``67,890``) is a thousands separator, as
    TradingView and English speakers write; any other single comma is a decimal comma.
    """
    value = written.strip()
    if not value:
        return None, "price_missing"
    if len(value) > MAX_PRICE_CHARS:
        return None, "price_unparseable"
    found = placeholders_in(value)
    if found:
        return None, f"placeholder:{found[0]}"
    negative = False
    if value[0] in "-−+":
        negative = value[0] != "+"
        value = value[1:].lstrip()
    value = _CURRENCY_MARKS.sub("", value)
    if value[:1] in ("-", "−"):
        negative = not negative
        value = value[1:]
    value = _DIGIT_GAP.sub("", value)
    number = _normalise_number(value)
    if number is None:
        return None, "price_unparseable"
    try:
        price = Decimal(number)
    except InvalidOperation:
        return None, "price_unparseable"
    if not price.is_finite():
        return None, "price_unparseable"
    return (-price if negative else price), None


def _normalise_number(value: str) -> str | None:
    if _PLAIN_DECIMAL.fullmatch(value):
        return value
    scientific = _SCIENTIFIC.fullmatch(value)
    if scientific:
        return value if abs(int(scientific.group(1))) <= MAX_PRICE_EXPONENT else None
    grouped = _GROUPED.fullmatch(value)
    if grouped:
        # "67,890" and "1.234.567" are grouped integers; a single "1.234" was taken as decimal above.
        return value.replace(grouped.group(1), "")
    last_comma, last_dot = value.rfind(","), value.rfind(".")
    if last_comma >= 0 and last_dot >= 0:
        decimal_mark, group_mark = (",", ".") if last_comma > last_dot else (".", ",")
        whole, _, fraction = value.rpartition(decimal_mark)
        if not _GROUPED.fullmatch(whole) or group_mark in fraction or not fraction.isdigit():
            return None
        return f"{whole.replace(group_mark, '')}.{fraction}"
    if value.count(",") == 1:
        whole, _, fraction = value.partition(",")
        if (whole.isdigit() or not whole) and fraction.isdigit():
            return f"{whole or '0'}.{fraction}"
    return None


def split_ticker(written: str) -> tuple[str | None, str | None, str | None, str | None]:
    """Split ``EXCHANGE:SYMBOL`` -> (ticker, exchange, symbol, problem); the ticker is kept as written."""
    ticker = written.strip().strip("`*\"'")
    if not ticker:
        return None, None, None, "ticker_missing"
    found = placeholders_in(ticker)
    if found:
        return None, None, None, f"placeholder:{found[0]}"
    if len(ticker) > MAX_TICKER_CHARS:
        return None, None, None, "ticker_invalid"
    match = _TICKER.fullmatch(ticker)
    if match is None:
        return None, None, None, "ticker_invalid"
    return ticker, match.group(1), match.group(2), None


def parse_interval(written: str) -> tuple[str | None, str | None]:
    """Keep a TradingView interval (``15``, ``60``, ``1D``, ``4H``, ``W``) as written if it looks like one."""
    interval = written.strip()
    if not interval:
        return None, None
    found = placeholders_in(interval)
    if found:
        return None, f"placeholder:{found[0]}"
    if len(interval) > MAX_INTERVAL_CHARS or not _INTERVAL.fullmatch(interval):
        return None, "interval_unrecognised"
    return interval, None


def parse_time(written: str | int | Decimal | float) -> tuple[datetime | None, str | None]:
    """Read an alert time as UTC.

    Accepts ISO 8601 with ``Z`` or an offset (TradingView's ``{{time}}`` and ``{{timenow}}`` render as
    ``2026-11-27T14:30:00Z``), naive ISO taken as UTC, epoch seconds or milliseconds (number or digits),
    and day-first dates (``27/11/2026 14:30``) as Spanish speakers write them. A bare time of day has no
    date and is reported as ``time_without_date``.
    """
    if isinstance(written, bool):
        return None, "time_unparseable"
    if isinstance(written, int | Decimal | float):
        return _from_epoch(written)
    value = written.strip()
    if not value:
        return None, None
    found = placeholders_in(value)
    if found:
        return None, f"placeholder:{found[0]}"
    if len(value) > MAX_TIME_CHARS:
        return None, "time_unparseable"
    if value.isdigit():
        return _from_epoch(int(value))
    moment = _from_iso(value)
    if moment is None:
        moment = _from_day_first(value)
    if moment is None:
        if _TIME_OF_DAY.fullmatch(value):
            return None, "time_without_date"
        return None, "time_unparseable"
    return _in_range(moment)


def _from_iso(value: str) -> datetime | None:
    candidate = value.replace(" UTC", "Z").replace(" GMT", "Z") if " " in value else value
    if candidate.endswith(("z", "Z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _from_day_first(value: str) -> datetime | None:
    match = _DAY_FIRST.fullmatch(value)
    if match is None:
        return None
    day, month, year, hour, minute, second = (int(part) if part else 0 for part in match.groups())
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None


def _from_epoch(number: int | Decimal | float) -> tuple[datetime | None, str | None]:
    try:
        seconds = Decimal(number)
    except (InvalidOperation, ValueError, TypeError):
        return None, "time_unparseable"
    if not seconds.is_finite() or seconds < 0:
        return None, "time_unparseable"
    # Epoch seconds stay below 1e11 until the year 5138; anything larger is milliseconds.
    if seconds >= 10**11:
        seconds = seconds / 1000
    if seconds >= 10**11:
        return None, "time_out_of_range"
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=float(seconds))
    return _in_range(moment)


def _in_range(moment: datetime) -> tuple[datetime | None, str | None]:
    try:
        moment = moment.astimezone(UTC)
    except (OverflowError, ValueError):
        return None, "time_out_of_range"
    if not _EARLIEST_ALERT <= moment < _LATEST_ALERT:
        return None, "time_out_of_range"
    return moment, None
