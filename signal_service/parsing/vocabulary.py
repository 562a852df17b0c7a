"""The parser's vocabulary (vocabulary.toml): JSON key spellings, line labels, words that are no tickers.

Loaded and checked once per process. Keys and labels are folded here, so readers compare folded text;
the words that are no tickers are compared as written (capitals).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from signal_service.parsing.values import fold

VOCABULARY_PATH = Path(__file__).with_name("vocabulary.toml")

# The fields a reader may fill; a label or key maps to one of these or becomes a key in ``extra``.
STANDARD_FIELDS = frozenset(
    {"indicator", "ticker", "exchange", "price", "signal_type", "interval", "time", "bar_time", "fired_at"}
)
# The moments that are also an alert time (the first time a message carries, whichever it is).
MOMENT_FIELDS = frozenset({"bar_time", "fired_at"})
_JSON_FIELDS = ("indicator", "ticker", "exchange", "price", "signal_type", "interval", "time")


class VocabularyError(ValueError):
    """vocabulary.toml is missing, unreadable or not shaped as documented in it."""


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """Folded spellings, ready for lookups."""

    # Per field, the folded key lookups in order of preference; a dotted key also as one undotted key.
    json_lookups: Mapping[str, tuple[str, ...]]
    json_moment_lookups: Mapping[str, tuple[str, ...]]
    json_bar_time_beside_fired_at: tuple[str, ...]
    json_containers: frozenset[str]
    json_message_keys: frozenset[str]
    # Folded line label -> field.
    labels: Mapping[str, str]
    bar_time_labels_beside_fired_at: frozenset[str]
    not_tickers: frozenset[str]
    delayed_feed_exchange_suffixes: tuple[str, ...]


def json_key(key: str) -> str:
    """A JSON key as vocabulary.toml spells it: folded, without "_", "-", " " and "."."""
    return fold(key).replace("_", "").replace("-", "").replace(" ", "").replace(".", "")


@cache
def default_vocabulary() -> Vocabulary:
    """The shipped vocabulary, read once per process."""
    return load_vocabulary(VOCABULARY_PATH)


def load_vocabulary(path: Path) -> Vocabulary:
    """Read and check a vocabulary file; ``VocabularyError`` says what is wrong and where."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise VocabularyError(f"cannot read parser vocabulary {path}: {error}") from error
    except tomllib.TOMLDecodeError as error:
        raise VocabularyError(f"parser vocabulary {path} is not valid TOML: {error}") from error
    return vocabulary_from_mapping(document, source=str(path))


def vocabulary_from_mapping(document: Mapping[str, Any], *, source: str) -> Vocabulary:
    _only_keys(document, {"delayed_feed_exchange_suffixes", "json", "labels", "free_text"}, source)
    json_table = _table(document, "json", source)
    _only_keys(json_table, {"containers", "message_keys", "keys"}, f"{source}: json")
    json_keys = _table(json_table, "keys", f"{source}: json")
    key_fields = (*_JSON_FIELDS, *sorted(MOMENT_FIELDS), "bar_time_beside_fired_at")
    _only_keys(json_keys, set(key_fields), f"{source}: json.keys")
    spellings = {
        name: _strings(json_keys, name, f"{source}: json.keys", required=name in _JSON_FIELDS)
        for name in key_fields
    }
    time_spellings = set(_json_lookups(spellings["time"]))
    for name in (*sorted(MOMENT_FIELDS), "bar_time_beside_fired_at"):
        if stray := [
            spelling for spelling in spellings[name] if _json_lookups((spelling,))[0] not in time_spellings
        ]:
            # Otherwise a moment could be read while the alert time ignores it.
            raise VocabularyError(f"{source}: json.keys.{name} must also be time spellings: {stray}")
    label_table = _table(document, "labels", source)
    label_fields = (*sorted(STANDARD_FIELDS), "bar_time_beside_fired_at")
    _only_keys(label_table, set(label_fields), f"{source}: labels")
    labels: dict[str, str] = {}
    for field_name in sorted(STANDARD_FIELDS):
        for label in _strings(label_table, field_name, f"{source}: labels", required=False):
            folded = fold(label)
            if labels.setdefault(folded, field_name) != field_name:
                raise VocabularyError(
                    f"{source}: labels: {label!r} is a label of both {labels[folded]} and {field_name}"
                )
    beside_labels = frozenset(
        fold(label)
        for label in _strings(label_table, "bar_time_beside_fired_at", f"{source}: labels", required=False)
    )
    if stray := sorted(label for label in beside_labels if labels.get(label) != "time"):
        raise VocabularyError(f"{source}: labels.bar_time_beside_fired_at must be time labels: {stray}")
    free_text = _table(document, "free_text", source)
    _only_keys(free_text, {"not_tickers"}, f"{source}: free_text")
    return Vocabulary(
        json_lookups={name: _json_lookups(spellings[name]) for name in _JSON_FIELDS},
        json_moment_lookups={name: _json_lookups(spellings[name]) for name in sorted(MOMENT_FIELDS)},
        json_bar_time_beside_fired_at=_json_lookups(spellings["bar_time_beside_fired_at"]),
        json_containers=frozenset(map(json_key, _strings(json_table, "containers", f"{source}: json"))),
        json_message_keys=frozenset(map(json_key, _strings(json_table, "message_keys", f"{source}: json"))),
        labels=labels,
        bar_time_labels_beside_fired_at=beside_labels,
        not_tickers=frozenset(_strings(free_text, "not_tickers", f"{source}: free_text")),
        delayed_feed_exchange_suffixes=tuple(
            suffix.upper() for suffix in _strings(document, "delayed_feed_exchange_suffixes", source)
        ),
    )


def _json_lookups(spellings: tuple[str, ...]) -> tuple[str, ...]:
    """Each spelling as a dotted path of folded keys, then as one key without the dots."""
    lookups: list[str] = []
    for spelling in spellings:
        dotted = ".".join(json_key(part) for part in spelling.split("."))
        lookups.extend((dotted, dotted.replace(".", "")))
    return tuple(dict.fromkeys(lookups))


def _table(document: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    table = document.get(name)
    if not isinstance(table, Mapping):
        raise VocabularyError(f"{where}: [{name}] must be a table")
    return table


def _strings(table: Mapping[str, Any], name: str, where: str, *, required: bool = True) -> tuple[str, ...]:
    value = table.get(name)
    if value is None and not required:
        return ()
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(item, str) and item.strip() for item in value)
    ):
        raise VocabularyError(f"{where}: {name} must be a non-empty list of non-empty strings")
    return tuple(item.strip() for item in value)


def _only_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    if unknown := sorted(set(table) - allowed):
        raise VocabularyError(f"{where}: unknown keys {unknown}")
