"""The parser's result types."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any


class ParseStatus(StrEnum):
    """How much of a signal the parser could read from a message.

    - ``COMPLETE``: ticker, price and signal_type are all known.
    - ``PARTIAL``: at least one of ticker, price, signal_type, indicator is known, but not all three
      of ticker, price and signal_type.
    - ``FAILED``: none of ticker, price, signal_type or indicator could be read (empty, undecodable,
      JSON that is not an object, free text with nothing recognisable).

    The status never depends on ``problems``: a complete result may still carry notes such as
    ``indicator_unknown`` or ``placeholder:{{plot_0}}`` in an extra field.
    """

    COMPLETE = "complete"
    PARTIAL = "partial"
    FAILED = "failed"


# Not frozen, like the intake's other per-webhook records (intake/repository.py, WebhookIngest): nothing
# changes one once built, and a frozen dataclass sets each field through object.__setattr__.
@dataclass(slots=True)
class ParsedAlert:
    """A webhook message read into a signal's fields; never rejected, only graded by ``status``."""

    # The indicator as the alert named it, whitespace normalised.
    indicator: str | None
    ticker: str | None
    exchange: str | None
    symbol: str | None
    price: Decimal | None
    signal_type: str | None
    interval: str | None
    # The first time the message carries, whichever moment it is; received_at when it carries none.
    alert_time: datetime
    # The catalog's name for the indicator (the key its spellings share); None when not in the catalog.
    indicator_key: str | None
    # TradingView's {{time}} (the bar's open) and {{timenow}} (when the alert fired), where the message
    # says which is which; None otherwise.
    bar_time: datetime | None
    fired_at: datetime | None
    # The ticker's exchange is one of TradingView's delayed feeds ("NASDAQ_DLY"): the price is not live.
    delayed_feed: bool
    extra: dict[str, Any]
    text: str
    status: ParseStatus
    problems: tuple[str, ...]
