"""The JSON reader: an object with the fields under common key spellings (vocabulary.toml [json]).

Fields may be nested under containers (``data``, ``payload``, ``strategy.order``...); other keys are kept
in ``extra``. Broken JSON (usually an unquoted ``{{close}}``) is read leniently key by key. A string that
holds a whole text message is read by the line reader.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from signal_service.parsing.catalog import IndicatorCatalog
from signal_service.parsing.draft import Draft
from signal_service.parsing.limits import (
    MAX_JSON_CONTAINERS,
    MAX_JSON_DEPTH,
    MAX_JSON_LEAVES,
    MAX_PARSE_CHARS,
)
from signal_service.parsing.line_reader import read_lines, recognise_indicator
from signal_service.parsing.vocabulary import json_key

_LENIENT_JSON_PAIR = re.compile(
    r'"(?P<key>[^"\\\n]{1,64})"\s*:\s*(?:"(?P<quoted>(?:[^"\\\n]|\\.){0,2000})"|(?P<bare>\{\{[^{}\n]{0,80}\}\}|[^,}\]\n]{1,200}))'
)


def read_json(text: str, declared_json: bool, catalog: IndicatorCatalog, draft: Draft) -> bool:
    """Read ``text`` as JSON if it is JSON; ``False`` leaves it to the text readers."""
    if (text[0] not in '{["' or text.startswith("{{")) and not declared_json:
        return False
    if text.count("{") + text.count("[") > MAX_JSON_CONTAINERS:
        draft.problems.append("json_too_complex")
        return _read_lenient_json(text, catalog, draft)
    try:
        document = json.loads(text, parse_float=Decimal, parse_constant=str)
    # ArithmeticError: a number whose exponent Decimal cannot hold (1.2e-99999...) is no JSON we can read.
    except (ValueError, RecursionError, ArithmeticError):
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
        read_lines(document.strip()[:MAX_PARSE_CHARS], catalog, draft)
        return True
    draft.problems.append("json_not_object")
    draft.add_extra("json", _json_safe(document, 0, draft))
    return True


def _read_lenient_json(text: str, catalog: IndicatorCatalog, draft: Draft) -> bool:
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


def _read_json_object(document: dict[str, Any], catalog: IndicatorCatalog, draft: Draft) -> None:
    vocabulary = catalog.vocabulary
    leaves: list[tuple[tuple[str, ...], Any]] = []
    _collect_leaves(document, (), 0, leaves, draft)
    # Shallow keys win over nested ones; within a depth, the document's order.
    index: dict[str, tuple[str, ...]] = {}
    values: dict[tuple[str, ...], Any] = {}
    for path, value in sorted(leaves, key=lambda leaf: len(leaf[0])):
        values[path] = value
        folded = [json_key(part) for part in path]
        index.setdefault(".".join(folded), path)
        if all(part in vocabulary.json_containers for part in folded[:-1]):
            index.setdefault(folded[-1], path)
    consumed: set[tuple[str, ...]] = set()
    for field_name, keys in vocabulary.json_lookups.items():
        for key in keys:
            found = index.get(key)
            if found is None or found in consumed:
                continue
            value = values[found]
            if isinstance(value, str | int | Decimal) and not isinstance(value, bool):
                draft.offer(field_name, value.strip() if isinstance(value, str) else value)
                consumed.add(found)
                break
    # A moment's key may also have given the alert time: it serves both.
    for field_name, keys in vocabulary.json_moment_lookups.items():
        moment = _first_field_value(keys, index, values)
        if moment is not None:
            draft.offer(field_name, _stripped(values[moment]))
            consumed.add(moment)
    if "fired_at" in draft.written and draft.lacks("bar_time"):
        bar_time = _first_field_value(vocabulary.json_bar_time_beside_fired_at, index, values)
        if bar_time is not None:
            draft.time_beside_fired_at = _stripped(values[bar_time])
            consumed.add(bar_time)
    if draft.lacks("ticker", "price", "signal_type"):
        for path, value in leaves:
            if (
                isinstance(value, str)
                and json_key(path[-1]) in vocabulary.json_message_keys
                and path not in consumed
            ):
                before = set(draft.written)
                read_lines(value.strip()[:MAX_PARSE_CHARS], catalog, draft, keep_free_lines=False)
                if set(draft.written) != before:
                    consumed.add(path)
                break
    remaining = _json_without(document, consumed, (), 0, draft)
    for key, value in remaining.items():
        draft.add_extra(key, value)
    if "indicator" in draft.written and draft.indicator_spec is None:
        recognised = recognise_indicator(str(draft.written["indicator"]), catalog)
        draft.indicator_spec = recognised[0] if recognised else None


def _is_field_value(value: Any) -> bool:
    return isinstance(value, str | int | Decimal) and not isinstance(value, bool)


def _stripped(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _first_field_value(
    keys: tuple[str, ...], index: dict[str, tuple[str, ...]], values: dict[tuple[str, ...], Any]
) -> tuple[str, ...] | None:
    for key in keys:
        path = index.get(key)
        if path is not None and _is_field_value(values[path]):
            return path
    return None


def _collect_leaves(
    node: dict[str, Any],
    path: tuple[str, ...],
    depth: int,
    leaves: list[tuple[tuple[str, ...], Any]],
    draft: Draft,
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
    node: dict[str, Any], consumed: set[tuple[str, ...]], path: tuple[str, ...], depth: int, draft: Draft
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


def _json_safe(value: Any, depth: int, draft: Draft) -> Any:
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
