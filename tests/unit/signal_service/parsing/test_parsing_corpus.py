"""Every realistic message in corpus/messages.yaml parses to exactly the fields written beside it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from signal_service.parsing import ParseStatus, parse_alert

CORPUS_PATH = Path(__file__).with_name("corpus") / "messages.yaml"
RECEIVED_AT = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
REQUIRED_EXPECTATIONS = (
    "status",
    "indicator",
    "indicator_key",
    "ticker",
    "price",
    "signal_type",
    "interval",
    "alert_time",
)


def load_corpus() -> list[dict[str, Any]]:
    return yaml.safe_load(CORPUS_PATH.read_text(encoding="utf-8"))


def corpus_body(case: dict[str, Any]) -> bytes:
    if "body_hex" in case:
        return bytes.fromhex(case["body_hex"])
    return case["body"].encode("utf-8")


def moment(expected: str | None) -> datetime | None:
    return None if expected is None else datetime.fromisoformat(expected)


CORPUS = load_corpus()


def test_corpus_is_large_and_varied() -> None:
    assert len(CORPUS) >= 60
    identifiers = [case["id"] for case in CORPUS]
    assert len(set(identifiers)) == len(identifiers)
    families = {identifier.split("-")[0] for identifier in identifiers}
    assert {"es", "en", "json", "text", "broken"} <= families
    statuses = {case["expect"]["status"] for case in CORPUS}
    assert statuses == {"complete", "partial", "failed"}


@pytest.mark.parametrize("case", CORPUS, ids=[case["id"] for case in CORPUS])
def test_corpus_message(case: dict[str, Any]) -> None:
    expect = case["expect"]
    missing = [key for key in REQUIRED_EXPECTATIONS if key not in expect]
    assert not missing, f"corpus case {case['id']} must state {missing}"

    parsed = parse_alert(
        corpus_body(case),
        content_type=case.get("content_type", "text/plain"),
        query=case.get("query"),
        received_at=RECEIVED_AT,
    )

    expected_time = (
        RECEIVED_AT if expect["alert_time"] == "received" else datetime.fromisoformat(expect["alert_time"])
    )
    assert parsed.status == ParseStatus(expect["status"])
    assert parsed.indicator == expect["indicator"]
    assert parsed.indicator_key == expect["indicator_key"]
    assert parsed.ticker == expect["ticker"]
    assert parsed.price == (None if expect["price"] is None else Decimal(expect["price"]))
    assert parsed.signal_type == expect["signal_type"]
    assert parsed.interval == expect["interval"]
    assert parsed.alert_time == expected_time
    assert parsed.alert_time.utcoffset() is not None
    assert parsed.bar_time == moment(expect.get("bar_time"))
    assert parsed.fired_at == moment(expect.get("fired_at"))
    assert parsed.delayed_feed is expect.get("delayed_feed", False)
    if "exchange" in expect:
        assert parsed.exchange == expect["exchange"]
    if "symbol" in expect:
        assert parsed.symbol == expect["symbol"]
    if "extra" in expect:
        assert parsed.extra == expect["extra"]
    for problem in expect.get("problems", []):
        assert problem in parsed.problems
    if expect.get("problems") == []:
        assert parsed.problems == ()
    assert isinstance(parsed.price, Decimal | None)
    json.dumps(parsed.extra)
