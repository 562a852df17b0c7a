"""The free-text reader: plain TradingView text ("BTCUSDT Crossing 67,890.50", strategy fills).

It looks only for the fields still missing; each find is blanked out of the text so that one word does not
serve two fields ("RSI" in "RSI PRO+" is not a ticker).
"""

from __future__ import annotations

import re

from signal_service.parsing.catalog import IndicatorCatalog
from signal_service.parsing.draft import Draft

EXCHANGE_TICKER = re.compile(r"(?<![\w:/.])([A-Z][A-Z0-9_]{1,31}:[A-Za-z0-9][A-Za-z0-9._!&]{0,39})(?![\w:/])")
_BARE_TICKER = re.compile(r"(?<![\w:$./])([A-Z][A-Z0-9]{2,19}(?:\.[A-Z]{1,4}|[0-9]{0,2}!)?)(?![\w:/])")
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


def read_free_text(text: str, catalog: IndicatorCatalog, draft: Draft) -> None:
    """Look for the fields still missing in free text (TradingView's default messages and the like)."""
    mentioned = catalog.indicator_mentioned_in(text)
    if mentioned is not None:
        spec, start, end = mentioned
        if draft.offer("indicator", text[start:end]):
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


def _find_ticker(text: str, catalog: IndicatorCatalog, draft: Draft) -> str:
    found = EXCHANGE_TICKER.search(text)
    if found is None:
        not_tickers = catalog.vocabulary.not_tickers
        found = next(
            (
                candidate
                for candidate in _BARE_TICKER.finditer(text)
                if candidate.group(1) not in not_tickers
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


def _find_price(text: str, draft: Draft) -> None:
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
