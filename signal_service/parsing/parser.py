"""Turn a TradingView webhook body into a signal's fields.

Three shapes are read, tried in this order, each by its own reader:

1. JSON (json_reader.py): an object with the fields under the key spellings of vocabulary.toml, possibly
   nested; other keys are kept in ``extra``.
2. The APIDevs standard format (line_reader.py): the indicator's name on the first line, then one
   ``label: value`` per line; unknown labels go to ``extra``.
3. Plain TradingView text (free_text.py): whatever is still missing is looked for in the free text.

This module checks what the readers collected and grades the result. The work is bounded whatever the
input (limits.py).

Problems are short strings: ``invalid_utf8``, ``nul_removed``, ``empty``, ``input_truncated``,
``lines_truncated``, ``json_invalid``, ``json_not_object``, ``json_too_complex``, ``json_too_deep``,
``placeholder:{{name}}``, ``ticker_missing``, ``ticker_invalid``, ``price_missing``,
``price_unparseable``, ``price_ambiguous``, ``signal_type_missing``, ``signal_type_not_in_catalog``,
``indicator_unknown``, ``interval_unrecognised``, ``time_unparseable``, ``time_out_of_range``,
``time_without_date``, ``received_at_naive``, ``internal_error:<type>`` (a bug; the result is still
returned).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from signal_service.parsing.catalog import IndicatorCatalog, default_indicator_catalog
from signal_service.parsing.draft import Draft
from signal_service.parsing.json_reader import read_json
from signal_service.parsing.limits import MAX_PARSE_CHARS, MAX_PLACEHOLDER_PROBLEMS, MAX_WRITTEN_CHARS
from signal_service.parsing.line_reader import read_lines
from signal_service.parsing.model import ParsedAlert, ParseStatus
from signal_service.parsing.values import (
    MAX_PRICE_EXPONENT,
    PLACEHOLDER,
    parse_interval,
    parse_price,
    parse_time,
    placeholders_in,
    split_ticker,
)


def parse_alert(
    body: bytes,
    *,
    content_type: str = "",
    query: Mapping[str, str] | None = None,
    received_at: datetime,
    catalog: IndicatorCatalog | None = None,
) -> ParsedAlert:
    """Read an alert body into a ``ParsedAlert``; never raises and never drops the message.

    ``query`` is the webhook URL's query string: its ``ticker`` (or ``symbol``) is used when the body
    names none. ``received_at`` is the alert time when the body carries none. ``catalog`` defaults to the
    shipped one (read once per process); services pass the catalog they loaded at startup.

    Status: ``complete`` when ticker, price and signal_type are all known; ``partial`` when some but not
    all of them, or only the indicator, are known; ``failed`` when none of ticker, price, signal_type or
    indicator could be read. ``problems`` says what was missing or odd, whatever the status.
    """
    text = ""
    problems: list[str] = []
    try:
        received_at, received_problem = _as_utc(received_at)
        if received_problem:
            problems.append(received_problem)
        text, decode_problems = _decode(body)
        problems.extend(decode_problems)
        # `is None`, not truthiness: a catalog without indicators is still the one configured.
        if catalog is None:
            catalog = default_indicator_catalog()
        return _parse_text(text, content_type, query, received_at, catalog, problems)
    # The contract is "never raises": a bug must cost a parse, never the message.
    except Exception as error:
        problems.append(f"internal_error:{type(error).__name__}")
        return ParsedAlert(
            indicator=None,
            ticker=None,
            exchange=None,
            symbol=None,
            price=None,
            signal_type=None,
            interval=None,
            # Typed datetime, checked anyway: whatever a caller passed, this path must not raise.
            alert_time=received_at if isinstance(received_at, datetime) else datetime.now(UTC),  # type: ignore[redundant-expr]
            indicator_key=None,
            bar_time=None,
            fired_at=None,
            delayed_feed=False,
            extra={},
            text=text,
            status=ParseStatus.FAILED,
            problems=tuple(dict.fromkeys(problems)),
        )


def _as_utc(received_at: datetime) -> tuple[datetime, str | None]:
    if received_at.tzinfo is None or received_at.utcoffset() is None:
        return received_at.replace(tzinfo=UTC), "received_at_naive"
    return received_at.astimezone(UTC), None


def _decode(body: bytes) -> tuple[str, list[str]]:
    problems = []
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("utf-8", errors="replace")
        problems.append("invalid_utf8")
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\x00" in text:
        text = text.replace("\x00", "")
        problems.append("nul_removed")
    return text, problems


def _parse_text(
    text: str,
    content_type: str,
    query: Mapping[str, str] | None,
    received_at: datetime,
    catalog: IndicatorCatalog,
    problems: list[str],
) -> ParsedAlert:
    draft = Draft(problems=problems)
    readable = text
    if len(readable) > MAX_PARSE_CHARS:
        readable = readable[:MAX_PARSE_CHARS]
        problems.append("input_truncated")
    readable = readable.strip()
    if not readable:
        problems.append("empty")
    elif not read_json(readable, "json" in content_type.lower(), catalog, draft):
        read_lines(readable, catalog, draft)
    if "{{" in readable:
        for placeholder in list(dict.fromkeys(PLACEHOLDER.findall(readable)))[:MAX_PLACEHOLDER_PROBLEMS]:
            problems.append(f"placeholder:{placeholder}")
    return _finish(draft, text, query, received_at, catalog)


# ---- checking the values ------------------------------------------------------------------------------


def _finish(
    draft: Draft,
    text: str,
    query: Mapping[str, str] | None,
    received_at: datetime,
    catalog: IndicatorCatalog,
) -> ParsedAlert:
    written = draft.written
    problems = draft.problems

    def note(problem: str | None) -> None:
        if problem:
            problems.append(problem)

    ticker = exchange = symbol = None
    if "ticker" in written:
        ticker, exchange, symbol, problem = split_ticker(str(written["ticker"]))
        note(problem)
    if ticker is None and query:
        fallback = next((query[key] for key in ("ticker", "symbol", "tickerid") if query.get(key)), None)
        if fallback is not None:
            ticker, exchange, symbol, problem = split_ticker(fallback)
            note(problem and f"query_{problem}")
    if ticker is not None and exchange is None and isinstance(written.get("exchange"), str):
        separate_exchange = written["exchange"].strip()
        if separate_exchange and not placeholders_in(separate_exchange):
            ticker, exchange, symbol, problem = split_ticker(f"{separate_exchange}:{ticker}")
            note(problem)
    if ticker is None and "ticker" not in written:
        note("ticker_missing")

    price = None
    if "price" in written:
        price, problem = _price_from(written["price"])
        note(problem)
    elif "price_ambiguous" not in problems:
        note("price_missing")

    signal_type = _written_text(written.get("signal_type"), problems)
    if signal_type is None and "signal_type" not in written:
        note("signal_type_missing")

    # Stored as the alert named it; the catalog's name is the key that groups its spellings.
    spec = draft.indicator_spec
    indicator = indicator_key = None
    if spec is not None and written.get("indicator") == spec.name:
        # The common case, a message naming the indicator as the catalog does, needs no checking.
        indicator, indicator_key = spec.name, spec.name
    elif "indicator" in written:
        named = _written_text(written["indicator"], problems)
        if named is None and spec is not None:
            # "{{ticker}} ADX DEF": the placeholder is no part of the name, the words that name it are.
            named = _mentioned_name(str(written["indicator"]), catalog)
        if named is not None:
            indicator = " ".join(named.split())
            indicator_key = spec.name if spec is not None else None
            if spec is None:
                note("indicator_unknown")
    if spec is not None and signal_type is not None and not catalog.emits(spec, signal_type):
        note("signal_type_not_in_catalog")

    interval = None
    if "interval" in written:
        interval, problem = parse_interval(str(written["interval"]))
        note(problem)

    alert_time = received_at
    if "time" in written:
        moment, problem = parse_time(written["time"])
        note(problem)
        if moment is not None:
            alert_time = moment
        elif isinstance(written["time"], str):
            draft.add_extra("time", written["time"])
    bar_time = fired_at = None
    if draft.time_beside_fired_at is not None or "bar_time" in written or "fired_at" in written:
        bar_time, fired_at = _moments(draft, note)

    if ticker is not None and price is not None and signal_type is not None:
        status = ParseStatus.COMPLETE
    elif ticker is not None or price is not None or signal_type is not None or indicator is not None:
        status = ParseStatus.PARTIAL
    else:
        status = ParseStatus.FAILED
    return ParsedAlert(
        indicator=indicator,
        ticker=ticker,
        exchange=exchange,
        symbol=symbol,
        price=price,
        signal_type=signal_type,
        interval=interval,
        alert_time=alert_time,
        indicator_key=indicator_key,
        bar_time=bar_time,
        fired_at=fired_at,
        delayed_feed=exchange is not None
        and exchange.upper().endswith(catalog.vocabulary.delayed_feed_exchange_suffixes),
        extra=draft.extra,
        text=text,
        status=status,
        problems=tuple(dict.fromkeys(problems)),
    )


def _moments(draft: Draft, note: Callable[[str | None], None]) -> tuple[datetime | None, datetime | None]:
    """The bar's open ({{time}}) and the firing ({{timenow}}), where the message says which is which."""
    written = draft.written
    bar_written = written.get("bar_time")
    if bar_written is None and "fired_at" in written:
        bar_written = draft.time_beside_fired_at
    elif draft.time_beside_extra_key is not None:
        draft.add_extra(draft.time_beside_extra_key, draft.time_beside_fired_at)
    moments = []
    for field_name, moment_written in (("bar_time", bar_written), ("fired_at", written.get("fired_at"))):
        moment = None
        if moment_written is not None:
            moment, problem = parse_time(moment_written)
            note(problem)
            # Kept like an unreadable alert time, unless it is that one (already in extra).
            if moment is None and isinstance(moment_written, str) and moment_written != written.get("time"):
                draft.add_extra(field_name, moment_written)
        moments.append(moment)
    return moments[0], moments[1]


def _mentioned_name(written: str, catalog: IndicatorCatalog) -> str | None:
    mentioned = catalog.indicator_mentioned_in(written)
    return None if mentioned is None else written[mentioned[1] : mentioned[2]]


def _price_from(value: Any) -> tuple[Decimal | None, str | None]:
    if isinstance(value, bool):
        return None, "price_unparseable"
    if isinstance(value, int | Decimal):
        price = Decimal(value)
        # The same bound as text prices: a JSON number like 1e999999 is no price and no column holds it.
        if not price.is_finite() or (price and abs(price.adjusted()) > MAX_PRICE_EXPONENT):
            return None, "price_unparseable"
        return price, None
    return parse_price(str(value))


def _written_text(value: Any, problems: list[str]) -> str | None:
    """A free-text field (signal type, indicator name) trimmed as written; placeholders are not values."""
    if value is None or isinstance(value, bool):
        return None
    written = str(value).strip()
    if not written:
        return None
    found = placeholders_in(written)
    if found:
        problems.append(f"placeholder:{found[0]}")
        return None
    return written[:MAX_WRITTEN_CHARS]
