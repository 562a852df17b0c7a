"""The parser's vocabulary file: the shipped one loads, a malformed one is refused with where and why."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from signal_service.parsing.vocabulary import (
    VOCABULARY_PATH,
    VocabularyError,
    default_vocabulary,
    load_vocabulary,
    vocabulary_from_mapping,
)


def shipped_document() -> dict[str, Any]:
    return tomllib.loads(VOCABULARY_PATH.read_text(encoding="utf-8"))


def test_shipped_vocabulary_loads_folded() -> None:
    vocabulary = default_vocabulary()

    assert vocabulary.json_lookups["ticker"][:2] == ("ticker", "tickerid")
    # A dotted spelling matches the nested path and the same key written without dots.
    assert {"syminfo.tickerid", "syminfotickerid"} <= set(vocabulary.json_lookups["ticker"])
    assert vocabulary.labels["senal"] == "signal_type"
    assert vocabulary.labels["hora de la alerta"] == "fired_at"
    assert vocabulary.bar_time_labels_beside_fired_at == {"time", "hora"}
    assert vocabulary.delayed_feed_exchange_suffixes == ("_DL", "_DLY")
    assert "APIDEVS" in vocabulary.not_tickers
    assert load_vocabulary(VOCABULARY_PATH) == vocabulary


def test_time_spellings_keep_their_order_of_preference() -> None:
    time_lookups = default_vocabulary().json_lookups["time"]

    assert time_lookups.index("time") < time_lookups.index("timenow") < time_lookups.index("bartime")


def broken(change: str) -> dict[str, Any]:
    document = shipped_document()
    if change == "unknown top-level key":
        document["colours"] = ["red"]
    elif change == "json fields missing":
        del document["json"]["keys"]["ticker"]
    elif change == "empty spelling":
        document["json"]["keys"]["price"] = ["price", " "]
    elif change == "label of two fields":
        document["labels"]["ticker"] = [*document["labels"]["ticker"], "Precio"]
    elif change == "beside label not a time label":
        document["labels"]["bar_time_beside_fired_at"] = ["ticker"]
    elif change == "moment not a time spelling":
        document["json"]["keys"]["fired_at"] = ["firedat"]
    elif change == "labels not a table":
        document["labels"] = ["hora"]
    return document


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("unknown top-level key", r"unknown keys \['colours'\]"),
        ("json fields missing", "json.keys: ticker must be a non-empty list"),
        ("empty spelling", "json.keys: price must be a non-empty list of non-empty strings"),
        ("label of two fields", "'Precio' is a label of both price and ticker"),
        ("beside label not a time label", r"bar_time_beside_fired_at must be time labels: \['ticker'\]"),
        ("moment not a time spelling", r"json.keys.fired_at must also be time spellings: \['firedat'\]"),
        ("labels not a table", r"\[labels\] must be a table"),
    ],
)
def test_malformed_vocabulary_is_refused(change: str, message: str) -> None:
    with pytest.raises(VocabularyError, match=message):
        vocabulary_from_mapping(broken(change), source="vocabulary.toml")


def test_unreadable_vocabulary_is_refused(tmp_path: Path) -> None:
    with pytest.raises(VocabularyError, match="cannot read"):
        load_vocabulary(tmp_path / "absent.toml")
    not_toml = tmp_path / "vocabulary.toml"
    not_toml.write_text("this is = = not toml", encoding="utf-8")
    with pytest.raises(VocabularyError, match="not valid TOML"):
        load_vocabulary(not_toml)
