"""Turn a TradingView webhook body into a signal's fields.

Three shapes are read, tried in this order:

1. JSON: an object with the fields under common key spellings (``ticker``/``symbol``,
   ``price``/``close``, ``signal``/``signal_type``/``action``, ``indicator``, ``interval``/``timeframe``,
   ``time``/``timenow``), possibly nested under ``data``/``payload``/``strategy.order``/...; other keys are
   kept in ``extra``. Broken JSON (usually an unquoted ``{{close}}``) is read leniently key by key.
2. The APIDevs standard format: the indicator's name on the first line, then one ``label: value`` per
   line, emoji optional, labels in Spanish or English; unknown labels go to ``extra``.
3. Plain TradingView text ("BTCUSDT Crossing 67,890.50", strategy fills): whatever is still missing is
   looked for in the free text.

The work is bounded whatever the input: at most ``MAX_PARSE_CHARS`` characters are read, ``MAX_LINES``
lines, ``MAX_FREE_TEXT_CHARS`` of free text, ``MAX_JSON_CONTAINERS`` JSON objects/arrays nested at most
``MAX_JSON_DEPTH`` deep.

Problems are short strings: ``invalid_utf8``, ``nul_removed``, ``empty``, ``input_truncated``,
``lines_truncated``, ``json_invalid``, ``json_not_object``, ``json_too_complex``, ``json_too_deep``,
``placeholder:{{name}}``, ``ticker_missing``, ``ticker_invalid``, ``price_missing``,
``price_unparseable``, ``price_ambiguous``, ``signal_type_missing``, ``signal_type_not_in_catalog``,
``indicator_unknown``, ``interval_unrecognised``, ``time_unparseable``, ``time_out_of_range``,
``time_without_date``, ``received_at_naive``, ``internal_error:<type>`` (a bug; the result is still
returned).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from signal_service.parsing.catalog import (
    STANDARD_FIELDS,
    IndicatorCatalog,
    IndicatorSpec,
    default_indicator_catalog,
)
from signal_service.parsing.model import ParsedAlert, ParseStatus
from signal_service.parsing.values import (
    MAX_PRICE_EXPONENT,
    PLACEHOLDER,
    fold,
    parse_interval,
    parse_price,
    parse_time,
    placeholders_in,
    split_ticker,
)

MAX_PARSE_CHARS = 65_536
MAX_LINES = 200
# TradingView's own messages are a line or two; scanning more free text than this only costs time.
MAX_FREE_TEXT_CHARS = 2_048
MAX_EXTRA_LINES = 50
MAX_WRITTEN_CHARS = 200
MAX_PLACEHOLDER_PROBLEMS = 10
MAX_JSON_CONTAINERS = 512
MAX_JSON_DEPTH = 16
MAX_JSON_LEAVES = 1024

_LETTER = re.compile(r"[^\W\d_]")
_LABEL_LINE = re.compile(r"(?P<label>[^:：=]{1,48}?)\s*(?P<sep>[:：=])(?P<value>.*)")
# Leading emoji, bullets and markdown before a line's content; "[" "{" "$" "(" and signed numbers stay.
_DECORATION = re.compile(r"^(?:[^\w\[{$(\-−+\"']|[-−+](?!\d))+")
# Trailing characters kept on a value: closing brackets and the marks prices and tickers end with.
_TRAILING_KEEP = frozenset("])}!%.+-\"'$€£¥#/")

_EXCHANGE_TICKER = re.compile(
    r"(?<![\w:/.])([A-Z][A-Z0-9_]{1,31}:[A-Za-z0-9][A-Za-z0-9._!&]{0,39})(?![\w:/])"
)
_BARE_TICKER = re.compile(r"(?<![\w:$./])([A-Z][A-Z0-9]{2,19}(?:\.[A-Z]{1,4}|[0-9]{0,2}!)?)(?![\w:/])")
_NOT_TICKERS = frozenset(
    (
        "ALERT",
        "ALERTA",
        "SIGNAL",
        "SENAL",
        "SEÑAL",
        "NEW",
        "NUEVA",
        "NUEVO",
        "PRICE",
        "PRECIO",
        "THE",
        "AND",
        "FOR",
        "UTC",
        "GMT",
        "APIDEVS",
        "TICKER",
        "TIMEFRAME",
        "STRATEGY",
        "ORDER",
        "FILLED",
        "ON",
    )
)
_PRICE_NUMBER = re.compile(
    r"(?<![\w.,:/\-−])(?P<sign>[-−]?)(?P<currency>[$€£¥]?)\s?"
    r"(?P<number>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,3}(?:\.\d{3})+,\d+|\d+(?:[.,]\d+)?(?:[eE][-+]?\d+)?)"
    r"(?![\w:/\-%]|[.,]\d|\s?%)"
)
_PRICE_CUE = re.compile(
    r"(?:price|precio|close|cierre|last|@|\bat|\ba|crossing(?:\s+(?:up|down))?|greater than|less than|"
    r"cruzando(?:\s+al alza|\s+a la baja)?|mayor que|menor que|[=:])\s*$",
    re.IGNORECASE,
)
_STRATEGY_FILL = re.compile(
    r"(?P<action>buy|sell)\s*@\s*(?P<contracts>[\d.,]+)\s+filled\s+on\s+(?P<ticker>[A-Za-z0-9_:.!&]+?)\.?"
    r"(?:\s+new\s+strategy\s+position\s+is\s+(?P<position>-?[\d.,]+))?(?=\s|$)",
    re.IGNORECASE,
)
_FREE_INTERVAL = re.compile(
    r"(?:timeframe|temporalidad|intervalo|interval|\btf)\s*[:=]?\s*(?P<interval>\d{1,5}[SsMmHhDdWw]?|[DWM])(?![\w.,])",
    re.IGNORECASE,
)
_INTERVAL_AFTER_TICKER = re.compile(r"\s*,\s*(?P<interval>\d{1,5}[SHDWM]?|[DWM])(?![\w.,])")
_FREE_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?", re.IGNORECASE
)

# JSON key spellings per field, most specific first; keys compare folded without "_", "-", " ", ".".
_JSON_KEYS: Mapping[str, tuple[str, ...]] = {
    "indicator": (
        "indicator",
        "indicador",
        "indicatorname",
        "study",
        "estudio",
        "strategy",
        "strategyname",
        "estrategia",
    ),
    "ticker": (
        "ticker",
        "tickerid",
        "syminfo.tickerid",
        "symbol",
        "simbolo",
        "pair",
        "par",
        "instrument",
        "instrumento",
        "activo",
        "asset",
    ),
    "exchange": ("exchange", "bolsa", "syminfo.prefix"),
    "price": (
        "price",
        "precio",
        "strategy.order.price",
        "orderprice",
        "close",
        "cierre",
        "lastprice",
        "last",
    ),
    "signal_type": (
        "signal",
        "signaltype",
        "senal",
        "tipodesenal",
        "strategy.order.action",
        "orderaction",
        "action",
        "accion",
        "side",
        "type",
        "tipo",
        "direction",
        "direccion",
        "condition",
        "condicion",
        "event",
        "evento",
    ),
    "interval": (
        "interval",
        "timeframe",
        "tf",
        "temporalidad",
        "intervalo",
        "resolution",
        "resolucion",
        "period",
        "periodo",
    ),
    "time": (
        "time",
        "timenow",
        "timestamp",
        "alerttime",
        "datetime",
        "date",
        "fecha",
        "hora",
        "ts",
        "bartime",
    ),
}
# A dotted spelling matches a nested path ("strategy": {"order": {"action"}}) or a literal dotted key.
_JSON_LOOKUPS: Mapping[str, tuple[str, ...]] = {
    field_name: tuple(
        dict.fromkeys(lookup for key in keys for lookup in (".".join(key.split(".")), key.replace(".", "")))
    )
    for field_name, keys in _JSON_KEYS.items()
}
# Objects whose keys are read as if they were at the top level.
_JSON_CONTAINERS = frozenset(
    (
        "data",
        "datos",
        "payload",
        "alert",
        "alerta",
        "signal",
        "senal",
        "message",
        "mensaje",
        "body",
        "content",
        "strategy",
        "estrategia",
        "order",
        "orden",
        "params",
        "details",
        "info",
        "attributes",
        "fields",
    )
)
# String values that may hold a whole text message when the JSON's own keys leave fields missing.
_JSON_MESSAGE_KEYS = frozenset(
    (
        "message",
        "mensaje",
        "text",
        "texto",
        "msg",
        "content",
        "alert",
        "alerta",
        "body",
        "description",
        "descripcion",
        "comment",
    )
)
_LENIENT_JSON_PAIR = re.compile(
    r'"(?P<key>[^"\\\n]{1,64})"\s*:\s*(?:"(?P<quoted>(?:[^"\\\n]|\\.){0,2000})"|(?P<bare>\{\{[^{}\n]{0,80}\}\}|[^,}\]\n]{1,200}))'
)


@dataclass(slots=True)
class _Draft:
    """Values as written, collected before being checked; the first source to set a field wins."""

    written: dict[str, Any] = field(default_factory=dict)
    indicator_spec: IndicatorSpec | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def offer(self, field_name: str, value: Any) -> bool:
        if field_name in self.written or value is None:
            return False
        self.written[field_name] = value
        return True

    def lacks(self, *field_names: str) -> bool:
        return not all(map(self.written.__contains__, field_names))

    def add_extra(self, key: str, value: Any) -> None:
        if key not in self.extra:
            self.extra[key] = value
        elif isinstance(self.extra[key], list):
            self.extra[key].append(value)
        else:
            self.extra[key] = [self.extra[key], value]


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
        return _parse_text(
            text, content_type, query, received_at, catalog or default_indicator_catalog(), problems
        )
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
            alert_time=received_at if isinstance(received_at, datetime) else datetime.now(UTC),
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
    draft = _Draft(problems=problems)
    readable = text
    if len(readable) > MAX_PARSE_CHARS:
        readable = readable[:MAX_PARSE_CHARS]
        problems.append("input_truncated")
    readable = readable.strip()
    if not readable:
        problems.append("empty")
    elif not _read_json(readable, "json" in content_type.lower(), catalog, draft):
        _read_lines(readable, catalog, draft)
    if "{{" in readable:
        for placeholder in list(dict.fromkeys(PLACEHOLDER.findall(readable)))[:MAX_PLACEHOLDER_PROBLEMS]:
            problems.append(f"placeholder:{placeholder}")
    return _finish(draft, text, query, received_at, catalog)


# ---- JSON -------------------------------------------------------------------------------------------


def _read_json(text: str, declared_json: bool, catalog: IndicatorCatalog, draft: _Draft) -> bool:
    """Read ``text`` as JSON if it is JSON; ``False`` leaves it to the text readers."""
    if (text[0] not in '{["' or text.startswith("{{")) and not declared_json:
        return False
    if text.count("{") + text.count("[") > MAX_JSON_CONTAINERS:
        draft.problems.append("json_too_complex")
        return _read_lenient_json(text, catalog, draft)
    try:
        document = json.loads(text, parse_float=Decimal, parse_constant=str)
    except (ValueError, RecursionError):
        # "[APIDEVS] ..." titles and "{{ticker}} ..." placeholders start like JSON without being JSON.
        looks_like_object = text[0] == "{" and not text.startswith("{{")
        if declared_json or looks_like_object or _LENIENT_JSON_PAIR.search(text):
            draft.problems.append("json_invalid")
        return _read_lenient_json(text, catalog, draft)
    if isinstance(document, dict):
        _read_json_object(document, catalog, draft)
        return True
    if isinstance(document, str):
        if not document.strip():
            return True
        _read_lines(document.strip()[:MAX_PARSE_CHARS], catalog, draft)
        return True
    draft.problems.append("json_not_object")
    draft.add_extra("json", _json_safe(document, 0, draft))
    return True


def _read_lenient_json(text: str, catalog: IndicatorCatalog, draft: _Draft) -> bool:
    pairs: dict[str, Any] = {}
    for match in _LENIENT_JSON_PAIR.finditer(text):
        key = match.group("key")
        if key in pairs:
            continue
        if match.group("quoted") is not None:
            try:
                pairs[key] = json.loads(f'"{match.group("quoted")}"')
            except ValueError:
                pairs[key] = match.group("quoted")
        else:
            pairs[key] = match.group("bare").strip()
        if len(pairs) >= MAX_JSON_LEAVES:
            break
    if not pairs:
        return False
    _read_json_object(pairs, catalog, draft)
    return True


def _json_key(key: str) -> str:
    return fold(key).replace("_", "").replace("-", "").replace(" ", "").replace(".", "")


def _read_json_object(document: dict[str, Any], catalog: IndicatorCatalog, draft: _Draft) -> None:
    leaves: list[tuple[tuple[str, ...], Any]] = []
    _collect_leaves(document, (), 0, leaves, draft)
    # Shallow keys win over nested ones; within a depth, the document's order.
    index: dict[str, tuple[str, ...]] = {}
    values: dict[tuple[str, ...], Any] = {}
    for path, value in sorted(leaves, key=lambda leaf: len(leaf[0])):
        values[path] = value
        folded = [_json_key(part) for part in path]
        index.setdefault(".".join(folded), path)
        if all(part in _JSON_CONTAINERS for part in folded[:-1]):
            index.setdefault(folded[-1], path)
    consumed: set[tuple[str, ...]] = set()
    for field_name, keys in _JSON_LOOKUPS.items():
        for key in keys:
            path = index.get(key)
            if path is None or path in consumed:
                continue
            value = values[path]
            if isinstance(value, str | int | Decimal) and not isinstance(value, bool):
                draft.offer(field_name, value.strip() if isinstance(value, str) else value)
                consumed.add(path)
                break
    if draft.lacks("ticker", "price", "signal_type"):
        for path, value in leaves:
            if isinstance(value, str) and _json_key(path[-1]) in _JSON_MESSAGE_KEYS and path not in consumed:
                before = set(draft.written)
                _read_lines(value.strip()[:MAX_PARSE_CHARS], catalog, draft, keep_free_lines=False)
                if set(draft.written) != before:
                    consumed.add(path)
                break
    remaining = _json_without(document, consumed, (), 0, draft)
    for key, value in remaining.items():
        draft.add_extra(key, value)
    if "indicator" in draft.written and draft.indicator_spec is None:
        draft.indicator_spec = _recognise_indicator(str(draft.written["indicator"]), catalog)


def _collect_leaves(
    node: dict[str, Any],
    path: tuple[str, ...],
    depth: int,
    leaves: list[tuple[tuple[str, ...], Any]],
    draft: _Draft,
) -> None:
    if depth >= MAX_JSON_DEPTH:
        draft.problems.append("json_too_deep")
        return
    for key, value in node.items():
        if len(leaves) >= MAX_JSON_LEAVES:
            return
        if isinstance(value, dict):
            _collect_leaves(value, (*path, str(key)), depth + 1, leaves, draft)
        else:
            leaves.append(((*path, str(key)), value))


def _json_without(
    node: dict[str, Any], consumed: set[tuple[str, ...]], path: tuple[str, ...], depth: int, draft: _Draft
) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in node.items():
        here = (*path, str(key))
        if here in consumed:
            continue
        if isinstance(value, dict) and depth + 1 < MAX_JSON_DEPTH:
            inner = _json_without(value, consumed, here, depth + 1, draft)
            if inner or not value:
                kept[str(key)] = inner
        else:
            kept[str(key)] = _json_safe(value, depth + 1, draft)
    return kept


def _json_safe(value: Any, depth: int, draft: _Draft) -> Any:
    """``value`` as plain JSON types; floats stay floats here (only the price must be exact)."""
    if isinstance(value, Decimal):
        as_float = float(value)
        return as_float if as_float not in (float("inf"), float("-inf")) else str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if depth >= MAX_JSON_DEPTH:
        draft.problems.append("json_too_deep")
        return None
    if isinstance(value, dict):
        return {str(key): _json_safe(inner, depth + 1, draft) for key, inner in value.items()}
    if isinstance(value, list):
        return [_json_safe(inner, depth + 1, draft) for inner in value]
    return str(value)


# ---- the standard line format -------------------------------------------------------------------------


def _read_lines(text: str, catalog: IndicatorCatalog, draft: _Draft, *, keep_free_lines: bool = True) -> None:
    lines = text.split("\n")
    if len(lines) > MAX_LINES:
        draft.problems.append("lines_truncated")
        lines = lines[:MAX_LINES]
    # (label as written, folded label, value, line) for labelled lines; (None, "", line, line) otherwise.
    entries: list[tuple[str | None, str, str, str]] = []
    for raw_line in lines:
        line = _undecorate(raw_line)
        if line:
            entries.append(_split_label(line, catalog))
    if not entries:
        return
    labelled_fields = False
    explicit_indicator = None
    for label, folded, value, _ in entries:
        if label is not None:
            target = catalog.label_target(folded, None)
            labelled_fields = labelled_fields or target in STANDARD_FIELDS
            if target == "indicator" and explicit_indicator is None:
                explicit_indicator = value
    spec = draft.indicator_spec
    title_used = False
    if explicit_indicator is not None:
        spec = spec or _recognise_indicator(explicit_indicator, catalog)
    elif entries[0][0] is None and draft.lacks("indicator"):
        title = entries[0][2]
        title_spec = _recognise_indicator(title, catalog)
        if title_spec is not None:
            spec = spec or title_spec
            draft.offer("indicator", title_spec.name)
            # A title that only names the indicator is used up; "RSI PRO+ Sobreventa en BTCUSDT" is also
            # free text to read.
            title_used = labelled_fields or catalog.indicator_named(title) is not None
        elif labelled_fields and _EXCHANGE_TICKER.search(title) is None and len(title) <= MAX_WRITTEN_CHARS:
            draft.offer("indicator", title)
            title_used = True
    draft.indicator_spec = spec

    free_lines: list[str] = []
    for position, (label, folded, value, line) in enumerate(entries):
        if label is not None and not labelled_fields and not catalog.is_label(folded):
            # Without any field labels the message is free text: "MACD Cross: order buy @ 1 filled on ...".
            label = None
            value = line
        if label is None:
            if position == 0 and title_used:
                continue
            if draft.lacks("signal_type") and catalog.is_signal_type_word(value):
                draft.offer("signal_type", value)
                continue
            free_lines.append(value)
            continue
        target = catalog.label_target(folded, spec)
        if target in STANDARD_FIELDS:
            if not draft.offer(target, value):
                draft.add_extra(label, value)
        else:
            draft.add_extra(target or label, value)
    if labelled_fields and keep_free_lines:
        for line in free_lines[:MAX_EXTRA_LINES]:
            draft.add_extra("lines", line)
    if free_lines and draft.lacks("indicator", "ticker", "price", "signal_type", "interval", "time"):
        _read_free_text(" \n".join(free_lines)[:MAX_FREE_TEXT_CHARS], catalog, draft)


def _undecorate(line: str) -> str:
    line = line.strip()
    if line and not line[0].isalnum():
        line = _DECORATION.sub("", line)
    # A loop, not a "...+$" regex: that backtracks quadratically on long runs of decoration.
    end = len(line)
    while end and not (line[end - 1].isalnum() or line[end - 1] == "_" or line[end - 1] in _TRAILING_KEEP):
        end -= 1
    return line[:end].rstrip()


def _split_label(line: str, catalog: IndicatorCatalog) -> tuple[str | None, str, str, str]:
    match = _LABEL_LINE.match(line)
    if match is None:
        return None, "", line, line
    label = match.group("label").strip(" \t*_`")
    value = match.group("value").strip().strip("*_`").strip()
    folded = fold(label)
    if _LETTER.search(folded) is None:
        return None, "", line, line
    if catalog.is_label(folded):
        return label, folded, value, line
    # An unknown label counts only when it reads like one ("Nota: ..."), which rules out "BINANCE:BTC",
    # "14:30", URLs and sentences that happen to contain a colon.
    followed_by_space = not match.group("value") or match.group("value")[0].isspace()
    if match.group("sep") != "=" and followed_by_space and len(label) <= 40 and len(folded.split()) <= 5:
        return label, folded, value, line
    return None, "", line, line


def _recognise_indicator(written: str, catalog: IndicatorCatalog) -> IndicatorSpec | None:
    spec = catalog.indicator_named(written)
    if spec is None and len(written) <= MAX_WRITTEN_CHARS * 4:
        mentioned = catalog.indicator_mentioned_in(written)
        spec = mentioned[0] if mentioned else None
    return spec


# ---- plain text ---------------------------------------------------------------------------------------


def _read_free_text(text: str, catalog: IndicatorCatalog, draft: _Draft) -> None:
    """Look for the fields still missing in free text (TradingView's default messages and the like)."""
    mentioned = catalog.indicator_mentioned_in(text)
    if mentioned is not None:
        spec, start, end = mentioned
        if draft.offer("indicator", spec.name):
            draft.indicator_spec = draft.indicator_spec or spec
        # Blanked either way, so that "RSI" in "RSI PRO+" is not taken for a ticker.
        text = _blank(text, start, end)
    strategy = _STRATEGY_FILL.search(text)
    if strategy is not None:
        draft.offer("signal_type", strategy.group("action"))
        draft.offer("ticker", strategy.group("ticker"))
        draft.add_extra("contracts", strategy.group("contracts"))
        if strategy.group("position") is not None:
            draft.add_extra("position_size", strategy.group("position"))
        text = _blank(text, strategy.start(), strategy.end())
    if draft.lacks("signal_type"):
        draft.offer("signal_type", catalog.signal_type_mentioned_in(text, draft.indicator_spec))
    if draft.lacks("time") and (moment := _FREE_TIME.search(text)) is not None:
        draft.offer("time", moment.group(0))
        text = _blank(text, moment.start(), moment.end())
    if draft.lacks("ticker"):
        text = _find_ticker(text, catalog, draft)
    if draft.lacks("interval") and (interval := _FREE_INTERVAL.search(text)) is not None:
        draft.offer("interval", interval.group("interval"))
        text = _blank(text, interval.start(), interval.end())
    if draft.lacks("price"):
        _find_price(text, draft)


def _find_ticker(text: str, catalog: IndicatorCatalog, draft: _Draft) -> str:
    found = _EXCHANGE_TICKER.search(text)
    if found is None:
        found = next(
            (
                candidate
                for candidate in _BARE_TICKER.finditer(text)
                if candidate.group(1) not in _NOT_TICKERS
                and not catalog.is_signal_type_word(candidate.group(1))
            ),
            None,
        )
    if found is None:
        return text
    draft.offer("ticker", found.group(1))
    end = found.end()
    if draft.lacks("interval") and (interval := _INTERVAL_AFTER_TICKER.match(text, end)) is not None:
        draft.offer("interval", interval.group("interval"))
        end = interval.end()
    return _blank(text, found.start(), end)


def _find_price(text: str, draft: _Draft) -> None:
    candidates = list(_PRICE_NUMBER.finditer(text))
    if not candidates:
        return
    chosen = next((candidate for candidate in candidates if candidate.group("currency")), None)
    if chosen is None:
        chosen = next(
            (
                candidate
                for candidate in candidates
                if _PRICE_CUE.search(text, max(0, candidate.start() - 32), candidate.start())
            ),
            None,
        )
    if chosen is None and len(candidates) == 1:
        chosen = candidates[0]
    if chosen is None:
        draft.problems.append("price_ambiguous")
        return
    draft.offer("price", chosen.group(0).strip())


def _blank(text: str, start: int, end: int) -> str:
    return f"{text[:start]}{' ' * (end - start)}{text[end:]}"


# ---- checking the values ------------------------------------------------------------------------------


def _finish(
    draft: _Draft,
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

    spec = draft.indicator_spec
    indicator = None
    if spec is not None:
        indicator = spec.name
    elif "indicator" in written:
        indicator = _written_text(written["indicator"], problems)
        if indicator is not None:
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
        extra=draft.extra,
        text=text,
        status=status,
        problems=tuple(dict.fromkeys(problems)),
    )


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
