"""The line reader: the APIDevs standard format, one ``label: value`` per line.

The indicator's name is on the first line, emoji and markdown are optional, labels are Spanish or English
(vocabulary.toml [labels], plus each indicator's own in indicators.toml); unknown labels go to ``extra``.
Lines without a label are free text, read by the free-text reader for whatever is still missing.
"""

from __future__ import annotations

import re

from signal_service.parsing.catalog import IndicatorCatalog, IndicatorSpec
from signal_service.parsing.draft import Draft
from signal_service.parsing.free_text import EXCHANGE_TICKER, read_free_text
from signal_service.parsing.limits import MAX_EXTRA_LINES, MAX_FREE_TEXT_CHARS, MAX_LINES, MAX_WRITTEN_CHARS
from signal_service.parsing.values import fold
from signal_service.parsing.vocabulary import MOMENT_FIELDS, STANDARD_FIELDS

_LETTER = re.compile(r"[^\W\d_]")
_LABEL_LINE = re.compile(r"(?P<label>[^:：=]{1,48}?)\s*(?P<sep>[:：=])(?P<value>.*)")
# Leading emoji, bullets and markdown before a line's content; "[" "{" "$" "(" and signed numbers stay.
_DECORATION = re.compile(r"^(?:[^\w\[{$(\-−+\"']|[-−+](?!\d))+")
# Trailing characters kept on a value: closing brackets and the marks prices and tickers end with.
_TRAILING_KEEP = frozenset("])}!%.+-\"'$€£¥#/")


def read_lines(text: str, catalog: IndicatorCatalog, draft: Draft, *, keep_free_lines: bool = True) -> None:
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
        if spec is None and (recognised := recognise_indicator(explicit_indicator, catalog)) is not None:
            spec = recognised[0]
    elif entries[0][0] is None and draft.lacks("indicator"):
        title = entries[0][2]
        recognised = recognise_indicator(title, catalog)
        if recognised is not None:
            title_spec, named = recognised
            spec = spec or title_spec
            draft.offer("indicator", named)
            # A title that only names the indicator is used up; "RSI PRO+ Sobreventa en BTCUSDT" is also
            # free text to read.
            title_used = labelled_fields or named == title
        elif labelled_fields and EXCHANGE_TICKER.search(title) is None and len(title) <= MAX_WRITTEN_CHARS:
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
        if target in MOMENT_FIELDS:
            # "Time now: ..." says which moment it is and is an alert time as well.
            offered_moment = draft.offer(target, value)
            if not draft.offer("time", value) and not offered_moment:
                draft.add_extra(label, value)
        elif target in STANDARD_FIELDS:
            offered = draft.offer(target, value)
            if (
                target == "time"
                and draft.time_beside_fired_at is None
                and folded in catalog.vocabulary.bar_time_labels_beside_fired_at
            ):
                draft.time_beside_fired_at = value
                draft.time_beside_extra_key = None if offered else label
            elif not offered:
                draft.add_extra(label, value)
        else:
            draft.add_extra(target or label, value)
    if labelled_fields and keep_free_lines:
        for line in free_lines[:MAX_EXTRA_LINES]:
            draft.add_extra("lines", line)
    if free_lines and draft.lacks("indicator", "ticker", "price", "signal_type", "interval", "time"):
        read_free_text(" \n".join(free_lines)[:MAX_FREE_TEXT_CHARS], catalog, draft)


def recognise_indicator(written: str, catalog: IndicatorCatalog) -> tuple[IndicatorSpec, str] | None:
    """The catalog indicator ``written`` names, and how it names it: all of it, or the part that does."""
    spec = catalog.indicator_named(written)
    if spec is not None:
        return spec, written
    if len(written) <= MAX_WRITTEN_CHARS * 4 and (mentioned := catalog.indicator_mentioned_in(written)):
        spec, start, end = mentioned
        return spec, written[start:end]
    return None


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
